package unix

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// statLine returns a /proc/PID/stat line as the kernel writes it, with the
// given command name and start time and plausible other fields.
func statLine(pid int, comm string, start uint64) string {
	return fmt.Sprintf("%d (%s) S 1 %d %d 0 -1 4194560 230 0 0 0 1 0 0 0 20 0 1 0 %d 2273280 130 "+
		"18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0 0 0 0 0 0 0 0 0\n", pid, comm, pid, pid, start)
}

// statusText returns a /proc/PID/status file with the given ids, in the
// kernel's layout, including lines the parser must skip.
func statusText(st procStatus) string {
	groups := make([]string, len(st.Groups))
	for i, g := range st.Groups {
		groups[i] = strconv.FormatUint(uint64(g), 10)
	}
	return fmt.Sprintf("Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t7\nPid:\t7\nPPid:\t1\n"+
		"Uid:\t%[1]d\t%[1]d\t%[1]d\t%[1]d\nGid:\t%[2]d\t%[2]d\t%[2]d\t%[2]d\nFDSize:\t64\nGroups:\t%[3]s \n"+
		"VmPeak:\t    5568 kB\nThreads:\t1\n", st.UID, st.GID, strings.Join(groups, " "))
}

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
		got, err := parseStat([]byte(statLine(99, comm, 1103638)))
		if err != nil || got != 1103638 {
			t.Errorf("parseStat(comm %q) = %d, %v; want 1103638", comm, got, err)
		}
	}
	for _, bad := range []string{"", "1 sleep S 1", "1 (sleep) S 1 2 3", "1 )sleep( S", statLine(1, "x", 5)[:40],
		strings.Replace(statLine(1, "x", 5), " 5 ", " -5 ", 1), strings.Replace(statLine(1, "x", 5), " 5 ", " 5x ", 1)} {
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

func TestParseStatus(t *testing.T) {
	want := procStatus{UID: 1000, GID: 100, Groups: []uint32{4, 24, 4294967294}}
	got, err := parseStatus([]byte(statusText(want)))
	if err != nil || got.UID != want.UID || got.GID != want.GID || !slices.Equal(got.Groups, want.Groups) {
		t.Fatalf("parseStatus = %+v, %v; want %+v", got, err, want)
	}
	// The effective ids are the second of each line.
	got, err = parseStatus([]byte("Uid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\nGroups:\t\n"))
	if err != nil || got.UID != 2 || got.GID != 6 || len(got.Groups) != 0 {
		t.Fatalf("parseStatus = %+v, %v; want effective uid 2, gid 6, no groups", got, err)
	}
	ok := "Uid:\t1\t1\t1\t1\nGid:\t1\t1\t1\t1\nGroups:\t1\n"
	for name, bad := range map[string]string{
		"empty":         "",
		"no Uid":        strings.Replace(ok, "Uid", "Xid", 1),
		"no Groups":     strings.Replace(ok, "Groups", "Groupz", 1),
		"repeated Uid":  ok + "Uid:\t2\t2\t2\t2\n",
		"three ids":     strings.Replace(ok, "Uid:\t1\t1\t1\t1", "Uid:\t1\t1\t1", 1),
		"negative":      strings.Replace(ok, "Gid:\t1", "Gid:\t-1", 1),
		"over 32 bits":  strings.Replace(ok, "Groups:\t1", "Groups:\t4294967296", 1),
		"not a number":  strings.Replace(ok, "Groups:\t1", "Groups:\t1 x", 1),
		"binary":        "Uid:\x00\xff\n",
		"control chars": strings.Replace(ok, "Groups:\t1", "Groups:\t1\x1b[31m", 1),
	} {
		if got, err := parseStatus([]byte(bad)); err == nil {
			t.Errorf("%s: parseStatus = %+v, want an error", name, got)
		} else {
			checkParseError(t, err)
		}
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add(statLine(1, "systemd", 1), uint64(1))
	f.Add(statLine(4242, ") (", 99), uint64(0))
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
		got, err := parseStat([]byte(statLine(7, data, start)))
		if err != nil || got != start {
			t.Fatalf("parseStat with command name %q = %d, %v; want %d", data, got, err, start)
		}
	})
}

func FuzzParseStatus(f *testing.F) {
	f.Add(statusText(procStatus{UID: 1000, GID: 1000, Groups: []uint32{4, 27}}))
	f.Add("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t \n")
	f.Add("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n")
	f.Add("Uid:1 2 3 4\nGid:1 2 3 4\nGroups:")
	if data, err := os.ReadFile("/proc/self/status"); err == nil {
		f.Add(string(data))
	}
	f.Fuzz(func(t *testing.T, data string) {
		st, err := parseStatus([]byte(data))
		if err != nil {
			checkParseError(t, err)
			return
		}
		// What was accepted survives being written out and read again.
		again, err := parseStatus([]byte(statusText(st)))
		if err != nil {
			t.Fatalf("parseStatus(statusText(%+v)): %v", st, err)
		}
		if again.UID != st.UID || again.GID != st.GID || !slices.Equal(again.Groups, st.Groups) {
			t.Fatalf("round trip of %+v gave %+v", st, again)
		}
	})
}
