// Package procfs reads the /proc/PID files that workload attestors share,
// and guards them against pid reuse.
//
// /proc/PID describes whatever process holds the pid when it is read, and
// the caller may exit and its pid be given to another process while an
// attestor looks. A pid is only reused by a process that started later, so
// a Process records the start time when opened and Recheck fails unless it
// is unchanged after everything else was read.
package procfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"writ.dev/writ/internal/quote"
)

// statStartField is the 1-based number of the starttime field in
// /proc/PID/stat (proc(5)). Fields are counted from the pid, but only those
// after the command name can be located reliably, see parseStat.
const statStartField = 22

// firstFieldAfterComm is the number of the first field after "(comm)": the
// process state.
const firstFieldAfterComm = 3

// Process is the /proc directory of one process, pinned by the start time
// it had when opened.
type Process struct {
	// Dir is the process's directory, such as "/proc/4242".
	Dir   string
	start uint64
}

// Open reads the start time of process pid under root, where procfs is
// mounted. It fails if pid is not a process id or the process is gone.
func Open(root string, pid int) (*Process, error) {
	if pid <= 0 {
		return nil, errors.New("not a process id; the peer's credentials were not read from the connection")
	}
	p := &Process{Dir: filepath.Join(root, strconv.Itoa(pid))}
	start, err := p.readStartTime()
	if err != nil {
		return nil, err
	}
	p.start = start
	return p, nil
}

// ReadFile reads file name of the process's directory, turning "not
// there" into an error that says the process exited.
func (p *Process) ReadFile(name string) ([]byte, error) {
	path := filepath.Join(p.Dir, name)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, ReadErr(path, err)
	}
	return data, nil
}

// Recheck fails unless the process still has the start time it had when
// opened, so that what was read in between describes the same process.
func (p *Process) Recheck() error {
	got, err := p.readStartTime()
	if err != nil {
		return fmt.Errorf("the process exited while being attested: %w", err)
	}
	if got != p.start {
		return fmt.Errorf("start time changed from %d to %d while being attested: "+
			"the process exited and its pid was reused; refusing to attest it", p.start, got)
	}
	return nil
}

// ReadErr explains a failure to read path under /proc. A missing file
// means the process is gone; the wrapped error still matches
// fs.ErrNotExist.
func ReadErr(path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("reading %s: the process has exited (or /proc hides it: check the hidepid mount option): %w", path, err)
	}
	return fmt.Errorf("reading %s: %w", path, err)
}

// readStartTime returns the process's start time in clock ticks since boot.
func (p *Process) readStartTime() (uint64, error) {
	data, err := p.ReadFile("stat")
	if err != nil {
		return 0, err
	}
	start, err := parseStat(data)
	if err != nil {
		return 0, fmt.Errorf("parsing %s: %w", filepath.Join(p.Dir, "stat"), err)
	}
	return start, nil
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
		return 0, fmt.Errorf("start time (field %d) %s is not a number", statStartField, quote.Max(raw, 60))
	}
	return start, nil
}
