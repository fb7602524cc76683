// Package authz decides requests over a snapshot of live tasks, standing
// grants and locks.
//
// A request carries the whole chain of identities behind it: the caller
// first, then whom it acts for, outward (an AI agent, then the person it
// answers). A request is allowed only if every identity in the chain is
// covered:
//
//   - a person, an agent or a node only by a live task that grants the
//     action on the resource to that member; standing grants never cover
//     them;
//   - a workload by a standing grant or by a grant of a live task given to
//     it.
//
// When any identity of the chain is not a workload, all identities of the
// chain must be covered by the same task. The agent reads the payroll table
// for the CEO in the payroll task; a grant the CEO holds in some other task
// does not combine with the agent's, and an agent answering an intern gets
// only what the intern's own tasks allow. Standing grants do not count in
// such chains either: a workload acting for a person works inside that
// person's task. A chain of workloads only is service-to-service traffic,
// and each workload is covered on its own.
//
// Further, no lock may cover any identity of the chain or the covering
// task, the chain may not be longer than a limit, and a Guardrail, if
// given, may forbid what the grants allow. Every Decision says why.
package authz

import (
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/authz/guardrail"
	"writ.dev/writ/identity"
	"writ.dev/writ/task"
)

// DefaultMaxChain is the longest chain allowed unless WithMaxChain says
// otherwise: a caller, whom it acts for, and one more hop (a device or a
// second agent). Longer delegation chains are hard to reason about and are
// refused rather than judged.
const DefaultMaxChain = 3

// Link is one identity of a request's chain; its kind is derived from the
// ID with identity.KindOf, never claimed.
type Link struct {
	ID spiffeid.ID
}

// Kind returns the kind of the link's identity.
func (l Link) Kind() identity.Kind { return identity.KindOf(l.ID) }

// String returns "<kind> <id>", as decisions name identities.
func (l Link) String() string { return string(l.Kind()) + " " + l.ID.String() }

// Request is one thing a chain of identities asks to do.
type Request struct {
	// Chain is the caller first, then whom it acts for, outward.
	Chain            []spiffeid.ID
	Action, Resource string
	// Time is when the request is made; zero means the Index's time.
	Time time.Time
	// SourceAddress is where the request came from, as the resource
	// server saw it; Facts are the attested facts of identities of the
	// chain (type:value selectors by SPIFFE ID). Decide does not use them;
	// they are for the guardrails.
	SourceAddress string
	Facts         map[spiffeid.ID][]string
	// Arguments are the request's arguments (a tool call's), for the
	// guardrails as context.arguments; Decide does not use them.
	Arguments guardrail.Arguments
}

// Coverage says what allowed one identity of the chain: a grant of a task
// (TaskID and Grant, the index into its Grants) or a standing grant
// (Standing set, StandingID its ID).
type Coverage struct {
	// Index is the link's position in the request's chain.
	Index      int
	Link       Link
	TaskID     string
	Grant      int
	Standing   bool
	StandingID string
	// Clock names the access clock of the covering grant when the
	// snapshot records no first use of it: the caller starts it (see
	// WithFirstUse).
	Clock string
}

// Decision is the answer to a Request, with its explanation.
type Decision struct {
	Allow bool
	// Covered explains, per identity of the chain and in chain order, what
	// allowed it. It is empty when the request is denied.
	Covered []Coverage
	// DeniedAt is the index into the chain of the identity that failed, or
	// -1 when the request is allowed or denied as a whole (a bad action or
	// resource, a guardrail).
	DeniedAt int
	// Reason says in words why the request was denied; empty when allowed.
	Reason string
}

// Lock stops identities or a task. Kind and Value are as in
// identity.LockCoversID, or identity.LockTask with a task ID as Value.
type Lock struct {
	Kind   identity.LockKind
	Value  string
	ID     string
	Reason string
	// Watched narrows a task lock to the task's grants under dual control
	// (task.Grant.Watched); its other grants still count.
	Watched bool
}

// Snapshot is what decisions are made over. Tasks in any state may be
// given: only live ones grant anything, and the others serve to explain a
// denial ("task T-1 is closed").
type Snapshot struct {
	Tasks    []task.Task
	Standing []task.StandingGrant
	Locks    []Lock
}

// Guardrail may forbid a request the grants allow, e.g. a policy that no
// agent ever writes to production databases on a weekend. It is consulted
// only for requests that would otherwise be allowed. Its reason says which
// policy forbade what, without a prefix: Decide adds "guardrail: " itself,
// so the denial names the guardrail once.
type Guardrail interface {
	Forbid(req Request) (forbidden bool, reason string)
}

// Option configures an Index.
type Option func(*Index)

// WithMaxChain sets the longest chain allowed; n < 1 keeps the default.
func WithMaxChain(n int) Option {
	return func(ix *Index) {
		if n >= 1 {
			ix.maxChain = n
		}
	}
}

// WithFirstUse gives the Index the first uses of access clocks known
// since its snapshot was taken: a grant whose clock the snapshot records
// as not started, but which started at t, expires at t plus its access
// time. It lets a first use count at once, before the store has it.
func WithFirstUse(started func(clock string) (t time.Time, ok bool)) Option {
	return func(ix *Index) { ix.firstUse = started }
}

func deny(at int, format string, args ...any) Decision {
	return Decision{DeniedAt: at, Reason: fmt.Sprintf(format, args...)}
}

func allow(covered []Coverage) Decision {
	return Decision{Allow: true, Covered: covered, DeniedAt: -1}
}
