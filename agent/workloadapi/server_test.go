package workloadapi

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	pb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	wlclient "github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"writ.dev/writ/attest/workload"
	"writ.dev/writ/identity"
)

var webSelector = identity.Selector{Type: "unix", Value: "uid:1000"}

func TestFetchX509SVIDGivesVerifiableSVIDAndKey(t *testing.T) {
	ca := newTestCA(t)
	src := newFakeSource(ca, ca.issue(t, "/web"))
	attest, lastPeer := fixedAttest(webSelector)
	addr, _ := serve(t, src, attest)

	x509Ctx, err := wlclient.FetchX509Context(context.Background(), wlclient.WithAddr(addr))
	if err != nil {
		t.Fatalf("FetchX509Context: %v", err)
	}
	if len(x509Ctx.SVIDs) != 1 {
		t.Fatalf("got %d SVIDs, want 1", len(x509Ctx.SVIDs))
	}
	svid := x509Ctx.SVIDs[0]
	id, _, err := x509svid.Verify(svid.Certificates, x509Ctx.Bundles)
	if err != nil {
		t.Fatalf("SVID does not verify against the fetched bundle: %v", err)
	}
	if want := spiffeid.RequireFromPath(td, "/web"); id != want || svid.ID != want {
		t.Errorf("got SPIFFE ID %s (verified %s), want %s", svid.ID, id, want)
	}
	leafKey := svid.Certificates[0].PublicKey.(*ecdsa.PublicKey)
	if !leafKey.Equal(svid.PrivateKey.Public()) {
		t.Error("private key does not match the leaf certificate")
	}
	if got := lastPeer(); got.PID != os.Getpid() || got.UID != os.Getuid() {
		t.Errorf("attested peer %+v, want this process (pid %d, uid %d)", got, os.Getpid(), os.Getuid())
	}
	if got := src.selectorsSeen(); !slices.Equal(got, []identity.Selector{webSelector}) {
		t.Errorf("Source asked for selectors %v, want the attested %v", got, webSelector)
	}
}

// x509Watcher hands go-spiffe's watch callbacks to the test.
type x509Watcher struct{ updates chan *wlclient.X509Context }

func (w x509Watcher) OnX509ContextUpdate(c *wlclient.X509Context) { w.updates <- c }
func (w x509Watcher) OnX509ContextWatchError(error)               {}

func TestWatchX509ContextSeesLastOfARotationBurst(t *testing.T) {
	ca := newTestCA(t)
	src := newFakeSource(ca, ca.issue(t, "/web"))
	attest, _ := fixedAttest(webSelector)
	addr, _ := serve(t, src, attest)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := x509Watcher{updates: make(chan *wlclient.X509Context, 100)}
	watchDone := make(chan error, 1)
	go func() { watchDone <- wlclient.WatchX509Context(ctx, w, wlclient.WithAddr(addr)) }()

	first := <-w.updates
	firstSerial := first.SVIDs[0].Certificates[0].SerialNumber
	var last X509SVID
	for range 5 {
		last = ca.issue(t, "/web")
		src.setSVIDs(last)
	}
	want := last.Chain[0].SerialNumber
	for update := range w.updates {
		got := update.SVIDs[0].Certificates[0].SerialNumber
		if got.Cmp(firstSerial) == 0 {
			t.Fatal("an update repeated the SVID from before the rotation")
		}
		if got.Cmp(want) == 0 {
			break
		}
	}
	cancel()
	if err := <-watchDone; !errors.Is(err, context.Canceled) && status.Code(err) != codes.Canceled {
		t.Errorf("watch ended with %v, want cancellation", err)
	}
}

func TestFederatedBundleReachesWorkloads(t *testing.T) {
	ca := newTestCA(t)
	src := newFakeSource(ca, ca.issue(t, "/web"))
	attest, _ := fixedAttest(webSelector)
	addr, _ := serve(t, src, attest)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := x509Watcher{updates: make(chan *wlclient.X509Context, 100)}
	go func() { _ = wlclient.WatchX509Context(ctx, w, wlclient.WithAddr(addr)) }()
	<-w.updates

	partner := spiffeid.RequireTrustDomainFromString("partner.example")
	src.addFederated(x509bundle.FromX509Authorities(partner, []*x509.Certificate{newTestCA(t).cert}))
	update := <-w.updates
	if !update.Bundles.Has(partner) || !update.Bundles.Has(td) {
		t.Errorf("bundles after federation: %v, want %s and %s", update.Bundles.Bundles(), td, partner)
	}

	bundles, err := wlclient.FetchX509Bundles(ctx, wlclient.WithAddr(addr))
	if err != nil {
		t.Fatalf("FetchX509Bundles: %v", err)
	}
	if bundles.Len() != 2 {
		t.Errorf("FetchX509Bundles gave %d bundles, want 2", bundles.Len())
	}
}

func TestCallerWithoutIdentityGetsNoSVID(t *testing.T) {
	ca := newTestCA(t)
	attest, _ := fixedAttest(identity.Selector{Type: "unix", Value: "uid:4242"})
	addr, _ := serve(t, newFakeSource(ca), attest)

	_, err := wlclient.FetchX509SVID(context.Background(), wlclient.WithAddr(addr))
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("FetchX509SVID: got %v, want PermissionDenied", err)
	}

	// An X509Source keeps retrying; it must still have nothing when the
	// caller gives up.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	source, err := wlclient.NewX509Source(ctx, wlclient.WithClientOptions(wlclient.WithAddr(addr)))
	if err == nil {
		source.Close()
		t.Fatal("NewX509Source got an SVID for a caller without identity")
	}
}

func TestStreamEndsWhenIdentityIsWithdrawn(t *testing.T) {
	ca := newTestCA(t)
	src := newFakeSource(ca, ca.issue(t, "/web"))
	attest, _ := fixedAttest(webSelector)
	addr, _ := serve(t, src, attest)

	stream, err := rawClient(t, addr).FetchX509SVID(withHeader(context.Background()), &pb.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("first response: %v", err)
	}
	src.setSVIDs()
	if resp, err := stream.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Errorf("after the identity was withdrawn: got %v, %v; want PermissionDenied", resp, err)
	}
}

func TestRequestWithoutSecurityHeaderIsRefused(t *testing.T) {
	ca := newTestCA(t)
	attest, _ := fixedAttest(webSelector)
	addr, _ := serve(t, newFakeSource(ca, ca.issue(t, "/web")), attest)
	client := rawClient(t, addr)

	stream, err := client.FetchX509SVID(context.Background(), &pb.X509SVIDRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "security header missing") {
		t.Errorf("FetchX509SVID without header: got %v, want InvalidArgument", err)
	}
	_, err = client.FetchJWTSVID(context.Background(), &pb.JWTSVIDRequest{Audience: []string{"db"}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("FetchJWTSVID without header: got %v, want InvalidArgument", err)
	}
}

func TestAttestationFailureIsUnavailable(t *testing.T) {
	ca := newTestCA(t)
	attest := func(context.Context, workload.Peer) ([]identity.Selector, error) {
		return nil, errors.New("process exited")
	}
	addr, _ := serve(t, newFakeSource(ca, ca.issue(t, "/web")), attest)

	_, err := rawClient(t, addr).FetchJWTSVID(withHeader(context.Background()), &pb.JWTSVIDRequest{Audience: []string{"db"}})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "process exited") {
		t.Errorf("got %v, want Unavailable naming the attestation failure", err)
	}
}

func TestJWTSVIDFetchAndValidate(t *testing.T) {
	ca := newTestCA(t)
	attest, _ := fixedAttest(webSelector)
	addr, _ := serve(t, newFakeSource(ca, ca.issue(t, "/web")), attest)
	ctx := context.Background()
	web := spiffeid.RequireFromPath(td, "/web")

	svid, err := wlclient.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "db"}, wlclient.WithAddr(addr))
	if err != nil {
		t.Fatalf("FetchJWTSVID: %v", err)
	}
	if svid.ID != web {
		t.Errorf("JWT-SVID for %s, want %s", svid.ID, web)
	}

	bundles, err := wlclient.FetchJWTBundles(ctx, wlclient.WithAddr(addr))
	if err != nil {
		t.Fatalf("FetchJWTBundles: %v", err)
	}
	if _, err := jwtsvid.ParseAndValidate(svid.Marshal(), bundles, []string{"db"}); err != nil {
		t.Errorf("the JWT-SVID does not validate against the fetched bundles: %v", err)
	}

	validated, err := wlclient.ValidateJWTSVID(ctx, svid.Marshal(), "db", wlclient.WithAddr(addr))
	if err != nil {
		t.Fatalf("ValidateJWTSVID: %v", err)
	}
	if validated.ID != web {
		t.Errorf("validated %s, want %s", validated.ID, web)
	}
	resp, err := rawClient(t, addr).ValidateJWTSVID(withHeader(ctx), &pb.ValidateJWTSVIDRequest{Audience: "db", Svid: svid.Marshal()})
	if err != nil {
		t.Fatalf("raw ValidateJWTSVID: %v", err)
	}
	if resp.SpiffeId != web.String() || resp.Claims.Fields["sub"].GetStringValue() != web.String() {
		t.Errorf("ValidateJWTSVID returned %s with claims %v, want %s", resp.SpiffeId, resp.Claims, web)
	}

	_, err = wlclient.ValidateJWTSVID(ctx, svid.Marshal(), "someone-else", wlclient.WithAddr(addr))
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("validating with the wrong audience: got %v, want InvalidArgument", err)
	}
}

func TestJWTSVIDRequestErrors(t *testing.T) {
	ca := newTestCA(t)
	attest, _ := fixedAttest(webSelector)
	addr, _ := serve(t, newFakeSource(ca, ca.issue(t, "/web")), attest)
	client := rawClient(t, addr)
	ctx := withHeader(context.Background())

	tests := []struct {
		name string
		req  *pb.JWTSVIDRequest
		want codes.Code
	}{
		{"no audience", &pb.JWTSVIDRequest{}, codes.InvalidArgument},
		{"malformed spiffe_id", &pb.JWTSVIDRequest{Audience: []string{"db"}, SpiffeId: "web"}, codes.InvalidArgument},
		{"identity not held", &pb.JWTSVIDRequest{Audience: []string{"db"}, SpiffeId: "spiffe://example.org/admin"}, codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := client.FetchJWTSVID(ctx, tt.req); status.Code(err) != tt.want {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// TestMTLSBetweenTwoWorkloads has two workloads, each with its own agent
// and one CA, authenticate each other with go-spiffe's TLS helpers.
func TestMTLSBetweenTwoWorkloads(t *testing.T) {
	ca := newTestCA(t)
	attest, _ := fixedAttest(webSelector)
	serverAddr, _ := serve(t, newFakeSource(ca, ca.issue(t, "/db")), attest)
	clientAddr, _ := serve(t, newFakeSource(ca, ca.issue(t, "/web")), attest)
	dbID := spiffeid.RequireFromPath(td, "/db")
	webID := spiffeid.RequireFromPath(td, "/web")
	ctx := context.Background()

	serverSource := newX509Source(t, serverAddr)
	clientSource := newX509Source(t, clientAddr)
	ln, err := spiffetls.ListenWithMode(ctx, "tcp", "127.0.0.1:0",
		spiffetls.MTLSServerWithSource(tlsconfig.AuthorizeID(webID), serverSource))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() { served <- echoPeerID(ln) }()

	conn, err := spiffetls.DialWithMode(ctx, "tcp", ln.Addr().String(),
		spiffetls.MTLSClientWithSource(tlsconfig.AuthorizeID(dbID), clientSource))
	if err != nil {
		t.Fatalf("mTLS dial: %v", err)
	}
	defer conn.Close()
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("reading from the server: %v", err)
	}
	if got := strings.TrimSpace(line); got != webID.String() {
		t.Errorf("server saw client %q, want %s", got, webID)
	}
	if err := <-served; err != nil {
		t.Error(err)
	}
}

func newX509Source(t *testing.T, addr string) *wlclient.X509Source {
	t.Helper()
	source, err := wlclient.NewX509Source(context.Background(), wlclient.WithClientOptions(wlclient.WithAddr(addr)))
	if err != nil {
		t.Fatalf("NewX509Source: %v", err)
	}
	t.Cleanup(func() { source.Close() })
	return source
}

// echoPeerID accepts one connection and writes the client's SPIFFE ID.
func echoPeerID(ln net.Listener) error {
	conn, err := ln.Accept()
	if err != nil {
		return err
	}
	defer conn.Close()
	id, err := spiffetls.PeerIDFromConn(conn)
	if err != nil {
		return fmt.Errorf("server: peer ID: %w", err)
	}
	_, err = fmt.Fprintln(conn, id)
	return err
}

func TestGracefulStopEndsStreams(t *testing.T) {
	ca := newTestCA(t)
	attest, _ := fixedAttest(webSelector)
	addr, srv := serve(t, newFakeSource(ca, ca.issue(t, "/web")), attest)

	stream, err := rawClient(t, addr).FetchX509SVID(withHeader(context.Background()), &pb.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("first response: %v", err)
	}
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("stream during shutdown: got %v, want Unavailable", err)
	}
	<-stopped
}
