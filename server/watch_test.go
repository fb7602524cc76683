package server

import (
	"context"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
	"writ.dev/writ/store"
	"writ.dev/writ/task"
)

// dualRules approve a person's vault access at once, but only under the
// eye of another person: reads pause without a watcher, writes end the task.
const dualRules = `rules:
  - name: vault-read
    match: {actions: [read], resources: [vault/**], requester_kind: [person]}
    auto_approve: {}
    max_ttl: 1h
    dual_control: {watchers: ["spiffe://` + testTD + `/person/**"], count: 1, on_leave: pause, heartbeat: 1s}
  - name: vault-write
    match: {actions: [write], resources: [vault/**], requester_kind: [person]}
    auto_approve: {}
    max_ttl: 1h
    dual_control: {watchers: ["spiffe://` + testTD + `/person/**"], count: 1, on_leave: terminate, heartbeat: 1s}
`

// watching is one open watch session held by a test.
type watching struct {
	stream writv1.WatchService_WatchTaskClient
	first  *writv1.WatchTaskStatus
	cancel context.CancelFunc
}

// watchTask opens a watch session on taskID over cc; with beat set, it sends
// a heartbeat every 200 ms until cancelled, without it none (the process
// hangs).
func watchTask(t testing.TB, cc *grpc.ClientConn, taskID string, beat bool) (*watching, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	stream, err := writv1.NewWatchServiceClient(cc).WatchTask(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	if err := stream.Send(&writv1.WatchTaskRequest{TaskId: taskID}); err != nil {
		cancel()
		return nil, err
	}
	first, err := stream.Recv()
	if err != nil {
		cancel()
		return nil, err
	}
	if beat {
		go func() {
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					if stream.Send(&writv1.WatchTaskRequest{}) != nil {
						return
					}
				}
			}
		}()
		go func() {
			for {
				if _, err := stream.Recv(); err != nil {
					return
				}
			}
		}()
	}
	return &watching{stream: stream, first: first, cancel: cancel}, nil
}

func countEvents(t *testing.T, cc *grpc.ClientConn, typ string) int {
	t.Helper()
	n := 0
	for _, ev := range readEvents(t, writv1.NewAuditServiceClient(cc)) {
		if ev.Type == typ {
			n++
		}
	}
	return n
}

// TestDualControl: a grant approved under dual control is dead until an
// eligible watcher holds a session, live while it does, dead again once the
// watcher's stream is cancelled or its heartbeats stop, and live again when
// a watcher returns (pause). The requester cannot watch over itself.
func TestDualControl(t *testing.T) {
	srv, _ := startTokenEndpoint(t)
	admin := adminConn(t, srv)
	if _, err := writv1.NewReviewServiceClient(admin).ApplyRules(t.Context(), &writv1.ApplyReviewRulesRequest{Text: dualRules}); err != nil {
		t.Fatal(err)
	}
	decide := writv1.NewDecisionServiceClient(admin)
	work := openTask(t, writv1.NewTaskServiceClient(admin), "rotate the vault keys", []string{ceo},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}})
	aliceCC := svidConn(t, srv, signIn(t, srv, alice))
	bobCC := svidConn(t, srv, signIn(t, srv, bob))

	got, err := actorConn(aliceCC).join(t, work.GetId(), "rotate the keys", "read:vault/keys")
	if err != nil || got.GetRequest().GetState() != "approved" {
		t.Fatalf("the vault read = %v, %v", got, err)
	}
	r := check(t, decide, "read", "vault/keys", alice)
	if r.GetAllow() || !strings.Contains(r.GetReason(), "0 of 1 watchers present") {
		t.Fatalf("allowed with no watcher: %v", r)
	}

	// The requester cannot watch over herself.
	_, err = watchTask(t, aliceCC, work.GetId(), true)
	wantCode(t, err, codes.PermissionDenied, "may not watch")
	_, err = watchTask(t, bobCC, strings.Repeat("T", 1000), true)
	wantCode(t, err, codes.InvalidArgument, "longer than any task ID")
	// A task not under dual control has nothing to watch.
	plain := openTask(t, writv1.NewTaskServiceClient(admin), "plain", []string{ceo},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}})
	_, err = watchTask(t, bobCC, plain.GetId(), true)
	wantCode(t, err, codes.FailedPrecondition, "not under dual control")

	w, err := watchTask(t, bobCC, work.GetId(), true)
	if err != nil {
		t.Fatal(err)
	}
	if !w.first.GetLive() || !slices.Equal(w.first.GetPresent(), []string{bob}) || w.first.GetHeartbeatSeconds() != 1 {
		t.Fatalf("first status = %v", w.first)
	}
	if r := check(t, decide, "read", "vault/keys", alice); !r.GetAllow() {
		t.Fatalf("denied while bob watches: %v", r)
	}
	// Heartbeats keep the session past its first expiry.
	time.Sleep(2500 * time.Millisecond)
	if r := check(t, decide, "read", "vault/keys", alice); !r.GetAllow() {
		t.Fatalf("denied while bob keeps watching: %v", r)
	}

	w.cancel()
	took := eventually(t, 10*time.Second, "deny after the watcher left", func() bool {
		return !check(t, decide, "read", "vault/keys", alice).GetAllow()
	})
	t.Logf("watcher cancelled to deny: %s", took)
	if r := check(t, decide, "read", "vault/keys", alice); !strings.Contains(r.GetReason(), "0 of 1 watchers present") {
		t.Fatalf("denial = %v", r)
	}

	// Pause: a watcher returning makes the grant live again.
	w2, err := watchTask(t, bobCC, work.GetId(), true)
	if err != nil {
		t.Fatal(err)
	}
	if r := check(t, decide, "read", "vault/keys", alice); !r.GetAllow() {
		t.Fatalf("denied after bob returned: %v", r)
	}
	w2.cancel()
	eventually(t, 10*time.Second, "deny after the watcher left again", func() bool {
		return !check(t, decide, "read", "vault/keys", alice).GetAllow()
	})

	// A watcher whose heartbeats stop is lost within two heartbeats.
	hung, err := watchTask(t, bobCC, work.GetId(), false)
	if err != nil {
		t.Fatal(err)
	}
	if r := check(t, decide, "read", "vault/keys", alice); !r.GetAllow() {
		t.Fatalf("denied while the hung watcher's session is fresh: %v", r)
	}
	eventually(t, 10*time.Second, "deny after heartbeats stopped", func() bool {
		return !check(t, decide, "read", "vault/keys", alice).GetAllow()
	})
	_, err = hung.stream.Recv()
	wantCode(t, err, codes.DeadlineExceeded, "no heartbeat")

	if n := countEvents(t, admin, audit.EventWatchJoin); n != 3 {
		t.Errorf("watch.join events = %d, want 3", n)
	}
	eventually(t, 5*time.Second, "watch.leave and watch.lost recorded", func() bool {
		return countEvents(t, admin, audit.EventWatchLeave) == 2 && countEvents(t, admin, audit.EventWatchLost) == 1
	})
	if ws, err := srv.store.ListWatches(t.Context()); err != nil || len(ws) != 0 {
		t.Fatalf("sessions left behind: %v, %v", ws, err)
	}
}

// TestDualControlTerminate: under on_leave: terminate, when its watcher
// leaves, a join's watched grant ends with the dual control, and the
// task's other grants go on; a task opened by request, all of whose
// grants are watched, is closed.
func TestDualControlTerminate(t *testing.T) {
	srv, _ := startTokenEndpoint(t)
	admin := adminConn(t, srv)
	if _, err := writv1.NewReviewServiceClient(admin).ApplyRules(t.Context(), &writv1.ApplyReviewRulesRequest{Text: dualRules}); err != nil {
		t.Fatal(err)
	}
	tasks := writv1.NewTaskServiceClient(admin)
	decide := writv1.NewDecisionServiceClient(admin)
	work := openTask(t, tasks, "rewrite the vault keys", []string{ceo},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}})
	aliceCC := svidConn(t, srv, signIn(t, srv, alice))
	bobCC := svidConn(t, srv, signIn(t, srv, bob))
	if got, err := actorConn(aliceCC).join(t, work.GetId(), "rewrite the keys", "write:vault/keys"); err != nil || got.GetRequest().GetState() != "approved" {
		t.Fatalf("the vault write = %v, %v", got, err)
	}
	if r := check(t, decide, "read", "hr/salaries", ceo); !r.GetAllow() {
		t.Fatalf("the ceo's own grant is held up by the join's dual control: %v", r)
	}
	w, err := watchTask(t, bobCC, work.GetId(), true)
	if err != nil {
		t.Fatal(err)
	}
	if w.first.GetOnLeave() != "terminate" {
		t.Fatalf("status = %v", w.first)
	}
	if r := check(t, decide, "write", "vault/keys", alice); !r.GetAllow() {
		t.Fatalf("denied while bob watches: %v", r)
	}
	w.cancel()
	eventually(t, 10*time.Second, "the watched grant ended after the watcher left", func() bool {
		return countEvents(t, admin, audit.EventTaskDualEnd) == 1
	})
	// Denied at once (too few watchers); the index then shows the grant
	// ended, once it has read the termination back from the store.
	if r := check(t, decide, "write", "vault/keys", alice); r.GetAllow() {
		t.Fatalf("the watched grant after its watcher left: %v", r)
	}
	eventually(t, 10*time.Second, "the denial names the grant's end", func() bool {
		r := check(t, decide, "write", "vault/keys", alice)
		if r.GetAllow() {
			t.Fatalf("the watched grant after its watcher left: %v", r)
		}
		return strings.Contains(r.GetReason(), "expired at")
	})
	if r := check(t, decide, "read", "hr/salaries", ceo); !r.GetAllow() {
		t.Fatalf("the task's other grant ended too: %v", r)
	}
	if got, err := tasks.GetTask(t.Context(), &writv1.GetTaskRequest{Id: work.GetId()}); err != nil || got.GetState() != "open" {
		t.Fatalf("task = %v, %v; want it still open", got, err)
	}
	_, err = watchTask(t, bobCC, work.GetId(), true)
	wantCode(t, err, codes.FailedPrecondition, "not under dual control")

	// A task alice asks to open under dual control: every grant is watched,
	// so the task closes.
	draft, err := tasks.CreateTask(t.Context(), &writv1.CreateTaskRequest{Task: &writv1.Task{Title: "rotate", Reason: "scenario", Owner: ceo,
		Members: []string{alice}, Grants: []*writv1.Grant{{Actions: []string{"write"}, Resources: []string{"vault/root"}, To: []string{alice}}},
		Deadline: time.Now().Add(time.Hour).Unix()}})
	if err != nil {
		t.Fatal(err)
	}
	opened, err := actorConn(aliceCC).requests.CreateRequest(t.Context(), &writv1.CreateAccessRequest{Kind: "open", Task: draft.GetId(), Reason: "rotate"})
	if err != nil || opened.GetRequest().GetState() != "approved" {
		t.Fatalf("the open request = %v, %v", opened, err)
	}
	w, err = watchTask(t, bobCC, draft.GetId(), true)
	if err != nil {
		t.Fatal(err)
	}
	w.cancel()
	eventually(t, 10*time.Second, "the task closed after the watcher left", func() bool {
		got, err := tasks.GetTask(t.Context(), &writv1.GetTaskRequest{Id: draft.GetId()})
		return err == nil && got.GetState() == "closed"
	})
	// A closed task is not watched back to life.
	_, err = watchTask(t, bobCC, draft.GetId(), true)
	wantCode(t, err, codes.FailedPrecondition, "only an open task")
}

// TestDualControlAcrossServers: two servers share PostgreSQL; the watcher
// holds its session on A and decisions are asked of B. B allows once the
// watcher is present and denies after the watcher's stream is cancelled,
// and after a watcher's heartbeats stop, without any call to B.
func TestDualControlAcrossServers(t *testing.T) {
	dsn := freshPostgresDB(t)
	cfgA, cfgB := testConfig(t), testConfig(t)
	for _, c := range []*Config{&cfgA, &cfgB} {
		c.Store.Engine = "postgres"
		c.Store.DSN = dsn
	}
	a := startServer(t, cfgA)
	b := startServer(t, cfgB)
	adminA := adminConn(t, a)
	if _, err := writv1.NewReviewServiceClient(adminA).ApplyRules(t.Context(), &writv1.ApplyReviewRulesRequest{Text: dualRules}); err != nil {
		t.Fatal(err)
	}
	work := openTask(t, writv1.NewTaskServiceClient(adminA), "rotate the vault keys", []string{ceo},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}})
	aliceCC := svidConn(t, a, signIn(t, a, alice))
	bobCC := svidConn(t, a, signIn(t, a, bob))
	if got, err := actorConn(aliceCC).join(t, work.GetId(), "rotate the keys", "read:vault/keys"); err != nil || got.GetRequest().GetState() != "approved" {
		t.Fatalf("the vault read = %v, %v", got, err)
	}
	decideB := writv1.NewDecisionServiceClient(adminConn(t, b))
	eventually(t, 10*time.Second, "B knows the task is under dual control", func() bool {
		return strings.Contains(check(t, decideB, "read", "vault/keys", alice).GetReason(), "0 of 1 watchers present")
	})

	w, err := watchTask(t, bobCC, work.GetId(), true)
	if err != nil {
		t.Fatal(err)
	}
	took := eventually(t, 10*time.Second, "B allows while the watcher on A is present", func() bool {
		return check(t, decideB, "read", "vault/keys", alice).GetAllow()
	})
	t.Logf("watcher joined on A to allow on B: %s", took)
	w.cancel()
	took = eventually(t, 10*time.Second, "B denies after the watcher on A left", func() bool {
		return !check(t, decideB, "read", "vault/keys", alice).GetAllow()
	})
	t.Logf("watcher cancelled on A to deny on B: %s", took)

	if _, err := watchTask(t, bobCC, work.GetId(), false); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "B allows while the hung watcher's session is fresh", func() bool {
		return check(t, decideB, "read", "vault/keys", alice).GetAllow()
	})
	start := time.Now()
	eventually(t, 10*time.Second, "B denies after the heartbeats stopped", func() bool {
		return !check(t, decideB, "read", "vault/keys", alice).GetAllow()
	})
	t.Logf("heartbeats stopped (2 s lapse) to deny on B: %s after B first allowed", time.Since(start))
}

// TestDualControlSessionOfDeadServer: a session whose server died holding
// it (recorded in the store, never heartbeated nor removed) counts until its
// expiry, then stops counting though no revision moved, and the sweep
// removes it with watch.lost.
func TestDualControlSessionOfDeadServer(t *testing.T) {
	srv, _ := startTokenEndpoint(t)
	admin := adminConn(t, srv)
	if _, err := writv1.NewReviewServiceClient(admin).ApplyRules(t.Context(), &writv1.ApplyReviewRulesRequest{Text: dualRules}); err != nil {
		t.Fatal(err)
	}
	decide := writv1.NewDecisionServiceClient(admin)
	work := openTask(t, writv1.NewTaskServiceClient(admin), "rotate the vault keys", []string{ceo},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}})
	if got, err := actorConn(svidConn(t, srv, signIn(t, srv, alice))).join(t, work.GetId(), "rotate", "read:vault/keys"); err != nil || got.GetRequest().GetState() != "approved" {
		t.Fatalf("the vault read = %v, %v", got, err)
	}
	ev, err := srv.event(t.Context(), audit.EventWatchJoin, "W-dead", map[string]any{"task": work.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.store.JoinWatch(t.Context(), store.Watch{ID: "W-dead", Task: work.GetId(), Chain: []string{bob}, ExpiresAt: time.Now().Add(1500 * time.Millisecond)}, ev); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "allowed while the dead server's session is fresh", func() bool {
		return check(t, decide, "read", "vault/keys", alice).GetAllow()
	})
	eventually(t, 10*time.Second, "denied once the session lapsed", func() bool {
		return !check(t, decide, "read", "vault/keys", alice).GetAllow()
	})
	// The denial may come from the expiry alone or after the sweep; both
	// must happen, and the sweep records the loss once.
	eventually(t, 10*time.Second, "the sweep removed the lapsed session", func() bool {
		ws, err := srv.store.ListWatches(t.Context())
		return err == nil && len(ws) == 0
	})
	if n := countEvents(t, admin, audit.EventWatchLost); n != 1 {
		t.Errorf("watch.lost events = %d, want 1", n)
	}
}

// TestMergeDual: a second approval under dual control keeps the first
// requester out of watching too, and the stricter settings hold; other
// watcher patterns are refused.
func TestMergeDual(t *testing.T) {
	pattern := func(s string) task.Pattern {
		p, err := task.ParsePattern(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	people, agents := pattern("spiffe://"+testTD+"/person/**"), pattern("spiffe://"+testTD+"/agent/**")
	first := &task.DualControl{Watchers: []task.Pattern{people}, Count: 1, OnLeave: task.OnLeaveTerminate, Heartbeat: 2 * time.Second,
		Requester: []spiffeid.ID{spiffeid.RequireFromString(alice)}}
	second := &task.DualControl{Watchers: []task.Pattern{people}, Count: 2, OnLeave: task.OnLeavePause, Heartbeat: 5 * time.Second,
		Requester: []spiffeid.ID{spiffeid.RequireFromString(bob)}}
	got, err := mergeDual(first, second)
	if err != nil {
		t.Fatal(err)
	}
	if got.Count != 2 || got.Heartbeat != 2*time.Second || got.OnLeave != task.OnLeaveTerminate ||
		got.Eligible([]spiffeid.ID{spiffeid.RequireFromString(alice)}) || got.Eligible([]spiffeid.ID{spiffeid.RequireFromString(bob)}) ||
		!got.Eligible([]spiffeid.ID{spiffeid.RequireFromString(ceo)}) {
		t.Fatalf("merged = %+v", got)
	}
	if len(first.Requester) != 1 {
		t.Fatal("merging changed the first dual control")
	}
	_, err = mergeDual(first, &task.DualControl{Watchers: []task.Pattern{agents}, Count: 1, OnLeave: task.OnLeavePause, Heartbeat: time.Second})
	wantCode(t, err, codes.FailedPrecondition, "needs a task of its own")
}

// TestWatchEndsWhenTaskCloses: a watcher still heartbeating is told when
// the task it watches closes, by a last status saying why, and its stream
// then ends without error; its session is removed.
func TestWatchEndsWhenTaskCloses(t *testing.T) {
	srv, _ := startTokenEndpoint(t)
	admin := adminConn(t, srv)
	if _, err := writv1.NewReviewServiceClient(admin).ApplyRules(t.Context(), &writv1.ApplyReviewRulesRequest{Text: dualRules}); err != nil {
		t.Fatal(err)
	}
	tasks := writv1.NewTaskServiceClient(admin)
	work := openTask(t, tasks, "rotate the vault keys", []string{ceo},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}})
	if got, err := actorConn(svidConn(t, srv, signIn(t, srv, alice))).join(t, work.GetId(), "rotate", "read:vault/keys"); err != nil || got.GetRequest().GetState() != "approved" {
		t.Fatalf("the vault read = %v, %v", got, err)
	}
	w, err := watchTask(t, svidConn(t, srv, signIn(t, srv, bob)), work.GetId(), false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	go func() { // heartbeats only: the test reads the statuses
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if w.stream.Send(&writv1.WatchTaskRequest{}) != nil {
					return
				}
			}
		}
	}()
	if _, err := tasks.CloseTask(t.Context(), &writv1.TaskTransitionRequest{Id: work.GetId()}); err != nil {
		t.Fatal(err)
	}
	for {
		st, err := w.stream.Recv()
		if err != nil {
			t.Fatalf("the stream ended without saying why: %v", err)
		}
		if !st.GetEnded() {
			continue
		}
		if want := "task " + work.GetId() + " is closed"; st.GetEndedWhy() != want {
			t.Fatalf("ended_why = %q, want %q", st.GetEndedWhy(), want)
		}
		break
	}
	if _, err := w.stream.Recv(); err != io.EOF {
		t.Fatalf("after the last status: %v, want the stream ended cleanly", err)
	}
	eventually(t, 5*time.Second, "the session is removed", func() bool {
		ws, err := srv.store.ListWatches(t.Context())
		return err == nil && len(ws) == 0
	})
}

// TestDualControlStoredBeforeGrantsWereMarked: a task stored when dual
// control governed the whole task (no per_grant) reads back with every
// grant watched, so upgrading loosens nothing.
func TestDualControlStoredBeforeGrantsWereMarked(t *testing.T) {
	p, err := task.ParsePattern(ceo)
	if err != nil {
		t.Fatal(err)
	}
	res, err := task.ParseResourcePattern("hr/salaries")
	if err != nil {
		t.Fatal(err)
	}
	tk := &task.Task{ID: "T-1", Owner: spiffeid.RequireFromString(ceo), State: task.StateOpen, Deadline: time.Now().Add(time.Hour),
		Grants: []task.Grant{{Actions: []string{"read"}, Resources: []task.ResourcePattern{res}, To: []task.Pattern{p}}},
		Dual:   &task.DualControl{Watchers: []task.Pattern{p}, Count: 1, OnLeave: task.OnLeavePause, Heartbeat: time.Second}}
	rec, err := taskRecord(tk)
	if err != nil {
		t.Fatal(err)
	}
	old := strings.Replace(string(rec.Doc), `,"per_grant":true`, "", 1)
	if old == string(rec.Doc) {
		t.Fatalf("no per_grant in %s", rec.Doc)
	}
	rec.Doc = []byte(old)
	got, err := taskFromRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Grants[0].Watched {
		t.Fatal("a grant of a task under whole-task dual control reads back unwatched")
	}
}

// TestWatchRefusedAfterWatchedAccessEnded: when the grants under dual
// control expire, a watcher is told its watch ended, and joining again
// is refused: there is nothing to watch.
func TestWatchRefusedAfterWatchedAccessEnded(t *testing.T) {
	const secBot = "spiffe://" + testTD + "/agent/sec-bot"
	var skip atomic.Int64
	srv, _ := twoServersOneClock(t, &skip, "")
	admin := adminConn(t, srv)
	rules := `rules:
  - name: vault-read
    match: {actions: [read], resources: [vault/**], requester_kind: [agent]}
    auto_approve: {}
    max_ttl: 1h
    dual_control: {watchers: ["` + secBot + `"], count: 1, on_leave: pause, heartbeat: 1s}
`
	if _, err := writv1.NewReviewServiceClient(admin).ApplyRules(t.Context(), &writv1.ApplyReviewRulesRequest{Text: rules}); err != nil {
		t.Fatal(err)
	}
	tasks := writv1.NewTaskServiceClient(admin)
	work, err := tasks.CreateTask(t.Context(), &writv1.CreateTaskRequest{Task: &writv1.Task{Title: "rotate", Reason: "scenario", Owner: ceo,
		Members: []string{ceo}, Grants: []*writv1.Grant{{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}}},
		Deadline: time.Now().Add(24 * time.Hour).Unix()}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tasks.OpenTask(t.Context(), &writv1.TaskTransitionRequest{Id: work.GetId()}); err != nil {
		t.Fatal(err)
	}
	if got, err := actorConn(svidConn(t, srv, mintSVID(t, srv, stageBot))).join(t, work.GetId(), "rotate", "read:vault/keys"); err != nil || got.GetRequest().GetState() != "approved" {
		t.Fatalf("join = %v, %v", got, err)
	}
	secCC := svidConn(t, srv, mintSVID(t, srv, secBot))
	w, err := watchTask(t, secCC, work.GetId(), false)
	if err != nil {
		t.Fatal(err)
	}
	go func() { // heartbeats only: the test reads the statuses
		for range time.Tick(200 * time.Millisecond) {
			if w.stream.Send(&writv1.WatchTaskRequest{}) != nil {
				return
			}
		}
	}()
	// The watched grant's hour passes: the watcher is told, and the
	// stream ends.
	skip.Store(int64(61 * time.Minute))
	for {
		st, err := w.stream.Recv()
		if err != nil {
			t.Fatalf("the stream ended without saying why: %v", err)
		}
		if st.GetEnded() {
			if want := "the access under dual control on task " + work.GetId() + " ended"; st.GetEndedWhy() != want {
				t.Fatalf("ended_why = %q, want %q", st.GetEndedWhy(), want)
			}
			break
		}
	}
	_, err = watchTask(t, secCC, work.GetId(), true)
	wantCode(t, err, codes.FailedPrecondition, "has ended: there is nothing to watch")
}
