package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"writ.dev/writ/audit"
	"writ.dev/writ/task"
	"writ.dev/writ/task/review"
)

// applyApproved makes an approved request's effect real through the task
// operations, then records what happened on the request. The approval is
// committed first, so two reviewers racing to the last approval make the
// effect once: only one of them wins the request's compare-and-set. An
// effect the task refuses (a guardrail, a task that ended) leaves the
// request approved with the refusal as its effect, in the audit log too.
func (s *Server) applyApproved(ctx context.Context, sr storedRequest) storedRequest {
	r := sr.r
	effect, err := s.requestEffect(ctx, r)
	if err != nil {
		effect = "not applied: " + status.Convert(err).Message()
	}
	ev, evErr := s.event(ctx, audit.EventRequestEffect, r.ID, map[string]any{"task": r.Task, "kind": r.Kind, "effect": effect, "applied": err == nil})
	if evErr != nil {
		s.log.Error("recording a request's effect", "id", r.ID, "err", evErr)
		return sr
	}
	rec, recErr := requestRecord(r, effect)
	if recErr != nil {
		return sr
	}
	put, putErr := s.store.PutRequest(ctx, rec, sr.revision, nil, ev)
	if putErr != nil {
		s.log.Error("recording a request's effect", "id", r.ID, "effect", effect, "err", putErr)
		sr.effect = effect
		return sr
	}
	s.log.Info("access request applied", "id", r.ID, "task", r.Task, "effect", effect)
	return storedRequest{r: r, effect: effect, revision: put.Revision}
}

// errInEffect stops a task change that an approved request already made.
var errInEffect = errors.New("already in effect")

// requestEffect opens the task or adds the requester with the asked grants.
// An open task's deadline is brought in to the request's TTL from now, and
// a joined grant expires the request's TTL after approval, so the access
// lasts what the rule allows from approval on. It is
// idempotent: a task already open, or grants the requester already holds
// exactly, change nothing, so finishing a request twice grants once.
func (s *Server) requestEffect(ctx context.Context, r *review.Request) (string, error) {
	ts := &taskService{s: s}
	clock, err := s.accessClockFor(ctx, r)
	if err != nil {
		return "", err
	}
	var change taskChange
	var joinedUntil time.Time
	typ := audit.EventTaskOpen
	switch r.Kind {
	case review.KindOpen:
		change = func(t *task.Task, now time.Time) (any, error) {
			if t.State == task.StateOpen {
				return nil, errInEffect
			}
			until := now.Add(r.TTL)
			if clock.firstUse {
				// The task stays open as long as its access could
				// last: a first use just before the grants lapse
				// unused, then the access time.
				lapse := clock.lapse(r, now)
				until = lapse.Add(r.TTL)
				for i := range t.Grants {
					g := &t.Grants[i]
					g.Clock, g.AccessTTL, g.FirstUsedAt = r.ID, r.TTL, time.Time{}
					if g.ExpiresAt.IsZero() || g.ExpiresAt.After(lapse) {
						g.ExpiresAt = lapse
					}
				}
			}
			if t.Deadline.After(until) {
				t.Deadline = until
			}
			details, err := ts.openTask(t, now)
			if err != nil {
				return nil, err
			}
			return map[string]any{"deadline": t.Deadline, "request": r.ID, "details": details}, nil
		}
	case review.KindJoin:
		typ = audit.EventTaskGrantAdd
		change = func(t *task.Task, now time.Time) (any, error) {
			if t.State != task.StateOpen {
				return nil, status.Errorf(codes.FailedPrecondition, "task %s is %s: grants are added by request only to an open task", t.ID, t.State)
			}
			member, err := task.ParsePattern(r.Requester().String())
			if err != nil {
				return nil, status.Error(codes.Internal, err.Error())
			}
			expires, err := joinExpiry(r, now, clock)
			if err != nil {
				return nil, err
			}
			joinedUntil = expires
			first := len(t.Grants)
			if clock.firstUse && slices.ContainsFunc(t.Grants, func(g task.Grant) bool { return g.Clock == r.ID }) {
				return nil, errInEffect
			}
			var added []grantDoc
			for _, a := range r.Asks {
				g := task.Grant{Actions: []string{a.Action}, Resources: []task.ResourcePattern{a.Resource}, To: []task.Pattern{member}, ExpiresAt: expires}
				if clock.firstUse {
					// A grant on its own clock is added beside one the
					// requester holds already, which keeps its expiry:
					// neither shortens the other.
					g.Clock, g.AccessTTL = r.ID, r.TTL
					if slices.ContainsFunc(t.Grants[:first], func(have task.Grant) bool { return sameGrant(have, g) && have.ExpiresAt.IsZero() }) {
						continue
					}
					t.Grants = append(t.Grants, g)
					added = append(added, grantToDoc(g))
					continue
				}
				if i := slices.IndexFunc(t.Grants[:first], func(have task.Grant) bool { return sameGrant(have, g) }); i >= 0 {
					// The requester holds this grant already: it counts
					// as long as the longer of the two, never shorter.
					have := &t.Grants[i]
					if have.ExpiresAt.IsZero() || !have.ExpiresAt.Before(expires) {
						continue
					}
					have.ExpiresAt = expires
					added = append(added, grantToDoc(*have))
					continue
				}
				t.Grants = append(t.Grants, g)
				added = append(added, grantToDoc(g))
			}
			if len(added) == 0 {
				return nil, errInEffect
			}
			if !isMemberOf(*t, r.Requester()) {
				t.Members = append(t.Members, task.Member{Pattern: member})
			}
			if err := s.validateTask(t); err != nil {
				return nil, status.Errorf(codes.FailedPrecondition, "the grants asked for do not fit task %s: %v", t.ID, err)
			}
			if err := s.guardGrants(t, t.Grants[first:]); err != nil {
				return nil, err
			}
			return map[string]any{"member": member.String(), "grants": added, "expires_at": expires, "request": r.ID}, nil
		}
	default:
		return "", status.Errorf(codes.Internal, "request %s has kind %q", r.ID, r.Kind)
	}
	dual, err := s.dualControlFor(ctx, r)
	if err != nil {
		return "", err
	}
	if dual != nil {
		change = withDualControl(change, dual, r.Kind == review.KindOpen)
	}
	t, err := ts.update(ctx, r.Task, 0, typ, change)
	if errors.Is(err, errInEffect) {
		return fmt.Sprintf("already in effect on task %s", r.Task), nil
	}
	if err != nil {
		return "", err
	}
	if r.Kind == review.KindOpen {
		if clock.firstUse {
			return fmt.Sprintf("task %s opened; its grants last %s from their first use, and lapse unused at %s", t.GetId(),
				r.TTL, clock.lapse(r, s.now()).UTC().Format(time.RFC3339)), nil
		}
		return fmt.Sprintf("task %s opened until %s", t.GetId(), time.Unix(t.GetDeadline(), 0).UTC().Format(time.RFC3339)), nil
	}
	asks := make([]string, len(r.Asks))
	for i, a := range r.Asks {
		asks[i] = a.String()
	}
	if clock.firstUse {
		return fmt.Sprintf("%s joined task %s with %v for %s from first use; unused, they lapse at %s", r.Requester(), t.GetId(), asks,
			r.TTL, joinedUntil.UTC().Format(time.RFC3339)), nil
	}
	return fmt.Sprintf("%s joined task %s with %v until %s", r.Requester(), t.GetId(), asks, joinedUntil.UTC().Format(time.RFC3339)), nil
}

// accessClock is when an approved request's access time starts.
type accessClock struct {
	firstUse bool
	// unused is how long after approval access on a first-use clock
	// lapses if nobody used it: the rule's pending_ttl.
	unused time.Duration
}

// lapse is when access on a first-use clock, approved for r, lapses
// unused: counted from approval, like an approval clock.
func (c accessClock) lapse(r *review.Request, now time.Time) time.Time {
	from := r.DecidedAt
	if from.IsZero() {
		from = now
	}
	return from.Add(c.unused)
}

// accessClockFor reads the clock of the rule that approved r. A rule
// removed since is refused later, by dualControlFor; until then, the
// approval clock is the one that never extends access.
func (s *Server) accessClockFor(ctx context.Context, r *review.Request) (accessClock, error) {
	rules, _, err := s.reviewRules(ctx)
	if err != nil {
		return accessClock{}, err
	}
	rule := ruleNamed(rules, r.Rule)
	if rule == nil || rule.AccessClock != review.ClockFirstUse {
		return accessClock{}, nil
	}
	return accessClock{firstUse: true, unused: rule.PendingTTL}, nil
}

// joinExpiry is when the grants a join request adds end: its access time
// counted from approval, not from when the effect is applied, so a server
// that finishes an approval late does not lengthen it. The rule's max_ttl
// bounds the access time at submission and again at approval. An access
// time already over by now is refused rather than added dead.
func joinExpiry(r *review.Request, now time.Time, clock accessClock) (time.Time, error) {
	if r.TTL <= 0 {
		return time.Time{}, status.Errorf(codes.Internal, "request %s has no access time; the requester asks again", r.ID)
	}
	from := r.DecidedAt
	if from.IsZero() {
		from = now
	}
	expires := from.Add(r.TTL)
	if clock.firstUse {
		expires = clock.lapse(r, now)
	}
	if !now.Before(expires) {
		return time.Time{}, status.Errorf(codes.FailedPrecondition, "the access approved at %s for %s ended at %s, before it could be applied; the requester asks again",
			from.UTC().Format(time.RFC3339), r.TTL, expires.UTC().Format(time.RFC3339))
	}
	return expires, nil
}

// sameGrant reports whether two grants name the same actions, resources
// and recipients, in order, whatever their expiry.
func sameGrant(a, b task.Grant) bool {
	return slices.Equal(a.Actions, b.Actions) &&
		slices.EqualFunc(a.Resources, b.Resources, func(x, y task.ResourcePattern) bool { return x.String() == y.String() }) &&
		slices.EqualFunc(a.To, b.To, func(x, y task.Pattern) bool { return x.String() == y.String() })
}
