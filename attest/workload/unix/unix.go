// Package unix attests a calling process by its unix facts: its uid and
// gid, their names, its supplementary groups, and the path and SHA-256
// digest of its executable, all as selectors of type "unix" such as
// "unix:uid:1000" or "unix:path:/usr/bin/backup".
//
// The uid and gid come from SO_PEERCRED, which the caller cannot forge;
// everything else comes from /proc/PID, which describes whatever process
// holds the pid when it is read. The attestor therefore reads the process's
// start time before and after everything else and refuses to answer if it
// changed or the process vanished, since then the facts may belong to a
// different process that was given the same pid.
package unix

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"writ.dev/writ/attest/workload"
	"writ.dev/writ/attest/workload/internal/procfs"
	"writ.dev/writ/identity"
)

// SelectorType is the type of every selector the attestor produces.
const SelectorType = "unix"

// DefaultMaxExecutableSize is the largest executable hashed when
// Options.MaxExecutableSize is not set.
const DefaultMaxExecutableSize = 512 << 20

// Options configures an Attestor. The zero value is ready to use.
type Options struct {
	// ProcRoot is where procfs is mounted; empty means "/proc". Tests point
	// it at a fake tree.
	ProcRoot string
	// Logger receives debug messages saying why a selector was omitted;
	// nil means slog.Default().
	Logger *slog.Logger
	// DisableExecutableHash turns off the sha256 selector, for hosts where
	// reading each new executable once costs too much.
	DisableExecutableHash bool
	// MaxExecutableSize is the largest executable, in bytes, that is
	// hashed; a bigger one gets no sha256 selector rather than hold up
	// its caller. Zero or less means DefaultMaxExecutableSize.
	MaxExecutableSize int64
}

// Attestor is the unix workload attestor. It is safe for concurrent use and
// caches executable digests and user and group names across calls, so use
// one per agent.
type Attestor struct {
	procRoot   string
	log        *slog.Logger
	hashExe    bool
	maxExeSize int64
	digests    *digestCache
	names      *nameCache
	// beforeRecheck, if set, runs just before the start time is read the
	// second time, so tests can change or remove the process then.
	beforeRecheck func()
}

var _ workload.Attestor = (*Attestor)(nil)

// New returns an Attestor configured by opts.
func New(opts Options) *Attestor {
	a := &Attestor{
		procRoot:   cmp.Or(opts.ProcRoot, "/proc"),
		log:        cmp.Or(opts.Logger, slog.Default()).With("attestor", SelectorType),
		hashExe:    !opts.DisableExecutableHash,
		maxExeSize: opts.MaxExecutableSize,
		digests:    newDigestCache(),
		names:      newNameCache(),
	}
	if a.maxExeSize <= 0 {
		a.maxExeSize = DefaultMaxExecutableSize
	}
	return a
}

// Type returns "unix".
func (a *Attestor) Type() string { return SelectorType }

// Attest returns the unix selectors of p, sorted, without duplicates. It
// fails if p's process is gone, its pid was reused, or its effective uid
// or gid no longer match what it connected with. The path and sha256
// selectors are omitted, with a debug log saying why, when the executable
// was deleted, cannot be read by the agent, or is too big to hash.
func (a *Attestor) Attest(ctx context.Context, p workload.Peer) ([]identity.Selector, error) {
	sels, err := a.attest(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("unix attestor: pid %d: %w", p.PID, err)
	}
	return sels, nil
}

func (a *Attestor) attest(ctx context.Context, p workload.Peer) ([]identity.Selector, error) {
	uid, gid, err := peerIDs(p)
	if err != nil {
		return nil, err
	}
	proc, err := procfs.Open(a.procRoot, p.PID)
	if err != nil {
		return nil, err
	}
	st, err := readStatus(proc)
	if err != nil {
		return nil, err
	}
	if err := checkIDs(st, uid, gid); err != nil {
		return nil, err
	}
	exe, err := a.executable(ctx, proc.Dir, p.PID)
	if err != nil {
		return nil, err
	}
	if a.beforeRecheck != nil {
		a.beforeRecheck()
	}
	if err := proc.Recheck(); err != nil {
		return nil, err
	}
	l := &selectorList{log: a.log, pid: p.PID}
	if err := a.addIDs(l, uid, gid, st.Groups); err != nil {
		return nil, err
	}
	for _, v := range exe {
		l.add(v)
	}
	return l.sorted(), nil
}

// peerIDs checks p and returns its uid and gid as the kernel's 32-bit ids.
func peerIDs(p workload.Peer) (uid, gid uint32, err error) {
	if p.PID <= 0 {
		return 0, 0, errors.New("not a process id; the peer's credentials were not read from the connection")
	}
	if p.UID < 0 || p.UID > math.MaxUint32 || p.GID < 0 || p.GID > math.MaxUint32 {
		return 0, 0, fmt.Errorf("uid %d or gid %d is out of range; the peer's credentials were not read from the connection", p.UID, p.GID)
	}
	return uint32(p.UID), uint32(p.GID), nil
}

// checkIDs compares what SO_PEERCRED reported at connect time with the
// process's ids now. SO_PEERCRED reports the effective ids, so those are
// compared: a set-user-ID program legitimately has a different real uid.
func checkIDs(st procStatus, uid, gid uint32) error {
	if st.UID != uid || st.GID != gid {
		return fmt.Errorf("connected as uid %d gid %d but now runs as effective uid %d gid %d: "+
			"the process changed identity since connecting, so its facts would not describe the caller; refusing to attest it",
			uid, gid, st.UID, st.GID)
	}
	return nil
}

// addIDs adds the uid, gid and supplementary group selectors, with names
// where the ids have them.
func (a *Attestor) addIDs(l *selectorList, uid, gid uint32, groups []uint32) error {
	l.add("uid:" + formatID(uid))
	l.add("gid:" + formatID(gid))
	if err := a.addName(l, "user:", nameKey{kindUser, uid}); err != nil {
		return err
	}
	if err := a.addName(l, "group:", nameKey{kindGroup, gid}); err != nil {
		return err
	}
	for _, g := range groups {
		l.add("supplementary_gid:" + formatID(g))
		if err := a.addName(l, "supplementary_group:", nameKey{kindGroup, g}); err != nil {
			return err
		}
	}
	return nil
}

func (a *Attestor) addName(l *selectorList, prefix string, k nameKey) error {
	name, found, err := a.names.name(k)
	if err != nil {
		return err
	}
	if found {
		l.add(prefix + name)
	}
	return nil
}

func formatID(id uint32) string { return strconv.FormatUint(uint64(id), 10) }

// executable returns the path and sha256 selector values of the
// executable of the process in dir, leaving out those that cannot be
// vouched for.
func (a *Attestor) executable(ctx context.Context, dir string, pid int) ([]string, error) {
	link := filepath.Join(dir, "exe")
	path, ok, err := a.readExeLink(link, pid)
	if !ok || err != nil {
		return nil, err
	}
	values := []string{"path:" + path}
	if !a.hashExe {
		return values, nil
	}
	digest, err := a.exeDigest(ctx, link, path, pid)
	if err != nil || digest == "" {
		return values, err
	}
	return append(values, "sha256:"+digest), nil
}

// readExeLink returns the executable's path, or ok false if there is none
// to report: the agent may not look (it is not root and the process is
// another user's), or the file was deleted or replaced since the process
// started it, when the path names something else or nothing.
func (a *Attestor) readExeLink(link string, pid int) (path string, ok bool, err error) {
	path, err = os.Readlink(link)
	if errors.Is(err, fs.ErrPermission) {
		a.log.Debug("omitting path and sha256 selectors: no permission to read the executable of another user's process; run the agent as root to attest it",
			"pid", pid, "error", err)
		return "", false, nil
	}
	if err != nil {
		return "", false, procfs.ReadErr(link, err)
	}
	if trimmed, deleted := strings.CutSuffix(path, " (deleted)"); deleted {
		a.log.Debug("omitting path and sha256 selectors: the executable was deleted or replaced after the process started it",
			"pid", pid, "path", trimmed)
		return "", false, nil
	}
	return path, true, nil
}

// exeDigest returns the hex SHA-256 of the executable, read through link
// rather than its path, which may have been replaced since. It returns ""
// when the file may not be read or is too big. path is the link's target
// when it was read, to check the process did not execute another program
// in between.
func (a *Attestor) exeDigest(ctx context.Context, link, path string, pid int) (string, error) {
	f, err := os.Open(link)
	if errors.Is(err, fs.ErrPermission) {
		a.log.Debug("omitting sha256 selector: the agent may not read the executable", "pid", pid, "path", path, "error", err)
		return "", nil
	}
	if err != nil {
		return "", procfs.ReadErr(link, err)
	}
	defer f.Close()
	now, err := os.Readlink(link)
	if err != nil {
		return "", procfs.ReadErr(link, err)
	}
	if now != path {
		return "", fmt.Errorf("the process executed another program while being attested (%s changed from %q to %q); try again", link, path, now)
	}
	k, err := keyOf(f)
	if err != nil {
		return "", fmt.Errorf("reading the size of executable %s: %w", path, err)
	}
	if k.size > a.maxExeSize {
		a.log.Debug("omitting sha256 selector: the executable is bigger than the maximum size to hash",
			"pid", pid, "path", path, "size", k.size, "max_size", a.maxExeSize)
		return "", nil
	}
	digest, err := a.digests.digest(ctx, f, k)
	if err != nil {
		return "", fmt.Errorf("hashing executable %s: %w", path, err)
	}
	return digest, nil
}

// selectorList collects selector values, dropping any that cannot be a
// selector (a path with a newline in it, a name with a trailing space), so
// that no rule can be written to match them and the fact counts as absent.
type selectorList struct {
	sels []identity.Selector
	log  *slog.Logger
	pid  int
}

func (l *selectorList) add(value string) {
	sel := identity.Selector{Type: SelectorType, Value: value}
	if err := identity.ValidateSelector("selector", sel); err != nil {
		l.log.Debug("omitting a fact that cannot be a selector", "pid", l.pid, "error", err)
		return
	}
	l.sels = append(l.sels, sel)
}

// sorted returns the selectors in canonical order without duplicates.
func (l *selectorList) sorted() []identity.Selector {
	slices.SortFunc(l.sels, func(a, b identity.Selector) int {
		return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.Value, b.Value))
	})
	return slices.Compact(l.sels)
}
