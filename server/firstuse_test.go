package server

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
)

// firstUseRules approve an agent's staging reads at once, for an hour
// counted from the first decision they allow; unused, they lapse two
// hours after approval.
const firstUseRules = `rules:
  - name: staging-read-first-use
    match: {actions: [read], resources: [db/staging/**], requester_kind: [agent]}
    auto_approve: {}
    max_ttl: 1h
    pending_ttl: 2h
    access_clock: first_use
`

// twoServersOneClock starts two servers sharing one store and one clock,
// which the test moves forward by skip. The store is SQLite, or the
// PostgreSQL database dsn when given.
func twoServersOneClock(t *testing.T, skip *atomic.Int64, dsn string) (a, b *Server) {
	t.Helper()
	cfgA, cfgB := testConfig(t), testConfig(t)
	if dsn != "" {
		cfgA.Store.Engine, cfgA.Store.DSN = "postgres", dsn
	}
	cfgB.Store = cfgA.Store
	now := func() time.Time { return time.Now().Add(time.Duration(skip.Load())) }
	start := func(cfg Config) *Server {
		srv, err := New(context.Background(), cfg, Options{Logger: quietLogger(), Version: "test", Now: now})
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Shutdown(context.Background()) })
		return srv
	}
	return start(cfgA), start(cfgB)
}

// TestAccessClockFirstUse: under access_clock: first_use an approved join
// does not spend its hour while unused; the first decision it allows, on
// server B, starts the hour, which server A then counts from too; only
// that first use is recorded (once, as request.first.use); and a grant
// never used lapses at approval plus pending_ttl.
func TestAccessClockFirstUse(t *testing.T) { testAccessClockFirstUse(t, "") }

// TestAccessClockFirstUsePostgres runs TestAccessClockFirstUse with the two
// servers sharing PostgreSQL.
func TestAccessClockFirstUsePostgres(t *testing.T) { testAccessClockFirstUse(t, freshPostgresDB(t)) }

func testAccessClockFirstUse(t *testing.T, dsn string) {
	var skip atomic.Int64
	a, b := twoServersOneClock(t, &skip, dsn)
	adminA, adminB := adminConn(t, a), adminConn(t, b)
	if _, err := writv1.NewReviewServiceClient(adminA).ApplyRules(t.Context(), &writv1.ApplyReviewRulesRequest{Text: firstUseRules}); err != nil {
		t.Fatal(err)
	}
	tasks := writv1.NewTaskServiceClient(adminA)
	work, err := tasks.CreateTask(t.Context(), &writv1.CreateTaskRequest{Task: &writv1.Task{Title: "reconcile", Reason: "scenario", Owner: ceo,
		Members: []string{ceo}, Grants: []*writv1.Grant{{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}}},
		Deadline: time.Now().Add(24 * time.Hour).Unix()}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tasks.OpenTask(t.Context(), &writv1.TaskTransitionRequest{Id: work.GetId()}); err != nil {
		t.Fatal(err)
	}
	agent := actorConn(svidConn(t, a, mintSVID(t, a, stageBot)))
	used, err := agent.join(t, work.GetId(), "nightly reads", "read:db/staging/orders")
	if err != nil || used.GetRequest().GetState() != "approved" || !strings.Contains(used.GetRequest().GetEffect(), "for 1h0m0s from first use") {
		t.Fatalf("join = %v, %v", used, err)
	}
	if _, err := agent.join(t, work.GetId(), "maybe later", "read:db/staging/users"); err != nil {
		t.Fatal(err)
	}
	decideA, decideB := writv1.NewDecisionServiceClient(adminA), writv1.NewDecisionServiceClient(adminB)
	rev, err := a.store.Revision(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "B sees the joined grants", func() bool { return b.decisions.rev.Load() >= rev })

	skip.Store(int64(90 * time.Minute)) // an approval clock would have ended 30 minutes ago
	if d := check(t, decideB, "read", "db/staging/orders", stageBot); !d.GetAllow() {
		t.Fatalf("the first use, 90 minutes after approval: %v", d)
	}
	eventually(t, 10*time.Second, "the store records the first use", func() bool {
		return countEvents(t, adminA, audit.EventRequestFirstUse) == 1
	})
	// A counts from B's first use once its index has it (its refresh,
	// 200 ms); until then it would count from a first use of its own.
	if rev, err = a.store.Revision(t.Context()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "A sees the first use", func() bool { return a.decisions.rev.Load() >= rev })
	skip.Store(int64(100 * time.Minute))
	if d := check(t, decideA, "read", "db/staging/orders", stageBot); !d.GetAllow() {
		t.Fatalf("A, after B's first use: %v", d)
	}
	skip.Store(int64(149 * time.Minute))
	for name, api := range map[string]writv1.DecisionServiceClient{"A": decideA, "B": decideB} {
		if d := check(t, api, "read", "db/staging/orders", stageBot); !d.GetAllow() {
			t.Fatalf("%s, 59 minutes after the first use: %v", name, d)
		}
	}
	skip.Store(int64(151 * time.Minute))
	for name, api := range map[string]writv1.DecisionServiceClient{"A": decideA, "B": decideB} {
		if d := check(t, api, "read", "db/staging/orders", stageBot); d.GetAllow() || !strings.Contains(d.GetReason(), "expired at") {
			t.Fatalf("%s, 61 minutes after the first use: %v", name, d)
		}
		if d := check(t, api, "read", "db/staging/users", stageBot); d.GetAllow() || !strings.Contains(d.GetReason(), "lapsed unused at") {
			t.Fatalf("%s, the grant never used, past pending_ttl: %v", name, d)
		}
	}
	if n := countEvents(t, adminB, audit.EventRequestFirstUse); n != 1 {
		t.Errorf("request.first.use events = %d, want 1: only the first use starts the clock", n)
	}
}

// TestFirstUseKeptOnce: two servers that each saw a first use of one
// clock both record it; the store keeps the first written, whichever
// server wrote it, and records it once.
func TestFirstUseKeptOnce(t *testing.T) {
	var skip atomic.Int64
	a, b := twoServersOneClock(t, &skip, "")
	adminA := adminConn(t, a)
	if _, err := writv1.NewReviewServiceClient(adminA).ApplyRules(t.Context(), &writv1.ApplyReviewRulesRequest{Text: firstUseRules}); err != nil {
		t.Fatal(err)
	}
	work := openTask(t, writv1.NewTaskServiceClient(adminA), "reconcile", []string{ceo},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}})
	joined, err := actorConn(svidConn(t, a, mintSVID(t, a, stageBot))).join(t, work.GetId(), "nightly reads", "read:db/staging/orders")
	if err != nil {
		t.Fatal(err)
	}
	clock := joined.GetRequest().GetId()
	first := time.Now().Add(time.Minute).Truncate(time.Second)
	if err := b.recordFirstUse(t.Context(), clock, firstUse{task: work.GetId(), at: first}); err != nil {
		t.Fatal(err)
	}
	if err := a.recordFirstUse(t.Context(), clock, firstUse{task: work.GetId(), at: first.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	got, err := writv1.NewTaskServiceClient(adminA).GetTask(t.Context(), &writv1.GetTaskRequest{Id: work.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if g := got.GetGrants()[len(got.GetGrants())-1]; g.GetExpiresAt() != first.Add(time.Hour).Unix() {
		t.Fatalf("the joined grant expires at %d, want %d (the first use kept, plus 1h)", g.GetExpiresAt(), first.Add(time.Hour).Unix())
	}
	if n := countEvents(t, adminA, audit.EventRequestFirstUse); n != 1 {
		t.Errorf("request.first.use events = %d, want 1", n)
	}
}

// TestGrantServerFieldsRefused: the access clock and dual-control marks of
// a grant are the server's to set; a task given them is refused.
func TestGrantServerFieldsRefused(t *testing.T) {
	srv := startServer(t, testConfig(t))
	tasks := writv1.NewTaskServiceClient(adminConn(t, srv))
	for name, g := range map[string]*writv1.Grant{
		"access_seconds": {AccessSeconds: 3600},
		"first_used_at":  {FirstUsedAt: 1},
		"watched":        {Watched: true},
	} {
		g.Actions, g.Resources, g.To = []string{"read"}, []string{"hr/salaries"}, []string{ceo}
		_, err := tasks.CreateTask(t.Context(), &writv1.CreateTaskRequest{Task: &writv1.Task{Title: "t", Reason: "r", Owner: ceo,
			Members: []string{ceo}, Grants: []*writv1.Grant{g}, Deadline: time.Now().Add(time.Hour).Unix()}})
		if codeOf(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "set by the server") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestAccessClockFirstUseOpen: a task opened by request under
// access_clock: first_use puts all its grants on the request's clock; the
// task stays open as long as that access could last, and its first use
// starts the clock.
func TestAccessClockFirstUseOpen(t *testing.T) {
	srv, _ := startTokenEndpoint(t)
	admin := adminConn(t, srv)
	if _, err := writv1.NewReviewServiceClient(admin).ApplyRules(t.Context(), &writv1.ApplyReviewRulesRequest{Text: firstUseRules}); err != nil {
		t.Fatal(err)
	}
	tasks := writv1.NewTaskServiceClient(admin)
	draft, err := tasks.CreateTask(t.Context(), &writv1.CreateTaskRequest{Task: &writv1.Task{Title: "reads", Reason: "scenario", Owner: ceo,
		Members: []string{stageBot}, Grants: []*writv1.Grant{{Actions: []string{"read"}, Resources: []string{"db/staging/orders"}, To: []string{stageBot}}},
		Deadline: time.Now().Add(24 * time.Hour).Unix()}})
	if err != nil {
		t.Fatal(err)
	}
	opened, err := actorConn(svidConn(t, srv, mintSVID(t, srv, stageBot))).requests.CreateRequest(t.Context(),
		&writv1.CreateAccessRequest{Kind: "open", Task: draft.GetId(), Reason: "nightly reads"})
	if err != nil || opened.GetRequest().GetState() != "approved" || !strings.Contains(opened.GetRequest().GetEffect(), "last 1h0m0s from their first use") {
		t.Fatalf("open = %v, %v", opened, err)
	}
	got, err := tasks.GetTask(t.Context(), &writv1.GetTaskRequest{Id: draft.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	g := got.GetGrants()[0]
	approved := opened.GetRequest().GetDecidedAt()
	if got.GetState() != "open" || g.GetAccessSeconds() != 3600 || g.GetFirstUsedAt() != 0 || g.GetExpiresAt() != approved+2*3600 ||
		got.GetDeadline() != approved+3*3600 {
		t.Fatalf("task = %v; want open until approval + 3h, its grant lapsing unused at approval + 2h", got)
	}
	if d := check(t, writv1.NewDecisionServiceClient(admin), "read", "db/staging/orders", stageBot); !d.GetAllow() {
		t.Fatalf("first use: %v", d)
	}
	eventually(t, 10*time.Second, "the first use is recorded", func() bool {
		got, err := tasks.GetTask(t.Context(), &writv1.GetTaskRequest{Id: draft.GetId()})
		return err == nil && got.GetGrants()[0].GetFirstUsedAt() != 0 && got.GetGrants()[0].GetExpiresAt() == got.GetGrants()[0].GetFirstUsedAt()+3600
	})
}
