package server

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc/codes"

	writv1 "writ.dev/writ/api/writ/v1"
)

// jwtBundleFrom builds a go-spiffe JWT bundle from GetBundle's JWT keys, as
// a relying party fed by the API would.
func jwtBundleFrom(t testing.TB, srv *Server) *jwtbundle.Bundle {
	t.Helper()
	resp, err := writv1.NewBundleServiceClient(adminConn(t, srv)).GetBundle(context.Background(), &writv1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	b := jwtbundle.New(srv.TrustDomain())
	for _, k := range resp.JwtAuthorities {
		pub, err := x509.ParsePKIXPublicKey(k.PublicKey)
		if err != nil {
			t.Fatalf("JWT key %s: %v", k.KeyId, err)
		}
		if k.ExpiresAt <= time.Now().Unix() {
			t.Fatalf("JWT key %s already expired at %d", k.KeyId, k.ExpiresAt)
		}
		if err := b.AddJWTAuthority(k.KeyId, pub); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func mintJWT(t testing.TB, srv *Server, req *writv1.MintJWTSVIDRequest) (*writv1.MintJWTSVIDResponse, error) {
	t.Helper()
	return writv1.NewSVIDServiceClient(adminConn(t, srv)).MintJWTSVID(context.Background(), req)
}

func TestMintJWTSVID(t *testing.T) {
	srv := startServer(t, testConfig(t))
	id := "spiffe://" + testTD + "/jwt-workload"
	before := time.Now()
	resp, err := mintJWT(t, srv, &writv1.MintJWTSVIDRequest{SpiffeId: id, Audience: []string{"aud-1", "aud-2"}})
	if err != nil {
		t.Fatal(err)
	}
	bundle := jwtBundleFrom(t, srv)
	if len(bundle.JWTAuthorities()) != 1 {
		t.Fatalf("bundle has %d JWT keys, want 1", len(bundle.JWTAuthorities()))
	}
	svid, err := jwtsvid.ParseAndValidate(resp.Token, bundle, []string{"aud-2"})
	if err != nil {
		t.Fatalf("JWT-SVID does not validate against the bundle: %v", err)
	}
	if svid.ID.String() != id || svid.Expiry.Unix() != resp.ExpiresAt {
		t.Fatalf("svid %s expiring %s; response says %d", svid.ID, svid.Expiry, resp.ExpiresAt)
	}
	// Default TTL (svid.jwt_ttl, 5m) applies.
	if d := svid.Expiry.Sub(before); d < 4*time.Minute || d > 5*time.Minute+time.Second {
		t.Fatalf("default lifetime %s, want about 5m", d)
	}
	if _, ok := svid.Claims["iss"]; ok {
		t.Fatalf("iss %v set while OIDC is disabled", svid.Claims["iss"])
	}
	if _, err := jwtsvid.ParseAndValidate(resp.Token, bundle, []string{"someone-else"}); err == nil {
		t.Fatal("token accepted for an audience it does not name")
	}

	// An explicit TTL is honoured.
	resp, err = mintJWT(t, srv, &writv1.MintJWTSVIDRequest{SpiffeId: id, Audience: []string{"a"}, TtlSeconds: 60})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Unix(resp.ExpiresAt, 0).Sub(before); d < 59*time.Second || d > 61*time.Second {
		t.Fatalf("lifetime %s, want 60s", d)
	}

	// Counted in the metrics.
	body := httpGet(t, "http://"+srv.OpsAddr().String()+"/metrics", nil)
	if !strings.Contains(body, `writ_svids_issued_total{kind="jwt"} 2`) {
		t.Fatalf("metrics lack the JWT-SVID count:\n%s", body)
	}
}

func TestMintJWTSVIDRefusals(t *testing.T) {
	srv := startServer(t, testConfig(t))
	id := "spiffe://" + testTD + "/w"
	for _, tc := range []struct {
		name string
		req  *writv1.MintJWTSVIDRequest
		want string
	}{
		{"no audience", &writv1.MintJWTSVIDRequest{SpiffeId: id}, "audience"},
		{"empty audience", &writv1.MintJWTSVIDRequest{SpiffeId: id, Audience: []string{"a", ""}}, "audience[1]"},
		{"ttl over cap", &writv1.MintJWTSVIDRequest{SpiffeId: id, Audience: []string{"a"}, TtlSeconds: 3601}, "ttl_seconds"},
		{"negative ttl", &writv1.MintJWTSVIDRequest{SpiffeId: id, Audience: []string{"a"}, TtlSeconds: -1}, "ttl_seconds"},
		{"other trust domain", &writv1.MintJWTSVIDRequest{SpiffeId: "spiffe://other.test/w", Audience: []string{"a"}}, "spiffe_id"},
		{"no path", &writv1.MintJWTSVIDRequest{SpiffeId: "spiffe://" + testTD, Audience: []string{"a"}}, "spiffe_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := mintJWT(t, srv, tc.req)
			wantCode(t, err, codes.InvalidArgument, tc.want)
		})
	}
	body := httpGet(t, "http://"+srv.OpsAddr().String()+"/metrics", nil)
	if strings.Contains(body, `writ_svids_issued_total{kind="jwt"}`) {
		t.Fatal("a refused request was counted as issued")
	}
}

func httpGet(t testing.TB, url string, header http.Header) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	for k := range header {
		if got := resp.Header.Get(k); got != header.Get(k) {
			t.Fatalf("GET %s: %s %q, want %q", url, k, got, header.Get(k))
		}
	}
	return string(body)
}

func TestOIDCDiscoveryAndJWKS(t *testing.T) {
	cfg := testConfig(t)
	cfg.OIDCAddress = "127.0.0.1:0"
	cfg.OIDCIssuer = "http://127.0.0.1/issuer"
	srv := startServer(t, cfg)
	base := "http://" + srv.OIDCAddr().String()
	want := http.Header{"Content-Type": {"application/json"}, "Cache-Control": {oidcCacheControl}}

	var doc struct {
		Issuer  string   `json:"issuer"`
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := json.Unmarshal([]byte(httpGet(t, base+"/.well-known/openid-configuration", want)), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Issuer != cfg.OIDCIssuer || doc.JWKSURI != cfg.OIDCIssuer+"/keys" {
		t.Fatalf("discovery %+v", doc)
	}

	resp, err := mintJWT(t, srv, &writv1.MintJWTSVIDRequest{SpiffeId: "spiffe://" + testTD + "/oidc", Audience: []string{"sts.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	td := srv.TrustDomain()
	bundle, err := jwtbundle.Parse(td, []byte(httpGet(t, base+"/keys", want)))
	if err != nil {
		t.Fatalf("JWKS does not parse as a JWT bundle: %v", err)
	}
	svid, err := jwtsvid.ParseAndValidate(resp.Token, bundle, []string{"sts.example.com"})
	if err != nil {
		t.Fatalf("JWT-SVID does not verify against the served JWKS: %v", err)
	}
	if svid.Claims["iss"] != cfg.OIDCIssuer {
		t.Fatalf("iss %v, want %s", svid.Claims["iss"], cfg.OIDCIssuer)
	}

	// Only GET is served, and nothing else.
	if r, err := http.Post(base+"/keys", "application/json", nil); err != nil || r.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /keys: %v %v", r.StatusCode, err)
	}
	if r, err := http.Get(base + "/metrics"); err != nil || r.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /metrics on the OIDC listener: %v %v", r.StatusCode, err)
	}
}

func TestOIDCConfig(t *testing.T) {
	cfg := testConfig(t)
	cfg.OIDCIssuer = ""
	cfg.OIDCAddress = "oidc.example.org:443"
	cfg.Defaults()
	if cfg.OIDCIssuer != "https://oidc.example.org:443" {
		t.Fatalf("default issuer %q", cfg.OIDCIssuer)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ addr, issuer, want string }{
		{"nonsense", "", "oidc_address"},
		{"0.0.0.0:8443", "http://oidc.example.org", "oidc_issuer"},
		{"0.0.0.0:8443", "https://oidc.example.org/?q=1", "oidc_issuer"},
		{"", "https://oidc.example.org", "oidc_issuer"},
	} {
		c := testConfig(t)
		c.OIDCAddress, c.OIDCIssuer = tc.addr, tc.issuer
		c.Defaults()
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("oidc_address %q oidc_issuer %q: %v, want an error naming %s", tc.addr, tc.issuer, err, tc.want)
		}
	}
}

// TestCheckRefusesExpiredJWTSVID: Check takes a JWT-SVID until its "exp"
// and not a moment after, by the server's clock; go-spiffe alone would
// accept it for another minute.
func TestCheckRefusesExpiredJWTSVID(t *testing.T) {
	var offset atomic.Int64
	cfg := testConfig(t)
	ctx := context.Background()
	srv, err := New(ctx, cfg, Options{Logger: quietLogger(), Version: "test", Now: func() time.Time {
		return time.Now().Add(time.Duration(offset.Load()))
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	admin := adminConn(t, srv)
	id := "spiffe://" + testTD + "/svc/batch"
	resp, err := mintJWT(t, srv, &writv1.MintJWTSVIDRequest{SpiffeId: id, Audience: []string{"db"}, TtlSeconds: 10})
	if err != nil {
		t.Fatal(err)
	}
	decide := writv1.NewDecisionServiceClient(admin)
	req := &writv1.CheckRequest{Action: "read", Resource: "db/orders", JwtSvid: resp.GetToken(), JwtAudience: "db"}
	if r, err := decide.Check(ctx, req); err != nil || strings.Join(r.GetChain(), " ") != id {
		t.Fatalf("Check with a live JWT-SVID: %v %v", r, err)
	}
	// The server's clock reaches "exp": well within go-spiffe's minute.
	exp := time.Unix(resp.GetExpiresAt(), 0)
	offset.Store(int64(exp.Sub(time.Now())))
	_, err = decide.Check(ctx, req)
	wantCode(t, err, codes.InvalidArgument, "expired at "+exp.UTC().Format(time.RFC3339))
}
