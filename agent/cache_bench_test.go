package agent

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/identity"
)

// BenchmarkCacheX509SVIDs is the agent's share of a fetch without gRPC or
// attestation: finding a workload's rules and SVIDs among 1, 1,000 or
// 15,000 rules, one of them the workload's, the others for other uids.
func BenchmarkCacheX509SVIDs(b *testing.B) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	workload := []identity.Selector{
		{Type: "unix", Value: "uid:1000"}, {Type: "unix", Value: "gid:1000"}, {Type: "unix", Value: "user:app"},
		{Type: "unix", Value: "path:/usr/bin/app"}, {Type: "systemd", Value: "unit:app.service"},
	}
	for _, n := range []int{1, 1_000, 15_000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			c := newCache(spiffeid.RequireFromString("spiffe://example.org/writ/agent/x"), func() time.Time { return now })
			upd := &writv1.SyncUpdate{Full: true}
			for i := range n {
				uid := "uid:1000"
				if i > 0 {
					uid = "uid:" + strconv.Itoa(2_000_000+i)
				}
				upd.Entries = append(upd.Entries, &writv1.Entry{
					Id: fmt.Sprintf("r%06d", i), SpiffeId: fmt.Sprintf("spiffe://example.org/w/%d", i), Revision: 1,
					Selectors: []*writv1.Selector{{Type: "unix", Value: uid}, {Type: "systemd", Value: "unit:app.service"}},
				})
			}
			if err := c.apply(upd); err != nil {
				b.Fatal(err)
			}
			minted := map[string]*heldSVID{}
			for id := range c.rules {
				minted[id] = &heldSVID{chainDER: []byte{1}, keyDER: []byte{2}, revision: 1, notAfter: now.Add(time.Hour)}
			}
			c.setSVIDs(minted)
			for b.Loop() {
				if got, _ := c.X509SVIDs(workload); len(got) != 1 {
					b.Fatalf("%d SVIDs, want 1", len(got))
				}
			}
		})
	}
}
