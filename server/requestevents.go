package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"writ.dev/writ/task/review"
)

// requestMetrics are the access request metrics: how many wait, and how
// long they waited for a decision.
type requestMetrics struct {
	timeToDecision prometheus.Histogram
}

func (s *Server) registerRequestMetrics() {
	m := &requestMetrics{timeToDecision: prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "writ_request_time_to_decision_seconds",
		Help: "Time from an access request's creation to its approval, denial, cancellation or expiry, as decided on this server.",
		// From an auto-approval (instant) to a pending_ttl of days.
		Buckets: []float64{0.1, 1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600, 72 * 3600},
	})}
	s.metrics.reg.MustRegister(m.timeToDecision, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "writ_requests_pending",
		Help: "Access requests waiting for review (not yet past their pending_ttl), in the shared store.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		recs, err := s.store.ListRequests(ctx, string(review.StatePending))
		if err != nil {
			return -1
		}
		now, n := s.now(), 0
		for _, r := range recs {
			if now.Before(r.PendingUntil) {
				n++
			}
		}
		return float64(n)
	}))
	s.requestMetrics = m
}

// requestWritten is told of every request change this server committed,
// once, after the write: typ is the RequestChange type. Only the server
// that wrote a change reports it, so servers sharing a store never count
// or deliver it twice.
func (s *Server) requestWritten(sr storedRequest, typ string) {
	r := sr.r
	// An auto-approved request is reported created, then approved: it is
	// timed once, as the decision.
	if typ == string(r.State) && r.State != review.StatePending && !r.DecidedAt.IsZero() && s.requestMetrics != nil {
		s.requestMetrics.timeToDecision.Observe(max(r.DecidedAt.Sub(r.CreatedAt), 0).Seconds())
	}
	if s.webhooks != nil {
		s.webhooks.enqueue(sr, typ)
	}
}
