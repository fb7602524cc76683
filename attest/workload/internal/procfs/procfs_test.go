package procfs

import (
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"
	"unicode/utf8"

	"writ.dev/writ/attest/workload/internal/proctest"
)

// checkParseError checks what every refusal must look like: one printable
// line of bounded length whatever the input, safe for logs and terminals.
func checkParseError(t *testing.T, err error) {
	t.Helper()
	msg := err.Error()
	if !utf8.ValidString(msg) {
		t.Fatalf("error is not valid UTF-8: %q", msg)
	}
	for _, r := range msg {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			t.Fatalf("error holds control character %U: %q", r, msg)
		}
	}
	if len(msg) > 200 {
		t.Fatalf("error is %d bytes: %q", len(msg), msg)
	}
}

func TestParseStat(t *testing.T) {
	for _, comm := range []string{"sleep", "a b", ") (", "x) S 1 2 3 (y", "((", "))", "", "tab\there", "new\nline"} {
		got, err := parseStat([]byte(proctest.StatLine(99, comm, 1103638)))
		if err != nil || got != 1103638 {
			t.Errorf("parseStat(comm %q) = %d, %v; want 1103638", comm, got, err)
		}
	}
	line := proctest.StatLine(1, "x", 5)
	for _, bad := range []string{"", "1 sleep S 1", "1 (sleep) S 1 2 3", "1 )sleep( S", line[:40],
		strings.Replace(line, " 5 ", " -5 ", 1), strings.Replace(line, " 5 ", " 5x ", 1),
		// A start-time field of escaped runes must still give a short error.
		strings.Replace(line, " 5 ", " "+strings.Repeat("\x9e\u02f8", 40)+" ", 1)} {
		if got, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) = %d, want an error", bad, got)
		} else {
			checkParseError(t, err)
		}
	}
}

func TestParseStatOwnProcess(t *testing.T) {
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Skipf("no procfs: %v", err)
	}
	if _, err := parseStat(data); err != nil {
		t.Fatalf("parseStat(/proc/self/stat): %v", err)
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add(proctest.StatLine(1, "systemd", 1), uint64(1))
	f.Add(proctest.StatLine(4242, ") (", 99), uint64(0))
	f.Add("1 (a) b) S", uint64(18446744073709551615))
	f.Add("", uint64(7))
	if data, err := os.ReadFile("/proc/self/stat"); err == nil {
		f.Add(string(data), uint64(12345))
	}
	f.Fuzz(func(t *testing.T, data string, start uint64) {
		if _, err := parseStat([]byte(data)); err != nil {
			checkParseError(t, err)
		}
		// Whatever a process names itself, its start time is found.
		got, err := parseStat([]byte(proctest.StatLine(7, data, start)))
		if err != nil || got != start {
			t.Fatalf("parseStat with command name %q = %d, %v; want %d", data, got, err, start)
		}
	})
}

const pid = 4242

func TestOpenAndRecheck(t *testing.T) {
	tree := proctest.NewTree(t)
	tree.AddProcess(t, pid, 5000, "0::/\n")
	p, err := Open(tree.Root, pid)
	if err != nil {
		t.Fatal(err)
	}
	if data, err := p.ReadFile("cgroup"); err != nil || string(data) != "0::/\n" {
		t.Fatalf("ReadFile(cgroup) = %q, %v", data, err)
	}
	if err := p.Recheck(); err != nil {
		t.Fatalf("Recheck of an unchanged process: %v", err)
	}

	tree.SetStart(t, pid, 5001)
	if err := p.Recheck(); err == nil || !strings.Contains(err.Error(), "reused") {
		t.Errorf("Recheck after the start time changed = %v, want an error saying the pid was reused", err)
	}

	tree.Remove(t, pid)
	if err := p.Recheck(); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "exited") {
		t.Errorf("Recheck after the process went = %v, want an error saying it exited", err)
	}
	if _, err := Open(tree.Root, pid); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "exited") {
		t.Errorf("Open of a missing process = %v, want an error saying it exited", err)
	}
}

func TestOpenRefusesBadPID(t *testing.T) {
	for _, bad := range []int{0, -1} {
		if _, err := Open(t.TempDir(), bad); err == nil {
			t.Errorf("Open(pid %d) succeeded, want an error", bad)
		}
	}
}
