package httpproxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"writ.dev/writ/gateway"
)

var (
	testTD      = spiffeid.RequireTrustDomainFromString("example.org")
	gatewayID   = spiffeid.RequireFromString("spiffe://example.org/gateway")
	agentID     = spiffeid.RequireFromString("spiffe://example.org/agent/triage")
	aliceID     = spiffeid.RequireFromString("spiffe://example.org/person/alice")
	upstreamSID = spiffeid.RequireFromString("spiffe://example.org/orders-api")
)

// testPKI is a trust domain made in the test: one root, SVIDs minted
// from it.
type testPKI struct {
	td     spiffeid.TrustDomain
	key    *ecdsa.PrivateKey
	cert   *x509.Certificate
	bundle *x509bundle.Bundle
}

func newPKI(t testing.TB, td spiffeid.TrustDomain) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test root " + td.Name()},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testPKI{td: td, key: key, cert: cert, bundle: x509bundle.FromX509Authorities(td, []*x509.Certificate{cert})}
}

var serial int64 = 100

// svid mints an X.509-SVID for id valid from notBefore to notAfter.
func (p *testPKI) svidAt(t testing.TB, id spiffeid.ID, notBefore, notAfter time.Time) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:         []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, key.Public(), p.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

func (p *testPKI) svid(t testing.TB, id spiffeid.ID) *x509svid.SVID {
	return p.svidAt(t, id, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
}

// fakeDecider decides by a table keyed "action resource"; a request not
// in it is denied. A delegation token "for-alice" adds alice to the
// chain, as the server would for a token naming her.
type fakeDecider struct {
	mu    sync.Mutex
	allow map[string]bool
	err   error
	calls []gateway.Request
	seen  []gateway.Caller
}

func (d *fakeDecider) Decide(ctx context.Context, c gateway.Caller, r gateway.Request) (gateway.Decision, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, r)
	d.seen = append(d.seen, c)
	if d.err != nil {
		return gateway.Decision{}, d.err
	}
	id, err := x509svid.IDFromCert(c.Certificates[0])
	if err != nil {
		return gateway.Decision{}, err
	}
	chain := []string{id.String()}
	switch c.DelegationToken {
	case "":
	case "for-alice":
		chain = append(chain, aliceID.String())
	default:
		return gateway.Decision{}, errors.New("malformed delegation token")
	}
	if !d.allow[r.Action+" "+r.Resource] {
		return gateway.Decision{Reason: chain[len(chain)-1] + " has no task granting " + r.Action + " on " + r.Resource, Chain: chain}, nil
	}
	return gateway.Decision{Allow: true, Chain: chain}, nil
}

func (d *fakeDecider) requests() []gateway.Request {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]gateway.Request(nil), d.calls...)
}

// fakeHolder hands out contexts that Cut cancels, as a lock landing on a
// resource would.
type fakeHolder struct {
	mu       sync.Mutex
	live     map[string][]context.CancelFunc
	held     chan gateway.Request
	released int
}

func newHolder() *fakeHolder {
	return &fakeHolder{live: map[string][]context.CancelFunc{}, held: make(chan gateway.Request, 100)}
}

func (h *fakeHolder) Hold(ctx context.Context, c gateway.Caller, r gateway.Request) (context.Context, func()) {
	live, cancel := context.WithCancel(ctx)
	h.mu.Lock()
	h.live[r.Resource] = append(h.live[r.Resource], cancel)
	h.mu.Unlock()
	h.held <- r
	var once sync.Once
	return live, func() {
		once.Do(func() {
			cancel()
			h.mu.Lock()
			h.released++
			h.mu.Unlock()
		})
	}
}

func (h *fakeHolder) Cut(resource string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.live[resource] {
		c()
	}
}

func (h *fakeHolder) releases() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.released
}

// fixture is a proxy in front of an upstream, with the PKI, fakes and a
// record of what the upstream received.
type fixture struct {
	pki      *testPKI
	gwSVID   *x509svid.SVID
	decider  *fakeDecider
	holder   *fakeHolder
	proxy    *Proxy
	upstream *httptest.Server
	now      time.Time

	mu       sync.Mutex
	received []*http.Request
}

func testConfig(upstream string) Config {
	return Config{
		Upstream: upstream,
		Audience: "orders-api",
		Routes: []Route{
			{Path: "/orders/{id}/refund", Methods: []string{"POST"}, Action: "refund", Resource: "http/orders/{id}"},
			{Path: "/orders/{id}", Resource: "http/orders/{id}"},
			{Path: "/orders", Resource: "http/orders"},
			{Path: "/files/{rest...}", Resource: "http/files/{rest}"},
			{Prefix: "/static", Resource: "http/static"},
			{Path: "/events", Resource: "http/events"},
		},
	}
}

// newFixture starts an upstream with handler (or one that answers "ok"
// with the path it saw) and a proxy in front of it.
func newFixture(t testing.TB, handler http.HandlerFunc, edit ...func(*Config)) *fixture {
	t.Helper()
	f := &fixture{pki: newPKI(t, testTD), decider: &fakeDecider{allow: map[string]bool{}}, holder: newHolder()}
	f.gwSVID = f.pki.svid(t, gatewayID)
	f.now = time.Now()
	if handler == nil {
		handler = func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("ok " + r.URL.EscapedPath()))
		}
	}
	f.upstream = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.received = append(f.received, r.Clone(context.Background()))
		f.mu.Unlock()
		handler(w, r)
	}))
	t.Cleanup(f.upstream.Close)
	cfg := testConfig(f.upstream.URL)
	for _, e := range edit {
		e(&cfg)
	}
	p, err := New(cfg, Options{Decider: f.decider, Holder: f.holder, SVID: f.gwSVID, Now: func() time.Time { return f.now }, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	f.proxy = p
	return f
}

func (f *fixture) last() *http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.received) == 0 {
		return nil
	}
	return f.received[len(f.received)-1]
}

func (f *fixture) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.received)
}

// request builds a request as the listener would hand it over after an
// mTLS handshake by the caller with svid (none when nil).
func (f *fixture) request(t testing.TB, method, target string, svid *x509svid.SVID) *http.Request {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	r.TLS = &tls.ConnectionState{HandshakeComplete: true}
	if svid != nil {
		r.TLS.PeerCertificates = svid.Certificates
	}
	return r
}

// serve runs r through the proxy and returns the recorded answer.
func (f *fixture) serve(r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	f.proxy.ServeHTTP(w, r)
	return w
}

// serveTLS serves the proxy on a loopback mTLS listener built with
// NewServer and returns its address.
func (f *fixture) serveTLS(t testing.TB) string {
	t.Helper()
	tlsConf := tlsconfig.MTLSServerConfig(f.gwSVID, f.pki.bundle, tlsconfig.AuthorizeMemberOf(testTD))
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tlsConf)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(f.proxy.cfg, f.proxy, tlsConf)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// serveTLSH2 is serveTLS with HTTP/2 offered, as http.Server.ServeTLS
// does.
func (f *fixture) serveTLSH2(t testing.TB) string {
	t.Helper()
	tlsConf := tlsconfig.MTLSServerConfig(f.gwSVID, f.pki.bundle, tlsconfig.AuthorizeMemberOf(testTD))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(f.proxy.cfg, f.proxy, tlsConf)
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// client returns an HTTP client presenting svid that accepts only the
// gateway.
func (f *fixture) client(svid *x509svid.SVID) *http.Client {
	var conf *tls.Config
	if svid == nil {
		conf = tlsconfig.TLSClientConfig(f.pki.bundle, tlsconfig.AuthorizeID(gatewayID))
	} else {
		conf = tlsconfig.MTLSClientConfig(svid, f.pki.bundle, tlsconfig.AuthorizeID(gatewayID))
	}
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig: conf,
		DialContext:     (&net.Dialer{}).DialContext,
	}}
}

func bodyOf(w *httptest.ResponseRecorder) string { return strings.TrimSpace(w.Body.String()) }
