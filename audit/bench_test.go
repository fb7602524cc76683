package audit

import (
	"context"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// BenchmarkAppendHashes measures what a writer does per appended event:
// hash the leaf and compute the new stored hashes, reading earlier ones
// through a HashReader as the store would.
func BenchmarkAppendHashes(b *testing.B) {
	leaf := testEvent(b, 1)
	var stored []tlog.Hash
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = stored[x]
		}
		return out, nil
	})
	b.SetBytes(int64(len(leaf)))
	b.ReportAllocs()
	n := int64(0)
	for b.Loop() {
		h, err := AppendHashes(n, leaf, r)
		if err != nil {
			b.Fatal(err)
		}
		stored = append(stored, h...)
		n++
	}
}

// BenchmarkVerify1M recomputes and checks a log of 1,000,000 in-memory
// events against a checkpoint every 1,000 events.
func BenchmarkVerify1M(b *testing.B) {
	const n = 1_000_000
	k := newTestKeys(b, 1)
	leaves := makeLeaves(b, n)
	cps := buildLog(b, k, leaves, 1000)
	b.ResetTimer()
	for b.Loop() {
		rep, err := Verify(context.Background(), Leaves(leaves), cps, k.verifier)
		if err != nil {
			b.Fatal(err)
		}
		if rep.Verified != n {
			b.Fatalf("verified %d", rep.Verified)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Seconds())/float64(b.N), "s/verify")
}
