package server

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
)

// freshPostgresDB creates an empty database on the test cluster and returns
// its DSN, or skips when no cluster is configured.
func freshPostgresDB(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("WRIT_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("WRIT_TEST_POSTGRES_DSN not set: start a throwaway cluster with scripts/pg-test-cluster.sh (make test-postgres does)")
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connecting to %s: %v", dsn, err)
	}
	defer conn.Close(ctx)
	var raw [6]byte
	rand.Read(raw[:])
	name := "writ_server_" + hex.EncodeToString(raw[:])
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), dsn)
		if err == nil {
			c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			c.Close(context.Background())
		}
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// TestServersSharePostgres runs two servers on one PostgreSQL database: each
// keeps its own CA and JWT keys, the bundle either serves is the union of
// both roots and both JWT keys,
// and rules written through one are visible through the other.
func TestServersSharePostgres(t *testing.T) {
	dsn := freshPostgresDB(t)
	cfgA, cfgB := testConfig(t), testConfig(t)
	for _, c := range []*Config{&cfgA, &cfgB} {
		c.Store.Engine = "postgres"
		c.Store.DSN = dsn
	}
	a := startServer(t, cfgA)
	b := startServer(t, cfgB)
	if a.ServerID() == b.ServerID() {
		t.Fatal("two servers got the same server id")
	}
	ctx := context.Background()
	if err := a.x509.RefreshBundle(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.x509.RefreshBundle(ctx); err != nil {
		t.Fatal(err)
	}
	if a.x509.Active().Cert.Equal(b.x509.Active().Cert) {
		t.Fatal("two servers share one CA: each must own its key")
	}

	// Both bundles hold both roots, as served over the API.
	for _, srv := range []*Server{a, b} {
		resp, err := writv1.NewBundleServiceClient(adminConn(t, srv)).GetBundle(ctx, &writv1.GetBundleRequest{})
		if err != nil {
			t.Fatal(err)
		}
		roots := parseCerts(t, resp.X509Authorities)
		if !containsCert(roots, a.x509.Active().Cert.Raw) || !containsCert(roots, b.x509.Active().Cert.Raw) {
			t.Fatalf("server %s bundle lacks a root: has %d roots", srv.ServerID(), len(roots))
		}
	}

	// An SVID from A verifies against B's bundle.
	svid := mintSVID(t, a, "spiffe://"+testTD+"/from-a")
	if _, _, err := x509svid.Verify(svid.Certificates, x509bundle.FromX509Authorities(b.TrustDomain(), b.x509.Bundle())); err != nil {
		t.Fatalf("SVID from server A does not verify with server B's bundle: %v", err)
	}

	// Each server keeps its own JWT key; both publish it, so a JWT-SVID
	// from either verifies against the other's bundle.
	if err := a.jwt.RefreshKeys(ctx); err != nil {
		t.Fatal(err)
	}
	if a.jwt.Active().KeyID == b.jwt.Active().KeyID {
		t.Fatal("two servers share one JWT key: each must own its key")
	}
	for _, srv := range []*Server{a, b} {
		resp, err := writv1.NewBundleServiceClient(adminConn(t, srv)).GetBundle(ctx, &writv1.GetBundleRequest{})
		if err != nil {
			t.Fatal(err)
		}
		kids := map[string]bool{}
		for _, k := range resp.JwtAuthorities {
			kids[k.KeyId] = true
		}
		if !kids[a.jwt.Active().KeyID] || !kids[b.jwt.Active().KeyID] {
			t.Fatalf("server %s bundle lacks a JWT key: has %v", srv.ServerID(), kids)
		}
	}
	tok, err := mintJWT(t, a, &writv1.MintJWTSVIDRequest{SpiffeId: "spiffe://" + testTD + "/jwt-from-a", Audience: []string{"b"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(tok.Token, jwtBundleFrom(t, b), []string{"b"}); err != nil {
		t.Fatalf("JWT-SVID from server A does not verify with server B's bundle: %v", err)
	}

	// Rules are shared.
	if _, err := writv1.NewEntryServiceClient(adminConn(t, a)).CreateEntries(ctx, &writv1.CreateEntriesRequest{Entries: []*writv1.Entry{entry("/shared", "/n", "unix:uid:7")}}); err != nil {
		t.Fatal(err)
	}
	list, err := writv1.NewEntryServiceClient(adminConn(t, b)).ListEntries(ctx, &writv1.ListEntriesRequest{})
	if err != nil || len(list.Entries) != 1 {
		t.Fatalf("server B sees %v, %v", list.GetEntries(), err)
	}
}

func containsCert(certs []*x509.Certificate, raw []byte) bool {
	for _, c := range certs {
		if string(c.Raw) == string(raw) {
			return true
		}
	}
	return false
}

// TestLockReachesEveryServer checks that a lock made through one server
// stops issuance on another sharing the PostgreSQL store within about a
// second, and that deleting it restores issuance there too.
func TestLockReachesEveryServer(t *testing.T) {
	dsn := freshPostgresDB(t)
	cfgA, cfgB := testConfig(t), testConfig(t)
	for _, c := range []*Config{&cfgA, &cfgB} {
		c.Store.Engine = "postgres"
		c.Store.DSN = dsn
	}
	a, b := startServer(t, cfgA), startServer(t, cfgB)
	ccA, ccB := adminConn(t, a), adminConn(t, b)
	id := "spiffe://" + testTD + "/payments"
	wantMintAllowed(t, ccB, id)

	l := createLock(t, ccA, "id-prefix", "spiffe://"+testTD+"/payments", "INC-7", "")
	wantMintRefused(t, ccA, id, l.Id, "INC-7")
	took := eventually(t, 1500*time.Millisecond, "lock in force on server B", func() bool {
		x, j := mintBoth(t, ccB, id)
		return status.Code(x) == codes.PermissionDenied && status.Code(j) == codes.PermissionDenied
	})
	t.Logf("lock reached server B in %s", took)
	wantMintRefused(t, ccB, id, l.Id, "INC-7")

	if _, err := writv1.NewLockServiceClient(ccA).DeleteLock(context.Background(), &writv1.DeleteLockRequest{Id: l.Id}); err != nil {
		t.Fatal(err)
	}
	wantMintAllowed(t, ccA, id)
	eventually(t, 1500*time.Millisecond, "lock lifted on server B", func() bool {
		x, j := mintBoth(t, ccB, id)
		return x == nil && j == nil
	})
}

// TestServersShareOneAuditLog runs two servers on one PostgreSQL database,
// issuing concurrently through both: they append to one gap-free log, each
// signs checkpoints with its own key, and the log verifies against both.
func TestServersShareOneAuditLog(t *testing.T) {
	dsn := freshPostgresDB(t)
	cfgA, cfgB := testConfig(t), testConfig(t)
	for _, c := range []*Config{&cfgA, &cfgB} {
		c.Store.Engine = "postgres"
		c.Store.DSN = dsn
		c.Audit.CheckpointInterval = Duration{time.Hour}
	}
	a, b := startServer(t, cfgA), startServer(t, cfgB)
	ctx := t.Context()
	done := make(chan error, 2)
	for _, srv := range []*Server{a, b} {
		sc := writv1.NewSVIDServiceClient(adminConn(t, srv))
		go func() {
			for i := range 50 {
				if _, err := sc.MintJWTSVID(ctx, &writv1.MintJWTSVIDRequest{SpiffeId: fmt.Sprintf("spiffe://%s/w/%d", testTD, i), Audience: []string{"x"}}); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	apiA, apiB := writv1.NewAuditServiceClient(adminConn(t, a)), writv1.NewAuditServiceClient(adminConn(t, b))
	if _, err := apiA.SignCheckpoint(ctx, &writv1.SignAuditCheckpointRequest{}); err != nil {
		t.Fatal(err)
	}
	// One more event, so B's checkpoint covers more than A's.
	if _, err := mintJWT(t, b, &writv1.MintJWTSVIDRequest{SpiffeId: "spiffe://" + testTD + "/last", Audience: []string{"x"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := apiB.SignCheckpoint(ctx, &writv1.SignAuditCheckpointRequest{}); err != nil {
		t.Fatal(err)
	}

	got, err := apiB.GetCheckpoints(ctx, &writv1.GetAuditCheckpointsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	byServer := map[string]int{}
	for _, c := range got.GetCheckpoints() {
		byServer[c.GetServerId()]++
	}
	if len(got.GetKeys()) != 2 || len(byServer) != 2 {
		t.Fatalf("%d keys and checkpoints by %d servers; want a key and checkpoints from each of the two", len(got.GetKeys()), len(byServer))
	}
	var vs []note.Verifier
	for _, k := range got.GetKeys() {
		v, err := note.NewVerifier(k.GetVerifierKey())
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	var cps []audit.SignedCheckpoint
	for _, c := range got.GetCheckpoints() {
		cps = append(cps, audit.SignedCheckpoint{Note: c.GetNote()})
	}
	evs := readEvents(t, apiA)
	mints := 0
	for _, e := range evs {
		if e.Type == audit.EventSVIDJWTMint {
			mints++
		}
	}
	if mints != 101 {
		t.Fatalf("%d mint events, want 101", mints)
	}
	resp, err := apiA.ReadEvents(ctx, &writv1.ReadAuditEventsRequest{Limit: maxAuditPage})
	if err != nil {
		t.Fatal(err)
	}
	var leaves audit.Leaves
	for _, e := range resp.GetEvents() {
		leaves = append(leaves, e.GetEvent())
	}
	rep, err := audit.Verify(ctx, leaves, cps, note.VerifierList(vs...))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Verified != int64(len(leaves)) {
		t.Fatalf("verified %d of %d events", rep.Verified, len(leaves))
	}
}
