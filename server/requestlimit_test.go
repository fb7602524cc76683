package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
	"writ.dev/writ/delegation"
)

// limitedServer is a started server on clock whose per-identity request
// limit is a burst of 3 and one a second.
func limitedServer(t *testing.T, clock *manualClock) *Server {
	t.Helper()
	cfg := testConfig(t)
	cfg.Limits.RequestsPerIdentity = RateLimit{Rate: 1, Burst: 3}
	srv, err := New(t.Context(), cfg, Options{Logger: quietLogger(), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return srv
}

// summaryFor waits for the refusal summary of source, flushing the
// request limits' summaries after their interval on clock.
func summaryFor(t *testing.T, srv *Server, clock *manualClock, source string) refusalSummaryDetails {
	t.Helper()
	clock.Add(srv.cfg.Limits.RefusalSummaryInterval.Duration)
	if err := srv.requests.flush(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	// The background flush may have taken the window first; wait for it.
	var found []refusalSummaryDetails
	eventually(t, 10*time.Second, "the summary", func() bool {
		found = nil
		for _, e := range eventsOf(t, srv, audit.EventRefusalSummary) {
			var d refusalSummaryDetails
			if err := json.Unmarshal(e.Details, &d); err != nil {
				t.Fatal(err)
			}
			if d.Source == source {
				found = append(found, d)
			}
		}
		return len(found) > 0
	})
	if len(found) != 1 {
		t.Fatalf("%d summaries for %s, want 1: %+v", len(found), source, found)
	}
	return found[0]
}

// TestTokenExchangeRateLimitedPerIdentity: an agent sending refused
// exchanges past limits.requests_per_identity gets 429 and writes no
// event per call, only one summary; another agent is unaffected.
func TestTokenExchangeRateLimitedPerIdentity(t *testing.T) {
	clock := newManualClock()
	srv := limitedServer(t, clock)
	chatty, quiet := "spiffe://"+testTD+"/agent/chatty", "spiffe://"+testTD+"/agent/quiet"
	svids := map[string]*x509svid.SVID{chatty: mintSVID(t, srv, chatty), quiet: mintSVID(t, srv, quiet)}
	exchange := func(id string) (int, map[string]any, http.Header) {
		t.Helper()
		// No tokens at all: refused as invalid_request, an event each.
		r := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader("grant_type=x"))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.TLS = &tls.ConnectionState{PeerCertificates: svids[id].Certificates}
		w := httptest.NewRecorder()
		srv.exchange(w, r)
		var body map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
			t.Fatalf("body %q: %v", w.Body.String(), err)
		}
		return w.Code, body, w.Header()
	}
	for i := range 3 {
		if code, body, _ := exchange(chatty); code != http.StatusBadRequest {
			t.Fatalf("exchange %d within the burst: %d %v", i, code, body)
		}
	}
	const over = 100
	for i := range over {
		code, body, h := exchange(chatty)
		if code != http.StatusTooManyRequests || body["error"] != delegation.CodeInvalidRequest ||
			!strings.Contains(body["error_description"].(string), "limits.requests_per_identity") || h.Get("Retry-After") != "1" {
			t.Fatalf("exchange %d past the burst: %d %v %v", i, code, body, h)
		}
	}
	if code, body, _ := exchange(quiet); code != http.StatusBadRequest {
		t.Fatalf("another agent: %d %v", code, body)
	}
	counts := map[string]int{}
	for _, e := range eventsOf(t, srv, "delegation.refused") {
		counts[e.Subject]++
	}
	if counts[chatty] != 3 || counts[quiet] != 1 {
		t.Fatalf("delegation.refused events per agent %v, want 3 for the limited one and 1 for the other", counts)
	}
	d := summaryFor(t, srv, clock, chatty)
	if d.Count != over || d.RateLimited != over || d.Recorded != 0 || d.ByType[string(requestExchange)] != over {
		t.Fatalf("summary %+v, want %d rate-limited exchanges", d, over)
	}
	// The bucket refills with the clock.
	if code, body, _ := exchange(chatty); code != http.StatusBadRequest {
		t.Fatalf("after the interval: %d %v", code, body)
	}
}

// TestChecksRateLimitedPerIdentity: a resource server deciding past
// limits.requests_per_identity is refused over gRPC (ResourceExhausted)
// and over HTTP (429), with no decision event per call; another resource
// server is unaffected.
func TestChecksRateLimitedPerIdentity(t *testing.T) {
	clock := newManualClock()
	srv := limitedServer(t, clock)
	chatty, quiet := "spiffe://"+testTD+"/svc/chatty", "spiffe://"+testTD+"/svc/quiet"
	svids := map[string]*x509svid.SVID{chatty: mintSVID(t, srv, chatty), quiet: mintSVID(t, srv, quiet)}
	requester := mintSVID(t, srv, "spiffe://"+testTD+"/agent/asker")
	var der [][]byte
	for _, c := range requester.Certificates {
		der = append(der, c.Raw)
	}
	req := &writv1.CheckRequest{Action: "read", Resource: "hr/salaries", X509Svid: der}
	ds := &decisionService{s: srv}
	check := func(id string) error {
		t.Helper()
		_, err := ds.Check(context.WithValue(t.Context(), callerKey{}, Caller{ID: svids[id].ID}), req)
		return err
	}
	checkHTTP := func(id string) (int, http.Header) {
		t.Helper()
		body, err := protojson.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest(http.MethodPost, "/v1/check", strings.NewReader(string(body)))
		r.TLS = &tls.ConnectionState{PeerCertificates: svids[id].Certificates}
		w := httptest.NewRecorder()
		srv.checkHTTP(w, r)
		return w.Code, w.Header()
	}
	for i := range 3 {
		if err := check(chatty); err != nil {
			t.Fatalf("check %d within the burst: %v", i, err)
		}
	}
	const over = 50
	for range over {
		wantCode(t, check(chatty), codes.ResourceExhausted, "limits.requests_per_identity")
		if code, h := checkHTTP(chatty); code != http.StatusTooManyRequests || h.Get("Retry-After") != "1" {
			t.Fatalf("POST /v1/check past the burst: %d %v", code, h)
		}
	}
	if err := check(quiet); err != nil {
		t.Fatalf("another resource server: %v", err)
	}
	if code, _ := checkHTTP(quiet); code != http.StatusOK {
		t.Fatalf("another resource server over HTTP: %d", code)
	}
	// Decision events are written in the background.
	decisions := func() map[string]int {
		counts := map[string]int{}
		for _, e := range eventsOf(t, srv, "decision") {
			counts[e.Actor]++
		}
		return counts
	}
	eventually(t, 10*time.Second, "the decision events", func() bool { return len(eventsOf(t, srv, "decision")) >= 5 })
	if counts := decisions(); counts[chatty] != 3 || counts[quiet] != 2 {
		t.Fatalf("decision events per caller %v, want 3 for the limited one and 2 for the other", counts)
	}
	d := summaryFor(t, srv, clock, chatty)
	if d.Count != 2*over || d.RateLimited != 2*over || d.ByType[string(requestCheck)] != 2*over {
		t.Fatalf("summary %+v, want %d rate-limited decisions", d, 2*over)
	}
}
