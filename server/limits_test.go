package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	writv1 "writ.dev/writ/api/writ/v1"
)

// closeBound is how long a test waits for the server to close a
// connection whose (short, injected) timeout has passed: generous, so that
// a loaded machine does not fail it; a missing timeout still never closes.
const closeBound = 15 * time.Second

// freeAddr returns a loopback address for listeners whose address must be
// known before Defaults derives settings from it (the token endpoint issuer).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// unsizedAnonymousConn is a network gRPC connection without a client certificate,
// able to send more than the server takes.
func unsizedAnonymousConn(t *testing.T, srv *Server) *grpc.ClientConn {
	t.Helper()
	bundle := x509bundle.FromX509Authorities(srv.TrustDomain(), srv.x509.Bundle())
	cc, err := grpc.NewClient(srv.ListenAddr().String(),
		grpc.WithTransportCredentials(credentials.NewTLS(tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(srv.tlsID.ID())))),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(16<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func wantExhausted(t *testing.T, what string, err error, limitText string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), limitText) {
		t.Errorf("%s: got %v %q, want ResourceExhausted naming %s", what, st.Code(), st.Message(), limitText)
	}
	if strings.Contains(st.Message(), "AAAA") {
		t.Errorf("%s: the refusal repeats the request: %q", what, st.Message())
	}
}

func TestNetworkRequestSizeLimits(t *testing.T) {
	srv := startServer(t, testConfig(t))
	cc := unsizedAnonymousConn(t, srv)
	ctx := t.Context()
	people := writv1.NewPersonServiceClient(cc)
	_, csr := newCSR(t)

	// Beyond the largest request of any method the transport refuses it
	// before reading it; below that, each method's own limit holds.
	_, err := people.Login(ctx, &writv1.LoginRequest{IdToken: strings.Repeat("A", 1<<20), Csr: csr})
	wantExhausted(t, "1 MiB Login", err, "524288")
	_, err = people.Login(ctx, &writv1.LoginRequest{IdToken: strings.Repeat("A", 40<<10), Csr: csr})
	wantExhausted(t, "40 KiB Login", err, "at most 32768 bytes")
	_, err = people.Login(ctx, &writv1.LoginRequest{IdToken: strings.Repeat("A", 400<<10), Csr: csr})
	wantExhausted(t, "400 KiB Login", err, "at most 32768 bytes")

	// A login of a legitimate size gets past the limits to the handler.
	_, err = people.Login(ctx, &writv1.LoginRequest{IdToken: strings.Repeat("A", 20<<10), Csr: csr})
	if status.Code(err) == codes.ResourceExhausted {
		t.Errorf("a 20 KiB login was refused for its size: %v", err)
	}

	// A method without its own limit gets the smallest. GetLoginConfig
	// takes an empty request; this one carries an unknown field.
	err = cc.Invoke(ctx, writv1.PersonService_GetLoginConfig_FullMethodName,
		&writv1.LoginRequest{IdToken: strings.Repeat("A", 8<<10)}, &writv1.LoginConfig{})
	wantExhausted(t, "8 KiB GetLoginConfig", err, "at most 4096 bytes")
	// What a caller may not call is refused before its size matters.
	_, err = writv1.NewEntryServiceClient(cc).ListEntries(ctx, &writv1.ListEntriesRequest{Hint: strings.Repeat("A", 8<<10)})
	wantCode(t, err, codes.PermissionDenied, "local administrators")

	member := mintSVID(t, srv, "spiffe://"+testTD+"/workload")
	bundle := x509bundle.FromX509Authorities(srv.TrustDomain(), srv.x509.Bundle())
	mcc, err := grpc.NewClient(srv.ListenAddr().String(),
		grpc.WithTransportCredentials(credentials.NewTLS(tlsconfig.MTLSClientConfig(member, bundle, tlsconfig.AuthorizeID(srv.tlsID.ID())))))
	if err != nil {
		t.Fatal(err)
	}
	defer mcc.Close()
	_, err = writv1.NewAgentServiceClient(mcc).RenewAgent(ctx, &writv1.RenewAgentRequest{Csr: make([]byte, 20<<10)})
	wantExhausted(t, "20 KiB RenewAgent", err, "at most 16384 bytes")

	// The admin socket keeps room for batches of rules.
	_, err = writv1.NewEntryServiceClient(adminConn(t, srv)).ListEntries(ctx, &writv1.ListEntriesRequest{Hint: strings.Repeat("A", 1<<20)})
	if status.Code(err) == codes.ResourceExhausted {
		t.Errorf("a 1 MiB admin request was refused for its size: %v", err)
	}
}

// recvStream hands out one message of a given chain size.
type recvStream struct {
	grpc.ServerStream
	chain int
}

func (r recvStream) Context() context.Context { return context.Background() }

func (r recvStream) RecvMsg(m any) error {
	m.(*writv1.CertificateJoinRequest).Chain = [][]byte{make([]byte, r.chain)}
	return nil
}

func TestStreamMessagesAreSizeChecked(t *testing.T) {
	info := &grpc.StreamServerInfo{FullMethod: writv1.AgentService_JoinWithCertificate_FullMethodName}
	recv := func(chain int) error {
		return streamSizeLimit(nil, recvStream{chain: chain}, info, func(_ any, ss grpc.ServerStream) error {
			return ss.RecvMsg(&writv1.CertificateJoinRequest{})
		})
	}
	wantExhausted(t, "100 KiB JoinWithCertificate message", recv(100<<10), "at most 65536 bytes")
	if err := recv(8 << 10); err != nil {
		t.Errorf("an 8 KiB chain: %v", err)
	}
}

func TestTokenEndpointBodyLimits(t *testing.T) {
	cfg := testConfig(t)
	cfg.TokenEndpoint.Address = freeAddr(t)
	cfg.Defaults()
	srv := startServer(t, cfg)
	svid := mintSVID(t, srv, bot)
	bundle := x509bundle.FromX509Authorities(srv.TrustDomain(), srv.x509.Bundle())
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(srv.tlsID.ID()))}}
	t.Cleanup(hc.CloseIdleConnections)
	base := "https://" + cfg.TokenEndpoint.Address

	form := url.Values{"grant_type": {"x"}, "subject_token": {strings.Repeat("A", 100<<10)}}
	resp, err := hc.PostForm(base+"/token", form)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), `"invalid_request"`) || !strings.Contains(string(body), "65536 bytes") {
		t.Errorf("100 KiB token form: %d %s, want 413 invalid_request naming the limit", resp.StatusCode, body)
	}

	resp, err = hc.Post(base+"/v1/check", "application/json", strings.NewReader(`{"action":"`+strings.Repeat("A", 200<<10)+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "131072 bytes") || strings.Contains(string(body), "AAAA") {
		t.Errorf("200 KiB check body: %d %.200s, want 413 naming the limit", resp.StatusCode, body)
	}
}

// waitClosed reads until the server closes c; a read timeout means it kept
// the connection open.
func waitClosed(t *testing.T, what string, c net.Conn, r io.Reader) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(closeBound))
	_, err := io.Copy(io.Discard, r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("%s: still open after %v", what, closeBound)
	}
}

func TestIdleConnectionsAreClosed(t *testing.T) {
	cfg := testConfig(t)
	cfg.OIDCAddress = "127.0.0.1:0"
	cfg.BundleEndpoint.Address = "127.0.0.1:0"
	cfg.TokenEndpoint.Address = freeAddr(t)
	cfg.Limits = LimitsConfig{
		HandshakeTimeout: Duration{time.Second},
		IdleTimeout:      Duration{300 * time.Millisecond},
	}
	cfg.Defaults()
	srv := startServer(t, cfg)
	bundle := x509bundle.FromX509Authorities(srv.TrustDomain(), srv.x509.Bundle())
	svid := mintSVID(t, srv, bot)

	listeners := []struct {
		name, addr, request string
		tls                 *tls.Config
	}{
		{"ops", srv.OpsAddr().String(), "GET /healthz", nil},
		{"oidc", srv.OIDCAddr().String(), "GET /keys", nil},
		{"bundle", srv.BundleEndpointAddr().String(), "GET /", tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(srv.tlsID.ID()))},
		{"token", cfg.TokenEndpoint.Address, "GET /token", tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(srv.tlsID.ID()))},
	}
	// Each subtest mostly waits for the server's timeouts on connections
	// of its own, so they wait together.
	for _, l := range listeners {
		t.Run(l.name, func(t *testing.T) {
			t.Parallel()
			silent, err := net.Dial("tcp", l.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer silent.Close()

			raw, err := net.Dial("tcp", l.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			conn := raw
			if l.tls != nil {
				conn = tls.Client(raw, l.tls)
			}
			if _, err := io.WriteString(conn, l.request+" HTTP/1.1\r\nHost: writ\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.Close {
				t.Fatalf("%s closed the connection after the response; the test needs keep-alive", l.request)
			}
			waitClosed(t, "a keep-alive connection without a next request", raw, br)
			waitClosed(t, "a connection that sends nothing", silent, silent)
		})
	}
	t.Run("grpc", func(t *testing.T) {
		t.Parallel()
		silent, err := net.Dial("tcp", srv.ListenAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer silent.Close()
		waitClosed(t, "a connection that never handshakes", silent, silent)
	})
}

func TestConnectionsPerSourceAreCapped(t *testing.T) {
	cfg := testConfig(t)
	cfg.Limits.ConnsPerSource = 2
	srv := startServer(t, cfg)
	bundle := x509bundle.FromX509Authorities(srv.TrustDomain(), srv.x509.Bundle())
	clientTLS := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(srv.tlsID.ID()))
	clientTLS.NextProtos = []string{"h2"}
	// dial reports whether the server took a connection: a refused one is
	// closed right after accept, so the handshake fails; an accepted one
	// completes it and gets the server's HTTP/2 settings.
	dial := func() (*tls.Conn, error) {
		d := &net.Dialer{Timeout: closeBound}
		c, err := tls.DialWithDialer(d, "tcp", srv.ListenAddr().String(), clientTLS)
		if err != nil {
			return nil, err
		}
		c.SetReadDeadline(time.Now().Add(closeBound))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			c.Close()
			return nil, err
		}
		c.SetReadDeadline(time.Time{})
		return c, nil
	}
	first := unsizedAnonymousConn(t, srv)
	if _, err := writv1.NewBundleServiceClient(first).GetBundle(t.Context(), &writv1.GetBundleRequest{}); err != nil {
		t.Fatal(err)
	}
	second, err := dial()
	if err != nil {
		t.Fatalf("the second connection: %v", err)
	}
	defer second.Close()
	if third, err := dial(); err == nil {
		third.Close()
		t.Fatal("a third connection from one source was accepted with conns_per_source 2")
	}
	// A closed connection gives its slot back.
	first.Close()
	deadline := time.Now().Add(closeBound)
	for {
		c, err := dial()
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection accepted after one was closed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestAnonymousCallsShareSlots(t *testing.T) {
	cfg := testConfig(t)
	cfg.Limits.AnonymousCalls = 1
	srv := startServer(t, cfg)
	// Each call gives its slot back when it ends.
	cc := unsizedAnonymousConn(t, srv)
	for range 5 {
		if _, err := writv1.NewBundleServiceClient(cc).GetBundle(t.Context(), &writv1.GetBundleRequest{}); err != nil {
			t.Fatal(err)
		}
	}

	anonymous := peer.NewContext(t.Context(), &peer.Peer{AuthInfo: credentials.TLSInfo{}})
	first, endFirst := context.WithCancel(anonymous)
	info := &tap.Info{FullMethodName: writv1.PersonService_Login_FullMethodName}
	if _, err := srv.tapNetwork(first, info); err != nil {
		t.Fatal(err)
	}
	_, err := srv.tapNetwork(anonymous, info)
	wantExhausted(t, "a second anonymous call with one slot", err, "busy with 1 calls")
	// Callers with a certificate do not take anonymous slots.
	svid := mintSVID(t, srv, "spiffe://"+testTD+"/workload")
	withCert := peer.NewContext(t.Context(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: svid.Certificates}}})
	if _, err := srv.tapNetwork(withCert, &tap.Info{FullMethodName: writv1.DecisionService_Check_FullMethodName}); err != nil {
		t.Errorf("a caller with a certificate: %v", err)
	}
	endFirst()
	deadline := time.Now().Add(closeBound)
	for {
		if _, err = srv.tapNetwork(anonymous, info); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slot of an ended call was not given back: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLimitsConfig(t *testing.T) {
	c, err := ParseConfig(strings.NewReader("limits:\n  conns_per_source: 8\n  idle_timeout: 45s\n"))
	if err != nil {
		t.Fatal(err)
	}
	c.DataDir = os.TempDir()
	c.Defaults()
	if c.Limits.ConnsPerSource != 8 || c.Limits.IdleTimeout.Duration != 45*time.Second || c.Limits.ReadTimeout.Duration != DefaultReadTimeout {
		t.Fatalf("limits = %+v", c.Limits)
	}
	for _, tc := range []struct {
		limits LimitsConfig
		want   string
	}{
		{LimitsConfig{ConnsPerSource: -1}, "limits.conns_per_source: -1 is out of range"},
		{LimitsConfig{StreamsPerConn: -3}, "limits.streams_per_conn: -3 is out of range"},
		{LimitsConfig{IdleTimeout: Duration{2 * time.Hour}}, "limits.idle_timeout: 2h0m0s is out of range"},
		{LimitsConfig{MaxHeaderBytes: 100}, "limits.max_header_bytes: 100 is out of range"},
		{LimitsConfig{AnonymousCalls: -1}, "limits.anonymous_calls: -1 is out of range"},
	} {
		c := testConfig(t)
		c.Limits = tc.limits
		c.Defaults()
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: Validate = %v, want %q", tc.limits, err, tc.want)
		}
	}
}

// TestEveryNetworkMethodFitsItsLimit keeps methodMaxBytes in step with the
// access rules: a method open to remote callers needs a deliberate size.
func TestEveryNetworkMethodFitsItsLimit(t *testing.T) {
	for method, rule := range methodRules {
		_, sized := methodMaxBytes[method]
		remote := rule(&Server{}, Caller{}) == nil
		if remote && !sized && method != writv1.BundleService_GetBundle_FullMethodName && method != writv1.PersonService_GetLoginConfig_FullMethodName {
			t.Errorf("%s is open to anyone but has no request size in methodMaxBytes", method)
		}
	}
}

// addrListener hands out in-memory connections from the given remote
// addresses, one per Accept.
type addrListener struct {
	net.Listener
	addrs []string
}

type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

func (l *addrListener) Accept() (net.Conn, error) {
	if len(l.addrs) == 0 {
		return nil, net.ErrClosed
	}
	a := l.addrs[0]
	l.addrs = l.addrs[1:]
	c, _ := net.Pipe()
	return addrConn{Conn: c, remote: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(a))}, nil
}

// TestConnectionsPerSourceGroupIPv6Prefix: one host commonly holds a whole
// IPv6 /64, so the cap counts the /64 as one source, as the rate limits do;
// otherwise each of its addresses would get conns_per_source connections.
func TestConnectionsPerSourceGroupIPv6Prefix(t *testing.T) {
	inner := &addrListener{addrs: []string{
		"[2001:db8:1:2::1]:1000",
		"[2001:db8:1:2::2]:1000",  // same /64: over the cap of 1, closed
		"[2001:db8:1:3::1]:1000",  // another /64
		"[::ffff:192.0.2.1]:1000", // IPv4-mapped counts as the IPv4 address
		"192.0.2.1:1001",          // the same source: closed
		"192.0.2.2:1000",
	}}
	ln := limitPerSource(inner, 1, slog.New(slog.DiscardHandler))
	var got []string
	for {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		got = append(got, c.RemoteAddr().String())
	}
	want := []string{"[2001:db8:1:2::1]:1000", "[2001:db8:1:3::1]:1000", "192.0.2.1:1000", "192.0.2.2:1000"}
	if !slices.Equal(got, want) {
		t.Fatalf("accepted %v, want %v", got, want)
	}
}
