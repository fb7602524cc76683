package main

import (
	"fmt"
	"io"
)

// printReport writes the figures in the order and units the SPIRE v1.15.3
// numbers were recorded in, so the two can be read side by side.
func printReport(out io.Writer, r *results) {
	p := func(format string, a ...any) { fmt.Fprintf(out, format, a...) }
	p("# writ agent benchmark %s, %s, %d cores\n", r.Date, r.GoVersion, r.Cores)
	p("writ server (SQLite) and writ agent as separate processes; join token; unix attestor.\n")
	p("Order: fetch rates (workload holds 1 SVID), batch propagation, fill, memory, single-rule propagation.\n\n")

	p("Fetch rates (one rule, cached):\n")
	for _, x := range r.Rates {
		p("  %-40s %d goroutine(s): %8.0f calls/s  p50 %6.2f ms  p99 %6.2f ms  max %7.2f ms  (%d calls)\n",
			x.Name, x.Goroutines, x.PerSecond, x.P50ms, x.P99ms, x.MaxMs, x.Calls)
	}
	p("\nPropagation (end of `writ entry create` until WatchX509Context delivered every rule):\n")
	p("  %d new rules in one batch: median %.0f ms, max %.0f ms  samples %v\n", r.BatchSize, r.Batch.MedianMs, r.Batch.MaxMs, r.Batch.SamplesMs)
	p("  1 new rule at %d rules:   median %.0f ms, max %.0f ms  samples %v\n", r.SingleAt, r.Single.MedianMs, r.Single.MaxMs, r.Single.SamplesMs)
	p("  (filling up to %d rules reached the workload %.1f s after the last batch was created)\n", r.RulesForRSS, r.SyncAtRulesS)
	p("  one whole FetchX509Context at %d SVIDs (part of each delay above): median %.0f ms, max %.0f ms\n",
		r.SingleAt+len(r.Single.SamplesMs), r.FullFetch.MedianMs, r.FullFetch.MaxMs)

	p("\nMemory (VmRSS):\n")
	p("  at start (1 rule):     server %6.1f MB  agent %6.1f MB\n", mb(r.RSSStart.Server), mb(r.RSSStart.Agent))
	p("  at %d rules, synced: server %6.1f MB  agent %6.1f MB\n", r.RulesForRSS, mb(r.RSSAtRules.Server), mb(r.RSSAtRules.Agent))
}

// mb converts /proc's kB (KiB) into MB as top and SPIRE's figures show them.
func mb(kb int64) float64 { return float64(kb) * 1024 / 1e6 }
