package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/store/sqlite/sqlitetest"
)

const testTD = "test.writ"

// testConfig is a server on loopback with ephemeral ports in a temp dir. The
// data dir is kept short because unix socket paths are limited to ~100 bytes.
func testConfig(t testing.TB) Config {
	t.Helper()
	dir, err := os.MkdirTemp("", "writ")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := DefaultConfig()
	cfg.DataDir = dir
	cfg.TrustDomain = testTD
	cfg.ListenAddress = "127.0.0.1:0"
	cfg.OpsAddress = "127.0.0.1:0"
	cfg.Defaults()
	// Most tests here start servers for what they do once running; store
	// migration is store/sqlite's to test (and TestRestartKeepsAuthorityAndState
	// starts from no database at all).
	sqlitetest.PlaceMigrated(t, cfg.Store.DSN)
	return cfg
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	ctx := context.Background()
	srv, err := New(ctx, cfg, Options{Logger: quietLogger(), Version: "test"})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv
}

func adminConn(t testing.TB, srv *Server) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("unix://"+srv.AdminSocket(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(adminMaxMessage), grpc.MaxCallRecvMsgSize(maxResponseBytes)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func newCSR(t testing.TB) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, csr
}

func wantCode(t *testing.T, err error, code codes.Code, msgPart string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code || !strings.Contains(st.Message(), msgPart) {
		t.Fatalf("got %v %q, want %v containing %q", st.Code(), st.Message(), code, msgPart)
	}
}

func entry(id, parent string, sels ...string) *writv1.Entry {
	e := &writv1.Entry{SpiffeId: "spiffe://" + testTD + id, ParentId: "spiffe://" + testTD + parent}
	for _, s := range sels {
		typ, val, _ := strings.Cut(s, ":")
		e.Selectors = append(e.Selectors, &writv1.Selector{Type: typ, Value: val})
	}
	return e
}

func TestEntryLifecycle(t *testing.T) {
	srv := startServer(t, testConfig(t))
	ec := writv1.NewEntryServiceClient(adminConn(t, srv))
	ctx := context.Background()

	created, err := ec.CreateEntries(ctx, &writv1.CreateEntriesRequest{Entries: []*writv1.Entry{
		entry("/web", "/node/a", "unix:uid:1000"),
		entry("/db", "/node/a", "unix:uid:1001", "unix:gid:50"),
	}})
	if err != nil {
		t.Fatalf("CreateEntries: %v", err)
	}
	if len(created.Entries) != 2 || created.Entries[0].Id == "" || created.Entries[0].Revision == 0 {
		t.Fatalf("created = %v", created.Entries)
	}
	web := created.Entries[0]

	got, err := ec.GetEntry(ctx, &writv1.GetEntryRequest{Id: web.Id})
	if err != nil || got.SpiffeId != web.SpiffeId {
		t.Fatalf("GetEntry = %v, %v", got, err)
	}

	list, err := ec.ListEntries(ctx, &writv1.ListEntriesRequest{Selectors: []*writv1.Selector{{Type: "unix", Value: "gid:50"}}})
	if err != nil || len(list.Entries) != 1 || list.Entries[0].SpiffeId != "spiffe://"+testTD+"/db" {
		t.Fatalf("ListEntries by selector = %v, %v", list.GetEntries(), err)
	}

	got.Hint = "frontend"
	updated, err := ec.UpdateEntry(ctx, &writv1.UpdateEntryRequest{Entry: got})
	if err != nil || updated.Hint != "frontend" || updated.Revision <= got.Revision {
		t.Fatalf("UpdateEntry = %v, %v", updated, err)
	}
	// The revision read before the update is stale now.
	_, err = ec.UpdateEntry(ctx, &writv1.UpdateEntryRequest{Entry: got})
	wantCode(t, err, codes.Aborted, "retry")

	if _, err := ec.DeleteEntry(ctx, &writv1.DeleteEntryRequest{Id: web.Id}); err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}
	_, err = ec.GetEntry(ctx, &writv1.GetEntryRequest{Id: web.Id})
	wantCode(t, err, codes.NotFound, web.Id)
}

func TestBadBatchWritesNothing(t *testing.T) {
	srv := startServer(t, testConfig(t))
	cc := adminConn(t, srv)
	ec := writv1.NewEntryServiceClient(cc)
	ctx := context.Background()
	before := revision(t, cc)

	cases := []struct {
		name  string
		bad   *writv1.Entry
		code  codes.Code
		field string
	}{
		{"id outside trust domain", &writv1.Entry{SpiffeId: "spiffe://other.org/x", ParentId: "spiffe://" + testTD + "/n", Selectors: []*writv1.Selector{{Type: "unix", Value: "uid:1"}}}, codes.InvalidArgument, "entries[3].spiffe_id"},
		{"malformed parent", &writv1.Entry{SpiffeId: "spiffe://" + testTD + "/x", ParentId: "spiffe://" + testTD + "/a//b", Selectors: []*writv1.Selector{{Type: "unix", Value: "uid:1"}}}, codes.InvalidArgument, "entries[3].parent_id"},
		{"no selectors", entry("/x", "/n"), codes.InvalidArgument, "entries[3].selectors"},
		{"bad selector", entry("/x", "/n", "Unix:uid:1"), codes.InvalidArgument, "entries[3].selectors[0]"},
		{"ttl over cap", func() *writv1.Entry { e := entry("/x", "/n", "unix:uid:1"); e.X509TtlSeconds = 48 * 3600; return e }(), codes.InvalidArgument, "entries[3].x509_ttl"},
		{"duplicate of entry 0", entry("/e0", "/n", "unix:uid:0"), codes.AlreadyExists, "entries[3]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			batch := []*writv1.Entry{
				entry("/e0", "/n", "unix:uid:0"), entry("/e1", "/n", "unix:uid:1"), entry("/e2", "/n", "unix:uid:2"),
				tc.bad, entry("/e4", "/n", "unix:uid:4"),
			}
			_, err := ec.CreateEntries(ctx, &writv1.CreateEntriesRequest{Entries: batch})
			wantCode(t, err, tc.code, tc.field)
			if after := revision(t, cc); after != before {
				t.Fatalf("revision moved from %d to %d after a refused batch", before, after)
			}
			list, err := ec.ListEntries(ctx, &writv1.ListEntriesRequest{})
			if err != nil || len(list.Entries) != 0 {
				t.Fatalf("entries after a refused batch: %v, %v", list.GetEntries(), err)
			}
		})
	}
}

func revision(t *testing.T, cc *grpc.ClientConn) int64 {
	t.Helper()
	st, err := writv1.NewStatusServiceClient(cc).GetStatus(context.Background(), &writv1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return st.Revision
}

func TestListPaging(t *testing.T) {
	srv := startServer(t, testConfig(t))
	ec := writv1.NewEntryServiceClient(adminConn(t, srv))
	ctx := context.Background()
	var batch []*writv1.Entry
	for i := range 25 {
		batch = append(batch, entry("/w", "/n", "unix:uid:"+string(rune('a'+i))))
	}
	if _, err := ec.CreateEntries(ctx, &writv1.CreateEntriesRequest{Entries: batch}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	req := &writv1.ListEntriesRequest{PageSize: 10}
	pages := 0
	for {
		resp, err := ec.ListEntries(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, e := range resp.Entries {
			if seen[e.Id] {
				t.Fatalf("entry %s listed twice", e.Id)
			}
			seen[e.Id] = true
		}
		if resp.NextPageToken == "" {
			break
		}
		req.PageToken = resp.NextPageToken
	}
	if len(seen) != 25 || pages != 3 {
		t.Fatalf("saw %d entries in %d pages, want 25 in 3", len(seen), pages)
	}
	_, err := ec.ListEntries(ctx, &writv1.ListEntriesRequest{PageToken: "!!"})
	wantCode(t, err, codes.InvalidArgument, "page_token")
}

func TestMintX509SVID(t *testing.T) {
	srv := startServer(t, testConfig(t))
	cc := adminConn(t, srv)
	sc := writv1.NewSVIDServiceClient(cc)
	ctx := context.Background()
	_, csr := newCSR(t)

	resp, err := sc.MintX509SVID(ctx, &writv1.MintX509SVIDRequest{SpiffeId: "spiffe://" + testTD + "/me", Csr: csr, TtlSeconds: 600, DnsNames: []string{"me.example.org"}})
	if err != nil {
		t.Fatalf("MintX509SVID: %v", err)
	}
	chain := parseCerts(t, resp.CertChain)
	roots := parseCerts(t, resp.Bundle)
	bundle := x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString(testTD), roots)
	id, _, err := x509svid.Verify(chain, bundle)
	if err != nil || id.String() != "spiffe://"+testTD+"/me" {
		t.Fatalf("verify = %v, %v", id, err)
	}
	leaf := chain[0]
	if d := leaf.NotAfter.Sub(time.Now()); d > 10*time.Minute+time.Second || d < 9*time.Minute {
		t.Fatalf("leaf lifetime %v, want about 10m", d)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "me.example.org" {
		t.Fatalf("DNS names %v", leaf.DNSNames)
	}

	bad := []struct {
		name string
		req  *writv1.MintX509SVIDRequest
		part string
	}{
		{"over the cap", &writv1.MintX509SVIDRequest{SpiffeId: "spiffe://" + testTD + "/me", Csr: csr, TtlSeconds: 25 * 3600}, "ttl_seconds"},
		{"other trust domain", &writv1.MintX509SVIDRequest{SpiffeId: "spiffe://evil.org/me", Csr: csr}, "spiffe_id"},
		{"trust domain root", &writv1.MintX509SVIDRequest{SpiffeId: "spiffe://" + testTD, Csr: csr}, "spiffe_id"},
		{"garbage csr", &writv1.MintX509SVIDRequest{SpiffeId: "spiffe://" + testTD + "/me", Csr: []byte("not a csr")}, "csr"},
		{"tampered csr", &writv1.MintX509SVIDRequest{SpiffeId: "spiffe://" + testTD + "/me", Csr: flipLastByte(csr)}, "csr"},
		{"bad dns", &writv1.MintX509SVIDRequest{SpiffeId: "spiffe://" + testTD + "/me", Csr: csr, DnsNames: []string{"bad name"}}, "dns_names[0]"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sc.MintX509SVID(ctx, tc.req)
			wantCode(t, err, codes.InvalidArgument, tc.part)
		})
	}
}

func flipLastByte(b []byte) []byte {
	c := append([]byte(nil), b...)
	c[len(c)-1] ^= 0xff
	return c
}

func parseCerts(t testing.TB, ders [][]byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func TestAdminRequiresAllowedUID(t *testing.T) {
	cfg := testConfig(t)
	cfg.AdminUIDs = []int{os.Getuid() + 4242}
	srv := startServer(t, cfg)
	_, err := writv1.NewEntryServiceClient(adminConn(t, srv)).ListEntries(context.Background(), &writv1.ListEntriesRequest{})
	wantCode(t, err, codes.PermissionDenied, "is not an administrator")
}

// mintSVID gets an X.509-SVID over the admin socket, as `writ svid mint` does.
func mintSVID(t testing.TB, srv *Server, id string) *x509svid.SVID {
	t.Helper()
	key, csr := newCSR(t)
	resp, err := writv1.NewSVIDServiceClient(adminConn(t, srv)).MintX509SVID(context.Background(),
		&writv1.MintX509SVIDRequest{SpiffeId: id, Csr: csr})
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: spiffeid.RequireFromString(id), Certificates: parseCerts(t, resp.CertChain), PrivateKey: key}
}

func TestRemoteCallersNeedSVIDAndARule(t *testing.T) {
	srv := startServer(t, testConfig(t))
	td := srv.TrustDomain()
	svid := mintSVID(t, srv, "spiffe://"+testTD+"/workload")
	bundle := x509bundle.FromX509Authorities(td, srv.x509.Bundle())

	tlsCfg := tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(srv.tlsID.ID()))
	cc, err := grpc.NewClient(srv.ListenAddr().String(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := context.Background()

	b, err := writv1.NewBundleServiceClient(cc).GetBundle(ctx, &writv1.GetBundleRequest{})
	if err != nil || b.TrustDomain != testTD || len(b.X509Authorities) == 0 || len(b.JwtAuthorities) == 0 {
		t.Fatalf("GetBundle over mTLS = %v, %v", b, err)
	}
	// A valid SVID grants nothing by itself: administration stays local.
	_, err = writv1.NewEntryServiceClient(cc).ListEntries(ctx, &writv1.ListEntriesRequest{})
	wantCode(t, err, codes.PermissionDenied, "local administrators")
	_, err = writv1.NewSVIDServiceClient(cc).MintX509SVID(ctx, &writv1.MintX509SVIDRequest{})
	wantCode(t, err, codes.PermissionDenied, "local administrators")
	_, err = writv1.NewSVIDServiceClient(cc).MintJWTSVID(ctx, &writv1.MintJWTSVIDRequest{SpiffeId: "spiffe://" + testTD + "/w", Audience: []string{"a"}})
	wantCode(t, err, codes.PermissionDenied, "local administrators")

	// Without a client certificate a caller gets what is public (the
	// bundle) and what carries its own proof (joining), and nothing else.
	noCert := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(srv.tlsID.ID()))
	cc2, err := grpc.NewClient(srv.ListenAddr().String(), grpc.WithTransportCredentials(credentials.NewTLS(noCert)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc2.Close()
	if _, err := writv1.NewBundleServiceClient(cc2).GetBundle(ctx, &writv1.GetBundleRequest{}); err != nil {
		t.Fatalf("GetBundle without a client certificate: %v", err)
	}
	_, err = writv1.NewEntryServiceClient(cc2).ListEntries(ctx, &writv1.ListEntriesRequest{})
	wantCode(t, err, codes.PermissionDenied, "anonymous")
	_, err = writv1.NewAgentServiceClient(cc2).Sync(ctx, &writv1.SyncRequest{})
	if err == nil {
		_, err = func() (any, error) {
			st, _ := writv1.NewAgentServiceClient(cc2).Sync(ctx, &writv1.SyncRequest{})
			return st.Recv()
		}()
	}
	wantCode(t, err, codes.PermissionDenied, "not an agent")
	_, err = writv1.NewAgentServiceClient(cc).RenewAgent(ctx, &writv1.RenewAgentRequest{})
	wantCode(t, err, codes.PermissionDenied, "not an agent")

	// A certificate from another trust domain fails the handshake.
}

func TestEveryMethodHasARule(t *testing.T) {
	srv := startServer(t, testConfig(t))
	for svc, info := range srv.grpcAdmin.GetServiceInfo() {
		for _, m := range info.Methods {
			full := "/" + svc + "/" + m.Name
			if _, ok := methodRules[full]; !ok {
				t.Errorf("%s has no access rule", full)
			}
		}
	}
}

func TestOpsEndpoints(t *testing.T) {
	srv := startServer(t, testConfig(t))
	mintSVID(t, srv, "spiffe://"+testTD+"/metrics-check")
	base := "http://" + srv.OpsAddr().String()
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  "ready",
		"/metrics": `writ_svids_issued_total{kind="x509"} 1`,
	} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("%s: %d %q, want 200 containing %q", path, resp.StatusCode, body, want)
		}
	}
}

func TestRestartKeepsAuthorityAndState(t *testing.T) {
	cfg := testConfig(t)
	// The server itself creates the database, and its mode is checked below.
	if err := os.Remove(cfg.Store.DSN); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	srv, err := New(ctx, cfg, Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	root := srv.x509.Active().Cert
	kid := srv.jwt.Active().KeyID
	id := srv.ServerID()
	if _, err := writv1.NewEntryServiceClient(adminConn(t, srv)).CreateEntries(ctx, &writv1.CreateEntriesRequest{Entries: []*writv1.Entry{entry("/x", "/n", "unix:uid:1")}}); err != nil {
		t.Fatal(err)
	}
	// A second server on the same data dir is refused while the first runs.
	if _, err := New(ctx, cfg, Options{Logger: quietLogger()}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second server on the same data dir: %v", err)
	}
	srv.Shutdown(ctx)

	srv2 := startServer(t, cfg)
	if !srv2.x509.Active().Cert.Equal(root) || srv2.jwt.Active().KeyID != kid || srv2.ServerID() != id {
		t.Fatal("restart changed the authority or the server id")
	}
	list, err := writv1.NewEntryServiceClient(adminConn(t, srv2)).ListEntries(ctx, &writv1.ListEntriesRequest{})
	if err != nil || len(list.Entries) != 1 {
		t.Fatalf("entries after restart: %v, %v", list.GetEntries(), err)
	}
	for _, name := range []string{"writ.db", "x509-ca.json", "jwt-ca.json", "server-id"} {
		fi, err := os.Stat(filepath.Join(cfg.DataDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v; want no group or other access", name, fi.Mode().Perm())
		}
	}
}
