package gateway

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the gateway's Prometheus metrics. A nil *Metrics records
// nothing, so the core and front ends need not ask whether metrics are on.
type Metrics struct {
	reg       *prometheus.Registry
	decisions *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	cache     *prometheus.CounterVec
	cuts      *prometheus.CounterVec
	breaks    prometheus.Counter
}

// Reasons a held session is cut, the "reason" label of
// writ_gateway_sessions_cut_total.
const (
	CutDenied       = "denied"        // the server now denies
	CutUndecided    = "undecided"     // no decision could be had
	CutSVIDExpired  = "svid_expired"  // the caller's X.509-SVID lapsed
	CutTokenExpired = "token_expired" // the caller's delegation token lapsed
)

// NewMetrics makes the gateway's metrics in a registry of their own, with
// the Go and process collectors beside them.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "writ_gateway_decisions_total",
			Help: "Decisions front ends asked for, by front end (tcp, http, mcp), listener name and outcome (allow, deny, error).",
		}, []string{"front_end", "listener", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "writ_gateway_decision_duration_seconds",
			Help: "Time to a decision as a front end sees it, cache hits included, by front end.",
			// From a cache hit (microseconds) to the server's timeout.
			Buckets: []float64{.0001, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"front_end"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "writ_gateway_decision_cache_total",
			Help: "Decisions answered from the cache (hit) or asked of the server (miss), re-decisions of held sessions included.",
		}, []string{"result"}),
		cuts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "writ_gateway_sessions_cut_total",
			Help: "Held sessions (connections, streams, MCP sessions) cut, by reason: denied, undecided, svid_expired, token_expired.",
		}, []string{"reason"}),
		breaks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "writ_gateway_decision_stream_breaks_total",
			Help: "Times the server's WatchDecisions stream broke or could not be opened.",
		}),
	}
	// Known label values start at zero, so rates and alerts see them
	// before the first event.
	for _, r := range []string{"hit", "miss"} {
		m.cache.WithLabelValues(r)
	}
	for _, r := range []string{CutDenied, CutUndecided, CutSVIDExpired, CutTokenExpired} {
		m.cuts.WithLabelValues(r)
	}
	m.reg.MustRegister(m.decisions, m.latency, m.cache, m.cuts, m.breaks,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	return mux
}

// observeCore exports the core's live state: held sessions and whether
// the decision stream is up.
func (m *Metrics) observeCore(c *Core) {
	if m == nil {
		return
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "writ_gateway_sessions_held",
			Help: "Sessions held live and decided again on every change.",
		}, func() float64 { return float64(c.Held()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "writ_gateway_decision_stream_up",
			Help: "1 while the server's WatchDecisions stream is up (decisions may be cached), else 0.",
		}, func() float64 {
			if c.Watching() {
				return 1
			}
			return 0
		}),
	)
}

func (m *Metrics) cacheResult(hit bool) {
	if m == nil {
		return
	}
	if hit {
		m.cache.WithLabelValues("hit").Inc()
	} else {
		m.cache.WithLabelValues("miss").Inc()
	}
}

func (m *Metrics) cut(reason string) {
	if m != nil {
		m.cuts.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) streamBroke() {
	if m != nil {
		m.breaks.Inc()
	}
}

// Decider wraps d so each decision is counted under frontEnd (tcp, http,
// mcp) and listener, and timed. With nil metrics it returns d.
func (m *Metrics) Decider(frontEnd, listener string, d Decider) Decider {
	if m == nil {
		return d
	}
	return &measured{m: m, d: d, frontEnd: frontEnd, listener: listener, latency: m.latency.WithLabelValues(frontEnd)}
}

type measured struct {
	m                  *Metrics
	d                  Decider
	frontEnd, listener string
	latency            prometheus.Observer
}

func (x *measured) Decide(ctx context.Context, c Caller, r Request) (Decision, error) {
	start := time.Now()
	d, err := x.d.Decide(ctx, c, r)
	x.latency.Observe(time.Since(start).Seconds())
	outcome := "deny"
	switch {
	case err != nil:
		outcome = "error"
	case d.Allow:
		outcome = "allow"
	}
	x.m.decisions.WithLabelValues(x.frontEnd, x.listener, outcome).Inc()
	return d, err
}
