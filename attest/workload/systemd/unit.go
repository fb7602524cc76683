package systemd

import (
	"fmt"
	"slices"
	"strings"
	"writ.dev/writ/internal/quote"

	"writ.dev/writ/attest/workload/internal/procfs"
	"writ.dev/writ/identity"
)

// maxUnitNameLen is systemd's limit on unit names (UNIT_NAME_MAX less the
// terminating NUL).
const maxUnitNameLen = 255

// rootSlice is the slice of units whose cgroup is directly under the root.
const rootSlice = "-.slice"

// processUnitSuffixes are the unit types whose cgroups hold processes:
// services and scopes, and mounts, swaps and sockets while they run their
// commands.
var processUnitSuffixes = []string{".service", ".scope", ".mount", ".swap", ".socket"}

// placement is where in the unit tree a process runs.
type placement struct {
	// unit is the system manager's unit, such as "nginx.service" or
	// "user@1000.service"; "" if the process is in none.
	unit string
	// userUnit is the unit of a user's service manager, when unit is
	// user@UID.service and the process is in one of its units.
	userUnit string
	// slice is the innermost slice of the system manager above unit.
	slice string
	// userSlice is the innermost slice inside the user's manager above
	// userUnit. It is reported apart from slice because a user names the
	// slices of their own manager: a user's "system.slice" must never
	// pass for the system's.
	userSlice string
}

// selectorsOf returns the selectors of a process in cgroups cgs.
func selectorsOf(cgs []procfs.Cgroup) ([]identity.Selector, error) {
	cg, ok := systemdCgroup(cgs)
	if !ok {
		return nil, nil
	}
	pl, err := parsePath(cg.Path)
	if err != nil {
		return nil, fmt.Errorf("%s cgroup %s: %w", cg.Label(), quote.String(cg.Path), err)
	}
	return pl.selectors(), nil
}

// systemdCgroup picks the line of the hierarchy systemd tracks processes
// in. The v1 "name=systemd" hierarchy wins where it exists: on a legacy
// cgroup v1 host the v2 hierarchy may be mounted without systemd using it,
// and then the v2 line says "/" for every process; on a hybrid host
// systemd keeps both the same.
func systemdCgroup(cgs []procfs.Cgroup) (procfs.Cgroup, bool) {
	for _, cg := range cgs {
		if slices.Contains(cg.Controllers, "name=systemd") {
			return cg, true
		}
	}
	for _, cg := range cgs {
		if cg.Unified() {
			return cg, true
		}
	}
	return procfs.Cgroup{}, false
}

// parsePath finds the unit and slice of a process in cgroup path.
//
// systemd puts each unit's cgroup in its slice's cgroup, so the path is
// slices, then the unit. Below the unit the cgroups are the unit's own,
// which it may name as it likes when systemd delegates them (a container
// runtime, or a user's service manager), so only the first unit counts:
// a process cannot claim a unit by creating a cgroup named after it. The
// one exception is user@UID.service, whose subtree is the user's own
// service manager's unit tree: its units are reported as user units, so
// that they cannot pass for system units.
func parsePath(path string) (placement, error) {
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	unit, slice, rest, err := walk(segs, rootSlice)
	if err != nil || unit == "" {
		return placement{}, err
	}
	pl := placement{unit: unit, slice: slice}
	if !isUserManager(unit) {
		return pl, nil
	}
	userUnit, userSlice, _, err := walk(rest, "")
	if err != nil || userUnit == "" {
		return pl, err
	}
	pl.userUnit, pl.userSlice = userUnit, userSlice
	return pl, nil
}

// walk reads slices from the start of segs until it reaches a unit, and
// returns the unit, the innermost slice above it (slice if there is none)
// and the segments after it. The unit is "" if the path leaves the unit
// tree or ends before reaching one.
func walk(segs []string, slice string) (unit, unitSlice string, rest []string, err error) {
	for i, seg := range segs {
		switch {
		case strings.HasSuffix(seg, ".slice"):
			if err := checkUnitName(seg); err != nil {
				return "", "", nil, err
			}
			slice = seg
		case isProcessUnit(seg):
			if err := checkUnitName(seg); err != nil {
				return "", "", nil, err
			}
			return seg, slice, segs[i+1:], nil
		default:
			return "", "", nil, nil
		}
	}
	return "", "", nil, nil
}

func isProcessUnit(name string) bool {
	return slices.ContainsFunc(processUnitSuffixes, func(suffix string) bool {
		return strings.HasSuffix(name, suffix)
	})
}

// isUserManager reports whether unit is a user's service manager,
// user@UID.service.
func isUserManager(unit string) bool {
	uid, ok := strings.CutPrefix(unit, "user@")
	if !ok {
		return false
	}
	uid, ok = strings.CutSuffix(uid, ".service")
	return ok && uid != "" && strings.Trim(uid, "0123456789") == ""
}

// checkUnitName refuses a cgroup name systemd would not give a unit. Such
// a cgroup was made by something else, and a selector naming it could be
// taken for a unit that it is not; escaped forms such as "\x2d" are left
// as systemd wrote them.
func checkUnitName(name string) error {
	if len(name) > maxUnitNameLen {
		return fmt.Errorf("%s is %d bytes, longer than a systemd unit name may be (%d); refusing to attest a unit systemd would not have made",
			quote.Max(name, 60), len(name), maxUnitNameLen)
	}
	for i := 0; i < len(name); i++ {
		if !isUnitNameChar(name[i]) {
			return fmt.Errorf("%s is not a valid systemd unit name (byte %d is not an ASCII letter, digit or one of \":-_.\\@\"); refusing to guess which unit it is",
				quote.String(name), i)
		}
	}
	prefix := name[:strings.LastIndexByte(name, '.')]
	if prefix == "" || prefix[0] == '@' || strings.Count(prefix, "@") > 1 {
		return fmt.Errorf("%s is not a valid systemd unit name (empty name, or misplaced '@'); refusing to guess which unit it is", quote.String(name))
	}
	return nil
}

func isUnitNameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(":-_.\\@", c) >= 0
}

// selectors returns pl's selectors, none if the process is in no unit.
func (pl placement) selectors() []identity.Selector {
	if pl.unit == "" {
		return nil
	}
	sels := []identity.Selector{
		{Type: SelectorType, Value: "slice:" + pl.slice},
		{Type: SelectorType, Value: "unit:" + pl.unit},
	}
	if pl.userSlice != "" {
		sels = append(sels, identity.Selector{Type: SelectorType, Value: "user_slice:" + pl.userSlice})
	}
	if pl.userUnit != "" {
		sels = append(sels, identity.Selector{Type: SelectorType, Value: "user_unit:" + pl.userUnit})
	}
	return sels
}
