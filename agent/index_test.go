package agent

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/identity"
)

// TestIndexedMatchingEqualsScan checks the rule index against the plain
// definition (every rule whose selectors are all among the workload's),
// over random rules put, replaced and deleted by snapshots and by
// increments, with selectors shared by many rules and by few.
func TestIndexedMatchingEqualsScan(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	c := newCache(spiffeid.RequireFromString("spiffe://example.org/writ/agent/x"), func() time.Time { return now })
	rng := rand.New(rand.NewPCG(1, 2))
	pool := make([]identity.Selector, 12)
	for i := range pool {
		pool[i] = identity.Selector{Type: "t", Value: fmt.Sprint(i)}
	}
	randSels := func(max int) []identity.Selector {
		// Low indexes are common, high ones rare.
		set := map[identity.Selector]bool{}
		for range 1 + rng.IntN(max) {
			set[pool[min(rng.IntN(len(pool)), rng.IntN(len(pool)))]] = true
		}
		var out []identity.Selector
		for s := range set {
			out = append(out, s)
		}
		return out
	}
	entry := func(id string) *writv1.Entry {
		e := &writv1.Entry{Id: id, SpiffeId: "spiffe://example.org/" + id, Revision: 1}
		for _, s := range randSels(3) {
			e.Selectors = append(e.Selectors, &writv1.Selector{Type: s.Type, Value: s.Value})
		}
		return e
	}
	scan := func(sels []identity.Selector) []string {
		set := identity.NewSelectorSet(sels)
		var out []string
		for _, r := range c.rules {
			if len(r.selectors) > 0 && set.ContainsAll(r.selectors) {
				out = append(out, r.id)
			}
		}
		slices.Sort(out)
		return out
	}
	check := func(step int) {
		t.Helper()
		for range 20 {
			sels := randSels(6)
			var got []string
			for _, r := range c.matching(sels) {
				got = append(got, r.id)
			}
			if want := scan(sels); !slices.Equal(got, want) {
				t.Fatalf("step %d, workload %v: indexed %v, scan %v", step, sels, got, want)
			}
		}
	}
	var full []*writv1.Entry
	for i := range 200 {
		full = append(full, entry(fmt.Sprint("r", i)))
	}
	if err := c.apply(&writv1.SyncUpdate{Full: true, Entries: full}); err != nil {
		t.Fatal(err)
	}
	check(0)
	for step := 1; step <= 200; step++ {
		upd := &writv1.SyncUpdate{}
		for range rng.IntN(5) {
			upd.Entries = append(upd.Entries, entry(fmt.Sprint("r", rng.IntN(260))))
		}
		for range rng.IntN(3) {
			upd.DeletedIds = append(upd.DeletedIds, fmt.Sprint("r", rng.IntN(260)))
		}
		if step%50 == 0 {
			upd = &writv1.SyncUpdate{Full: true, Entries: full[:100+rng.IntN(100)]}
		}
		if err := c.apply(upd); err != nil {
			t.Fatal(err)
		}
		check(step)
	}
	filed := 0
	for _, bucket := range c.index {
		filed += len(bucket)
	}
	if filed != len(c.rules) {
		t.Errorf("the index files %d rules, the cache holds %d", filed, len(c.rules))
	}
}
