// Package workload finds out who is calling the agent. An attestor turns
// the kernel's account of a calling process (its pid, uid and gid from
// SO_PEERCRED) into selectors, the attested facts identity rules match.
// Each attestor is one kind of fact (unix, systemd, container, k8s); the
// agent runs all of its attestors and pools what they find.
package workload

import (
	"context"

	"writ.dev/writ/identity"
)

// Peer is a calling process as the kernel reported it when it connected.
type Peer struct {
	PID, UID, GID int
}

// Attestor attests a calling process.
type Attestor interface {
	// Type is the selector type it produces, such as "unix".
	Type() string
	// Attest returns the selectors of p. It fails, rather than return
	// facts about another process, when p is gone or its pid was reused
	// while it looked.
	Attest(ctx context.Context, p Peer) ([]identity.Selector, error)
}
