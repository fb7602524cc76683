package authz

import (
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/identity"
	"writ.dev/writ/task"
)

// Decide answers req: allowed only if the chain is no longer than the
// limit, no lock covers any identity of it, every identity is covered as
// the package documentation describes, no lock covers the covering task,
// and g (if not nil) does not forbid it.
func (ix *Index) Decide(req Request, g Guardrail) Decision {
	if d, bad := ix.checkRequest(req); bad {
		return d
	}
	at := req.Time
	if at.IsZero() {
		at = ix.now
	}
	for i, id := range req.Chain {
		if li := ix.lockOn(id); li >= 0 {
			l := ix.locks[li]
			return deny(i, "%s is locked by lock %s: %s", Link{id}, l.ID, l.Reason)
		}
	}
	var d Decision
	if onlyWorkloads(req.Chain) {
		d = ix.decideEach(req, at)
	} else {
		d = ix.decideOneTask(req, at)
	}
	if d.Allow && g != nil {
		if forbidden, why := g.Forbid(req); forbidden {
			return deny(-1, "guardrail: %s", why)
		}
	}
	return d
}

// checkRequest refuses requests that cannot be judged: an empty or too
// long chain, an unset identity, an ill-formed action or resource.
func (ix *Index) checkRequest(req Request) (Decision, bool) {
	switch {
	case len(req.Chain) == 0:
		return deny(-1, "the request has no chain; the caller's identity is required"), true
	case len(req.Chain) > ix.maxChain:
		return deny(ix.maxChain, "the chain has %d identities; at most %d are allowed (the caller and whom it acts for), so shorten the delegation", len(req.Chain), ix.maxChain), true
	}
	for i, id := range req.Chain {
		if id.IsZero() {
			return deny(i, "identity %d of the chain is empty", i), true
		}
	}
	if err := task.CheckAction(req.Action); err != nil {
		return deny(-1, "%v", err), true
	}
	if err := task.CheckResourceName(req.Resource); err != nil {
		return deny(-1, "%v", err), true
	}
	return Decision{}, false
}

func onlyWorkloads(chain []spiffeid.ID) bool {
	for _, id := range chain {
		if identity.KindOf(id) != identity.KindWorkload {
			return false
		}
	}
	return true
}

// scan is what the index holds for one identity of a request.
type scan struct {
	// live are the grants of tasks live at the request's time that give
	// the identity the action on the resource, in index order.
	live []grantRef
	// notLive says why the first task that would give it is not live.
	notLive string
	// standing is a standing grant covering the identity, or -1.
	standing int32
}

// scanLink gathers what covers id for action on resource at at, looking
// only at the buckets of id's own prefixes.
func (ix *Index) scanLink(id spiffeid.ID, action, resource string, at time.Time) scan {
	sc := scan{standing: -1}
	act := ix.actionID(action)
	workload := identity.KindOf(id) == identity.KindWorkload
	d := idDepth(id)
	rk := newResKey(resource)
	ix.eachBucket(id, func(b *bucket, whole bool) {
		for i := range b.grants {
			e := &b.grants[i]
			if (e.action == act || e.action == anyAction) && e.res.mayMatch(rk) && e.to.matches(id, d, whole) && e.grant.AllowsResource(resource) {
				ix.noteGrant(&sc, e, at)
			}
		}
		if workload && sc.standing < 0 {
			sc.standing = ix.standingIn(b, id, d, whole, act, rk, resource)
		}
	})
	return sc
}

// noteGrant records a grant that gives the identity what it asks: among
// the live ones if its task is live at at, otherwise as the reason.
func (ix *Index) noteGrant(sc *scan, e *entry, at time.Time) {
	ref := grantRef{task: e.task, grant: e.index}
	why := ix.deadWhy[e.task]
	if now := unixNano(at); why == "" {
		switch {
		case now < e.notBefore || now >= e.deadline:
			why = ix.tasks[e.task].NotLiveReason(at)
		case e.grant.AwaitsFirstUse() && ix.firstUse != nil:
			if started, ok := ix.firstUse(e.grant.Clock); ok {
				if until := started.Add(e.grant.AccessTTL); now >= unixNano(until) {
					why = e.grant.ExpiredAtReason(ix.tasks[e.task].ID, int(e.index), until)
				}
			} else if now >= e.expires {
				why = e.grant.ExpiredReason(ix.tasks[e.task].ID, int(e.index))
			}
		case now >= e.expires:
			why = e.grant.ExpiredReason(ix.tasks[e.task].ID, int(e.index))
		}
	}
	if why == "" && e.grant.Watched && ix.watchedWhy[e.task] != "" {
		why = e.grant.UnwatchedReason(ix.tasks[e.task].ID, int(e.index), ix.watchedWhy[e.task])
	}
	switch {
	case why != "" && sc.notLive == "":
		sc.notLive = why
	case why == "" && !slices.Contains(sc.live, ref):
		sc.live = append(sc.live, ref)
	}
}

// standingIn returns the first standing grant in b covering workload id,
// or -1.
func (ix *Index) standingIn(b *bucket, id spiffeid.ID, d int, whole bool, act uint32, rk resKey, resource string) int32 {
	for i := range b.standing {
		e := &b.standing[i]
		if (e.action == act || e.action == anyAction) && e.res.mayMatch(rk) && e.subject.matches(id, d, whole) && ix.standing[e.index].AllowsResource(resource) {
			return e.index
		}
	}
	return -1
}

// decideEach covers each workload of an all-workload chain on its own, by a
// live task's grant or, failing that, a standing grant.
func (ix *Index) decideEach(req Request, at time.Time) Decision {
	covered := make([]Coverage, len(req.Chain))
	for i, id := range req.Chain {
		sc := ix.scanLink(id, req.Action, req.Resource, at)
		switch {
		case len(sc.live) > 0:
			ref := sc.live[0]
			covered[i] = Coverage{Index: i, Link: Link{id}, TaskID: ix.tasks[ref.task].ID, Grant: int(ref.grant), Clock: ix.unstarted(ref.task, ref.grant)}
		case sc.standing >= 0:
			covered[i] = Coverage{Index: i, Link: Link{id}, Standing: true, StandingID: ix.standing[sc.standing].ID}
		default:
			return deny(i, "%s", ix.noGrantReason(id, req, sc, false))
		}
	}
	return allow(covered)
}

// decideOneTask covers a chain holding a person, agent or node: one live
// task must grant the action on the resource to every identity of it.
func (ix *Index) decideOneTask(req Request, at time.Time) Decision {
	cands := make([][]grantRef, len(req.Chain))
	for i, id := range req.Chain {
		sc := ix.scanLink(id, req.Action, req.Resource, at)
		if len(sc.live) == 0 {
			return deny(i, "%s", ix.noGrantReason(id, req, sc, true))
		}
		cands[i] = sc.live
	}
	best, bestCount := int32(-1), 0
	for _, ref := range cands[0] {
		if n := coveredBy(cands, ref.task); n > bestCount {
			best, bestCount = ref.task, n
		}
		if bestCount == len(cands) {
			return allow(ix.coverage(req.Chain, cands, best))
		}
	}
	return ix.denySplit(req, cands, best)
}

// coveredBy counts the links that have a candidate grant in task t.
func coveredBy(cands [][]grantRef, t int32) int {
	n := 0
	for _, refs := range cands {
		if grantIn(refs, t) >= 0 {
			n++
		}
	}
	return n
}

// grantIn returns the first grant of task t among refs, or -1.
func grantIn(refs []grantRef, t int32) int32 {
	for _, ref := range refs {
		if ref.task == t {
			return ref.grant
		}
	}
	return -1
}

func (ix *Index) coverage(chain []spiffeid.ID, cands [][]grantRef, t int32) []Coverage {
	covered := make([]Coverage, len(chain))
	for i, id := range chain {
		g := grantIn(cands[i], t)
		covered[i] = Coverage{Index: i, Link: Link{id}, TaskID: ix.tasks[t].ID, Grant: int(g), Clock: ix.unstarted(t, g)}
	}
	return covered
}

// unstarted returns the access clock of grant g of task t if the snapshot
// records no first use of it, or "".
func (ix *Index) unstarted(t, g int32) string {
	if gr := &ix.tasks[t].Grants[g]; gr.AwaitsFirstUse() {
		return gr.Clock
	}
	return ""
}

// denySplit explains a chain whose identities are each covered, but not by
// one task. best is the task covering the most of the chain among the
// caller's; the first identity it leaves out is named.
func (ix *Index) denySplit(req Request, cands [][]grantRef, best int32) Decision {
	i := 0
	for grantIn(cands[i], best) >= 0 {
		i++
	}
	return deny(i, "%s holds no grant for %s on %s in task %s, which covers %s; every identity in a chain with a person, agent or node must be covered by the same task",
		Link{req.Chain[i]}, req.Action, req.Resource, ix.tasks[best].ID, Link{req.Chain[0]})
}

// noGrantReason explains why id has no live grant: the task that would
// have allowed it and why it does not count, if there is one, and, when
// the chain needed a task (inTask), that a standing grant does not apply.
func (ix *Index) noGrantReason(id spiffeid.ID, req Request, sc scan, inTask bool) string {
	reason := fmt.Sprintf("%s holds no grant for %s on %s in any open task", Link{id}, req.Action, req.Resource)
	switch {
	case sc.notLive != "":
		return reason + "; " + sc.notLive
	case inTask && sc.standing >= 0:
		return fmt.Sprintf("%s; standing grant %s does not apply in a chain with a person, agent or node, which needs a task covering every identity",
			reason, ix.standing[sc.standing].ID)
	}
	return reason
}
