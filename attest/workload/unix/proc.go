package unix

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// statStartField is the 1-based number of the starttime field in
// /proc/PID/stat (proc(5)). Fields are counted from the pid, but only those
// after the command name can be located reliably, see parseStat.
const statStartField = 22

// firstFieldAfterComm is the number of the first field after "(comm)": the
// process state.
const firstFieldAfterComm = 3

// procStatus is what the attestor needs from /proc/PID/status.
type procStatus struct {
	// UID and GID are the effective ids, the ones SO_PEERCRED reports.
	UID, GID uint32
	// Groups are the supplementary group ids.
	Groups []uint32
}

// readStartTime returns the start time of the process whose /proc directory
// is dir, in clock ticks since boot. A pid is only reused by a process that
// started later, so an unchanged start time shows the pid still names the
// same process.
func readStartTime(dir string) (uint64, error) {
	data, err := readProcFile(dir, "stat")
	if err != nil {
		return 0, err
	}
	start, err := parseStat(data)
	if err != nil {
		return 0, fmt.Errorf("parsing %s: %w", filepath.Join(dir, "stat"), err)
	}
	return start, nil
}

// readStatus reads and parses the /proc/PID/status file in dir.
func readStatus(dir string) (procStatus, error) {
	data, err := readProcFile(dir, "status")
	if err != nil {
		return procStatus{}, err
	}
	st, err := parseStatus(data)
	if err != nil {
		return procStatus{}, fmt.Errorf("parsing %s: %w", filepath.Join(dir, "status"), err)
	}
	return st, nil
}

// readProcFile reads one file of a /proc/PID directory, turning "not there"
// into an error that says what it means for attestation.
func readProcFile(dir, name string) ([]byte, error) {
	path := filepath.Join(dir, name)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, procErr(path, err)
	}
	return data, nil
}

// procErr explains a failure to read path under /proc. A missing file means
// the process is gone; the wrapped error still matches fs.ErrNotExist.
func procErr(path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("reading %s: the process has exited (or /proc hides it: check the hidepid mount option): %w", path, err)
	}
	return fmt.Errorf("reading %s: %w", path, err)
}

// parseStat returns the start time from the contents of /proc/PID/stat.
//
// The second field is the command name in parentheses, and the command name
// is chosen by the process: it may hold spaces and parentheses, even ") (".
// Every field after it is numeric or a single letter, so the command name
// ends at the last ')' and only what follows it is split into fields.
func parseStat(data []byte) (uint64, error) {
	s := string(data)
	open := strings.IndexByte(s, '(')
	end := strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return 0, errors.New("no parenthesised command name; is this a /proc/PID/stat file?")
	}
	fields := strings.Fields(s[end+1:])
	want := statStartField - firstFieldAfterComm + 1
	if len(fields) < want {
		return 0, fmt.Errorf("%d fields after the command name, want at least %d", len(fields), want)
	}
	raw := fields[statStartField-firstFieldAfterComm]
	start, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("start time (field %d) %+.40q is not a number", statStartField, raw)
	}
	return start, nil
}

// parseStatus extracts the effective uid and gid and the supplementary
// groups from the contents of /proc/PID/status. It refuses a file where a
// line it needs is missing, repeated or malformed rather than guess.
func parseStatus(data []byte) (procStatus, error) {
	var st procStatus
	seen := map[string]bool{}
	for line := range strings.Lines(string(data)) {
		key, value, ok := strings.Cut(strings.TrimSuffix(line, "\n"), ":")
		if !ok || (key != "Uid" && key != "Gid" && key != "Groups") {
			continue
		}
		if seen[key] {
			return procStatus{}, fmt.Errorf("%s line appears twice", key)
		}
		seen[key] = true
		if err := parseStatusLine(&st, key, value); err != nil {
			return procStatus{}, err
		}
	}
	for _, key := range []string{"Uid", "Gid", "Groups"} {
		if !seen[key] {
			return procStatus{}, fmt.Errorf("no %s line; is this a /proc/PID/status file?", key)
		}
	}
	return st, nil
}

func parseStatusLine(st *procStatus, key, value string) error {
	ids, err := parseIDs(value)
	if err != nil {
		return fmt.Errorf("%s line: %w", key, err)
	}
	if key == "Groups" {
		st.Groups = ids
		return nil
	}
	// Uid and Gid lines hold the real, effective, saved and filesystem ids.
	if len(ids) != 4 {
		return fmt.Errorf("%s line has %d ids, want 4 (real, effective, saved, filesystem)", key, len(ids))
	}
	if key == "Uid" {
		st.UID = ids[1]
	} else {
		st.GID = ids[1]
	}
	return nil
}

// parseIDs parses whitespace-separated decimal 32-bit ids.
func parseIDs(s string) ([]uint32, error) {
	fields := strings.Fields(s)
	ids := make([]uint32, 0, len(fields))
	for _, f := range fields {
		id, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%+.40q is not a 32-bit id", f)
		}
		ids = append(ids, uint32(id))
	}
	return ids, nil
}
