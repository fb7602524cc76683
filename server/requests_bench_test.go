package server

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
	"writ.dev/writ/task"
	"writ.dev/writ/task/review"
)

// benchReviewRules: opening a task that writes db/one/** needs one person;
// one that writes db/prod/** needs two people and one of security (sam),
// the scenario of access requests in the README.
const benchReviewRules = `rules:
  - name: one-approver
    match: {actions: [write], resources: [db/one/**]}
    require:
      - {name: people, from: ["spiffe://` + testTD + `/person/**"], count: 1}
    max_ttl: 4h
  - name: prod-write
    match: {actions: [write], resources: [db/prod/**]}
    require:
      - {name: people, from: ["spiffe://` + testTD + `/person/**"], count: 2}
      - {name: security, from: ["` + sam + `"], count: 1}
    max_ttl: 4h
    pending_ttl: 24h
`

// requestBenchWorld is a server over SQLite with benchReviewRules applied,
// an agent that asks and three people who review, each over its own mTLS
// connection with its own SVID, as in production.
type requestBenchWorld struct {
	srv                 *Server
	agent               actor
	bob, alice, samUser actor
}

func newRequestBenchWorld(b *testing.B) *requestBenchWorld {
	b.Helper()
	cfg := testConfig(b)
	// Every request and review takes from the caller's bucket; the
	// benchmark measures the path, not the limit.
	cfg.Limits.RequestsPerIdentity = RateLimit{Rate: 1e6, Burst: 1e6}
	srv := startServer(b, cfg)
	if _, err := writv1.NewReviewServiceClient(adminConn(b, srv)).ApplyRules(context.Background(),
		&writv1.ApplyReviewRulesRequest{Text: benchReviewRules}); err != nil {
		b.Fatal(err)
	}
	return &requestBenchWorld{srv: srv,
		agent:   actorConn(svidConn(b, srv, mintSVID(b, srv, stageBot))),
		bob:     actorConn(svidConn(b, srv, signIn(b, srv, bob))),
		alice:   actorConn(svidConn(b, srv, signIn(b, srv, alice))),
		samUser: actorConn(svidConn(b, srv, signIn(b, srv, sam))),
	}
}

// seedDrafts stores n drafted tasks, each granting write on
// db/<area>/<prefix>-i, straight into the store with their events, and
// returns their ids.
func seedDrafts(b *testing.B, srv *Server, area, prefix string, n int) []string {
	b.Helper()
	ctx := context.Background()
	now := srv.now()
	owner, err := task.ParsePattern(ceo)
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]string, n)
	for i := range n {
		res, err := task.ParseResourcePattern(fmt.Sprintf("db/%s/%s-%d/**", area, prefix, i))
		if err != nil {
			b.Fatal(err)
		}
		t := &task.Task{ID: fmt.Sprintf("T-%s-%d", prefix, i), Title: "bench", Reason: "bench",
			Owner: spiffeid.RequireFromString(ceo), Members: []task.Member{{Pattern: owner}}, State: task.StateDraft,
			Grants:    []task.Grant{{Actions: []string{"write"}, Resources: []task.ResourcePattern{res}, To: []task.Pattern{owner}}},
			CreatedAt: now, Deadline: now.Add(24 * time.Hour)}
		ev, err := srv.event(ctx, audit.EventTaskCreate, t.ID, taskSummary(t))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := srv.store.PutTask(ctx, must(taskRecord(t)), 0, ev); err != nil {
			b.Fatal(err)
		}
		ids[i] = t.ID
	}
	if err := srv.decisions.refresh(ctx, true); err != nil {
		b.Fatal(err)
	}
	return ids
}

// openByRequest is one full request: the agent asks to open the drafted
// task, the approvers approve in turn, and the last approval opens it.
func (w *requestBenchWorld) openByRequest(ctx context.Context, id string, approvers []actor) error {
	created, err := w.agent.requests.CreateRequest(ctx, &writv1.CreateAccessRequest{Kind: "open", Task: id, Reason: "ship the fix"})
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	var last *writv1.AccessRequestDetail
	for _, a := range approvers {
		if last, err = a.reviews.Approve(ctx, &writv1.ReviewAccessRequest{Id: created.GetRequest().GetId(), Reason: "ok"}); err != nil {
			return fmt.Errorf("approve: %w", err)
		}
	}
	if q := last.GetRequest(); q.GetState() != "approved" || !strings.Contains(q.GetEffect(), " opened until ") {
		return fmt.Errorf("request %s after its approvals: state %s, effect %q", q.GetId(), q.GetState(), q.GetEffect())
	}
	return nil
}

// BenchmarkRequestOpenApprove measures requests through the whole path
// over the network listener with real SVIDs: create (an agent asks to open
// a drafted task), approve (one person, or two people and security), and
// the task opens. Sequential sub-benchmarks give the latency of one whole
// request; parallel ones (16 requests in flight) the throughput. The
// drafted tasks are stored before the timer starts.
func BenchmarkRequestOpenApprove(b *testing.B) {
	w := newRequestBenchWorld(b)
	cases := []struct {
		name, area string
		approvers  []actor
	}{
		{"rule=1-approver", "one", []actor{w.bob}},
		{"rule=2-people+1-security", "prod", []actor{w.bob, w.alice, w.samUser}},
	}
	round := 0
	for _, c := range cases {
		b.Run(c.name+"/sequential", func(b *testing.B) {
			round++
			ids := seedDrafts(b, w.srv, c.area, fmt.Sprintf("s%d", round), b.N)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := w.openByRequest(ctx, ids[i], c.approvers); err != nil {
					b.Fatal(err)
				}
			}
			reportRate(b, "requests/s")
		})
		b.Run(c.name+"/parallel", func(b *testing.B) {
			round++
			ids := seedDrafts(b, w.srv, c.area, fmt.Sprintf("p%d", round), b.N)
			ctx := context.Background()
			var next atomic.Int64
			b.SetParallelism(8) // 16 in flight on 2 cores
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := w.openByRequest(ctx, ids[next.Add(1)-1], c.approvers); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportRate(b, "requests/s")
		})
	}
}

// seedPendingRequests stores n pending requests, each an agent asking to
// join the open task taskID with a prod write, under the rule prod-write,
// straight into the store with their create events: what n unanswered
// requests leave behind. Records are built as CreateRequest builds them.
func seedPendingRequests(b *testing.B, srv *Server, taskID string, n int) {
	b.Helper()
	ctx := context.Background()
	rules, _, err := srv.reviewRules(ctx)
	if err != nil {
		b.Fatal(err)
	}
	rule := ruleNamed(rules, "prod-write")
	if rule == nil {
		b.Fatal("no rule prod-write")
	}
	now := srv.now()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < n; i += 16 {
				if err := seedPending(ctx, srv, rule, taskID, i, now); err != nil {
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
	if got, err := srv.store.ListRequests(ctx, "pending"); err != nil || len(got) != n {
		b.Fatalf("pending after seeding: %d, %v; want %d", len(got), err, n)
	}
	// The records read back as the API reads them, still pending.
	if sr, err := srv.readRequest(ctx, "R-pending-0"); err != nil || sr.r.State != review.StatePending {
		b.Fatalf("a seeded request reads back as %v, %v", sr.r, err)
	}
}

func seedPending(ctx context.Context, srv *Server, rule *review.Rule, taskID string, i int, now time.Time) error {
	ask, err := review.ParseAsk("asks[0]", fmt.Sprintf("write:db/prod/pending-%d", i))
	if err != nil {
		return err
	}
	r := &review.Request{ID: fmt.Sprintf("R-pending-%d", i), Kind: review.KindJoin, Task: taskID,
		Chain:  []spiffeid.ID{spiffeid.RequireFromString(fmt.Sprintf("spiffe://%s/agent/pending-%d", testTD, i))},
		Reason: "bench", Asks: []review.Ask{ask}}
	if err := r.Validate(srv.td); err != nil {
		return err
	}
	if err := r.Submit(now, rule); err != nil {
		return err
	}
	ev, err := srv.event(ctx, audit.EventRequestCreate, r.ID, requestSummary(r))
	if err != nil {
		return err
	}
	rec, err := requestRecord(r, "")
	if err != nil {
		return err
	}
	_, err = srv.store.PutRequest(ctx, rec, 0, nil, ev)
	return err
}

// BenchmarkCheckGRPCPending is BenchmarkCheckGRPC (1,000 open tasks, an
// agent acting for a person) with no pending access requests, then on the
// same server with 10,000 pending: a decision must not get slower because
// requests wait for review.
func BenchmarkCheckGRPCPending(b *testing.B) {
	srv := startServer(b, testConfig(b))
	cc := adminConn(b, srv)
	ids := seedCheckTasks(b, writv1.NewTaskServiceClient(cc))
	if _, err := writv1.NewReviewServiceClient(cc).ApplyRules(context.Background(),
		&writv1.ApplyReviewRulesRequest{Text: benchReviewRules}); err != nil {
		b.Fatal(err)
	}
	have := 0
	for _, pending := range []int{0, 10_000} {
		if pending > have {
			seedPendingRequests(b, srv, ids[0], pending)
			have = pending
		}
		b.Run(fmt.Sprintf("pending=%d", pending), func(b *testing.B) { benchCheck(b, writv1.NewDecisionServiceClient(cc)) })
	}
}
