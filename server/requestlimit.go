package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"writ.dev/writ/delegation"
)

// requestKind is a path on which every call of an authenticated workload
// writes an audit event, whatever the outcome, and so is rate limited per
// identity (limits.requests_per_identity).
type requestKind string

const (
	requestExchange requestKind = "token_exchange"
	requestCheck    requestKind = "decision"
	requestAccess   requestKind = "access_request"
)

// requestLimits keeps one workload from flooding the audit log through
// the paths outside SVID issuance: token exchanges, decisions, and access
// requests and reviews. Each
// kind has its own buckets, so a resource server deciding at full rate
// does not starve its own exchanges. A call past the limit writes no event
// of its own; the calls turned away are counted per SPIFFE ID into one
// refusal.summary per interval.
type requestLimits struct {
	limit    RateLimit
	buckets  map[requestKind]*rateLimiter
	refusals *refusalSummary
	now      func() time.Time
	audit    auditRecorder
	log      *slog.Logger
	limited  *prometheus.CounterVec // nil in tests without metrics
}

func newRequestLimits(l LimitsConfig, now func() time.Time, rec auditRecorder, log *slog.Logger) *requestLimits {
	return &requestLimits{
		limit: l.RequestsPerIdentity,
		buckets: map[requestKind]*rateLimiter{
			requestExchange: newRateLimiter(l.RequestsPerIdentity, now),
			requestCheck:    newRateLimiter(l.RequestsPerIdentity, now),
			requestAccess:   newRateLimiter(l.RequestsPerIdentity, now),
		},
		refusals: newRefusalSummary(l.RefusalSummaryInterval.Duration),
		now:      now, audit: rec, log: log,
	}
}

// allow takes a call of kind by caller from its bucket. It returns a
// ResourceExhausted error past the limit. Local administrators are not
// limited: whoever holds the admin socket holds the server.
func (rl *requestLimits) allow(c Caller, kind requestKind) error {
	if c.Local != nil {
		return nil
	}
	who := "unauthenticated"
	if !c.ID.IsZero() {
		who = c.ID.String()
	}
	if rl.buckets[kind].allow(who) {
		return nil
	}
	rl.refusals.note(who, string(kind), "", true, rl.now())
	if rl.limited != nil {
		rl.limited.WithLabelValues(string(kind)).Inc()
	}
	// Debug, like the refusal it stands for: a warning per call would
	// flood the log as the events would have flooded the audit log.
	rl.log.Debug("rate limited", "kind", string(kind), "caller", who)
	what := "token exchanges"
	switch kind {
	case requestCheck:
		what = "decisions"
	case requestAccess:
		what = "access requests and reviews"
	}
	return status.Errorf(codes.ResourceExhausted, "too many %s for %s: at most %g a second, %d at once (limits.requests_per_identity); retry later", what, who, rl.limit.Rate, rl.limit.Burst)
}

// retryAfter is the Retry-After of a 429: the seconds until one more token.
func (rl *requestLimits) retryAfter() string {
	return strconv.Itoa(max(1, int(math.Ceil(1/rl.limit.Rate))))
}

// writeExchangeLimited answers a token exchange past the limit: 429 with
// an RFC 6749 error body. slow_down belongs to the device flow, so the
// code is invalid_request and the description says what limit was hit.
func (rl *requestLimits) writeExchangeLimited(w http.ResponseWriter, err error) {
	body, _ := json.Marshal(struct {
		Code        string `json:"error"`
		Description string `json:"error_description"`
	}{delegation.CodeInvalidRequest, status.Convert(err).Message()})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Retry-After", rl.retryAfter())
	w.WriteHeader(http.StatusTooManyRequests)
	w.Write(body)
}

// run writes the summaries of limited calls until ctx ends.
func (rl *requestLimits) run(ctx context.Context) {
	runSummaries(ctx, rl.refusals, rl.audit, rl.now, rl.log)
}

// flush records the summaries due now (all when all is set).
func (rl *requestLimits) flush(ctx context.Context, all bool) error {
	return flushSummaries(ctx, rl.refusals, rl.audit, rl.now(), all)
}

// startRequestLimits builds the server's per-identity request limits and
// runs their summaries until ctx ends.
func (s *Server) startRequestLimits(ctx context.Context) {
	limited := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "writ_requests_rate_limited_total",
		Help: "Token exchanges, decisions and access requests refused by limits.requests_per_identity, by kind (token_exchange, decision, access_request).",
	}, []string{"kind"})
	s.metrics.reg.MustRegister(limited)
	s.requests = newRequestLimits(s.cfg.Limits, s.now, s, s.log)
	s.requests.limited = limited
	s.background(ctx, s.requests.run)
}
