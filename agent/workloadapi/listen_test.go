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
