package workloadapi

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func tempSocketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "wl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "agent.sock")
}

func TestListenMakesSocketReachableByEveryone(t *testing.T) {
	path := tempSocketPath(t)
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o666 {
		t.Errorf("socket mode %o, want 666", got)
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := tempSocketPath(t)
	old, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	old.(*net.UnixListener).SetUnlinkOnClose(false)
	old.Close()

	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer ln.Close()
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dialing the new socket: %v", err)
	}
	conn.Close()
}

func TestListenRefusesLiveSocket(t *testing.T) {
	path := tempSocketPath(t)
	live, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if ln, err := Listen(path); err == nil || !strings.Contains(err.Error(), "another agent") {
		if ln != nil {
			ln.Close()
		}
		t.Errorf("Listen over a live socket: got %v, want a refusal", err)
	}
}

func TestListenRefusesRegularFile(t *testing.T) {
	path := tempSocketPath(t)
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ln, err := Listen(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		if ln != nil {
			ln.Close()
		}
		t.Errorf("Listen over a regular file: got %v, want a refusal", err)
	}
	if data, err := os.ReadFile(path); err != nil || string(data) != "keep me" {
		t.Errorf("the regular file was disturbed: %q, %v", data, err)
	}
}

// TestListenRefusesDirectoryOthersCanWrite: in a directory every user may
// write (the temporary directory without a sticky owner check, a careless
// mkdir), another user could replace the socket with their own and hand
// workloads identities of their choosing.
func TestListenRefusesDirectoryOthersCanWrite(t *testing.T) {
	dir := filepath.Dir(tempSocketPath(t))
	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	ln, err := Listen(filepath.Join(open, "agent.sock"))
	if err == nil {
		ln.Close()
		t.Fatal("Listen in a world-writable directory succeeded, want a refusal")
	}
	if !strings.Contains(err.Error(), "writable by other users") || !strings.Contains(err.Error(), "--socket") {
		t.Errorf("error %q does not say what is wrong and what to do", err)
	}
	if _, err := os.Lstat(filepath.Join(open, "agent.sock")); err == nil {
		t.Error("a socket was left behind")
	}

	link := filepath.Join(dir, "link")
	if err := os.Symlink(open, link); err != nil {
		t.Fatal(err)
	}
	if ln, err := Listen(filepath.Join(link, "agent.sock")); err == nil {
		ln.Close()
		t.Error("Listen in a directory reached through a symbolic link succeeded, want a refusal")
	}
}
