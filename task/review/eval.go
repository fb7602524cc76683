package review

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/identity"
)

// Verdict is what a reviewer says.
type Verdict string

const (
	Approve Verdict = "approve"
	Deny    Verdict = "deny"
)

// Review is one reviewer's verdict on a request. Chain is the reviewer
// first, then whom it acts for, as for a request.
type Review struct {
	Chain   []spiffeid.ID
	Verdict Verdict
	Reason  string
	At      time.Time
}

// Validate checks rv for trust domain td: a chain of distinct identities in
// td, a known verdict and a reason of printable text. A denial needs a
// reason, since it ends the request and the requester should learn why.
func (rv *Review) Validate(td spiffeid.TrustDomain) error {
	if err := checkChain("chain", rv.Chain, td); err != nil {
		return err
	}
	if rv.Verdict != Approve && rv.Verdict != Deny {
		return fieldErr("verdict", identity.Quote(string(rv.Verdict))+" is not a verdict; use approve or deny")
	}
	return checkText("reason", rv.Reason, MaxReasonLen, rv.Verdict == Deny, `e.g. "not during the release freeze"`)
}

// ErrNotEligible is wrapped by Eligible's error: the reviewer may not
// review this request, and its verdict counts for nothing.
var ErrNotEligible = errors.New("not eligible to review")

// Eligibility says for whom a reviewer's verdict counts.
type Eligibility struct {
	// Principal is the chain's root (its last identity): the one whose
	// approval this is. Approvals are counted per principal, so bob and an
	// agent acting for bob count once.
	Principal spiffeid.ID
	// Groups are the indices in rule.Require of the groups naming Principal.
	Groups []int
}

// Eligible says whether the reviewer with chain may review r under rule,
// and for which groups; the error says why not. The checks, in order:
//
//   - never the requester: the reviewer is not the identity that asked;
//   - chains disjoint: no identity of the reviewer's chain is in the
//     requester's, so an agent acting for alice cannot review alice's
//     request, nor alice her agent's request made for her;
//   - the rule has reviewers at all (an auto-approving rule has none);
//   - the chain's root principal is named by at least one group. An agent
//     acting for nobody is its own root and approves as itself where a
//     group names it; an agent acting for bob approves as bob.
func Eligible(rule *Rule, r *Request, chain []spiffeid.ID) (Eligibility, error) {
	if len(chain) == 0 {
		return Eligibility{}, fmt.Errorf("%w: the reviewer's chain is empty", ErrNotEligible)
	}
	if len(chain) > MaxChain {
		return Eligibility{}, fmt.Errorf("%w: the reviewer's chain has %d identities; at most %d are allowed", ErrNotEligible, len(chain), MaxChain)
	}
	if chain[0] == r.Requester() {
		return Eligibility{}, fmt.Errorf("%w: %s made the request and cannot review it", ErrNotEligible, identity.Quote(chain[0].String()))
	}
	for i, id := range chain {
		if containsID(r.Chain, id) {
			who := "the reviewer"
			if i > 0 {
				who = "the reviewer acts for " + identity.Quote(id.String()) + ", who"
			} else {
				who += " " + identity.Quote(id.String())
			}
			return Eligibility{}, fmt.Errorf("%w: %s is in the requester's chain; nobody reviews a request made by or for themselves", ErrNotEligible, who)
		}
	}
	if len(rule.Require) == 0 {
		return Eligibility{}, fmt.Errorf("%w: rule %s approves automatically and has no reviewers", ErrNotEligible, identity.Quote(rule.Name))
	}
	root := chain[len(chain)-1]
	e := Eligibility{Principal: root}
	for i := range rule.Require {
		if rule.Require[i].Matches(root) {
			e.Groups = append(e.Groups, i)
		}
	}
	if len(e.Groups) == 0 {
		return Eligibility{}, fmt.Errorf("%w: %s is in none of rule %s's groups (%s)", ErrNotEligible, identity.Quote(root.String()), identity.Quote(rule.Name), rule.groupLabels())
	}
	return e, nil
}

func (rule *Rule) groupLabels() string {
	labels := make([]string, len(rule.Require))
	for i := range rule.Require {
		labels[i] = rule.Require[i].label(i)
	}
	return strings.Join(labels, ", ")
}

// GroupTally is how far one group is.
type GroupTally struct {
	Name string
	Have []spiffeid.ID // distinct principals counted, in review order
	Need int
}

// Met reports whether the group has its count.
func (g GroupTally) Met() bool { return len(g.Have) >= g.Need }

// Ignored is a review that counted for nothing, and why.
type Ignored struct {
	Review Review
	Why    string
}

// Outcome is the evaluation of a request: its state and why, how far each
// group is, and which reviews did not count.
type Outcome struct {
	State   State
	Why     string
	Groups  []GroupTally
	Ignored []Ignored
}

// Missing returns the groups still short of their count.
func (o *Outcome) Missing() []GroupTally {
	var out []GroupTally
	for _, g := range o.Groups {
		if !g.Met() {
			out = append(out, g)
		}
	}
	return out
}

// Evaluate decides a request under rule, given its reviews in the order
// they were made, at now. In order:
//
//  1. a final request stays as it is;
//  2. asking for more than max_ttl is denied;
//  3. if any deny_if condition holds, it is denied;
//  4. if the rule auto-approves and its condition holds, it is approved;
//  5. reviews are taken in order; one made after PendingUntil or from an
//     ineligible reviewer counts for nothing (it is listed in Ignored), a
//     denial from an eligible reviewer ends the request, and an approval
//     counts its root principal once in every group naming it;
//  6. as soon as every group has its count it is approved, so a review
//     after the deciding approval changes nothing;
//  7. otherwise it is pending, or expired if now is past PendingUntil.
//
// A group counts principals, not reviews: a principal that is in two
// groups counts in both (groups are conditions that must all hold, not
// seats to fill), so "two people and one of security" is met by bob and a
// security person. Ask for three people to need three.
func Evaluate(rule *Rule, r *Request, reviews []Review, now time.Time) Outcome {
	out := Outcome{State: r.State, Why: r.Outcome}
	out.Groups = make([]GroupTally, len(rule.Require))
	for i, g := range rule.Require {
		out.Groups[i] = GroupTally{Name: g.label(i), Need: g.Count}
	}
	if r.State.Final() {
		return out
	}
	if r.TTL > rule.MaxTTL {
		return out.end(StateDenied, fmt.Sprintf("the access asked for (%s) is longer than rule %s's max_ttl %s", formatDuration(r.TTL), identity.Quote(rule.Name), formatDuration(rule.MaxTTL)))
	}
	for i := range rule.DenyIf {
		if ok, why := rule.DenyIf[i].Holds(r, r.CreatedAt); ok {
			return out.end(StateDenied, fmt.Sprintf("rule %s denies it: %s", identity.Quote(rule.Name), why))
		}
	}
	if rule.AutoApprove != nil {
		if ok, why := rule.AutoApprove.Holds(r, r.CreatedAt); ok {
			return out.end(StateApproved, fmt.Sprintf("rule %s approves it automatically: %s", identity.Quote(rule.Name), why))
		}
		// Select skips an auto-approving rule whose condition fails; a
		// request still under one has nobody who could approve it.
		return out.end(StateDenied, fmt.Sprintf("rule %s approves only automatically, and its conditions do not hold", identity.Quote(rule.Name)))
	}
	for _, rv := range reviews {
		if !rv.At.Before(r.PendingUntil) {
			out.Ignored = append(out.Ignored, Ignored{Review: rv, Why: "made at " + formatTime(rv.At) + ", after the request expired at " + formatTime(r.PendingUntil)})
			continue
		}
		e, err := Eligible(rule, r, rv.Chain)
		if err != nil {
			out.Ignored = append(out.Ignored, Ignored{Review: rv, Why: err.Error()})
			continue
		}
		switch rv.Verdict {
		case Deny:
			return out.end(StateDenied, fmt.Sprintf("denied by %s: %s", describeChain(rv.Chain), boundReason(rv.Reason)))
		case Approve:
			for _, gi := range e.Groups {
				g := &out.Groups[gi]
				if !containsID(g.Have, e.Principal) {
					g.Have = append(g.Have, e.Principal)
				}
			}
			if len(out.Missing()) == 0 {
				return out.end(StateApproved, out.tally())
			}
		default:
			out.Ignored = append(out.Ignored, Ignored{Review: rv, Why: identity.Quote(string(rv.Verdict)) + " is not a verdict; use approve or deny"})
		}
	}
	if !now.Before(r.PendingUntil) {
		return out.end(StateExpired, "no decision before "+formatTime(r.PendingUntil))
	}
	out.State = StatePending
	missing := out.Missing()
	names := make([]string, len(missing))
	for i, g := range missing {
		names[i] = fmt.Sprintf("%s needs %d more", g.Name, g.Need-len(g.Have))
	}
	out.Why = "waiting: " + strings.Join(names, ", ")
	return out
}

func (o *Outcome) tally() string {
	names := make([]string, len(o.Groups))
	for i, g := range o.Groups {
		names[i] = fmt.Sprintf("%s %d of %d", g.Name, len(g.Have), g.Need)
	}
	return "every group approved: " + strings.Join(names, ", ")
}

func (o Outcome) end(s State, why string) Outcome {
	o.State, o.Why = s, why
	return o
}

// describeChain names a reviewer and whom it acts for.
func describeChain(chain []spiffeid.ID) string {
	s := identity.Quote(chain[0].String())
	if len(chain) > 1 {
		s += " for " + identity.Quote(chain[len(chain)-1].String())
	}
	return s
}

// boundReason bounds a reviewer's reason in an outcome; the full text stays
// on the review.
func boundReason(s string) string {
	if s == "" {
		return "no reason given"
	}
	return identity.Quote(s)
}
