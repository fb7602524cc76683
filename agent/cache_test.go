package agent

import (
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestTaintedSVIDIsDueAtRetry checks that an SVID minted by an authority
// tainted meanwhile is minted again when its retry comes, not at its far
// renewal point, and that the minting loop is told to wake then.
func TestTaintedSVIDIsDueAtRetry(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	c := newCache(spiffeid.RequireTrustDomainFromString("example.org"), func() time.Time { return now })
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
