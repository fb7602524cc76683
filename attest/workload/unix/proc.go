package unix

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"writ.dev/writ/internal/quote"

	"writ.dev/writ/attest/workload/internal/procfs"
)

// procStatus is what the attestor needs from /proc/PID/status.
type procStatus struct {
	// UID and GID are the effective ids, the ones SO_PEERCRED reports.
	UID, GID uint32
	// Groups are the supplementary group ids.
	Groups []uint32
}

// readStatus reads and parses the /proc/PID/status file of proc.
func readStatus(proc *procfs.Process) (procStatus, error) {
	data, err := proc.ReadFile("status")
	if err != nil {
		return procStatus{}, err
	}
	st, err := parseStatus(data)
	if err != nil {
		return procStatus{}, fmt.Errorf("parsing %s: %w", filepath.Join(proc.Dir, "status"), err)
	}
	return st, nil
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
			return nil, fmt.Errorf("%s is not a 32-bit id", quote.Max(f, 40))
		}
		ids = append(ids, uint32(id))
	}
	return ids, nil
}
