package unix

import (
	"context"
	"os"
	"testing"

	"writ.dev/writ/attest/workload"
)

// BenchmarkAttestSelf is the per-call cost of attesting a Workload API
// caller whose executable digest is cached.
func BenchmarkAttestSelf(b *testing.B) {
	a := New(Options{})
	p := workload.Peer{PID: os.Getpid(), UID: os.Geteuid(), GID: os.Getegid()}
	ctx := context.Background()
	if _, err := a.Attest(ctx, p); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Attest(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
}
