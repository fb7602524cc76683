package server

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	writv1 "writ.dev/writ/api/writ/v1"
)

// decisionWatch opens a WatchDecisions stream and hands its messages to a
// channel; the channel closes when the stream ends.
func decisionWatch(t *testing.T, api writv1.DecisionServiceClient) (<-chan *writv1.DecisionsChanged, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	stream, err := api.WatchDecisions(ctx, &writv1.WatchDecisionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan *writv1.DecisionsChanged, 64)
	go func() {
		defer close(ch)
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			ch <- m
		}
	}()
	return ch, cancel
}

// nextMessage returns the stream's next message, heartbeats included.
func nextMessage(t *testing.T, ch <-chan *writv1.DecisionsChanged, what string) *writv1.DecisionsChanged {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatalf("%s: the stream ended", what)
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no message", what)
	}
	return nil
}

// nextChange returns the stream's next message that is not a heartbeat,
// within 10 s.
func nextChange(t *testing.T, ch <-chan *writv1.DecisionsChanged, what string) *writv1.DecisionsChanged {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if m := nextMessage(t, ch, what); !m.GetHeartbeat() {
			return m
		}
	}
	t.Fatalf("%s: only heartbeats for 10s", what)
	return nil
}

func drain(ch <-chan *writv1.DecisionsChanged) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// TestWatchDecisions: a workload's stream gets the current revision at
// once and a later one after a lock and after a task closes, each
// message arriving once Check already answers with the change.
func TestWatchDecisions(t *testing.T) {
	srv := startServer(t, testConfig(t))
	admin := adminConn(t, srv)
	gw := svidConn(t, srv, mintSVID(t, srv, "spiffe://"+testTD+"/gateway"))
	decide := writv1.NewDecisionServiceClient(admin)
	work := openTask(t, writv1.NewTaskServiceClient(admin), "read the salaries", []string{ceo},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}})

	ch, _ := decisionWatch(t, writv1.NewDecisionServiceClient(gw))
	first := nextChange(t, ch, "the first message")
	if want := revision(t, admin); first.GetRevision() != want {
		t.Fatalf("first revision = %d, want the store's %d", first.GetRevision(), want)
	}
	if !check(t, decide, "read", "hr/salaries", ceo).GetAllow() {
		t.Fatal("denied inside the task")
	}
	// A quiet server still says it is there.
	if m := nextMessage(t, ch, "a heartbeat"); !m.GetHeartbeat() || m.GetRevision() != first.GetRevision() {
		t.Fatalf("on a quiet server: %v, want a heartbeat at revision %d", m, first.GetRevision())
	}

	lock := createLock(t, admin, "spiffe-id", ceo, "incident", "")
	for m := nextChange(t, ch, "after the lock"); ; m = nextChange(t, ch, "after the lock") {
		if m.GetRevision() <= first.GetRevision() {
			t.Fatalf("revision %d after the lock, not past %d", m.GetRevision(), first.GetRevision())
		}
		if r := check(t, decide, "read", "hr/salaries", ceo); !r.GetAllow() && strings.Contains(r.GetReason(), lock.GetId()) {
			break
		}
	}
	if _, err := writv1.NewLockServiceClient(admin).DeleteLock(t.Context(), &writv1.DeleteLockRequest{Id: lock.GetId()}); err != nil {
		t.Fatal(err)
	}
	nextChange(t, ch, "after the unlock")
	if !check(t, decide, "read", "hr/salaries", ceo).GetAllow() {
		t.Fatal("denied after the unlock")
	}
	drain(ch)
	if _, err := writv1.NewTaskServiceClient(admin).CloseTask(t.Context(), &writv1.TaskTransitionRequest{Id: work.GetId()}); err != nil {
		t.Fatal(err)
	}
	for nextChange(t, ch, "after the close"); check(t, decide, "read", "hr/salaries", ceo).GetAllow(); {
		nextChange(t, ch, "after the close")
	}
}

// TestWatchDecisionsOnWatcherLapse: a dual-control watcher whose heartbeats
// stop takes no revision of its own when its session lapses, yet the
// stream says so: a message arrives after which Check denies.
func TestWatchDecisionsOnWatcherLapse(t *testing.T) {
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
	if got, err := actorConn(aliceCC).join(t, work.GetId(), "rotate the keys", "read:vault/keys"); err != nil || got.GetRequest().GetState() != "approved" {
		t.Fatalf("the vault read = %v, %v", got, err)
	}
	gw := svidConn(t, srv, mintSVID(t, srv, "spiffe://"+testTD+"/gateway"))
	ch, _ := decisionWatch(t, writv1.NewDecisionServiceClient(gw))
	nextChange(t, ch, "the first message")

	if _, err := watchTask(t, bobCC, work.GetId(), false); err != nil {
		t.Fatal(err)
	}
	nextChange(t, ch, "after the watcher joined")
	if !check(t, decide, "read", "vault/keys", alice).GetAllow() {
		t.Fatal("denied while the watcher's session is fresh")
	}
	drain(ch)
	for nextChange(t, ch, "after the watcher's heartbeats stopped"); check(t, decide, "read", "vault/keys", alice).GetAllow(); {
		nextChange(t, ch, "after the watcher's heartbeats stopped")
	}
}

// TestWatchDecisionsIsForWorkloadsAndBounded: an administrator on the
// local socket has no use for the stream; one identity holds a bounded
// number of streams, and a stream ended frees its place.
func TestWatchDecisionsIsForWorkloadsAndBounded(t *testing.T) {
	srv := startServer(t, testConfig(t))
	stream, err := writv1.NewDecisionServiceClient(adminConn(t, srv)).WatchDecisions(t.Context(), &writv1.WatchDecisionsRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, err, codes.PermissionDenied, "not a workload")

	gw := writv1.NewDecisionServiceClient(svidConn(t, srv, mintSVID(t, srv, "spiffe://"+testTD+"/gateway")))
	var cancels []context.CancelFunc
	for i := 0; i < maxDecisionWatchesPerIdentity; i++ {
		ch, cancel := decisionWatch(t, gw)
		nextChange(t, ch, "a stream within the bound")
		cancels = append(cancels, cancel)
	}
	stream, err = gw.WatchDecisions(t.Context(), &writv1.WatchDecisionsRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, err, codes.ResourceExhausted, "decision watches")
	cancels[0]()
	eventually(t, 10*time.Second, "a place freed by an ended stream", func() bool {
		s, err := gw.WatchDecisions(t.Context(), &writv1.WatchDecisionsRequest{})
		if err != nil {
			return false
		}
		_, err = s.Recv()
		return err == nil
	})
}

// TestWatchDecisionsAcrossServers: a gateway watching server B hears of a
// lock made through server A (two servers sharing PostgreSQL), and once it
// has, B's Check denies.
func TestWatchDecisionsAcrossServers(t *testing.T) {
	dsn := freshPostgresDB(t)
	cfgA, cfgB := testConfig(t), testConfig(t)
	for _, c := range []*Config{&cfgA, &cfgB} {
		c.Store.Engine = "postgres"
		c.Store.DSN = dsn
	}
	a, b := startServer(t, cfgA), startServer(t, cfgB)
	ccA, ccB := adminConn(t, a), adminConn(t, b)
	openTask(t, writv1.NewTaskServiceClient(ccA), "read the salaries", []string{ceo},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}})
	decideB := writv1.NewDecisionServiceClient(ccB)
	eventually(t, 10*time.Second, "the task live on server B", func() bool { return check(t, decideB, "read", "hr/salaries", ceo).GetAllow() })

	gw := svidConn(t, b, mintSVID(t, b, "spiffe://"+testTD+"/gateway"))
	ch, _ := decisionWatch(t, writv1.NewDecisionServiceClient(gw))
	nextChange(t, ch, "the first message")
	start := time.Now()
	createLock(t, ccA, "spiffe-id", ceo, "INC-9", "")
	for nextChange(t, ch, "after the lock on A"); check(t, decideB, "read", "hr/salaries", ceo).GetAllow(); {
		nextChange(t, ch, "after the lock on A")
	}
	t.Logf("a lock on server A reached the watcher of server B in %s", time.Since(start))
}

// TestWatchDecisionsWhenTimeRunsOut: a task reaching its deadline changes
// decisions without a store revision; the stream says so, so a gateway
// cuts the task's sessions then.
func TestWatchDecisionsWhenTimeRunsOut(t *testing.T) {
	var skip atomic.Int64
	cfg := testConfig(t)
	srv, err := New(t.Context(), cfg, Options{Logger: quietLogger(), Version: "test", Now: func() time.Time {
		return time.Now().Add(time.Duration(skip.Load()))
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	admin := adminConn(t, srv)
	decide := writv1.NewDecisionServiceClient(admin)
	openTask(t, writv1.NewTaskServiceClient(admin), "read the salaries", []string{ceo},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}})
	gw := svidConn(t, srv, mintSVID(t, srv, "spiffe://"+testTD+"/gateway"))
	ch, _ := decisionWatch(t, writv1.NewDecisionServiceClient(gw))
	nextChange(t, ch, "the first message")
	if !check(t, decide, "read", "hr/salaries", ceo).GetAllow() {
		t.Fatal("denied inside the task")
	}
	skip.Store(int64(2 * time.Hour))
	nextChange(t, ch, "after the deadline passed")
	if r := check(t, decide, "read", "hr/salaries", ceo); r.GetAllow() || !strings.Contains(r.GetReason(), "deadline") {
		t.Fatalf("after the deadline: %v", r)
	}
}
