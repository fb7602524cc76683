package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"writ.dev/writ/store"
)

var watchTests = []struct {
	name string
	fn   func(t *testing.T, s store.Store)
}{
	{"Watches", testWatches},
}

// testWatches: joining and leaving take a revision, a heartbeat does not
// but moves the expiry (kept to the millisecond), and a session already
// gone is ErrNotFound for both, so two servers sweeping it record its loss
// once.
func testWatches(t *testing.T, s store.Store) {
	ctx := t.Context()
	if ws, err := s.ListWatches(ctx); err != nil || len(ws) != 0 {
		t.Fatalf("ListWatches on an empty store = %v, %v", ws, err)
	}
	rev0 := revision(t, s)
	exp := time.UnixMilli(time.Now().Add(4 * time.Second).UnixMilli()).UTC()
	w := store.Watch{ID: "W-1", Task: "T-1", Chain: []string{"spiffe://example.org/person/bob"}, ExpiresAt: exp}
	if err := s.JoinWatch(ctx, w, event("join")); err != nil {
		t.Fatal(err)
	}
	rev1 := revision(t, s)
	if rev1 <= rev0 {
		t.Fatalf("joining took no revision: %d then %d", rev0, rev1)
	}
	ws, err := s.ListWatches(ctx)
	if err != nil || len(ws) != 1 || ws[0].ID != "W-1" || ws[0].Task != "T-1" || !slices.Equal(ws[0].Chain, w.Chain) || !ws[0].ExpiresAt.Equal(exp) {
		t.Fatalf("ListWatches = %+v, %v", ws, err)
	}
	later := exp.Add(1500 * time.Millisecond)
	if err := s.HeartbeatWatch(ctx, "W-1", later); err != nil {
		t.Fatal(err)
	}
	if rev := revision(t, s); rev != rev1 {
		t.Fatalf("a heartbeat took a revision: %d then %d", rev1, rev)
	}
	if ws, err := s.ListWatches(ctx); err != nil || !ws[0].ExpiresAt.Equal(later) {
		t.Fatalf("after a heartbeat = %+v, %v", ws, err)
	}
	if err := s.LeaveWatch(ctx, "W-1", event("leave")); err != nil {
		t.Fatal(err)
	}
	if rev := revision(t, s); rev <= rev1 {
		t.Fatalf("leaving took no revision: %d then %d", rev1, rev)
	}
	if err := s.LeaveWatch(ctx, "W-1", event("leave again")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("leaving twice: %v", err)
	}
	if err := s.HeartbeatWatch(ctx, "W-1", later); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a heartbeat after leaving: %v", err)
	}
	if err := s.JoinWatch(ctx, store.Watch{ID: "W-2", Task: "T-1"}, event("join")); err == nil {
		t.Fatal("a watch without a chain was stored")
	}
}

func revision(t *testing.T, s store.Store) int64 {
	t.Helper()
	rev, err := s.Revision(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return rev
}
