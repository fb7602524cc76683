package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	writv1 "writ.dev/writ/api/writ/v1"
)

// recvChange reads the next change, failing the test rather than hanging
// if the feed never sends one.
func recvChange(t *testing.T, st grpc.ServerStreamingClient[writv1.RequestChange]) *writv1.RequestChange {
	t.Helper()
	ch, err := st.Recv()
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	return ch
}

func watch(t *testing.T, cc *grpc.ClientConn, req *writv1.WatchRequestsRequest) grpc.ServerStreamingClient[writv1.RequestChange] {
	t.Helper()
	// The deadline only keeps a broken feed from hanging the test.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	st, err := writv1.NewRequestWatchServiceClient(cc).WatchRequests(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestWatchRequests: a reviewer's watch replays what changed, marks the
// end of the replay, then sees a new request, a review that leaves it
// pending and the approval live; resuming after a revision replays only
// what came later; one identity holds a bounded number of watches.
func TestWatchRequests(t *testing.T) {
	srv, _ := startTokenEndpoint(t)
	admin := adminConn(t, srv)
	applyTestRules(t, admin)
	work := openTask(t, writv1.NewTaskServiceClient(admin), "reconcile payments", []string{ceo},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}})
	agent := actorConn(svidConn(t, srv, mintSVID(t, srv, stageBot)))
	bobCC := svidConn(t, srv, signIn(t, srv, bob))
	bobA := actorConn(bobCC)
	samA := actorConn(svidConn(t, srv, signIn(t, srv, sam)))

	auto, err := agent.join(t, work.GetId(), "nightly reads", "read:db/staging/orders")
	if err != nil {
		t.Fatal(err)
	}
	// The auto-approved read is the agent's, under a rule with no
	// reviewers, on a task bob is not in: bob's watch leaves it out.
	st := watch(t, bobCC, &writv1.WatchRequestsRequest{})
	if ch := recvChange(t, st); !ch.GetCaughtUp() {
		t.Fatalf("replayed to bob = %v, want only caught_up", ch)
	}
	own := watch(t, svidConn(t, srv, mintSVID(t, srv, stageBot)), &writv1.WatchRequestsRequest{})
	if ch := recvChange(t, own); ch.GetType() != "approved" || ch.GetRequest().GetId() != auto.GetRequest().GetId() || ch.GetRevision() == 0 {
		t.Fatalf("replayed to the requester = %v", ch)
	}
	if ch := recvChange(t, own); !ch.GetCaughtUp() {
		t.Fatalf("after the replay = %v, want caught_up", ch)
	}

	prod, err := agent.join(t, work.GetId(), "fix the batch", "write:db/prod/payments")
	if err != nil {
		t.Fatal(err)
	}
	id := prod.GetRequest().GetId()
	metrics := httpGet(t, "http://"+srv.OpsAddr().String()+"/metrics", nil)
	for _, want := range []string{"writ_requests_pending 1\n", "writ_request_time_to_decision_seconds_count 1\n"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q in %s", want, metrics)
		}
	}
	created := recvChange(t, st)
	if created.GetType() != "created" || created.GetRequest().GetId() != id || created.GetRequest().GetState() != "pending" {
		t.Fatalf("live = %v, want the new request", created)
	}
	if _, err := bobA.reviews.Approve(t.Context(), &writv1.ReviewAccessRequest{Id: id, Reason: "must run today"}); err != nil {
		t.Fatal(err)
	}
	if ch := recvChange(t, st); ch.GetType() != "reviewed" || ch.GetRequest().GetState() != "pending" {
		t.Fatalf("after one approval = %v", ch)
	}
	if _, err := samA.reviews.Deny(t.Context(), &writv1.ReviewAccessRequest{Id: id, Reason: "not today"}); err != nil {
		t.Fatal(err)
	}
	denied := recvChange(t, st)
	if denied.GetType() != "denied" || denied.GetRevision() <= created.GetRevision() {
		t.Fatalf("after the denial = %v", denied)
	}

	metrics = httpGet(t, "http://"+srv.OpsAddr().String()+"/metrics", nil)
	for _, want := range []string{"writ_requests_pending 0\n", "writ_request_time_to_decision_seconds_count 2\n"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("after the denial, metrics lack %q", want)
		}
	}

	// Resuming after the creation replays only the denial, then goes live;
	// a state filter leaves the rest out.
	resumed := watch(t, bobCC, &writv1.WatchRequestsRequest{AfterRevision: created.GetRevision()})
	if ch := recvChange(t, resumed); ch.GetType() != "denied" || ch.GetRequest().GetId() != id {
		t.Fatalf("resumed = %v", ch)
	}
	if ch := recvChange(t, resumed); !ch.GetCaughtUp() || ch.GetRevision() < denied.GetRevision() {
		t.Fatalf("resumed, after the replay = %v", ch)
	}
	pending := watch(t, bobCC, &writv1.WatchRequestsRequest{States: []string{"pending"}})
	if ch := recvChange(t, pending); !ch.GetCaughtUp() {
		t.Fatalf("nothing is pending, yet = %v", ch)
	}

	// bob holds three watches; a fourth is allowed, a fifth refused.
	fourth := watch(t, bobCC, &writv1.WatchRequestsRequest{AfterRevision: denied.GetRevision()})
	recvChange(t, fourth)
	_, err = watch(t, bobCC, &writv1.WatchRequestsRequest{}).Recv()
	wantCode(t, err, codes.ResourceExhausted, "request watches")
	_, err = watch(t, bobCC, &writv1.WatchRequestsRequest{States: []string{"bogus"}}).Recv()
	wantCode(t, err, codes.InvalidArgument, "not a request state")
}

// TestRequestFeedBounds: a watcher that does not keep up is marked lagged
// instead of blocking the feed, and an identity's watch count is given
// back when a watch ends.
func TestRequestFeedBounds(t *testing.T) {
	f := newRequestFeed(nil)
	slow, _, err := f.subscribe(bob)
	if err != nil {
		t.Fatal(err)
	}
	change := []requestChange{{msg: &writv1.RequestChange{Type: "created", Revision: 1}}}
	for i := range requestFeedBuffer + 1 {
		f.publish(int64(i+1), change)
	}
	select {
	case <-slow.lagged:
	default:
		t.Fatal("a watcher past its buffer is not marked lagged")
	}
	var subs []*requestSub
	for range maxWatchStreamsPerIdentity - 1 {
		sub, _, err := f.subscribe(bob)
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
	}
	if _, _, err := f.subscribe(bob); err == nil {
		t.Fatal("more watches than the bound were allowed")
	}
	if _, _, err := f.subscribe(sam); err != nil {
		t.Fatalf("another identity is refused: %v", err)
	}
	f.unsubscribe(bob, subs[0])
	if _, _, err := f.subscribe(bob); err != nil {
		t.Fatalf("a watch ended, yet a new one is refused: %v", err)
	}
	if _, _, err := f.subscribe(""); err != nil { // local administrators are not bounded
		t.Fatal(err)
	}
}
