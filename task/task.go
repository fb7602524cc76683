package task

import (
	"errors"
	"fmt"
	"time"
	"writ.dev/writ/internal/quote"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Limits on a task. A task is one piece of work for a few people and
// machines; larger lists are a standing role in disguise or a mistake.
const (
	MaxIDLen          = 128
	MaxTitleLen       = 200  // characters
	MaxReasonLen      = 2000 // characters
	MaxTicketLen      = 256  // characters
	MaxMembersPerTask = 64
	MaxGrantsPerTask  = 64
)

// State is where a task is in its life: draft → open → closed, or open →
// expired when its deadline passes. Closed and expired are final, so a task
// that ended cannot quietly come back to life; open a new one instead.
type State string

const (
	StateDraft   State = "draft"
	StateOpen    State = "open"
	StateClosed  State = "closed"
	StateExpired State = "expired"
)

// ErrIllegalTransition is wrapped by the errors Open, Close and Expire
// return when the task's state does not allow the change.
var ErrIllegalTransition = errors.New("illegal task transition")

// Member is one identity pattern working on a task: a person, their device,
// a CI runner, an agent. Being a member grants nothing by itself; a grant
// names the members it is given to.
type Member struct {
	Pattern Pattern
}

// Task is a piece of work and the privileges it needs. Its grants are live
// only while it is open and the time is within [NotBefore, Deadline).
type Task struct {
	// ID names the task; empty until the store assigns it.
	ID     string
	Title  string
	Reason string
	// Ticket is an external reference (an issue or change number).
	Ticket  string
	Owner   spiffeid.ID
	Members []Member
	Grants  []Grant
	// NotBefore is when the grants start (zero: as soon as the task is
	// open); Deadline is when they end, whatever the state says.
	NotBefore, Deadline time.Time
	State               State
	// CreatedAt, OpenedAt and ClosedAt record the task's history; ClosedAt
	// is also set when it expires.
	CreatedAt, OpenedAt, ClosedAt time.Time
	// Dual, when set, makes the grants marked Watched live only while
	// enough watchers are present (see DualControl).
	Dual *DualControl
}

// Validate checks t for trust domain td: every pattern is in td, each
// grant's recipients are covered by a member pattern, the deadline follows
// NotBefore, and the limits hold. It returns the first problem as an
// *identity.FieldError named after the field ("grants[1].to[0]",
// "members[2]", "deadline"). It does not know the time, so it cannot refuse
// a deadline that has passed; Open does.
func (t *Task) Validate(td spiffeid.TrustDomain) error {
	checks := []func(spiffeid.TrustDomain) error{t.checkText, t.checkOwner, t.checkMembers, t.checkGrants, t.checkTimes}
	for _, check := range checks {
		if err := check(td); err != nil {
			return err
		}
	}
	return nil
}

func (t *Task) checkText(spiffeid.TrustDomain) error {
	if err := checkID("id", t.ID); err != nil {
		return err
	}
	if err := checkText("title", t.Title, MaxTitleLen, true, `e.g. "deploy 4.2 to prod"`); err != nil {
		return err
	}
	if err := checkText("reason", t.Reason, MaxReasonLen, true, `e.g. "release 4.2 fixes the payment retry bug"`); err != nil {
		return err
	}
	return checkText("ticket", t.Ticket, MaxTicketLen, false, "")
}

func (t *Task) checkOwner(td spiffeid.TrustDomain) error {
	switch {
	case t.Owner.IsZero():
		return fieldErr("owner", "is required; give the SPIFFE ID of the person responsible for the task")
	case !t.Owner.MemberOf(td):
		return fieldErr("owner", fmt.Sprintf("%s is not in trust domain %q", quote.String(t.Owner.String()), td.Name()))
	}
	return nil
}

func (t *Task) checkMembers(td spiffeid.TrustDomain) error {
	switch {
	case len(t.Members) == 0:
		return fieldErr("members", "at least one member is required; name who works on the task, "+patternExample)
	case len(t.Members) > MaxMembersPerTask:
		return fieldErr("members", fmt.Sprintf("has %d members; at most %d are allowed", len(t.Members), MaxMembersPerTask))
	}
	for i, m := range t.Members {
		field := fmt.Sprintf("members[%d]", i)
		if err := checkPatternIn(field, m.Pattern, td); err != nil {
			return err
		}
		for j := range i {
			if t.Members[j].Pattern.String() == m.Pattern.String() {
				return fieldErr(field, fmt.Sprintf("%s repeats members[%d]; list each member once", quote.String(m.Pattern.String()), j))
			}
		}
	}
	return nil
}

func (t *Task) checkGrants(td spiffeid.TrustDomain) error {
	switch {
	case len(t.Grants) == 0:
		return fieldErr("grants", "at least one grant is required; a task without grants gives nobody anything to do")
	case len(t.Grants) > MaxGrantsPerTask:
		return fieldErr("grants", fmt.Sprintf("has %d grants; at most %d are allowed", len(t.Grants), MaxGrantsPerTask))
	}
	for i := range t.Grants {
		if err := t.checkGrant(fmt.Sprintf("grants[%d]", i), &t.Grants[i], td); err != nil {
			return err
		}
	}
	return nil
}

func (t *Task) checkGrant(field string, g *Grant, td spiffeid.TrustDomain) error {
	if err := checkActions(field+".actions", g.Actions); err != nil {
		return err
	}
	if err := checkResources(field+".resources", g.Resources); err != nil {
		return err
	}
	switch {
	case len(g.To) == 0:
		return fieldErr(field+".to", "at least one recipient is required; a grant is given to named members, never to the whole task implicitly")
	case len(g.To) > MaxRecipients:
		return fieldErr(field+".to", fmt.Sprintf("has %d recipients; at most %d are allowed", len(g.To), MaxRecipients))
	}
	for i, p := range g.To {
		f := fmt.Sprintf("%s.to[%d]", field, i)
		if err := checkPatternIn(f, p, td); err != nil {
			return err
		}
		if t.MemberCovering(p) < 0 {
			return fieldErr(f, fmt.Sprintf("%s is not a member of the task; add a member pattern that covers it, or give the grant to an existing member", quote.String(p.String())))
		}
	}
	return nil
}

func (t *Task) checkTimes(spiffeid.TrustDomain) error {
	switch {
	case t.Deadline.IsZero():
		return fieldErr("deadline", "is required; every task ends, give the time its privileges end")
	case !t.NotBefore.IsZero() && !t.Deadline.After(t.NotBefore):
		return fieldErr("deadline", fmt.Sprintf("%s is not after not_before %s; give a later deadline",
			formatTime(t.Deadline), formatTime(t.NotBefore)))
	}
	return t.checkState()
}

func (t *Task) checkState() error {
	switch t.State {
	case StateDraft:
		return nil
	case StateOpen:
		if t.OpenedAt.IsZero() {
			return fieldErr("opened_at", "is required for an open task; open tasks with Open")
		}
		return nil
	case StateClosed, StateExpired:
		if t.OpenedAt.IsZero() || t.ClosedAt.IsZero() {
			return fieldErr("closed_at", fmt.Sprintf("a %s task needs opened_at and closed_at", t.State))
		}
		return nil
	}
	return fieldErr("state", fmt.Sprintf("%s is not a task state; use one of draft, open, closed, expired", quote.String(string(t.State))))
}

// MemberCovering returns the index of the first member whose pattern covers
// p (matches every ID p matches), or -1.
func (t *Task) MemberCovering(p Pattern) int {
	for i, m := range t.Members {
		if m.Pattern.Covers(p) {
			return i
		}
	}
	return -1
}

// Open makes a draft task's grants live from now (or from NotBefore, if
// later) until Deadline.
func (t *Task) Open(now time.Time) error {
	if t.State != StateDraft {
		return t.illegal("open", "only a draft task can be opened; create a new task instead")
	}
	if !now.Before(t.Deadline) {
		return fmt.Errorf("cannot open task %s: its deadline %s has passed; set a later deadline first", quote.String(t.ID), formatTime(t.Deadline))
	}
	t.State, t.OpenedAt = StateOpen, now
	return nil
}

// Close ends an open task at now; its grants stop at once.
func (t *Task) Close(now time.Time) error {
	if t.State != StateOpen {
		return t.illegal("close", "only an open task can be closed")
	}
	t.State, t.ClosedAt = StateClosed, now
	return nil
}

// Expire records that an open task's deadline has passed. Its grants
// stopped at Deadline whether or not Expire is called (Live checks the
// time), so ClosedAt is set to Deadline, when they actually ended.
func (t *Task) Expire(now time.Time) error {
	if t.State != StateOpen {
		return t.illegal("expire", "only an open task can expire")
	}
	if now.Before(t.Deadline) {
		return fmt.Errorf("%w: cannot expire task %s before its deadline %s; close it instead", ErrIllegalTransition, quote.String(t.ID), formatTime(t.Deadline))
	}
	t.State, t.ClosedAt = StateExpired, t.Deadline
	return nil
}

func (t *Task) illegal(op, hint string) error {
	return fmt.Errorf("%w: cannot %s task %s: it is %s; %s", ErrIllegalTransition, op, quote.String(t.ID), stateName(t.State), hint)
}

func stateName(s State) string {
	if s == "" {
		return "in no state"
	}
	return string(s)
}

// Live reports whether t's grants are in force at now: it is open and now
// is within [NotBefore, Deadline).
func (t *Task) Live(now time.Time) bool {
	return t.State == StateOpen && !now.Before(t.NotBefore) && now.Before(t.Deadline)
}

// NotLiveReason says in words why t is not live at now, or "" if it is.
func (t *Task) NotLiveReason(now time.Time) string {
	switch {
	case t.State == StateExpired:
		return fmt.Sprintf("task %s expired at %s", t.ID, formatTime(t.Deadline))
	case t.State != StateOpen:
		return fmt.Sprintf("task %s is %s", t.ID, stateName(t.State))
	case now.Before(t.NotBefore):
		return fmt.Sprintf("task %s starts at %s", t.ID, formatTime(t.NotBefore))
	case !now.Before(t.Deadline):
		return fmt.Sprintf("task %s passed its deadline at %s", t.ID, formatTime(t.Deadline))
	}
	return ""
}

// formatTime renders a time in messages as RFC 3339 UTC, as the API
// gives times.
func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }
