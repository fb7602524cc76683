package authz

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"writ.dev/writ/identity"
	"writ.dev/writ/task"
)

// changeGen draws a small world where many tasks share recipients,
// patterns and buckets, so that the order of entries within a bucket and
// which task a denial names are exercised.
type changeGen struct{ r *rand.Rand }

var changeIDs = []string{
	"spiffe://td/ns/a/sa/0", "spiffe://td/ns/a/sa/1", "spiffe://td/ns/b/sa/0",
	"spiffe://td/agent/bot0", "spiffe://td/agent/bot1",
	"spiffe://td/person/example.com/ann", "spiffe://td/person/example.com/bob",
}

var changePatterns = append(slices.Clone(changeIDs),
	"spiffe://td/ns/a/sa/*", "spiffe://td/agent/*", "spiffe://td/ns/**", "spiffe://td/**", "spiffe://td/person/example.com/*")

var (
	changeActions   = []string{"read", "write", "*"}
	changeResources = []string{"db/x", "db/y", "db/*", "hr/**", "**"}
	changeNames     = []string{"db/x", "db/y", "hr/pay", "hr/a/b"}
)

func (g *changeGen) pick(ss []string) string { return ss[g.r.IntN(len(ss))] }

func (g *changeGen) when(now time.Time) time.Time {
	return now.Add(time.Duration(g.r.IntN(240)-120) * time.Minute)
}

func (g *changeGen) grants(t *testing.T, now time.Time) []task.Grant {
	var gs []task.Grant
	for range g.r.IntN(4) {
		gr := task.Grant{Actions: []string{g.pick(changeActions)}, Watched: g.r.IntN(4) == 0}
		for range 1 + g.r.IntN(2) {
			gr.Resources = append(gr.Resources, res(t, g.pick(changeResources)))
		}
		for range 1 + g.r.IntN(3) {
			gr.To = append(gr.To, pat(t, g.pick(changePatterns)))
		}
		if g.r.IntN(3) == 0 {
			gr.Actions = append(gr.Actions, g.pick(changeActions))
		}
		if g.r.IntN(4) == 0 {
			gr.ExpiresAt = g.when(now)
		}
		gs = append(gs, gr)
	}
	return gs
}

func (g *changeGen) state(tk *task.Task, now time.Time) {
	tk.State, tk.ClosedAt = task.StateOpen, time.Time{}
	switch g.r.IntN(5) {
	case 0:
		tk.State, tk.ClosedAt = task.StateClosed, g.when(now)
	case 1:
		tk.State, tk.ClosedAt = task.StateExpired, tk.Deadline
	}
}

func (g *changeGen) task(t *testing.T, now time.Time) task.Task {
	tk := task.Task{ID: fmt.Sprintf("T-%04d", g.r.IntN(10000)), NotBefore: g.when(now), Deadline: g.when(now).Add(time.Hour)}
	tk.Grants = g.grants(t, now)
	g.state(&tk, now)
	return tk
}

func (g *changeGen) locks(tasks []task.Task) []Lock {
	var ls []Lock
	for i := range g.r.IntN(4) {
		id := fmt.Sprintf("L-%d", i)
		switch n := g.r.IntN(4); {
		case n == 0 && len(tasks) > 0:
			ls = append(ls, Lock{Kind: identity.LockTask, Value: tasks[g.r.IntN(len(tasks))].ID, ID: id, Reason: "stop", Watched: g.r.IntN(2) == 0})
		case n == 1:
			ls = append(ls, Lock{Kind: identity.LockSPIFFEID, Value: g.pick(changeIDs), ID: id, Reason: "incident"})
		case n == 2:
			ls = append(ls, Lock{Kind: identity.LockIDPrefix, Value: "spiffe://td/agent", ID: id, Reason: "agents"})
		}
	}
	return ls
}

func (g *changeGen) standing(t *testing.T) []task.StandingGrant {
	var ss []task.StandingGrant
	for i := range g.r.IntN(3) {
		ss = append(ss, task.StandingGrant{ID: fmt.Sprintf("S-%d", i), Subject: pat(t, g.pick(changePatterns[:3])),
			Actions: []string{g.pick(changeActions)}, Resources: []task.ResourcePattern{res(t, g.pick(changeResources))}})
	}
	return ss
}

func (g *changeGen) request(now time.Time) Request {
	chain := make([]string, 1+g.r.IntN(3))
	for i := range chain {
		chain[i] = g.pick(changeIDs)
	}
	req := Request{Chain: ids(chain...), Action: g.pick(changeActions[:2]), Resource: g.pick(changeNames)}
	if g.r.IntN(3) > 0 {
		req.Time = g.when(now)
	}
	return req
}

// sortedByID keeps the snapshot in ID order, as the store lists tasks.
func sortedByID(tasks []task.Task) []task.Task {
	slices.SortStableFunc(tasks, func(a, b task.Task) int { return strings.Compare(a.ID, b.ID) })
	return tasks
}

// change applies a random change to the world: tasks added, removed,
// replaced, closed or moved in time, locks and standing grants changed,
// the clock advanced. Tasks it does not change keep their grants' slice,
// as the server's decoder keeps unchanged tasks.
func (g *changeGen) change(t *testing.T, s Snapshot, now time.Time) (Snapshot, time.Time) {
	tasks := slices.Clone(s.Tasks)
	out := Snapshot{Tasks: tasks, Standing: s.Standing, Locks: s.Locks}
	for range 1 + g.r.IntN(3) {
		i := -1
		if len(tasks) > 0 {
			i = g.r.IntN(len(tasks))
		}
		switch n := g.r.IntN(12); {
		case n < 2 || i < 0:
			tasks = append(tasks, g.task(t, now))
		case n == 2:
			tasks = slices.Delete(tasks, i, i+1)
		case n == 3:
			tasks[i].Grants = g.grants(t, now)
		case n == 4:
			g.state(&tasks[i], now)
		case n == 5:
			tasks[i].Deadline = g.when(now)
		case n == 6:
			out.Locks = g.locks(tasks)
		case n == 7:
			out.Standing = g.standing(t)
		case n == 8:
			now = now.Add(time.Duration(g.r.IntN(90)) * time.Minute)
		case n == 9:
			// Same grants, another slice: counts as a change.
			tasks[i].Grants = slices.Clone(tasks[i].Grants)
		case n == 10 && g.r.IntN(4) == 0:
			// Out of order: Update must notice and build afresh.
			g.r.Shuffle(len(tasks), func(a, b int) { tasks[a], tasks[b] = tasks[b], tasks[a] })
			out.Tasks = tasks
			return out, now
		case n == 11 && len(tasks) > 0 && g.r.IntN(4) == 0:
			// A duplicate ID: Update must build afresh.
			tasks = append(tasks, tasks[i])
		}
	}
	out.Tasks = sortedByID(tasks)
	return out, now
}

// TestUpdateDecidesAsNewIndex applies random sequences of changes and
// checks that the updated index decides every request as an index built
// from scratch over the same snapshot, with the same reasons and
// coverage, and that the index it was updated from still decides as
// before.
func TestUpdateDecidesAsNewIndex(t *testing.T) {
	for seed := range uint64(40) {
		g := &changeGen{r: rand.New(rand.NewPCG(seed, 7))}
		now := t0
		var s Snapshot
		for range 20 {
			s.Tasks = append(s.Tasks, g.task(t, now))
		}
		s.Tasks = sortedByID(s.Tasks)
		ix := NewIndex(s, now)
		for step := range 60 {
			prev, prevSnap, prevNow := ix, s, now
			s, now = g.change(t, s, now)
			ix = ix.Update(s, now)
			fresh := NewIndex(s, now)
			for range 60 {
				req := g.request(now)
				if got, want := ix.Decide(req, nil), fresh.Decide(req, nil); !reflect.DeepEqual(got, want) {
					t.Fatalf("seed %d step %d: %v %s %s at %v:\nupdated: %+v\nfresh:   %+v", seed, step, req.Chain, req.Action, req.Resource, req.Time, got, want)
				}
			}
			req := g.request(prevNow)
			if got, want := prev.Decide(req, nil), NewIndex(prevSnap, prevNow).Decide(req, nil); !reflect.DeepEqual(got, want) {
				t.Fatalf("seed %d step %d: the index updated from changed: %+v, want %+v", seed, step, got, want)
			}
		}
	}
}

// TestUpdateReusesUnchangedTasks checks that an update after a change to
// one task shares the buckets no changed task touches.
func TestUpdateReusesUnchangedTasks(t *testing.T) {
	s, _ := scaleWorld(t, 200, 0)
	ix := NewIndex(s, t0)
	next := Snapshot{Tasks: slices.Clone(s.Tasks)}
	next.Tasks[7].Grants = slices.Clone(next.Tasks[7].Grants)
	up := ix.Update(next, t0)
	shared := 0
	for prefix, b := range up.buckets {
		if ix.buckets[prefix] == b {
			shared++
		}
	}
	if shared < len(ix.buckets)-10 {
		t.Fatalf("%d of %d buckets shared after changing one task; want all but its own", shared, len(ix.buckets))
	}
}
