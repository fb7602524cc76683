package server

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	writv1 "writ.dev/writ/api/writ/v1"
)

// TestInventoryPendingRequests: the inventory lists pending requests oldest
// first, marks those past half their pending_ttl stale, and leaves out
// those whose pending_ttl ran out.
func TestInventoryPendingRequests(t *testing.T) {
	var skip atomic.Int64
	ctx := context.Background()
	srv, err := New(ctx, testConfig(t), Options{Logger: quietLogger(), Version: "test", Now: func() time.Time {
		return time.Now().Add(time.Duration(skip.Load()))
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	admin := adminConn(t, srv)
	applyTestRules(t, admin) // prod-write: pending_ttl 2h
	tasks := writv1.NewTaskServiceClient(admin)
	work, err := tasks.CreateTask(ctx, &writv1.CreateTaskRequest{Task: &writv1.Task{Title: "reconcile payments", Reason: "scenario", Owner: ceo,
		Members: []string{ceo}, Grants: []*writv1.Grant{{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}}},
		Deadline: time.Now().Add(24 * time.Hour).Unix()}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tasks.OpenTask(ctx, &writv1.TaskTransitionRequest{Id: work.GetId()}); err != nil {
		t.Fatal(err)
	}
	agent := actorConn(svidConn(t, srv, mintSVID(t, srv, stageBot)))
	inventory := func() []*writv1.PendingRequest {
		t.Helper()
		inv, err := writv1.NewInventoryServiceClient(admin).GetInventory(ctx, &writv1.GetInventoryRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return inv.GetPendingRequests()
	}
	if _, err := agent.join(t, work.GetId(), "nightly reads", "read:db/staging/orders"); err != nil { // approved at once
		t.Fatal(err)
	}
	old, err := agent.join(t, work.GetId(), "fix the batch", "write:db/prod/payments")
	if err != nil {
		t.Fatal(err)
	}
	if got := inventory(); len(got) != 1 || got[0].GetRequest().GetId() != old.GetRequest().GetId() || got[0].GetStale() {
		t.Fatalf("pending = %v, want the prod write, fresh", got)
	}

	skip.Store(int64(61 * time.Minute))
	young, err := agent.join(t, work.GetId(), "fix the refunds", "write:db/prod/refunds")
	if err != nil {
		t.Fatal(err)
	}
	got := inventory()
	if len(got) != 2 || got[0].GetRequest().GetId() != old.GetRequest().GetId() || !got[0].GetStale() ||
		got[1].GetRequest().GetId() != young.GetRequest().GetId() || got[1].GetStale() {
		t.Fatalf("after 61 minutes, pending = %v, want the first stale, then the second fresh", got)
	}

	skip.Store(int64(2*time.Hour + time.Minute))
	if got := inventory(); len(got) != 1 || got[0].GetRequest().GetId() != young.GetRequest().GetId() {
		t.Fatalf("after 2h, pending = %v, want only the second", got)
	}
}
