package httpproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"writ.dev/writ/gateway"
)

func TestAllowedRequestIsForwardedWithSignedCallerAndNoClientHeaders(t *testing.T) {
	f := newFixture(t, nil)
	f.decider.allow["read http/orders/42"] = true
	agent := f.pki.svid(t, agentID)

	r := f.request(t, "GET", "/orders/42?expand=lines", agent)
	r.Header.Set("Authorization", "Bearer for-alice")
	r.Header.Set("Writ-Caller", "forged")
	r.Header["writ-caller"] = []string{"forged lower case"}
	r.Header["Writ_Caller"] = []string{"forged underscore"}
	r.Header["WRIT_CALLER"] = []string{"forged upper underscore"}
	r.Header.Set("X-Forwarded-For", "10.9.9.9")
	w := f.serve(r)
	if w.Code != 200 || bodyOf(w) != "ok /orders/42" {
		t.Fatalf("got %d %q, want 200 from the upstream", w.Code, bodyOf(w))
	}
	got := f.last()
	if got.URL.RawQuery != "expand=lines" {
		t.Errorf("query %q was not forwarded", got.URL.RawQuery)
	}
	if v := got.Header.Get("Authorization"); v != "" {
		t.Errorf("the delegation token reached the upstream: %q", v)
	}
	for k, v := range got.Header {
		if strings.EqualFold(strings.ReplaceAll(k, "_", "-"), CallerHeader) && (k != CallerHeader || len(v) != 1) {
			t.Errorf("upstream received %s: %q; want exactly one Writ-Caller, the gateway's", k, v)
		}
	}
	if xff := got.Header.Get("X-Forwarded-For"); strings.Contains(xff, "10.9.9.9") {
		t.Errorf("client-sent X-Forwarded-For was passed on: %q", xff)
	}
	v, err := VerifyRequest(got, f.pki.bundle, spiffeid.MatchID(gatewayID), "orders-api", f.now)
	if err != nil {
		t.Fatalf("upstream cannot verify the caller header: %v", err)
	}
	if len(v.Chain) != 2 || v.Chain[0] != agentID || v.Chain[1] != aliceID {
		t.Errorf("chain %v, want [agent alice]", v.Chain)
	}
	if v.Action != "read" || v.Resource != "http/orders/42" || v.Method != "GET" || v.Gateway != gatewayID {
		t.Errorf("claims %+v", v)
	}
	if c := f.decider.seen[0]; c.DelegationToken != "for-alice" || c.SourceAddress != r.RemoteAddr {
		t.Errorf("decider saw token %q from %q", c.DelegationToken, c.SourceAddress)
	}
	if f.holder.releases() != 1 {
		t.Errorf("hold released %d times, want once", f.holder.releases())
	}
}

func TestDeniedRequestIsRefusedWithReasonAndNotForwarded(t *testing.T) {
	f := newFixture(t, nil)
	w := f.serve(f.request(t, "DELETE", "/orders/42", f.pki.svid(t, agentID)))
	if w.Code != http.StatusForbidden {
		t.Fatalf("got %d, want 403", w.Code)
	}
	if want := "writ denied delete on http/orders/42: spiffe://example.org/agent/triage has no task"; !strings.HasPrefix(bodyOf(w), want) {
		t.Errorf("body %q, want it to start with %q", bodyOf(w), want)
	}
	if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("content type %q", ct)
	}
	if f.count() != 0 {
		t.Error("a denied request reached the upstream")
	}
}

// A token the server refuses (made for another audience, bound to another
// certificate) is the caller's to fix: 401 with the server's reason, not
// a 503 that invites retrying the same token.
func TestRefusedEvidenceIs401WithTheReason(t *testing.T) {
	f := newFixture(t, nil)
	f.decider.allow["read http/orders/42"] = true
	f.decider.err = fmt.Errorf("gateway: %w: delegation_token: token is not for audience \"spiffe://example.org/gateway\"", gateway.ErrEvidenceRefused)
	w := f.serve(f.request(t, "GET", "/orders/42", f.pki.svid(t, agentID)))
	if w.Code != http.StatusUnauthorized || !strings.Contains(bodyOf(w), "not for audience") || !strings.Contains(bodyOf(w), "refused the caller's evidence") {
		t.Fatalf("got %d %q, want 401 with the server's reason", w.Code, bodyOf(w))
	}
	if got := w.Header().Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
		t.Errorf("WWW-Authenticate %q", got)
	}
	if f.count() != 0 {
		t.Error("forwarded without a decision")
	}
}

func TestDeciderErrorIs503AndNeverForwarded(t *testing.T) {
	f := newFixture(t, nil)
	f.decider.allow["read http/orders/42"] = true
	f.decider.err = errors.New("server unreachable: dial tcp 10.0.0.1:8081")
	w := f.serve(f.request(t, "GET", "/orders/42", f.pki.svid(t, agentID)))
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(bodyOf(w), "writ could not decide") {
		t.Fatalf("got %d %q, want 503 saying writ could not decide", w.Code, bodyOf(w))
	}
	if strings.Contains(bodyOf(w), "10.0.0.1") {
		t.Error("the decider's error leaked to the caller")
	}
	if f.count() != 0 {
		t.Error("forwarded without a decision")
	}
}

func TestMapping(t *testing.T) {
	f := newFixture(t, nil, func(c *Config) { c.Actions = map[string]string{"PUT": "replace", "PATCH": ""} })
	for k := range map[string]bool{
		"read http/orders/42": true, "delete http/orders/42": true, "refund http/orders/42": true,
		"replace http/orders": true, "write http/orders": true, "read http/files/a/b.txt": true,
		"read http/static": true, "read http/files/x": true,
	} {
		f.decider.allow[k] = true
	}
	agent := f.pki.svid(t, agentID)
	for _, tc := range []struct {
		method, target string
		status         int
		want           gateway.Request
	}{
		{"GET", "/orders/42", 200, gateway.Request{Action: "read", Resource: "http/orders/42"}},
		{"HEAD", "/orders/42", 200, gateway.Request{Action: "read", Resource: "http/orders/42"}},
		{"DELETE", "/orders/42", 200, gateway.Request{Action: "delete", Resource: "http/orders/42"}},
		{"POST", "/orders/42/refund", 200, gateway.Request{Action: "refund", Resource: "http/orders/42"}},
		{"POST", "/orders", 200, gateway.Request{Action: "write", Resource: "http/orders"}},
		{"PUT", "/orders", 200, gateway.Request{Action: "replace", Resource: "http/orders"}},
		{"GET", "/files/a/b.txt", 200, gateway.Request{Action: "read", Resource: "http/files/a/b.txt"}},
		{"GET", "/files/x/", 200, gateway.Request{Action: "read", Resource: "http/files/x"}},
		{"GET", "/static/css/site.css", 200, gateway.Request{Action: "read", Resource: "http/static"}},
		{"GET", "/static", 200, gateway.Request{Action: "read", Resource: "http/static"}},
		// A percent-encoded letter is the letter.
		{"GET", "/orders/%34%32", 200, gateway.Request{Action: "read", Resource: "http/orders/42"}},
		{"GET", "/orders/42/refund", 405, gateway.Request{}},
		{"PATCH", "/orders", 405, gateway.Request{}},
		{"PROPFIND", "/orders", 405, gateway.Request{}},
		{"GET", "/statics", 404, gateway.Request{}},
		{"GET", "/", 404, gateway.Request{}},
		{"GET", "/orders/42/", 404, gateway.Request{}},
		{"GET", "/files", 404, gateway.Request{}},
		{"GET", "/admin", 404, gateway.Request{}},
		// Values that cannot be part of a resource name match no route.
		{"GET", "/orders/a%20b", 404, gateway.Request{}},
		{"GET", "/orders/*", 404, gateway.Request{}},
		{"GET", "/orders/%C3%A9", 404, gateway.Request{}},
	} {
		before := len(f.decider.requests())
		w := f.serve(f.request(t, tc.method, tc.target, agent))
		if w.Code != tc.status {
			t.Errorf("%s %s: got %d %q, want %d", tc.method, tc.target, w.Code, bodyOf(w), tc.status)
			continue
		}
		calls := f.decider.requests()[before:]
		switch {
		case tc.status != 200 && len(calls) != 0:
			t.Errorf("%s %s: refused by the mapping but still decided: %+v", tc.method, tc.target, calls)
		case tc.status == 200 && (len(calls) != 1 || calls[0].Action != tc.want.Action || calls[0].Resource != tc.want.Resource):
			t.Errorf("%s %s: decided %+v, want %+v", tc.method, tc.target, calls, tc.want)
		}
	}
}

// TestPathTricksAreRefused sends the paths proxies and upstreams have
// disagreed about: none may be decided or forwarded.
func TestPathTricksAreRefused(t *testing.T) {
	f := newFixture(t, nil)
	f.decider.allow["read http/static"] = true
	f.decider.allow["read http/files/public"] = true
	agent := f.pki.svid(t, agentID)
	for _, target := range []string{
		"/static/../orders/1",
		"/static/%2e%2e/orders/1",
		"/static/%2E%2E/orders/1",
		"/static/.%2e/orders/1",
		"/static/./x",
		"/files/public%2f..%2fsecret",
		"/files/public%2F..%2Fsecret",
		"/files/public%5c..%5csecret",
		"/files/public\\..\\secret",
		"/static/%252e%252e/orders",
		"/static/..;/orders/1",
		"/static;x/a",
		"/static//orders/1",
		"//static",
		"/static/%00",
		"/static/a%0d%0aX-Injected:%201",
		// A character Go's URL parser would escape makes it drop the raw
		// path and re-encode the decoded one, turning %2f into '/'.
		"/static/a%2fb<",
		"/static/%2e%2e%2forders<",
	} {
		w := f.serve(f.request(t, "GET", target, agent))
		if w.Code != http.StatusBadRequest {
			t.Errorf("%s: got %d %q, want 400", target, w.Code, bodyOf(w))
		}
		if strings.Contains(bodyOf(w), "\n") || strings.Contains(bodyOf(w), "\r") {
			t.Errorf("%s: the refusal echoes raw control characters: %q", target, bodyOf(w))
		}
	}
	if n := len(f.decider.requests()); n != 0 || f.count() != 0 {
		t.Errorf("%d refused paths were decided, %d forwarded", n, f.count())
	}
}

func TestForwardedPathIsTheDecidedOne(t *testing.T) {
	f := newFixture(t, nil)
	f.decider.allow["read http/orders/42"] = true
	f.decider.allow["read http/static"] = true
	agent := f.pki.svid(t, agentID)
	for target, want := range map[string]string{
		"/orders/%34%32":      "ok /orders/42",
		"/static/a%20b/c%3Fd": "ok /static/a%20b/c%3Fd",
		"/static/x/":          "ok /static/x/",
	} {
		w := f.serve(f.request(t, "GET", target, agent))
		if w.Code != 200 || bodyOf(w) != want {
			t.Errorf("%s: got %d %q, want %q", target, w.Code, bodyOf(w), want)
			continue
		}
		if _, err := VerifyRequest(f.last(), f.pki.bundle, spiffeid.MatchID(gatewayID), "orders-api", f.now); err != nil {
			t.Errorf("%s: the upstream's path differs from the signed one: %v", target, err)
		}
	}
}

func TestCallerWithoutCertificateIsRefused(t *testing.T) {
	f := newFixture(t, nil)
	f.decider.allow["read http/orders/1"] = true
	plain := httptest.NewRequest("GET", "/orders/1", nil)
	noCert := f.request(t, "GET", "/orders/1", nil)
	for name, r := range map[string]*http.Request{"plain HTTP": plain, "TLS without certificate": noCert} {
		w := f.serve(r)
		if w.Code != http.StatusForbidden || !strings.Contains(bodyOf(w), "X.509-SVID") {
			t.Errorf("%s: got %d %q, want 403 asking for an SVID", name, w.Code, bodyOf(w))
		}
	}
	// Behind the listener NewServer serves, the handshake itself fails.
	addr := f.serveTLS(t)
	if resp, err := f.client(nil).Get("https://" + addr + "/orders/1"); err == nil {
		resp.Body.Close()
		t.Errorf("a caller without a certificate got %d", resp.StatusCode)
	}
	if len(f.decider.requests()) != 0 || f.count() != 0 {
		t.Error("a caller without a certificate was decided or forwarded")
	}
}

func TestAuthorizationOtherThanBearerIsRefused(t *testing.T) {
	f := newFixture(t, nil)
	f.decider.allow["read http/orders/1"] = true
	agent := f.pki.svid(t, agentID)
	for _, values := range [][]string{{"Basic dXNlcjpwYXNz"}, {"Bearer "}, {"Bearer for-alice", "Bearer for-alice"}, {"for-alice"}} {
		r := f.request(t, "GET", "/orders/1", agent)
		r.Header["Authorization"] = values
		w := f.serve(r)
		if w.Code != http.StatusUnauthorized || strings.Contains(bodyOf(w), "dXNlcjpwYXNz") {
			t.Errorf("%q: got %d %q, want 401 not echoing the credential", values, w.Code, bodyOf(w))
		}
		if !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%q: 401 without a WWW-Authenticate challenge", values)
		}
	}
	if f.count() != 0 {
		t.Error("forwarded a request with a refused Authorization header")
	}
}

func TestBodyLimit(t *testing.T) {
	f := newFixture(t, func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return
		}
		w.Write([]byte("read all"))
	}, func(c *Config) { c.Limits.MaxBodyBytes = 1024 })
	f.decider.allow["write http/orders"] = true
	agent := f.pki.svid(t, agentID)

	r := f.request(t, "POST", "/orders", agent)
	r.Body, r.ContentLength = io.NopCloser(strings.NewReader(strings.Repeat("x", 2048))), 2048
	if w := f.serve(r); w.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("declared 2048 bytes: got %d %q, want 413", w.Code, bodyOf(w))
	}
	if len(f.decider.requests()) != 0 || f.count() != 0 {
		t.Error("an oversized body was decided or forwarded")
	}

	// A body without a declared length is cut where it passes the limit.
	r = f.request(t, "POST", "/orders", agent)
	r.Body, r.ContentLength = io.NopCloser(strings.NewReader(strings.Repeat("x", 4096))), -1
	if w := f.serve(r); w.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("streamed 4096 bytes: got %d %q, want 413", w.Code, bodyOf(w))
	}

	r = f.request(t, "POST", "/orders", agent)
	r.Body, r.ContentLength = io.NopCloser(strings.NewReader("small")), 5
	if w := f.serve(r); w.Code != 200 {
		t.Errorf("small body: got %d %q", w.Code, bodyOf(w))
	}
}

// withdrawnHolder hands out contexts that are already done, as when a lock
// lands between the decision and the hold.
type withdrawnHolder struct{}

func (withdrawnHolder) Hold(ctx context.Context, _ gateway.Caller, _ gateway.Request) (context.Context, func()) {
	c, cancel := context.WithCancel(ctx)
	cancel()
	return c, cancel
}

func TestDecisionWithdrawnBeforeForwardingIsRefused(t *testing.T) {
	f := newFixture(t, nil)
	f.decider.allow["read http/orders/1"] = true
	f.proxy.holder = withdrawnHolder{}
	w := f.serve(f.request(t, "GET", "/orders/1", f.pki.svid(t, agentID)))
	if w.Code != http.StatusForbidden || f.count() != 0 {
		t.Errorf("got %d %q with %d forwarded, want 403 and nothing forwarded", w.Code, bodyOf(w), f.count())
	}
}

// TestOverMTLSUpstreamVerifiesCaller runs the whole path on loopback: the
// agent's mTLS handshake, the decision, and an upstream that serves only
// requests whose Writ-Caller header verifies.
func TestOverMTLSUpstreamVerifiesCaller(t *testing.T) {
	var f *fixture
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, _ := CallerFromContext(r.Context())
		w.Write([]byte("hello " + v.Chain[len(v.Chain)-1].String()))
	})
	f = newFixture(t, func(w http.ResponseWriter, r *http.Request) {
		RequireCaller(hello, f.pki.bundle, spiffeid.MatchID(gatewayID), "orders-api").ServeHTTP(w, r)
	})
	f.now = time.Time{}
	f.proxy.now = time.Now
	f.decider.allow["read http/orders/7"] = true
	addr := f.serveTLS(t)
	req, _ := http.NewRequest("GET", "https://"+addr+"/orders/7", nil)
	req.Header.Set("Authorization", "Bearer for-alice")
	resp, err := f.client(f.pki.svid(t, agentID)).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello "+aliceID.String() {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}

	// The same upstream refuses a request that did not come through the
	// gateway.
	direct, err := http.Get(f.upstream.URL + "/orders/7")
	if err != nil {
		t.Fatal(err)
	}
	direct.Body.Close()
	if direct.StatusCode != http.StatusUnauthorized {
		t.Errorf("direct request: got %d, want 401", direct.StatusCode)
	}
}

// TestStreamIsCutWhenHoldEnds keeps a server-sent-events stream open and
// cancels the hold, as a lock would: the caller's stream must end and the
// upstream's request must be cancelled.
func TestStreamIsCutWhenHoldEnds(t *testing.T) {
	t.Run("HTTP/1.1", func(t *testing.T) { testStreamCut(t, false) })
	t.Run("HTTP/2", func(t *testing.T) { testStreamCut(t, true) })
}

func testStreamCut(t *testing.T, h2 bool) {
	upstreamDone := make(chan struct{})
	f := newFixture(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte("data: first\n\n"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		close(upstreamDone)
	})
	f.decider.allow["read http/events"] = true
	client := f.client(f.pki.svid(t, agentID))
	var addr string
	if h2 {
		addr = f.serveTLSH2(t)
		client.Transport.(*http.Transport).ForceAttemptHTTP2 = true
	} else {
		addr = f.serveTLS(t)
	}
	resp, err := client.Get("https://" + addr + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if h2 != (resp.ProtoMajor == 2) {
		t.Fatalf("served over %s", resp.Proto)
	}
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "data: first\n" {
		t.Fatalf("first event: %q, %v", line, err)
	}
	held := <-f.holder.held
	if held.Resource != "http/events" {
		t.Fatalf("held %+v", held)
	}
	f.holder.Cut("http/events")

	readErr := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, br)
		readErr <- err
	}()
	// Generous bounds that only a hang reaches; the cut itself is
	// measured in the benchmarks.
	select {
	case err := <-readErr:
		if err == nil {
			t.Error("the stream ended cleanly; a cut stream must end with an error, so the caller cannot take it for complete")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the stream was not cut")
	}
	select {
	case <-upstreamDone:
	case <-time.After(20 * time.Second):
		t.Fatal("the upstream's request was not cancelled")
	}
}

// TestUpstreamMTLS has the gateway reach an upstream that requires mTLS and
// admits only the gateway's SPIFFE ID.
func TestUpstreamMTLS(t *testing.T) {
	pki := newPKI(t, testTD)
	upSVID := pki.svid(t, upstreamSID)
	var sawClient spiffeid.ID
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawClient, _ = spiffeid.FromURI(r.TLS.PeerCertificates[0].URIs[0])
		w.Write([]byte("secure"))
	}))
	up.TLS = tlsconfig.MTLSServerConfig(upSVID, pki.bundle, tlsconfig.AuthorizeID(gatewayID))
	ln, err := tls.Listen("tcp", "127.0.0.1:0", up.TLS)
	if err != nil {
		t.Fatal(err)
	}
	up.Listener = ln
	up.Start() // the listener already speaks TLS with the SVID
	t.Cleanup(up.Close)

	cfg := testConfig("https://" + ln.Addr().String())
	cfg.UpstreamID = upstreamSID.String()
	d := &fakeDecider{allow: map[string]bool{"read http/orders/1": true}}
	p, err := New(cfg, Options{Decider: d, Holder: newHolder(), SVID: pki.svid(t, gatewayID), Bundle: pki.bundle, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/orders/1", nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: pki.svid(t, agentID).Certificates}
	p.ServeHTTP(w, r)
	if w.Code != 200 || bodyOf(w) != "secure" || sawClient != gatewayID {
		t.Fatalf("got %d %q, upstream saw %v", w.Code, bodyOf(w), sawClient)
	}

	// An upstream with another identity is not trusted.
	cfg.UpstreamID = "spiffe://example.org/someone-else"
	p, err = New(cfg, Options{Decider: d, Holder: newHolder(), SVID: pki.svid(t, gatewayID), Bundle: pki.bundle, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	w = httptest.NewRecorder()
	p.ServeHTTP(w, r)
	if w.Code != http.StatusBadGateway {
		t.Errorf("impostor upstream: got %d %q, want 502", w.Code, bodyOf(w))
	}
}

// TestUpgradedConnectionIsCutWhenHoldEnds switches protocols through the
// proxy (as a WebSocket does) and cancels the hold: the tunnel must close.
func TestUpgradedConnectionIsCutWhenHoldEnds(t *testing.T) {
	f := newFixture(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "upgrade required", http.StatusUpgradeRequired)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw)
	})
	f.decider.allow["read http/events"] = true
	addr := f.serveTLS(t)
	conf := f.client(f.pki.svid(t, agentID)).Transport.(*http.Transport).TLSClientConfig
	conn, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /events HTTP/1.1\r\nHost: gateway\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	io.WriteString(conn, "ping\n")
	if line, err := br.ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("echo through the tunnel: %q %v", line, err)
	}
	<-f.holder.held
	f.holder.Cut("http/events")
	conn.SetReadDeadline(time.Now().Add(20 * time.Second)) // only a hang reaches it
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Fatalf("the tunnel was not closed: %v", err)
	}
}

// TestTrailersCannotCarryCallerOrToken sends Writ-Caller and Authorization
// as request trailers, which some servers merge into the headers.
func TestTrailersCannotCarryCallerOrToken(t *testing.T) {
	trailers := make(chan http.Header, 1)
	f := newFixture(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		trailers <- r.Trailer.Clone()
	})
	f.decider.allow["write http/orders"] = true
	r := f.request(t, "POST", "/orders", f.pki.svid(t, agentID))
	r.Body, r.ContentLength = io.NopCloser(strings.NewReader("body")), -1
	r.Trailer = http.Header{"Writ-Caller": {"forged"}, "Writ_caller": {"forged"}, "Authorization": {"Bearer for-alice"}, "X-Checksum": {"1"}}
	if w := f.serve(r); w.Code != 200 {
		t.Fatalf("got %d %q", w.Code, bodyOf(w))
	}
	got := <-trailers
	for k := range got {
		if strings.EqualFold(strings.ReplaceAll(k, "_", "-"), CallerHeader) || strings.EqualFold(k, "Authorization") {
			t.Errorf("trailer %s reached the upstream", k)
		}
	}
}
