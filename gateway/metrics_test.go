package gateway

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	writv1 "writ.dev/writ/api/writ/v1"
)

// scrape returns the metrics page's samples, one "name{labels} value" per
// line, comments left out.
func scrape(t *testing.T, m *Metrics) map[string]string {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		out[line[:i]] = line[i+1:]
	}
	return out
}

func wantSample(t *testing.T, got map[string]string, name, value string) {
	t.Helper()
	if got[name] != value {
		t.Errorf("%s = %q, want %s", name, got[name], value)
	}
}

// TestMetricsMove: decisions are counted by front end and outcome, cache
// hits and misses, held sessions, cuts by reason and the stream's state,
// as a scrape sees them.
func TestMetricsMove(t *testing.T) {
	f, core := startFake(t)
	m := NewMetrics()
	core.metrics = m
	m.observeCore(core)
	before := scrape(t, m)
	wantSample(t, before, `writ_gateway_decision_stream_up`, "0")
	wantSample(t, before, `writ_gateway_sessions_cut_total{reason="denied"}`, "0")

	ctx, cancel := context.WithCancel(t.Context())
	run(t, core, ctx)
	tcp := m.Decider("tcp", "orders-db", core)
	c := testCaller(t)
	for range 2 {
		if _, err := tcp.Decide(t.Context(), c, connect); err != nil {
			t.Fatal(err)
		}
	}
	live, release := core.Hold(t.Context(), c, connect)
	defer release()
	got := scrape(t, m)
	wantSample(t, got, `writ_gateway_decisions_total{front_end="tcp",listener="orders-db",outcome="allow"}`, "2")
	wantSample(t, got, `writ_gateway_decision_duration_seconds_count{front_end="tcp"}`, "2")
	wantSample(t, got, `writ_gateway_decision_cache_total{result="miss"}`, "1")
	wantSample(t, got, `writ_gateway_decision_cache_total{result="hit"}`, "2") // the second Decide and the Hold
	wantSample(t, got, `writ_gateway_sessions_held`, "1")
	wantSample(t, got, `writ_gateway_decision_stream_up`, "1")

	f.allow.Store(false)
	f.push(&writv1.DecisionsChanged{Revision: 2})
	select {
	case <-live.Done():
	case <-time.After(20 * time.Second): // only keeps a broken core from hanging the test
		t.Fatal("the held session was not cut after the server denied")
	}
	if _, err := tcp.Decide(t.Context(), c, connect); err != nil {
		t.Fatal(err)
	}
	f.down.Store(true)
	if _, err := m.Decider("mcp", "mcp", core).Decide(t.Context(), c, Request{Action: "call", Resource: "mcp/github/tool/x"}); err == nil {
		t.Fatal("decided while the server is down")
	}
	cancel()
	waitFor(t, "the stream to end", func() bool { return !core.Watching() })
	got = scrape(t, m)
	wantSample(t, got, `writ_gateway_sessions_cut_total{reason="denied"}`, "1")
	wantSample(t, got, `writ_gateway_decisions_total{front_end="tcp",listener="orders-db",outcome="deny"}`, "1")
	wantSample(t, got, `writ_gateway_decisions_total{front_end="mcp",listener="mcp",outcome="error"}`, "1")
	wantSample(t, got, `writ_gateway_decision_stream_up`, "0")
}

// TestNilMetricsRecordNothing: a core without metrics works as before,
// and wrapping with nil metrics leaves the decider as it is.
func TestNilMetricsRecordNothing(t *testing.T) {
	_, core := startFake(t)
	var m *Metrics
	if d := m.Decider("tcp", "x", core); d != Decider(core) {
		t.Fatal("nil metrics wrapped the decider")
	}
	decide(t, core, testCaller(t), connect)
}
