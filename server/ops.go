package server

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	issued   *prometheus.CounterVec
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "writ_grpc_requests_total",
			Help: "gRPC requests by method and status code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "writ_grpc_request_duration_seconds",
			Help:    "gRPC request latency by method.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1, 5},
		}, []string{"method"}),
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "writ_svids_issued_total",
			Help: "SVIDs issued by kind (x509, jwt).",
		}, []string{"kind"}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.issued,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "writ_x509_ca_expiry_timestamp_seconds",
			Help: "When the active X.509 authority expires (unix seconds).",
		}, func() float64 { return float64(s.x509.Active().Cert.NotAfter.Unix()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "writ_store_revision",
			Help: "Newest committed store revision.",
		}, func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			rev, err := s.store.Revision(ctx)
			if err != nil {
				return -1
			}
			return float64(rev)
		}),
	)
	return m
}

func (m *metrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	m.latency.WithLabelValues(info.FullMethod).Observe(time.Since(start).Seconds())
	m.requests.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
	return resp, err
}

// opsHandler serves health and metrics. /healthz says the process runs;
// /readyz says it can issue: the store answers and the authority is valid.
func (s *Server) opsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.ready(r.Context()); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	return mux
}

func (s *Server) ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if _, err := s.clock.skew(); err != nil {
		return err
	}
	if now := s.now(); !now.Before(s.x509.Active().Cert.NotAfter) {
		return fmt.Errorf("x509 authority expired at %s", s.x509.Active().Cert.NotAfter.Format(time.RFC3339))
	}
	if now := s.now(); !now.Before(s.jwt.Active().NotAfter) {
		return fmt.Errorf("jwt authority expired at %s", s.jwt.Active().NotAfter.Format(time.RFC3339))
	}
	return nil
}
