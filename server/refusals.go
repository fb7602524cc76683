package server

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"writ.dev/writ/audit"
	"writ.dev/writ/store"
)

const (
	// maxSummaryReasons bounds the distinct reasons one summary keeps.
	maxSummaryReasons = 8
	// maxReasonBytes bounds one reason: reasons may quote what a caller sent.
	maxReasonBytes = 200
	// maxSummarySources bounds the sources counted at once; beyond it
	// refusals are counted under summaryOverflowSource.
	maxSummarySources = 10_000
	// summaryOverflowSource collects refusals from sources past
	// maxSummarySources.
	summaryOverflowSource = "other"
)

// refusalWindow counts one source's refusals in one interval.
type refusalWindow struct {
	start, last time.Time
	count       int            // every refusal, including rate-limited ones
	recorded    int            // of which recorded as events of their own
	rateLimited int            // of which refused by the rate limit
	byType      map[string]int // event type of each refusal
	reasons     []string       // distinct, first maxSummaryReasons
	omitted     int            // distinct reasons beyond those
}

// refusalSummary counts refusals per source per interval. It holds no
// clock and writes nothing: the issuer asks it what to record.
type refusalSummary struct {
	interval time.Duration

	mu      sync.Mutex
	windows map[string]*refusalWindow
	// closed is set by the final flush at shutdown: from then on every
	// refusal is recorded on its own, so none is lost.
	closed bool
}

func newRefusalSummary(interval time.Duration) *refusalSummary {
	return &refusalSummary{interval: interval, windows: map[string]*refusalWindow{}}
}

// note counts a refusal of type typ from source at now. It reports whether
// this refusal should be recorded as an event of its own: the first of an
// interval from a source is (unless the rate limit refused it), so an
// attempt shows at once; the rest are left to the summary.
func (r *refusalSummary) note(source, typ, reason string, limited bool, now time.Time) (recordNow bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return !limited
	}
	w, ok := r.windows[source]
	if !ok {
		if len(r.windows) >= maxSummarySources {
			source = summaryOverflowSource
			w, ok = r.windows[source]
		}
		if !ok {
			w = &refusalWindow{start: now, byType: map[string]int{}}
			r.windows[source] = w
		}
	}
	recordNow = w.count == 0 && !limited
	w.count++
	w.last = now
	w.byType[typ]++
	if limited {
		w.rateLimited++
		reason = "rate limited"
	}
	if recordNow {
		w.recorded++
	}
	reason = truncateReason(reason)
	if !slices.Contains(w.reasons, reason) {
		if len(w.reasons) < maxSummaryReasons {
			w.reasons = append(w.reasons, reason)
		} else {
			w.omitted++
		}
	}
	return recordNow
}

// refusalSummaryEvent is what a summary event records.
type refusalSummaryEvent struct {
	Source string
	Window refusalWindow
}

func (e refusalSummaryEvent) details(interval time.Duration) map[string]any {
	w := e.Window
	return map[string]any{
		"source":          e.Source,
		"count":           w.count,
		"recorded":        w.recorded,
		"rate_limited":    w.rateLimited,
		"by_type":         w.byType,
		"reasons":         w.reasons,
		"reasons_omitted": w.omitted,
		"first":           w.start.UTC(),
		"last":            w.last.UTC(),
		"interval":        interval.String(),
	}
}

// close makes every later refusal one to record on its own: at shutdown,
// after the last flush, nothing is left to summarise it.
func (r *refusalSummary) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
}

// due takes the windows whose interval has ended at now (all of them when
// all is set), leaving out those with nothing beyond what was recorded on
// its own. Sources come out in order.
func (r *refusalSummary) due(now time.Time, all bool) []refusalSummaryEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []refusalSummaryEvent
	for _, src := range slices.Sorted(maps.Keys(r.windows)) {
		w := r.windows[src]
		if !all && now.Sub(w.start) < r.interval {
			continue
		}
		delete(r.windows, src)
		if w.count > w.recorded {
			out = append(out, refusalSummaryEvent{Source: src, Window: *w})
		}
	}
	return out
}

// reopen puts back windows a flush could not record, so the next flush
// tries again. A window the source opened meanwhile is merged in.
func (r *refusalSummary) reopen(evs []refusalSummaryEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range evs {
		w := e.Window
		if cur, ok := r.windows[e.Source]; ok {
			w.count += cur.count
			w.recorded += cur.recorded
			w.rateLimited += cur.rateLimited
			w.last = cur.last
			for t, n := range cur.byType {
				w.byType[t] += n
			}
			for _, reason := range cur.reasons {
				if !slices.Contains(w.reasons, reason) && len(w.reasons) < maxSummaryReasons {
					w.reasons = append(w.reasons, reason)
				}
			}
		}
		r.windows[e.Source] = &w
	}
}

func truncateReason(s string) string {
	if len(s) <= maxReasonBytes {
		return s
	}
	s = s[:maxReasonBytes]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

// runSummaries writes sum's summaries as their intervals end, and all that
// are left when ctx ends; refusals after that are recorded one by one.
func runSummaries(ctx context.Context, sum *refusalSummary, rec auditRecorder, now func() time.Time, log *slog.Logger) {
	t := time.NewTicker(min(sum.interval/4, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			sum.close()
			if err := flushSummaries(final, sum, rec, now(), true); err != nil {
				log.Error("final refusal summaries could not be recorded", "err", err)
			}
			cancel()
			return
		case <-t.C:
			if err := flushSummaries(ctx, sum, rec, now(), false); err != nil && ctx.Err() == nil {
				log.Error("refusal summaries could not be recorded; retrying", "err", err)
			}
		}
	}
}

// flushSummaries records sum's summaries due at now (all when all is set).
// Summaries that cannot be recorded are kept for the next try.
func flushSummaries(ctx context.Context, sum *refusalSummary, rec auditRecorder, now time.Time, all bool) error {
	due := sum.due(now, all)
	if len(due) == 0 {
		return nil
	}
	// The server is the actor: the callers are who the events count.
	ctx = context.WithValue(ctx, callerKey{}, nil)
	evs := make([]store.AuditEvent, 0, len(due))
	for _, d := range due {
		ev, err := rec.event(ctx, audit.EventRefusalSummary, d.Source, d.details(sum.interval))
		if err != nil {
			sum.reopen(due)
			return err
		}
		evs = append(evs, ev)
	}
	if err := rec.record(ctx, evs...); err != nil {
		sum.reopen(due)
		return err
	}
	return nil
}
