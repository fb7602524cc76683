package agent

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"writ.dev/writ/agent/workloadapi"
	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/identity"
)

// TestTaintedSVIDIsDueAtRetry checks that an SVID minted by an authority
// tainted meanwhile is minted again when its retry comes, not at its far
// renewal point, and that the minting loop is told to wake then.
func TestTaintedSVIDIsDueAtRetry(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	c := newCache(spiffeid.RequireFromString("spiffe://example.org/writ/agent/x"), func() time.Time { return now })
	id := spiffeid.RequireFromString("spiffe://example.org/svc")
	held := func(caID string) *heldSVID {
		return &heldSVID{caID: caID, revision: 1, notAfter: now.Add(2 * time.Hour), renewAt: now.Add(time.Hour)}
	}
	c.rules["fresh"] = &rule{id: "fresh", spiffeID: id, revision: 1, svid: held("good")}
	if got, want := c.nextRenewal(), now.Add(time.Hour); !got.Equal(want) {
		t.Fatalf("nextRenewal with one fresh SVID = %v, want its renewal point %v", got, want)
	}

	c.tainted = map[string]bool{"bad": true}
	c.rules["tainted"] = &rule{id: "tainted", spiffeID: id, revision: 1, svid: held("bad"), retryAt: now.Add(refusedRetry)}
	if got, want := c.nextRenewal(), now.Add(refusedRetry); !got.Equal(want) {
		t.Fatalf("nextRenewal = %v, want the tainted SVID's retry %v", got, want)
	}
	if due := c.due(now); len(due) != 0 {
		t.Fatalf("due before the retry = %d rules, want none", len(due))
	}
	due := c.due(now.Add(refusedRetry))
	if len(due) != 1 || due[0].id != "tainted" {
		t.Fatalf("due at the retry = %v, want only the tainted rule", due)
	}
}

// TestDisownedAgentServesNothing: once the server refuses the agent itself
// (Sync or renewal answered PermissionDenied), the cached SVIDs are
// dropped, not merely hidden, and nothing is minted, until the server
// accepts the agent again and sends a full snapshot.
func TestDisownedAgentServesNothing(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	c := newCache(spiffeid.RequireFromString("spiffe://example.org/writ/agent/x"), func() time.Time { return now })
	sel := identity.Selector{Type: "unix", Value: "uid:1"}
	entry := &writv1.Entry{Id: "r", SpiffeId: "spiffe://example.org/svc", Revision: 1, Selectors: []*writv1.Selector{{Type: "unix", Value: "uid:1"}}}
	if err := c.apply(&writv1.SyncUpdate{Full: true, Entries: []*writv1.Entry{entry}}); err != nil {
		t.Fatal(err)
	}
	c.setSVIDs(map[string]*heldSVID{"r": {chainDER: []byte{1}, keyDER: []byte{2}, revision: 1, notAfter: now.Add(time.Hour), renewAt: now.Add(30 * time.Minute)}})
	if got, _ := c.X509SVIDs([]identity.Selector{sel}); len(got) != 1 {
		t.Fatalf("before: %d SVIDs, want 1", len(got))
	}

	c.disownedByServer(status.Error(codes.Unavailable, "server down"))
	if got, _ := c.X509SVIDs([]identity.Selector{sel}); len(got) != 1 {
		t.Fatalf("an outage withdrew the SVIDs: %d left, want 1", len(got))
	}
	c.disownedByServer(status.Error(codes.PermissionDenied, "clone detected"))
	if got, _ := c.X509SVIDs([]identity.Selector{sel}); len(got) != 0 {
		t.Fatalf("disowned: %d SVIDs served, want none", len(got))
	}
	if _, err := c.JWTSVIDs(context.Background(), []identity.Selector{sel}, spiffeid.ID{}, []string{"a"}); !errors.Is(err, workloadapi.ErrNoIdentity) {
		t.Fatalf("disowned: JWT-SVIDs: %v, want no identity", err)
	}
	if c.rules["r"].svid != nil {
		t.Error("the SVID and its key are still held")
	}
	if due := c.due(now); len(due) != 0 {
		t.Errorf("disowned: %d rules due for minting, want none", len(due))
	}

	if err := c.apply(&writv1.SyncUpdate{Full: true, Entries: []*writv1.Entry{entry}}); err != nil {
		t.Fatal(err)
	}
	if due := c.due(now); len(due) != 1 {
		t.Errorf("accepted again: %d rules due, want 1", len(due))
	}
}

// TestLockOnAgentWithdrawsEverything: a lock on the agent's own ID, as the
// server makes when it detects a clone, reaches the agent by sync and
// withdraws every identity it holds.
func TestLockOnAgentWithdrawsEverything(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	self := "spiffe://example.org/writ/agent/x"
	c := newCache(spiffeid.RequireFromString(self), func() time.Time { return now })
	sel := identity.Selector{Type: "unix", Value: "uid:1"}
	entry := &writv1.Entry{Id: "r", SpiffeId: "spiffe://example.org/svc", Revision: 1, Selectors: []*writv1.Selector{{Type: "unix", Value: "uid:1"}}}
	if err := c.apply(&writv1.SyncUpdate{Full: true, Entries: []*writv1.Entry{entry}}); err != nil {
		t.Fatal(err)
	}
	c.setSVIDs(map[string]*heldSVID{"r": {chainDER: []byte{1}, keyDER: []byte{2}, revision: 1, notAfter: now.Add(time.Hour), renewAt: now.Add(30 * time.Minute)}})
	lock := &writv1.Lock{Target: &writv1.LockTarget{Kind: "agent", Value: self}}
	if err := c.apply(&writv1.SyncUpdate{LocksChanged: true, Locks: []*writv1.Lock{lock}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.X509SVIDs([]identity.Selector{sel}); len(got) != 0 {
		t.Fatalf("agent locked: %d SVIDs served, want none", len(got))
	}
	if c.rules["r"].svid != nil {
		t.Error("the SVID and its key are still held")
	}
}
