package tcpproxy_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"writ.dev/writ/gateway"
	"writ.dev/writ/gateway/tcpproxy"
)

// pki is a trust domain's root for tests that need no server.
type pki struct {
	root   *x509.Certificate
	key    crypto.Signer
	bundle *x509bundle.Bundle
	serial int64
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	return &pki{root: root, key: key, serial: 1, bundle: x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString(td), []*x509.Certificate{root})}
}

func (p *pki) svid(t testing.TB, id string, notAfter time.Time) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.serial++
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.serial), NotBefore: time.Now().Add(-time.Minute), NotAfter: notAfter,
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.root, key.Public(), p.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &x509svid.SVID{ID: spiffeid.RequireFromString(id), Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

// allowAll decides yes and holds until released or cut by the test.
type allowAll struct {
	decisions atomic.Int64
	mu        sync.Mutex
	cuts      []context.CancelCauseFunc
}

func (a *allowAll) Decide(context.Context, gateway.Caller, gateway.Request) (gateway.Decision, error) {
	a.decisions.Add(1)
	return gateway.Decision{Allow: true}, nil
}

func (a *allowAll) Hold(ctx context.Context, _ gateway.Caller, _ gateway.Request) (context.Context, func()) {
	live, cancel := context.WithCancelCause(ctx)
	a.mu.Lock()
	a.cuts = append(a.cuts, cancel)
	a.mu.Unlock()
	return live, func() { cancel(gateway.ErrReleased) }
}

type limitsEnv struct {
	pki    *pki
	gw     *x509svid.SVID
	proxy  string
	decide *allowAll
}

func startLimited(t *testing.T, cfg tcpproxy.Config) *limitsEnv {
	t.Helper()
	p := newPKI(t)
	e := &limitsEnv{pki: p, gw: p.svid(t, "spiffe://"+td+"/gateway", time.Now().Add(time.Hour)), decide: &allowAll{}}
	cfg.Listen, cfg.Resource = "127.0.0.1:0", "tcp/orders-db"
	if cfg.Upstream == "" {
		cfg.Upstream = echoServer(t)
	}
	proxy, err := tcpproxy.New(cfg, gateway.ServerTLSConfig(source{e.gw, p.bundle}), e.decide, e.decide, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := proxy.Listen()
	if err != nil {
		t.Fatal(err)
	}
	e.proxy = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { proxy.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

func (e *limitsEnv) dial(t *testing.T, id string) *tls.Conn {
	t.Helper()
	conn, err := tls.Dial("tcp", e.proxy, tlsconfig.MTLSClientConfig(e.pki.svid(t, id, time.Now().Add(time.Hour)), e.pki.bundle, tlsconfig.AuthorizeAny()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// closedWithin reports whether conn is closed by the other end within d.
func closedWithin(conn net.Conn, d time.Duration) bool {
	conn.SetReadDeadline(time.Now().Add(d))
	_, err := io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return true
}

// TestConnectionLimit: past max_connections a connection is closed on
// accept, and a slot freed takes the next one.
func TestConnectionLimit(t *testing.T) {
	e := startLimited(t, tcpproxy.Config{MaxConnections: 2})
	a, b := e.dial(t, "spiffe://"+td+"/a"), e.dial(t, "spiffe://"+td+"/b")
	if !echoes(a) || !echoes(b) {
		t.Fatal("connections within the limit do not pass")
	}
	// The third is closed before its handshake completes.
	conn, err := tls.Dial("tcp", e.proxy, tlsconfig.MTLSClientConfig(e.pki.svid(t, "spiffe://"+td+"/c", time.Now().Add(time.Hour)), e.pki.bundle, tlsconfig.AuthorizeAny()))
	if err == nil {
		if echoes(conn) {
			t.Fatal("a connection past max_connections passed")
		}
		conn.Close()
	}
	a.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := tls.Dial("tcp", e.proxy, tlsconfig.MTLSClientConfig(e.pki.svid(t, "spiffe://"+td+"/d", time.Now().Add(time.Hour)), e.pki.bundle, tlsconfig.AuthorizeAny()))
		if err == nil && echoes(conn) {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a freed slot was never taken")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestHandshakeTimeoutAndNoCertificate: a peer that never speaks TLS is
// dropped after handshake_timeout, and one without a client certificate
// is refused, neither reaching a decision.
func TestHandshakeTimeoutAndNoCertificate(t *testing.T) {
	e := startLimited(t, tcpproxy.Config{HandshakeTimeout: 200 * time.Millisecond})
	raw, err := net.Dial("tcp", e.proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if !closedWithin(raw, 30*time.Second) {
		t.Fatal("a silent peer was kept past the handshake timeout")
	}
	noCert, err := tls.Dial("tcp", e.proxy, tlsconfig.TLSClientConfig(e.pki.bundle, tlsconfig.AuthorizeAny()))
	if err == nil {
		if echoes(noCert) {
			t.Fatal("a caller without a client certificate got through")
		}
		noCert.Close()
	}
	// A certificate from another authority fails the handshake too.
	other := newPKI(t)
	stranger, err := tls.Dial("tcp", e.proxy, tlsconfig.MTLSClientConfig(other.svid(t, "spiffe://"+td+"/x", time.Now().Add(time.Hour)), e.pki.bundle, tlsconfig.AuthorizeAny()))
	if err == nil {
		if echoes(stranger) {
			t.Fatal("a caller with a certificate from another authority got through")
		}
		stranger.Close()
	}
	if n := e.decide.decisions.Load(); n != 0 {
		t.Fatalf("%d decisions asked for callers that never authenticated", n)
	}
}

// TestIdleTimeout: a connection with no traffic either way is closed
// after idle_timeout; one with traffic is kept.
func TestIdleTimeout(t *testing.T) {
	// Traffic every 100 ms keeps a connection far from a 2 s idle
	// timeout even on a loaded machine.
	e := startLimited(t, tcpproxy.Config{IdleTimeout: 2 * time.Second})
	idle, busy := e.dial(t, "spiffe://"+td+"/idle"), e.dial(t, "spiffe://"+td+"/busy")
	if !echoes(idle) || !echoes(busy) {
		t.Fatal("no echo")
	}
	start := time.Now()
	for time.Since(start) < 3*time.Second {
		if !echoes(busy) {
			t.Fatal("a busy connection was closed")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !closedWithin(idle, 30*time.Second) {
		t.Fatal("an idle connection was kept past idle_timeout")
	}
}

// TestCutByHold: when the Holder's context ends, the connection is
// closed.
func TestCutByHold(t *testing.T) {
	e := startLimited(t, tcpproxy.Config{})
	conn := e.dial(t, "spiffe://"+td+"/a")
	if !echoes(conn) {
		t.Fatal("no echo")
	}
	e.decide.mu.Lock()
	for _, cut := range e.decide.cuts {
		cut(&gateway.CutError{Reason: "test"})
	}
	e.decide.mu.Unlock()
	if !closedWithin(conn, 30*time.Second) {
		t.Fatal("the connection was not cut")
	}
}
