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
// An open task's deadline is brought in to the request's TTL from now, so
// the access lasts what the rule allows from approval on. It is
// idempotent: a task already open, or grants the requester already holds
// exactly, change nothing, so finishing a request twice grants once.
func (s *Server) requestEffect(ctx context.Context, r *review.Request) (string, error) {
	ts := &taskService{s: s}
	var change taskChange
	typ := audit.EventTaskOpen
	switch r.Kind {
	case review.KindOpen:
		change = func(t *task.Task, now time.Time) (any, error) {
			if t.State == task.StateOpen {
				return nil, errInEffect
			}
			if until := now.Add(r.TTL); t.Deadline.After(until) {
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
		change = func(t *task.Task, _ time.Time) (any, error) {
			if t.State != task.StateOpen {
				return nil, status.Errorf(codes.FailedPrecondition, "task %s is %s: grants are added by request only to an open task", t.ID, t.State)
			}
			member, err := task.ParsePattern(r.Requester().String())
			if err != nil {
				return nil, status.Error(codes.Internal, err.Error())
			}
			first := len(t.Grants)
			var added []grantDoc
			for _, a := range r.Asks {
				g := task.Grant{Actions: []string{a.Action}, Resources: []task.ResourcePattern{a.Resource}, To: []task.Pattern{member}}
				if slices.ContainsFunc(t.Grants[:first], func(have task.Grant) bool { return sameGrant(have, g) }) {
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
			return map[string]any{"member": member.String(), "grants": added, "request": r.ID}, nil
		}
	default:
		return "", status.Errorf(codes.Internal, "request %s has kind %q", r.ID, r.Kind)
	}
	dual, err := s.dualControlFor(ctx, r)
	if err != nil {
		return "", err
	}
	if dual != nil {
		change = withDualControl(change, dual)
	}
	t, err := ts.update(ctx, r.Task, 0, typ, change)
	if errors.Is(err, errInEffect) {
		return fmt.Sprintf("already in effect on task %s", r.Task), nil
	}
	if err != nil {
		return "", err
	}
	if r.Kind == review.KindOpen {
		return fmt.Sprintf("task %s opened until %s", t.GetId(), time.Unix(t.GetDeadline(), 0).UTC().Format(time.RFC3339)), nil
	}
	asks := make([]string, len(r.Asks))
	for i, a := range r.Asks {
		asks[i] = a.String()
	}
	return fmt.Sprintf("%s joined task %s with %v", r.Requester(), t.GetId(), asks), nil
}

// sameGrant reports whether two grants name the same actions, resources
// and recipients, in order.
func sameGrant(a, b task.Grant) bool {
	return slices.Equal(a.Actions, b.Actions) &&
		slices.EqualFunc(a.Resources, b.Resources, func(x, y task.ResourcePattern) bool { return x.String() == y.String() }) &&
		slices.EqualFunc(a.To, b.To, func(x, y task.Pattern) bool { return x.String() == y.String() })
}
