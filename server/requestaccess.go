package server

import (
	"context"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/identity"
	"writ.dev/writ/store"
	"writ.dev/writ/task"
	"writ.dev/writ/task/review"
)

// requestViewer says which requests one caller may see. A request says who
// wants what, on which task, and why; it is shown only to those with a part
// in it: the requester and the person at the root of its chain, whoever
// may review it under its rule, the owner and members of its task, and
// local administrators. Anyone else is told the request does not exist, so
// that request IDs cannot be confirmed by asking.
//
// One viewer serves one call (or one batch of a watch): it reads the rules
// and each task at most once, and sees tasks and rules as they were then.
type requestViewer struct {
	s     *Server
	admin bool
	// chain is the caller first, then whom it acts for: its reviewer
	// eligibility is judged on the whole chain, the rest on the caller.
	chain []spiffeid.ID
	rules []review.Rule
	read  bool // rules read (or found missing)
	tasks map[string]*task.Task
}

// viewerFor returns the viewer for the caller of ctx, with the chain it
// acts as (nil: the caller alone).
func (s *Server) viewerFor(ctx context.Context, chain []spiffeid.ID) *requestViewer {
	c, _ := CallerFrom(ctx)
	v := &requestViewer{s: s, admin: c.Local != nil, chain: chain, tasks: map[string]*task.Task{}}
	if v.chain == nil && !c.ID.IsZero() {
		v.chain = []spiffeid.ID{c.ID}
	}
	return v
}

// may reports whether the viewer may see r.
func (v *requestViewer) may(ctx context.Context, r *review.Request) bool {
	if v.admin {
		return true
	}
	if len(v.chain) == 0 || len(r.Chain) == 0 {
		return false
	}
	me := v.chain[0]
	if me == r.Requester() {
		return true
	}
	if root := r.Chain[len(r.Chain)-1]; root == me && identity.KindOf(root) == identity.KindPerson {
		return true
	}
	if rule := v.rule(ctx, r.Rule); rule != nil {
		if _, err := review.Eligible(rule, r, v.chain); err == nil {
			return true
		}
	}
	t := v.task(ctx, r.Task)
	return t != nil && (t.Owner == me || isMemberOf(*t, me))
}

func (v *requestViewer) rule(ctx context.Context, name string) *review.Rule {
	if !v.read {
		// No rules applied, or none readable: nobody is a reviewer, and
		// the other ways to see a request still hold.
		v.rules, _, _ = v.s.reviewRules(ctx)
		v.read = true
	}
	return ruleNamed(v.rules, name)
}

func (v *requestViewer) task(ctx context.Context, id string) *task.Task {
	if t, ok := v.tasks[id]; ok {
		return t
	}
	var t *task.Task
	if rec, err := v.s.store.GetTask(ctx, id); err == nil {
		if got, err := taskFromRecord(rec); err == nil {
			t = &got
		}
	}
	v.tasks[id] = t
	return t
}

// requestNotFound is what a caller who may not see request id is told: the
// same as for a request that does not exist.
func requestNotFound(id string) error {
	return storeStatus(fmt.Errorf("request %q: %w", id, store.ErrNotFound))
}
