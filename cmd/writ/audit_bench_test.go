package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"writ.dev/writ/audit"
	"writ.dev/writ/server"
	"writ.dev/writ/store"
)

// BenchmarkAuditVerify1M times `writ audit verify` end to end on a log of
// 1,000,000 events: fetching them from a server over its admin socket,
// recomputing the tree and checking the signed checkpoints.
func BenchmarkAuditVerify1M(b *testing.B) {
	const events, batch = 1_000_000, 1000
	dir, err := os.MkdirTemp("", "writ-bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	cfg := server.DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.TrustDomain = "bench.test"
	cfg.ListenAddress, cfg.OpsAddress = "", ""
	cfg.Audit.CheckpointInterval = server.Duration{Duration: time.Hour}
	cfg.Defaults()
	ctx := context.Background()
	srv, err := server.New(ctx, cfg, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Shutdown(context.Background()) })

	st := srv.Store()
	size, err := st.AuditSize(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for size < events {
		evs := make([]store.AuditEvent, min(batch, events-size))
		for i := range evs {
			evs[i] = store.AuditEvent(fmt.Sprintf(`{"time":"2026-11-23T12:00:00.%09dZ","type":%q,"actor":"spiffe://bench.test/agent/node-%d","subject":"spiffe://bench.test/workload/%d","details":{"serial":"%016x"}}`, i, audit.EventSVIDX509Mint, i%100, size+int64(i), size+int64(i)))
		}
		if _, err := st.AppendAudit(ctx, evs...); err != nil {
			b.Fatal(err)
		}
		size += int64(len(evs))
	}
	socket := srv.AdminSocket()
	export := filepath.Join(dir, "kept.jsonl")
	var stdout, stderr bytes.Buffer
	start := time.Now()
	if code := run(ctx, []string{"audit", "export", "--socket", socket, "--out", export}, &stdout, &stderr); code != 0 {
		b.Fatalf("export: %s", stderr.String())
	}
	exportTime := time.Since(start)
	keys := filepath.Join(dir, "keys.json")
	if code := run(ctx, []string{"audit", "keys", "--socket", socket, "--out", keys}, &stdout, &stderr); code != 0 {
		b.Fatalf("keys: %s", stderr.String())
	}
	b.ResetTimer()
	for b.Loop() {
		stdout.Reset()
		stderr.Reset()
		if code := run(ctx, []string{"audit", "verify", "--socket", socket, "--keys", keys}, &stdout, &stderr); code != 0 {
			b.Fatalf("verify: %s", stderr.String())
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/verify")
	b.ReportMetric(exportTime.Seconds(), "s/export")
}
