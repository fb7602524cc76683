// Package container attests a calling process by the container it runs in,
// read from its cgroup, as selectors of type "container":
// "container:id:<64 hex digits>", "container:runtime:docker" (or
// containerd, cri-o) when the cgroup says which runtime made it, and for a
// Kubernetes pod "container:pod_uid:<uid>" and "container:qos:burstable"
// (or guaranteed, besteffort).
//
// The cgroup comes from /proc/PID/cgroup, which describes whatever process
// holds the pid when it is read, so the attestor reads the process's start
// time before and after and refuses to answer if it changed or the process
// vanished.
//
// A cgroup path is only as trustworthy as whoever named it. A process that
// has been delegated a cgroup subtree (a user's service manager, a
// privileged container, a container with its own cgroup namespace and a
// writable cgroupfs) can create cgroups with container-like names and move
// itself into them, and the innermost container is the one reported, so
// rules should combine container selectors with ones the process cannot
// choose, such as its uid.
package container

import (
	"cmp"
	"context"
	"fmt"

	"writ.dev/writ/attest/workload"
	"writ.dev/writ/attest/workload/internal/procfs"
	"writ.dev/writ/identity"
)

// SelectorType is the type of every selector the attestor produces.
const SelectorType = "container"

// Options configures an Attestor. The zero value is ready to use.
type Options struct {
	// ProcRoot is where procfs is mounted; empty means "/proc". Tests point
	// it at a fake tree.
	ProcRoot string
}

// Attestor is the container workload attestor. It is safe for concurrent
// use.
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

// Type returns "container".
func (a *Attestor) Type() string { return SelectorType }

// Attest returns the container selectors of p, or none if p runs in no
// container (or is a CRI-O conmon process, which runs beside a container,
// not in it). It fails if p's process is gone or its pid was reused, and
// if its cgroups disagree about which container it is in or name a pod
// with a malformed uid.
func (a *Attestor) Attest(_ context.Context, p workload.Peer) ([]identity.Selector, error) {
	sels, err := a.attest(p)
	if err != nil {
		return nil, fmt.Errorf("container attestor: pid %d: %w", p.PID, err)
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
