package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEndpointDirInSharedTmp: a Workload API socket directory in a
// world-writable directory is trusted only when root, the caller or a named
// uid owns it, so a directory another user made first in /tmp cannot serve
// the caller's workloads.
func TestEndpointDirInSharedTmp(t *testing.T) {
	shared := t.TempDir()
	if err := os.Chmod(shared, 0o1777); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(shared, "writ-dev-1000")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	addr := "unix://" + filepath.Join(dir, "agent.sock")
	self := os.Geteuid()

	if err := checkEndpointDir(addr, self, nil); err != nil {
		t.Fatalf("a directory of the caller's own: %v", err)
	}
	if err := checkEndpointDir("unix://"+filepath.Join(shared, "missing", "agent.sock"), self, nil); err != nil {
		t.Fatalf("a missing directory is for the dial to report: %v", err)
	}
	link := filepath.Join(shared, "writ-dev-link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if err := checkEndpointDir("unix://"+filepath.Join(link, "agent.sock"), self, nil); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("a symlinked directory in a shared directory: %v", err)
	}
	// Not in a shared directory: whoever owns it, nothing to check here.
	private := t.TempDir()
	if err := os.Chmod(private, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := checkEndpointDir("unix://"+filepath.Join(private, "sub", "agent.sock"), self, nil); err != nil {
		t.Fatalf("a private parent: %v", err)
	}

	if os.Geteuid() != 0 {
		t.Skip("changing a directory's owner needs root; the rest runs in CI")
	}
	const nobody = 65534
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	// As root, the caller is root: pretend to be uid 1000 so that a
	// directory of nobody's is foreign.
	err := checkEndpointDir(addr, 1000, nil)
	if err == nil || !strings.Contains(err.Error(), "uid 65534") || !strings.Contains(err.Error(), "--socket-owner") {
		t.Fatalf("a directory of another user in a shared directory: %v", err)
	}
	if err := checkEndpointDir(addr, 1000, []uint32{nobody}); err != nil {
		t.Fatalf("a directory of a uid the caller named: %v", err)
	}
	if err := checkEndpointDir("tcp://127.0.0.1:1", 1000, nil); err != nil {
		t.Fatalf("a TCP address: %v", err)
	}
}
