// Package systemd attests a calling process by the systemd unit it runs
// in, read from its cgroup, as selectors of type "systemd":
// "systemd:unit:nginx.service", "systemd:slice:system.slice" and, for a
// unit of a user's service manager, "systemd:user_unit:foo.service" and
// "systemd:user_slice:app.slice" (apart from slice: a user names the slices
// of their own manager, so those must never pass for the system's).
//
// The cgroup comes from /proc/PID/cgroup, which describes whatever process
// holds the pid when it is read, so the attestor reads the process's start
// time before and after and refuses to answer if it changed or the process
// vanished.
package systemd

import (
	"cmp"
	"context"
	"fmt"

	"writ.dev/writ/attest/workload"
	"writ.dev/writ/attest/workload/internal/procfs"
	"writ.dev/writ/identity"
)

// SelectorType is the type of every selector the attestor produces.
const SelectorType = "systemd"

// Options configures an Attestor. The zero value is ready to use.
type Options struct {
	// ProcRoot is where procfs is mounted; empty means "/proc". Tests point
	// it at a fake tree.
	ProcRoot string
}

// Attestor is the systemd workload attestor. It is safe for concurrent use.
type Attestor struct {
	procRoot string
	// beforeRecheck, if set, runs just before the start time is read the
	// second time, so tests can change or remove the process then.
	beforeRecheck func()
}

var _ workload.Attestor = (*Attestor)(nil)

// New returns an Attestor configured by opts.
func New(opts Options) *Attestor {
	return &Attestor{procRoot: cmp.Or(opts.ProcRoot, "/proc")}
}

// Type returns "systemd".
func (a *Attestor) Type() string { return SelectorType }

// Attest returns the systemd selectors of p, or none if p runs in no
// systemd unit. It fails if p's process is gone or its pid was reused, and
// if its cgroup names a unit that is not a valid systemd unit name.
func (a *Attestor) Attest(_ context.Context, p workload.Peer) ([]identity.Selector, error) {
	sels, err := a.attest(p)
	if err != nil {
		return nil, fmt.Errorf("systemd attestor: pid %d: %w", p.PID, err)
	}
	return sels, nil
}

func (a *Attestor) attest(p workload.Peer) ([]identity.Selector, error) {
	proc, err := procfs.Open(a.procRoot, p.PID)
	if err != nil {
		return nil, err
	}
	cgs, err := proc.Cgroups()
	if err != nil {
		return nil, err
	}
	if a.beforeRecheck != nil {
		a.beforeRecheck()
	}
	if err := proc.Recheck(); err != nil {
		return nil, err
	}
	return selectorsOf(cgs)
}
