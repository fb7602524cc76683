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
