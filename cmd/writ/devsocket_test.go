package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDevSocketPrefersRuntimeDir: writ dev's Workload API socket goes under
// $XDG_RUNTIME_DIR/writ when that directory is the user's own with mode
// 0700, and under TMPDIR/writ-dev-UID otherwise.
func TestDevSocketPrefersRuntimeDir(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	fallback := filepath.Join(tmp, fmt.Sprintf("writ-dev-%d", os.Getuid()), "agent.sock")
	runtime := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(runtime, 0o700); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, xdg, want string }{
		{"unset", "", fallback},
		{"the user's own, 0700", runtime, filepath.Join(runtime, "writ", "agent.sock")},
		{"open to others", open, fallback},
		{"missing", filepath.Join(runtime, "nope"), fallback},
		{"relative", "run", fallback},
	} {
		t.Setenv("XDG_RUNTIME_DIR", tc.xdg)
		if got := devWorkloadSocket(""); got != tc.want {
			t.Errorf("%s: socket %s, want %s", tc.name, got, tc.want)
		}
	}
	if usableRuntimeDir(runtime, os.Geteuid()+1) {
		t.Error("a runtime directory of another uid was taken as usable")
	}
	t.Setenv("XDG_RUNTIME_DIR", runtime)
	if got := devWorkloadSocket("/elsewhere/agent.sock"); got != "/elsewhere/agent.sock" {
		t.Errorf("--socket: %s", got)
	}
}

// TestDevInRuntimeDirFoundByFetch: with a runtime directory, writ dev
// listens there, and writ fetch given no address finds it by the same rule.
func TestDevInRuntimeDirFoundByFetch(t *testing.T) {
	dir := shortTempDir(t)
	runtime := filepath.Join(dir, "run")
	if err := os.Mkdir(runtime, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_RUNTIME_DIR", runtime)
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", "")
	data := filepath.Join(dir, ".writ")
	stdout := startCommand(t, filepath.Join(data, "admin.sock"), "dev", "--data-dir", data, "--listen", "127.0.0.1:0", "--ops-address", "127.0.0.1:0")
	hints := stdout.String()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(hints, "Stop with Ctrl-C") && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		hints = stdout.String()
	}
	socket := filepath.Join(runtime, "writ", "agent.sock")
	if !strings.Contains(hints, "unix://"+socket) {
		t.Fatalf("dev output lacks the Workload API address under the runtime directory, %s:\n%s", socket, hints)
	}
	if out := writ(t, "fetch", "--timeout", "30s"); !strings.Contains(out, "spiffe://example.org/user/") {
		t.Fatalf("writ fetch with no address: %s", out)
	}
}
