package storetest

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"runtime"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"writ.dev/writ/audit"
	"writ.dev/writ/store"
)

const (
	benchRules = 100_000
	benchBatch = 1_000
)

// fill stores each batch with one CreateEntries call.
func fill(b *testing.B, s store.Store, batches [][]store.Entry) {
	for _, batch := range batches {
		if _, err := s.CreateEntries(b.Context(), batch, testEvent); err != nil {
			b.Fatalf("CreateEntries: %v", err)
		}
	}
}

func benchBatches() [][]store.Entry {
	var batches [][]store.Entry
	for start := 0; start < benchRules; start += benchBatch {
		batch := make([]store.Entry, benchBatch)
		for i := range batch {
			batch[i] = rule(start + i)
		}
		batches = append(batches, batch)
	}
	return batches
}

// BenchCreateEntries creates 100,000 rules in batches of 1,000 into a new
// store per iteration and reports rules/s.
func BenchCreateEntries(b *testing.B, open func(b *testing.B) store.Store) {
	batches := benchBatches()
	rules := 0
	for b.Loop() {
		b.StopTimer()
		s := open(b)
		b.StartTimer()
		fill(b, s, batches)
		rules += benchRules
	}
	b.ReportMetric(float64(rules)/b.Elapsed().Seconds(), "rules/s")
}

// analyzer is implemented by stores whose query planner needs statistics.
type analyzer interface {
	Analyze(ctx context.Context) error
}

// BenchReads measures reads from a store of 100,000 rules, in the steady
// state: planner statistics are refreshed after the import, as a server
// would do or its database would soon do by itself.
func BenchReads(b *testing.B, open func(b *testing.B) store.Store) {
	s := open(b)
	fill(b, s, benchBatches())
	ctx := b.Context()
	if a, ok := s.(analyzer); ok {
		if err := a.Analyze(ctx); err != nil {
			b.Fatalf("Analyze: %v", err)
		}
	}
	for _, bc := range []struct {
		name string
		f    store.EntryFilter
		want int
	}{
		{"Page", store.EntryFilter{Limit: 100}, 100},
		{"BySPIFFEID", store.EntryFilter{SPIFFEID: "spiffe://example.org/workload/4242"}, 1},
		{"ByParentPage", store.EntryFilter{ParentID: "spiffe://example.org/agent/7", Limit: 100}, 100},
		{"ByRareSelector", store.EntryFilter{Selectors: []store.Selector{sel("k8s", "sa:sa-4242")}}, 1},
		{"ByCommonSelectorPage", store.EntryFilter{Selectors: []store.Selector{sel("k8s", "ns:ns-7")}, Limit: 100}, 100},
		{"ByTwoSelectors", store.EntryFilter{Selectors: []store.Selector{sel("k8s", "ns:ns-7"), sel("unix", "uid:7")}}, 100},
	} {
		b.Run("ListEntries/"+bc.name, func(b *testing.B) {
			for b.Loop() {
				got, err := s.ListEntries(ctx, bc.f)
				if err != nil || len(got) != bc.want {
					b.Fatalf("ListEntries(%+v) = %d entries, %v; want %d", bc.f, len(got), err, bc.want)
				}
			}
		})
	}
	page, err := s.ListEntries(ctx, store.EntryFilter{Limit: 1})
	if err != nil || len(page) != 1 {
		b.Fatalf("ListEntries: %v", err)
	}
	b.Run("GetEntry", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.GetEntry(ctx, page[0].ID); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ChangesSince/1000", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.ChangesSince(ctx, 50, 1000); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchAppendAudit appends one event per call, each acknowledged only once
// durable, from writers goroutines at once, and reports events/s. With one
// writer every event pays a full commit; with many, group commit shares
// each commit among the events waiting for it.
func BenchAppendAudit(b *testing.B, s store.Store, writers int) {
	ev := store.AuditEvent(fmt.Sprintf(`{"time":"2026-11-23T12:00:00.123456789Z","type":%q,"actor":"spiffe://example.org/agent/node-1","subject":"spiffe://example.org/workload/payments","details":{"serial":"4f2a9c1d8e7b6a5f","not_after":"2026-11-23T13:00:00Z"}}`, audit.EventSVIDX509Mint))
	b.SetParallelism(max(1, writers/max(1, runtime.GOMAXPROCS(0))))
	b.ResetTimer()
	if writers == 1 {
		for b.Loop() {
			if _, err := s.AppendAudit(b.Context(), ev); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.AppendAudit(context.Background(), ev); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// benchSealer does what a server's sealer does in each commit: prove the
// new tree extends the last head, and sign a checkpoint of it with Ed25519.
type benchSealer struct {
	mu     sync.Mutex
	signer note.Signer
	last   audit.Checkpoint
}

func (bs *benchSealer) SealAudit(ctx context.Context, size int64, root store.AuditHash, hashes store.AuditHashReader) (store.AuditSeal, error) {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if err := audit.CheckExtends(size, tlog.Hash(root), bs.last, benchHashes(hashes)); err != nil {
		return store.AuditSeal{}, err
	}
	c := audit.Checkpoint{Origin: "example.org/writ/audit", Size: size, Root: tlog.Hash(root)}
	msg, err := audit.SignCheckpoint(c, bs.signer)
	if err != nil {
		return store.AuditSeal{}, err
	}
	seal := store.AuditSeal{Checkpoint: store.AuditCheckpoint{ServerID: "bench", Size: size, Note: msg}}
	if bs.last.Size > 0 {
		seal.Drop = []int64{bs.last.Size}
	}
	bs.last = c
	return seal, nil
}

func (bs *benchSealer) AuditCommitted(store.AuditSeal) {}

type benchHashes store.AuditHashReader

func (r benchHashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	hs, err := r(indexes)
	out := make([]tlog.Hash, len(hs))
	for i := range hs {
		out[i] = tlog.Hash(hs[i])
	}
	return out, err
}

// BenchAppendAuditSealed is BenchAppendAudit with every commit sealed by a
// signed checkpoint, as a server runs it.
func BenchAppendAuditSealed(b *testing.B, s store.Store, writers int) {
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		b.Fatal(err)
	}
	signer, err := audit.NewSigner("example.org/writ/server/bench/audit-0", priv)
	if err != nil {
		b.Fatal(err)
	}
	s.SetAuditSealer(&benchSealer{signer: signer})
	defer s.SetAuditSealer(nil)
	BenchAppendAudit(b, s, writers)
}
