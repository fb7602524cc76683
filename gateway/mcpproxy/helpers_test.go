package mcpproxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"writ.dev/writ/gateway"
)

// stdioServerEnv makes the test binary serve the test upstream over stdio
// instead of running tests, so the stdio path runs a real child process.
const stdioServerEnv = "WRIT_MCPPROXY_TEST_STDIO_SERVER"

func TestMain(m *testing.M) {
	if os.Getenv(stdioServerEnv) == "1" {
		srv, _ := newUpstreamServer()
		if err := srv.Run(context.Background(), &mcp.StdioTransport{}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// upstreamState records what the upstream saw.
type upstreamState struct {
	calls       atomic.Int64
	slowStarted chan struct{}
	slowEnded   chan struct{}
}

type issueArgs struct {
	Repo  string `json:"repo"`
	Title string `json:"title,omitempty"`
}

// newUpstreamServer is the MCP server behind the gateway in the tests.
func newUpstreamServer() (*mcp.Server, *upstreamState) {
	st := &upstreamState{slowStarted: make(chan struct{}, 1), slowEnded: make(chan struct{}, 1)}
	s := mcp.NewServer(&mcp.Implementation{Name: "upstream", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "create_issue", Description: "opens an issue"}, func(ctx context.Context, req *mcp.CallToolRequest, in issueArgs) (*mcp.CallToolResult, any, error) {
		st.calls.Add(1)
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "created in " + in.Repo}}}, nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "read_file"}, func(ctx context.Context, req *mcp.CallToolRequest, in struct{}) (*mcp.CallToolResult, any, error) {
		st.calls.Add(1)
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "contents"}}}, nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "delete_repo"}, func(ctx context.Context, req *mcp.CallToolRequest, in struct{}) (*mcp.CallToolResult, any, error) {
		st.calls.Add(1)
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "deleted"}}}, nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "slow"}, func(ctx context.Context, req *mcp.CallToolRequest, in struct{}) (*mcp.CallToolResult, any, error) {
		st.calls.Add(1)
		st.slowStarted <- struct{}{}
		<-ctx.Done()
		st.slowEnded <- struct{}{}
		return nil, nil, ctx.Err()
	})
	return s, st
}

// fakeDecider follows a rule table: allowed resources are allowed, unless
// the arguments name the production repository; "broken" tools fail, and
// "misdirected" ones fail as a token made for another audience does.
type fakeDecider struct {
	mu    sync.Mutex
	allow map[string]bool
	seen  []decided
}

type decided struct {
	caller gateway.Caller
	req    gateway.Request
}

func newFakeDecider(allowed ...string) *fakeDecider {
	d := &fakeDecider{allow: map[string]bool{}}
	for _, r := range allowed {
		d.allow[r] = true
	}
	return d
}

func (d *fakeDecider) Decide(_ context.Context, c gateway.Caller, r gateway.Request) (gateway.Decision, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seen = append(d.seen, decided{c, r})
	if r.Resource == Resource("github", "broken") {
		return gateway.Decision{}, errors.New("writ server unreachable")
	}
	if r.Resource == Resource("github", "misdirected") {
		return gateway.Decision{}, fmt.Errorf("gateway: %w: delegation_token: token is not for audience \"spiffe://example.org/gateway\"", gateway.ErrEvidenceRefused)
	}
	chain := []string{c.Certificates[0].URIs[0].String()}
	if r.Action != ActionCall || !d.allow[r.Resource] {
		return gateway.Decision{Reason: chain[0] + " has no task that allows call on " + r.Resource, Chain: chain}, nil
	}
	if r.Arguments["repo"] == "acme/prod" {
		return gateway.Decision{Reason: "guardrail no-prod forbids call with repo \"acme/prod\"", Chain: chain}, nil
	}
	return gateway.Decision{Allow: true, Chain: chain}, nil
}

func (d *fakeDecider) decisions() []decided {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]decided(nil), d.seen...)
}

// fakeHolder hands out contexts the test can end, and counts releases.
type fakeHolder struct {
	// revoked makes Hold answer with a context already ended, as when a
	// lock lands between the decision and the hold.
	revoked  atomic.Bool
	mu       sync.Mutex
	live     []context.CancelCauseFunc
	reqs     []gateway.Request
	released atomic.Int64
}

func (h *fakeHolder) Hold(ctx context.Context, c gateway.Caller, r gateway.Request) (context.Context, func()) {
	live, cancel := context.WithCancelCause(ctx)
	if h.revoked.Load() {
		cancel(errors.New("locked just now"))
	}
	h.mu.Lock()
	h.live = append(h.live, cancel)
	h.reqs = append(h.reqs, r)
	h.mu.Unlock()
	var once sync.Once
	return live, func() {
		once.Do(func() { h.released.Add(1); cancel(context.Canceled) })
	}
}

// revokeAll ends every hold as a lock landing would.
func (h *fakeHolder) revokeAll(cause error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.live {
		c(cause)
	}
}

func (h *fakeHolder) holds() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.live)
}

// pki is a throwaway trust domain: a CA, a server certificate for
// 127.0.0.1 and SVIDs for agents.
type pki struct {
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	pool   *x509.CertPool
	server tls.Certificate
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &pki{ca: ca, caKey: key, pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.server = p.leaf(t, "spiffe://example.org/gateway", []net.IP{net.IPv4(127, 0, 0, 1)})
	return p
}

func (p *pki) leaf(t testing.TB, id string, ips []net.IP) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		URIs:         []*url.URL{u},
		IPAddresses:  ips,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// httpClient is an agent's HTTPS client: its SVID (nil: none) and, when
// token is set, a bearer header on every request.
func (p *pki) httpClient(cert *tls.Certificate, token string) *http.Client {
	cfg := &tls.Config{RootCAs: p.pool, MinVersion: tls.VersionTLS13}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	var rt http.RoundTripper = &http.Transport{TLSClientConfig: cfg}
	if token != "" {
		b := &bearer{next: rt}
		b.token.Store(&token)
		rt = b
	}
	return &http.Client{Transport: rt}
}

// bearer adds the token it holds now, so a test can refresh it mid-session.
type bearer struct {
	token atomic.Pointer[string]
	next  http.RoundTripper
}

func (b *bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+*b.token.Load())
	return b.next.RoundTrip(r)
}

// testToken has the shape of a delegation token; the fake decider does not
// check it, the server does.
const testToken = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"

// env is a gateway in front of one streamable HTTP upstream ("github"),
// both on loopback.
type env struct {
	t        testing.TB
	upURL    string
	pki      *pki
	proxy    *Proxy
	gw       *httptest.Server
	decider  *fakeDecider
	holder   *fakeHolder
	upstream *upstreamState
	upAuth   atomic.Int64 // upstream requests that carried Authorization
	upReqs   atomic.Int64
	agent    tls.Certificate
}

func newEnv(t testing.TB, mutate func(*Config), options ...func(*Options)) *env {
	t.Helper()
	e := &env{t: t, pki: newPKI(t), holder: &fakeHolder{}}
	e.decider = newFakeDecider(Resource("github", "create_issue"), Resource("github", "read_file"), Resource("github", "slow"), Resource("local", "create_issue"))
	e.agent = e.pki.leaf(t, "spiffe://example.org/agent/a", nil)

	srv, st := newUpstreamServer()
	e.upstream = st
	mcpUp := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil)
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.upReqs.Add(1)
		if r.Header.Get("Authorization") != "" {
			e.upAuth.Add(1)
		}
		mcpUp.ServeHTTP(w, r)
	}))
	up.TLS = &tls.Config{Certificates: []tls.Certificate{e.pki.server}, MinVersion: tls.VersionTLS13}
	up.Config.ErrorLog = log.New(io.Discard, "", 0)
	up.StartTLS()
	e.upURL = up.URL
	t.Cleanup(up.Close)

	e.gw = httptest.NewUnstartedServer(nil)
	e.gw.Config.ErrorLog = log.New(io.Discard, "", 0)
	e.gw.TLS = &tls.Config{
		Certificates: []tls.Certificate{e.pki.server},
		ClientCAs:    e.pki.pool,
		// Verified when given, so the proxy's own refusal of a caller
		// without one is what the test sees.
		ClientAuth: tls.VerifyClientCertIfGiven,
		MinVersion: tls.VersionTLS13,
	}
	cfg := Config{
		PublicURL:     "https://" + e.gw.Listener.Addr().String() + "/mcp",
		TokenEndpoint: "https://writ.example.org/token",
		Upstreams:     []Upstream{{Name: "github", URL: up.URL}},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	opts := Options{Decider: e.decider, Holder: e.holder, UpstreamClient: e.pki.httpClient(nil, "")}
	for _, o := range options {
		o(&opts)
	}
	p, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	e.proxy = p
	e.gw.Config.Handler = p
	e.gw.StartTLS()
	t.Cleanup(func() { p.Close(); e.gw.Close() })
	return e
}

// connect opens an MCP session through the gateway as the test agent.
func (e *env) connect(server, token string) (*mcp.ClientSession, error) {
	return e.connectAs(&e.agent, server, token)
}

func (e *env) connectAs(cert *tls.Certificate, server, token string) (*mcp.ClientSession, error) {
	return e.connectClient(e.pki.httpClient(cert, token), server)
}

func (e *env) connectClient(hc *http.Client, server string) (*mcp.ClientSession, error) {
	c := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:             e.proxy.Endpoint(server),
		HTTPClient:           hc,
		DisableStandaloneSSE: true,
		MaxRetries:           -1,
	}, nil)
	if err == nil {
		e.t.Cleanup(func() { cs.Close() })
	}
	return cs, err
}

func (e *env) mustConnect(server, token string) *mcp.ClientSession {
	e.t.Helper()
	cs, err := e.connect(server, token)
	if err != nil {
		e.t.Fatalf("connecting through the gateway: %v", err)
	}
	return cs
}

func call(t testing.TB, cs *mcp.ClientSession, name string, args map[string]any) (*mcp.CallToolResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
}

func text(r *mcp.CallToolResult) string {
	if r == nil || len(r.Content) == 0 {
		return ""
	}
	if tc, ok := r.Content[0].(*mcp.TextContent); ok {
		return tc.Text
	}
	return ""
}

// waitFor polls cond; the deadline is only a guard against a hang, never
// a measure of speed.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// gateHandler is a slog handler that holds up whoever logs a message until
// the test opens the gate: it makes the gateway's cut wait, so a test can
// see what happens between a revocation and the cut.
type gateHandler struct {
	msg  string
	gate chan struct{}
}

func (g *gateHandler) Enabled(context.Context, slog.Level) bool { return true }
func (g *gateHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == g.msg {
		<-g.gate
	}
	return nil
}
func (g *gateHandler) WithAttrs([]slog.Attr) slog.Handler { return g }
func (g *gateHandler) WithGroup(string) slog.Handler      { return g }
