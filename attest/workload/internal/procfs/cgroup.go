package procfs

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"writ.dev/writ/internal/quote"
)

// Cgroup is one line of /proc/PID/cgroup: the process's cgroup in one
// hierarchy (cgroups(7)).
type Cgroup struct {
	// HierarchyID is 0 for the cgroup v2 (unified) hierarchy.
	HierarchyID int
	// Controllers are the cgroup v1 controllers bound to the hierarchy,
	// such as "cpu" and "cpuacct", or a named hierarchy such as
	// "name=systemd". The v2 hierarchy has none.
	Controllers []string
	// Path is the cgroup's path from the hierarchy's root, or from the
	// reader's cgroup namespace root, when it may start with "/..".
	Path string
}

// Unified reports whether c is the cgroup v2 hierarchy's line.
func (c Cgroup) Unified() bool {
	return c.HierarchyID == 0 && len(c.Controllers) == 0
}

// Label names c's hierarchy in errors, such as "hierarchy 4 (cpu,cpuacct)".
func (c Cgroup) Label() string {
	if c.Unified() {
		return "the cgroup v2 hierarchy"
	}
	return fmt.Sprintf("hierarchy %d (%s)", c.HierarchyID, quote.Max(strings.Join(c.Controllers, ","), 60))
}

// Cgroups reads and parses the process's /proc/PID/cgroup file.
func (p *Process) Cgroups() ([]Cgroup, error) {
	data, err := p.ReadFile("cgroup")
	if err != nil {
		return nil, err
	}
	cgs, err := ParseCgroup(data)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", filepath.Join(p.Dir, "cgroup"), err)
	}
	return cgs, nil
}

// ParseCgroup parses the contents of /proc/PID/cgroup. A process may name
// the cgroups it creates where it has been delegated a subtree, so the
// paths are outside input; ParseCgroup refuses a file whose lines are
// malformed or repeat a hierarchy rather than guess which line counts.
func ParseCgroup(data []byte) ([]Cgroup, error) {
	var cgs []Cgroup
	seen := map[int]bool{}
	n := 0
	for line := range strings.Lines(string(data)) {
		n++
		cg, err := parseCgroupLine(strings.TrimSuffix(line, "\n"))
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if seen[cg.HierarchyID] {
			return nil, fmt.Errorf("line %d: hierarchy %d appears twice", n, cg.HierarchyID)
		}
		seen[cg.HierarchyID] = true
		cgs = append(cgs, cg)
	}
	if len(cgs) == 0 {
		return nil, errors.New("no cgroup lines; is this a /proc/PID/cgroup file?")
	}
	return cgs, nil
}

// parseCgroupLine parses "hierarchy-ID:controller-list:cgroup-path". The
// path is everything after the second ':' and may itself hold ':'.
func parseCgroupLine(line string) (Cgroup, error) {
	parts := strings.SplitN(line, ":", 3)
	if len(parts) != 3 {
		return Cgroup{}, fmt.Errorf("%s is not hierarchy-ID:controllers:path", quote.Max(line, 60))
	}
	id, err := strconv.ParseUint(parts[0], 10, 31)
	if err != nil {
		return Cgroup{}, fmt.Errorf("hierarchy ID %s is not a number", quote.Max(parts[0], 40))
	}
	if !strings.HasPrefix(parts[2], "/") {
		return Cgroup{}, fmt.Errorf("cgroup path %s does not start with '/'", quote.Max(parts[2], 60))
	}
	cg := Cgroup{HierarchyID: int(id), Path: parts[2]}
	if parts[1] != "" {
		cg.Controllers = strings.Split(parts[1], ",")
	}
	if id == 0 && !cg.Unified() {
		return Cgroup{}, fmt.Errorf("hierarchy 0 has controllers %s; only the cgroup v2 hierarchy is numbered 0", quote.Max(parts[1], 60))
	}
	return cg, nil
}
