package server

import (
	"crypto/x509"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc/codes"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
)

func authorities(t *testing.T, api writv1.CAServiceClient, kind string) []*writv1.Authority {
	t.Helper()
	resp, err := api.ListAuthorities(t.Context(), &writv1.ListAuthoritiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var out []*writv1.Authority
	for _, a := range resp.GetAuthorities() {
		if a.GetKind() == kind {
			out = append(out, a)
		}
	}
	return out
}

func stateOf(as []*writv1.Authority, state string) *writv1.Authority {
	for _, a := range as {
		if a.GetState() == state {
			return a
		}
	}
	return nil
}

// bundleVerifies checks leaf against the X.509 authorities GetBundle serves.
func bundleVerifies(t *testing.T, srv *Server, leaf *x509.Certificate) error {
	t.Helper()
	resp, err := writv1.NewBundleServiceClient(adminConn(t, srv)).GetBundle(t.Context(), &writv1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	for _, c := range parseCerts(t, resp.GetX509Authorities()) {
		roots.AddCert(c)
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// TestAuthorityVerbs walks both authorities through an incident over the
// API: prepare and activate ahead of schedule, taint the active one (which
// replaces it at once), revoke the tainted one (which leaves the bundle, so
// what it signed stops verifying) and the refusals on the way.
func TestAuthorityVerbs(t *testing.T) {
	srv := startServer(t, testConfig(t))
	cc := adminConn(t, srv)
	api := writv1.NewCAServiceClient(cc)
	ctx := t.Context()

	for _, kind := range []string{"x509", "jwt"} {
		as := authorities(t, api, kind)
		if len(as) != 1 || as[0].GetState() != "active" || as[0].GetServerId() != srv.ServerID() {
			t.Fatalf("%s authorities at start: %v", kind, as)
		}
	}
	_, err := api.ActivateAuthority(ctx, &writv1.AuthorityRequest{Kind: "x509"})
	wantCode(t, err, codes.FailedPrecondition, "")
	_, err = api.TaintAuthority(ctx, &writv1.AuthorityRequest{Kind: "x509", Id: "00ff"})
	wantCode(t, err, codes.NotFound, "")
	_, err = api.PrepareAuthority(ctx, &writv1.AuthorityRequest{Kind: "rsa"})
	wantCode(t, err, codes.InvalidArgument, "x509 or jwt")

	// Planned: prepare, then activate; what the first CA signed still verifies.
	before := mintSVID(t, srv, "spiffe://"+testTD+"/before").Certificates[0]
	prepared, err := api.PrepareAuthority(ctx, &writv1.AuthorityRequest{Kind: "x509"})
	if err != nil || prepared.GetState() != "prepared" {
		t.Fatalf("prepare: %v, %v", prepared, err)
	}
	_, err = api.PrepareAuthority(ctx, &writv1.AuthorityRequest{Kind: "x509"})
	wantCode(t, err, codes.FailedPrecondition, "")
	first := stateOf(authorities(t, api, "x509"), "active")
	activated, err := api.ActivateAuthority(ctx, &writv1.AuthorityRequest{Kind: "x509", Id: prepared.GetId()})
	if err != nil || activated.GetState() != "active" {
		t.Fatalf("activate: %v, %v", activated, err)
	}
	if old := stateOf(authorities(t, api, "x509"), "old"); old == nil || old.GetId() != first.GetId() {
		t.Fatalf("after activation the first CA is not old: %v", authorities(t, api, "x509"))
	}
	after := mintSVID(t, srv, "spiffe://"+testTD+"/after").Certificates[0]
	for name, leaf := range map[string]*x509.Certificate{"before": before, "after": after} {
		if err := bundleVerifies(t, srv, leaf); err != nil {
			t.Fatalf("SVID minted %s the rotation does not verify: %v", name, err)
		}
	}

	// Incident: the active CA is tainted, so it is replaced at once.
	_, err = api.RevokeAuthority(ctx, &writv1.AuthorityRequest{Kind: "x509", Id: activated.GetId()})
	wantCode(t, err, codes.FailedPrecondition, "taint")
	tainted, err := api.TaintAuthority(ctx, &writv1.AuthorityRequest{Kind: "x509", Id: activated.GetId()})
	if err != nil || !tainted.GetTainted() {
		t.Fatalf("taint: %v, %v", tainted, err)
	}
	if now := stateOf(authorities(t, api, "x509"), "active"); now == nil || now.GetId() == activated.GetId() {
		t.Fatalf("the tainted CA is still active: %v", authorities(t, api, "x509"))
	}
	revoked, err := api.RevokeAuthority(ctx, &writv1.AuthorityRequest{Kind: "x509", Id: activated.GetId()})
	if err != nil || !revoked.GetRevoked() {
		t.Fatalf("revoke: %v, %v", revoked, err)
	}
	if err := bundleVerifies(t, srv, after); err == nil {
		t.Fatal("an SVID of the revoked CA still verifies against the bundle")
	}
	if err := bundleVerifies(t, srv, before); err != nil {
		t.Fatalf("an SVID of the untouched first CA stopped verifying: %v", err)
	}
	if err := bundleVerifies(t, srv, mintSVID(t, srv, "spiffe://"+testTD+"/new").Certificates[0]); err != nil {
		t.Fatalf("an SVID of the new CA does not verify: %v", err)
	}

	// The JWT key goes the same way.
	id := "spiffe://" + testTD + "/jwt"
	tok, err := mintJWT(t, srv, &writv1.MintJWTSVIDRequest{SpiffeId: id, Audience: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	jwtActive := stateOf(authorities(t, api, "jwt"), "active")
	if _, err := api.TaintAuthority(ctx, &writv1.AuthorityRequest{Kind: "jwt", Id: jwtActive.GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.RevokeAuthority(ctx, &writv1.AuthorityRequest{Kind: "jwt", Id: jwtActive.GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(tok.GetToken(), jwtBundleFrom(t, srv), []string{"a"}); err == nil {
		t.Fatal("a token of the revoked JWT key still validates")
	}
	fresh, err := mintJWT(t, srv, &writv1.MintJWTSVIDRequest{SpiffeId: id, Audience: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(fresh.GetToken(), jwtBundleFrom(t, srv), []string{"a"}); err != nil {
		t.Fatalf("a token of the new JWT key does not validate: %v", err)
	}

	// Each verb left its event, by the operator.
	var types []string
	for _, e := range readEvents(t, writv1.NewAuditServiceClient(cc)) {
		if e.Actor != srv.actor() {
			types = append(types, e.Type)
		}
	}
	for _, want := range []string{audit.EventCAX509Prepare, audit.EventCAX509Activate, audit.EventCAX509Taint, audit.EventCAX509Revoke, audit.EventCAJWTTaint, audit.EventCAJWTRevoke} {
		if !slices.Contains(types, want) {
			t.Errorf("no %s event by the operator among %v", want, types)
		}
	}
}

// TestRotationKeepsEveryIssuedSVIDVerifying drives the server's clock
// through two CA lifetimes, rotating as the server does, and checks at
// every step that every unexpired SVID it issued verifies against the
// bundle it serves.
func TestRotationKeepsEveryIssuedSVIDVerifying(t *testing.T) {
	cfg := testConfig(t)
	cfg.CA.TTL = Duration{6 * time.Hour}
	cfg.SVID.MaxX509TTL = Duration{time.Hour} // the longest a 6h CA allows
	cfg.SVID.X509TTL = Duration{time.Hour}
	var clock atomicTime
	clock.set(time.Now())
	srv, err := New(t.Context(), cfg, Options{Logger: quietLogger(), Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	// The test's clock runs ahead of the store's on purpose; a periodic
	// skew check on a slow machine must not stop issuance.
	srv.clock.max = 365 * 24 * time.Hour
	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(t.Context()) })
	type issued struct {
		leaf *x509.Certificate
		at   time.Time
	}
	var live []issued
	seen := map[string]bool{}
	for step := range 2 * 6 * 4 { // every 15 minutes for two lifetimes
		now := clock.get()
		if _, err := srv.x509.Rotate(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := srv.x509.RefreshBundle(t.Context()); err != nil {
			t.Fatal(err)
		}
		seen[srv.x509.Active().Cert.SerialNumber.String()] = true
		leaf := mintSVID(t, srv, "spiffe://"+testTD+"/rotating").Certificates[0]
		live = append(live, issued{leaf, now})
		roots := x509.NewCertPool()
		for _, c := range srv.x509.Bundle() {
			roots.AddCert(c)
		}
		kept := live[:0]
		for _, l := range live {
			if !now.Before(l.leaf.NotAfter) {
				continue
			}
			if _, err := l.leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Fatalf("step %d: SVID issued at %s does not verify at %s: %v", step, l.at.Format(time.TimeOnly), now.Format(time.TimeOnly), err)
			}
			kept = append(kept, l)
		}
		live = kept
		clock.set(now.Add(15 * time.Minute))
	}
	if len(seen) < 3 {
		t.Fatalf("only %d CAs were active over two lifetimes; rotation did not happen", len(seen))
	}
}

// atomicTime is a settable clock the server's goroutines may read.
type atomicTime struct{ ns atomic.Int64 }

func (c *atomicTime) set(t time.Time) { c.ns.Store(t.UnixNano()) }
func (c *atomicTime) get() time.Time  { return time.Unix(0, c.ns.Load()) }
func (c *atomicTime) now() time.Time  { return c.get() }
