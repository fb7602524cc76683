package server

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/task"
)

// The decision benchmarks at scale run over one SQLite store holding
// benchHistory tasks that ended over a day ago (a server's history, which
// grows forever) and a growing number of live tasks: 1, then 1,000, then
// 15,000. Each task has three members (a person, an agent acting for them,
// a workload) and two grants.
const benchHistory = 15_000

var benchLiveSizes = []int{1, 1_000, 15_000}

// benchTask returns live task i, or history task i (closed two days
// before now) when ended.
func benchTask(b testing.TB, i int, ended bool, now time.Time) *task.Task {
	kind := "live"
	if ended {
		kind = "old"
	}
	person := fmt.Sprintf("spiffe://%s/person/example.com/%s-p%d", testTD, kind, i)
	agent := fmt.Sprintf("spiffe://%s/agent/%s-a%d", testTD, kind, i)
	workload := fmt.Sprintf("spiffe://%s/ns/%s-ns%d/sa/api", testTD, kind, i%500)
	members := []task.Member{}
	for _, m := range []string{agent, workload, person} {
		p, err := task.ParsePattern(m)
		if err != nil {
			b.Fatal(err)
		}
		members = append(members, task.Member{Pattern: p})
	}
	res := func(s string) []task.ResourcePattern {
		r, err := task.ParseResourcePattern(s)
		if err != nil {
			b.Fatal(err)
		}
		return []task.ResourcePattern{r}
	}
	t := &task.Task{ID: fmt.Sprintf("T-%s-%d", kind, i), Title: "bench", Reason: "bench",
		Owner: spiffeid.RequireFromString(person), Members: members, State: task.StateDraft,
		Grants: []task.Grant{
			{Actions: []string{"read"}, Resources: res(fmt.Sprintf("hr/team-%d/**", i)), To: []task.Pattern{members[2].Pattern, members[0].Pattern}},
			{Actions: []string{"deploy"}, Resources: res(fmt.Sprintf("k8s/prod/ns/%s-ns%d", kind, i%500)), To: []task.Pattern{members[1].Pattern}},
		}}
	opened := now
	if ended {
		opened = now.Add(-72 * time.Hour)
	}
	t.CreatedAt, t.Deadline = opened, opened.Add(24*time.Hour)
	if err := t.Open(opened); err != nil {
		b.Fatal(err)
	}
	if ended {
		if err := t.Close(opened.Add(time.Hour)); err != nil {
			b.Fatal(err)
		}
	}
	return t
}

// seedTasks stores tasks [from, to) straight into the store, with their
// events, from several writers so that commits are shared.
func seedTasks(b testing.TB, srv *Server, from, to int, ended bool) {
	b.Helper()
	ctx := context.Background()
	now := srv.now()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Go(func() {
			for i := from + w; i < to; i += 16 {
				t := benchTask(b, i, ended, now)
				ev, err := srv.event(ctx, "task.create", t.ID, taskSummary(t))
				if err == nil {
					var rec = must(taskRecord(t))
					_, err = srv.store.PutTask(ctx, rec, 0, ev)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	if err := srv.decisions.refresh(ctx, true); err != nil {
		b.Fatal(err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// scaleWorld starts a server over a store with benchHistory ended tasks
// and calls fn with it at each live size, adding live tasks in between.
func scaleWorld(b *testing.B, fn func(b *testing.B, srv *Server, live int)) {
	srv := startServer(b, testConfig(b))
	seedTasks(b, srv, 0, benchHistory, true)
	have := 0
	for _, live := range benchLiveSizes {
		seedTasks(b, srv, have, live, false)
		have = live
		b.Run(fmt.Sprintf("live=%d/history=%d", live, benchHistory), func(b *testing.B) { fn(b, srv, live) })
	}
}

// BenchmarkDecisionIndexRebuild measures what every store revision change
// costs a server: reading the tasks, standing grants, locks and agents
// from SQLite and building the decision index over them.
//
// It runs with nothing changed and after a change to one live task (its
// title, which gives the stored document a new revision), each with the
// index updated (what a server does) and built whole (as it did before
// authz.Index.Update), in the same run.
func BenchmarkDecisionIndexRebuild(b *testing.B) {
	scaleWorld(b, func(b *testing.B, srv *Server, live int) {
		ctx := context.Background()
		for _, change := range []string{"none", "one-task"} {
			for _, whole := range []bool{true, false} {
				name := "index=update"
				if whole {
					name = "index=whole"
				}
				b.Run("change="+change+"/"+name, func(b *testing.B) {
					srv.decisions.rebuildWhole.Store(whole)
					defer srv.decisions.rebuildWhole.Store(false)
					if err := srv.decisions.refresh(ctx, true); err != nil {
						b.Fatal(err)
					}
					b.ReportAllocs()
					i := 0
					for b.Loop() {
						if change == "one-task" {
							b.StopTimer()
							retitleTask(b, srv, fmt.Sprintf("T-live-%d", i%live), i)
							i++
							b.StartTimer()
						}
						if err := srv.decisions.refresh(ctx, true); err != nil {
							b.Fatal(err)
						}
					}
					snap := lockedSnapshot(b, srv)
					b.ReportMetric(float64(len(snap.Tasks)), "tasks-indexed")
				})
			}
		}
	})
}

// retitleTask changes the title of a stored task, straight in the store.
func retitleTask(b *testing.B, srv *Server, id string, n int) {
	ctx := context.Background()
	rec, err := srv.store.GetTask(ctx, id)
	if err != nil {
		b.Fatal(err)
	}
	t, err := taskFromRecord(rec)
	if err != nil {
		b.Fatal(err)
	}
	t.Title = fmt.Sprintf("bench %d", n)
	next := must(taskRecord(&t))
	ev, err := srv.event(ctx, "task.update", t.ID, taskSummary(&t))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := srv.store.PutTask(ctx, next, rec.Revision, ev); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkCheckGRPCTasks measures a decision through the admin socket (an
// agent acting for a person, allowed by its task) at each live size, with
// the decision events recorded in the background.
func BenchmarkCheckGRPCTasks(b *testing.B) {
	scaleWorld(b, func(b *testing.B, srv *Server, live int) {
		cc := adminConn(b, srv)
		dc := writv1.NewDecisionServiceClient(cc)
		ctx := context.Background()
		k := live / 2
		req := &writv1.CheckRequest{Action: "read", Resource: fmt.Sprintf("hr/team-%d/salaries", k),
			Chain: []string{fmt.Sprintf("spiffe://%s/agent/live-a%d", testTD, k), fmt.Sprintf("spiffe://%s/person/example.com/live-p%d", testTD, k)}}
		b.SetParallelism(16)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r, err := dc.Check(ctx, req)
				if err != nil || !r.GetAllow() {
					b.Errorf("check: %v %v", r, err)
					return
				}
			}
		})
		reportRate(b, "decisions/s")
	})
}
