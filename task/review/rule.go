package review

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/identity"
	"writ.dev/writ/task"
)

// Defaults and bounds of a rule's durations.
const (
	DefaultPendingTTL = 24 * time.Hour
	DefaultMaxTTL     = 8 * time.Hour
	MaxPendingTTL     = 30 * 24 * time.Hour
	MaxMaxTTL         = 90 * 24 * time.Hour
	DefaultHeartbeat  = 2 * time.Second
	MinHeartbeat      = time.Second
	MaxHeartbeat      = time.Minute
)

// Rule says how requests it matches are reviewed. A rule matches a request
// when every privilege the request asks for is covered by the rule's
// actions and resources, and the requester (the chain's first identity)
// has one of RequesterKinds and matches one of Requesters (each when
// given). Exactly one of Require and AutoApprove is set.
type Rule struct {
	Name string
	// Line is where the rule starts in its file, for messages.
	Line int

	Actions        []string
	Resources      []task.ResourcePattern
	RequesterKinds []identity.Kind
	Requesters     []task.Pattern

	// Require lists groups that must all be met.
	Require []Group
	// DenyIf lists conditions; if any holds the request is denied.
	DenyIf []Condition
	// AutoApprove, when set, approves without reviewers if it holds. When it
	// does not hold the rule does not apply, and the next rule is tried.
	AutoApprove *Condition

	// MaxTTL bounds the access a request may ask for; PendingTTL is how long
	// a request waits for a decision.
	MaxTTL, PendingTTL time.Duration

	// AccessClock says when the access time of an approved request starts
	// counting. With ClockFirstUse an approved grant nobody uses still
	// lapses PendingTTL after approval, so access is never open-ended.
	AccessClock AccessClock

	// DualControl, when set, makes the approved grant live only while
	// watchers are present. This package parses and validates it; the
	// server enforces it.
	DualControl *DualControl
}

// Group is met when Count distinct principals matching From approved.
type Group struct {
	Name  string
	From  []task.Pattern
	Count int
}

// Matches reports whether g names id.
func (g *Group) Matches(id spiffeid.ID) bool {
	return slices.ContainsFunc(g.From, func(p task.Pattern) bool { return p.Matches(id) })
}

// String describes g for people deciding whether they may approve:
// "people: 2 of spiffe://example.org/person/**".
func (g *Group) String() string {
	names := make([]string, len(g.From))
	for i, p := range g.From {
		names[i] = p.String()
	}
	s := fmt.Sprintf("%d of %s", g.Count, strings.Join(names, ", "))
	if g.Name != "" {
		s = g.Name + ": " + s
	}
	return s
}

// label names g in messages: its name, or its place in the rule.
func (g *Group) label(i int) string {
	if g.Name != "" {
		return g.Name
	}
	return fmt.Sprintf("require[%d]", i)
}

// Condition holds when every one of its set fields holds; an empty
// Condition always holds. The fields are deliberately few and declarative,
// so a rule file says what it does without a policy language:
//
//   - requester_kind: the requester's kind is one of these
//   - requester: the requester matches one of these ID patterns
//   - acting_for_person: the chain holds a person behind the requester
//     (true) or does not (false)
//   - within_hours: the request was made inside the window
//   - outside_hours: the request was made outside the window
//   - ttl_over: the access asked for is longer than this
//
// Time conditions look at when the request was made (its CreatedAt once
// submitted), so a decision does not depend on when it is looked at.
type Condition struct {
	RequesterKinds  []identity.Kind
	Requesters      []task.Pattern
	ActingForPerson *bool
	WithinHours     *Window
	OutsideHours    *Window
	TTLOver         time.Duration
}

// Holds reports whether c holds for r made at at, and says why in words
// when it does.
func (c *Condition) Holds(r *Request, at time.Time) (bool, string) {
	var why []string
	req := r.Requester()
	if len(c.RequesterKinds) > 0 {
		k := identity.KindOf(req)
		if !slices.Contains(c.RequesterKinds, k) {
			return false, ""
		}
		why = append(why, "the requester is a "+string(k))
	}
	if len(c.Requesters) > 0 {
		i := slices.IndexFunc(c.Requesters, func(p task.Pattern) bool { return p.Matches(req) })
		if i < 0 {
			return false, ""
		}
		why = append(why, "the requester matches "+c.Requesters[i].String())
	}
	if c.ActingForPerson != nil {
		person := slices.ContainsFunc(r.Chain[min(1, len(r.Chain)):], func(id spiffeid.ID) bool { return identity.KindOf(id) == identity.KindPerson })
		if person != *c.ActingForPerson {
			return false, ""
		}
		if person {
			why = append(why, "the requester acts for a person")
		} else {
			why = append(why, "the requester acts for no person")
		}
	}
	if c.WithinHours != nil {
		if !c.WithinHours.Contains(at) {
			return false, ""
		}
		why = append(why, "the request was made within "+c.WithinHours.String())
	}
	if c.OutsideHours != nil {
		if c.OutsideHours.Contains(at) {
			return false, ""
		}
		why = append(why, "the request was made outside "+c.OutsideHours.String())
	}
	if c.TTLOver > 0 {
		if r.TTL <= c.TTLOver {
			return false, ""
		}
		why = append(why, fmt.Sprintf("the access asked for (%s) is longer than %s", formatDuration(r.TTL), formatDuration(c.TTLOver)))
	}
	if len(why) == 0 {
		return true, "unconditionally"
	}
	return true, strings.Join(why, " and ")
}

// Window is a span of the day on some days of the week, in a time zone:
// [From, To) minutes after midnight, From < To (a window never spans
// midnight; write two rules for a night shift).
type Window struct {
	Days     [7]bool // indexed by time.Weekday
	From, To int     // minutes after midnight
	Zone     *time.Location
	text     string
}

// Contains reports whether t falls inside w.
func (w *Window) Contains(t time.Time) bool {
	local := t.In(w.Zone)
	m := local.Hour()*60 + local.Minute()
	return w.Days[local.Weekday()] && m >= w.From && m < w.To
}

// String describes w as the file gave it.
func (w *Window) String() string { return w.text }

// AccessClock is when the access time an approval grants starts.
type AccessClock string

const (
	// ClockApproval counts the access time from approval.
	ClockApproval AccessClock = "approval"
	// ClockFirstUse counts it from the first decision the access allows.
	ClockFirstUse AccessClock = "first_use"
)

// OnLeave is what happens to a dual-controlled grant when its watchers
// fall below the count.
type OnLeave string

const (
	// OnLeavePause makes the grant dead until enough watchers return.
	OnLeavePause OnLeave = "pause"
	// OnLeaveTerminate closes the task.
	OnLeaveTerminate OnLeave = "terminate"
)

// DualControl makes a grant live only while Count watchers matching
// Watchers (and disjoint from the requester's chain) hold a live watch
// session, each proving presence every Heartbeat.
type DualControl struct {
	Watchers  []task.Pattern
	Count     int
	OnLeave   OnLeave
	Heartbeat time.Duration
}

// Present returns the distinct principals among watchers (each a chain,
// the watcher first) that count towards dual control of r, and whether
// there are enough for the grant to be live. A watcher counts when no
// identity of its chain is in the requester's chain (nobody watches over
// themselves) and its root principal matches Watchers; like approvals,
// watchers are counted by root principal, so bob and bob's agent watching
// are one watcher.
func (dc *DualControl) Present(r *Request, watchers [][]spiffeid.ID) ([]spiffeid.ID, bool) {
	var present []spiffeid.ID
	for _, w := range watchers {
		if len(w) == 0 || slices.ContainsFunc(w, func(id spiffeid.ID) bool { return containsID(r.Chain, id) }) {
			continue
		}
		root := w[len(w)-1]
		if containsID(present, root) || !slices.ContainsFunc(dc.Watchers, func(p task.Pattern) bool { return p.Matches(root) }) {
			continue
		}
		present = append(present, root)
	}
	return present, len(present) >= dc.Count
}

// ErrNoRule is wrapped by Select's error when no rule applies: a request no
// rule covers could never be approved, so it is refused rather than left to
// expire.
var ErrNoRule = errors.New("no review rule applies")

// Select returns the rule that applies to r, whose privileges are asks,
// made at at: the first in order that matches (see Rule) and, if it
// auto-approves, whose auto_approve holds at that time. Order is the operator's: put narrow rules before
// broad ones, as in a firewall. The first match, rather than the most
// specific, is chosen because it is what a reader of the file can predict
// without computing anything, and `writ review rules` can show it.
func Select(rules []Rule, r *Request, asks []Ask, at time.Time) (*Rule, error) {
	for i := range rules {
		rule := &rules[i]
		if !rule.Matches(r, asks) {
			continue
		}
		if rule.AutoApprove != nil {
			if ok, _ := rule.AutoApprove.Holds(r, at); !ok {
				continue
			}
		}
		return rule, nil
	}
	return nil, fmt.Errorf("%w to a request by %s for %s; nobody could approve it, so ask an operator to add a rule that covers it",
		ErrNoRule, identity.Quote(r.Requester().String()), describeAsks(asks))
}

// Matches reports whether rule covers every ask and the requester.
func (rule *Rule) Matches(r *Request, asks []Ask) bool {
	if len(asks) == 0 {
		return false // nothing asked matches nothing: never approve by accident
	}
	req := r.Requester()
	if len(rule.RequesterKinds) > 0 && !slices.Contains(rule.RequesterKinds, identity.KindOf(req)) {
		return false
	}
	if len(rule.Requesters) > 0 && !slices.ContainsFunc(rule.Requesters, func(p task.Pattern) bool { return p.Matches(req) }) {
		return false
	}
	for _, a := range asks {
		if !rule.covers(a) {
			return false
		}
	}
	return true
}

func (rule *Rule) covers(a Ask) bool {
	if !slices.Contains(rule.Actions, task.AnyAction) && !slices.Contains(rule.Actions, a.Action) {
		return false
	}
	return slices.ContainsFunc(rule.Resources, func(p task.ResourcePattern) bool { return resourceCovers(p, a.Resource) })
}

// resourceCovers reports whether every name q matches is matched by p, by
// the segment rules task's patterns use: '*' one segment, '**' (last only)
// one or more. It walks both texts without allocating: Select calls it for
// every rule until one matches.
func resourceCovers(p, q task.ResourcePattern) bool {
	if p.IsZero() || q.IsZero() {
		return false
	}
	pr, qr := p.String(), q.String()
	for pmore, qmore := true, true; pmore; {
		if !qmore {
			return false
		}
		var ps, qs string
		ps, pr, pmore = strings.Cut(pr, "/")
		qs, qr, qmore = strings.Cut(qr, "/")
		switch {
		case ps == "**":
			return true
		case qs == "**":
			return false
		case ps != "*" && ps != qs:
			return false
		}
		if !pmore {
			return !qmore
		}
	}
	return false
}

func describeAsks(asks []Ask) string {
	const show = 3
	parts := make([]string, 0, show)
	for i, a := range asks {
		if i == show {
			parts = append(parts, fmt.Sprintf("and %d more", len(asks)-show))
			break
		}
		parts = append(parts, identity.Quote(a.String()))
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}
