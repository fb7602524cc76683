// Package proctest builds fake /proc trees for the tests of workload
// attestors, so they can check what an attestor makes of recorded files
// and of a process that changes while it is attested.
package proctest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// StatLine returns a /proc/PID/stat line as the kernel writes it, with the
// given command name and start time and plausible other fields.
func StatLine(pid int, comm string, start uint64) string {
	return fmt.Sprintf("%d (%s) S 1 %d %d 0 -1 4194560 230 0 0 0 1 0 0 0 20 0 1 0 %d 2273280 130 "+
		"18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0 0 0 0 0 0 0 0 0\n", pid, comm, pid, pid, start)
}

// Tree is a fake procfs mount in a temporary directory.
type Tree struct {
	Root string
}

// NewTree returns an empty Tree removed when t ends.
func NewTree(t testing.TB) *Tree {
	t.Helper()
	return &Tree{Root: t.TempDir()}
}

// Dir returns the directory of process pid.
func (tr *Tree) Dir(pid int) string {
	return filepath.Join(tr.Root, strconv.Itoa(pid))
}

// AddProcess makes process pid with start time start and the given
// cgroup file contents.
func (tr *Tree) AddProcess(t testing.TB, pid int, start uint64, cgroup string) {
	t.Helper()
	if err := os.MkdirAll(tr.Dir(pid), 0o755); err != nil {
		t.Fatal(err)
	}
	tr.SetStart(t, pid, start)
	tr.WriteFile(t, pid, "cgroup", cgroup)
}

// SetStart rewrites the start time of process pid, as if it exited and its
// pid went to a process started at start.
func (tr *Tree) SetStart(t testing.TB, pid int, start uint64) {
	t.Helper()
	tr.WriteFile(t, pid, "stat", StatLine(pid, "server", start))
}

// WriteFile writes file name of process pid.
func (tr *Tree) WriteFile(t testing.TB, pid int, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(tr.Dir(pid), name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Remove removes process pid, as if it exited.
func (tr *Tree) Remove(t testing.TB, pid int) {
	t.Helper()
	if err := os.RemoveAll(tr.Dir(pid)); err != nil {
		t.Fatal(err)
	}
}
