package oidc

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	testTD  = spiffeid.RequireTrustDomainFromString("example.org")
	testNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
)

// signingKey is one of the test issuer's keys.
type signingKey struct {
	kid  string
	alg  jose.SignatureAlgorithm
	priv crypto.Signer
}

func newRSAKey(t testing.TB, kid string) signingKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kid: kid, alg: jose.RS256, priv: k}
}

func newECKey(t testing.TB, kid string) signingKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signingKey{kid: kid, alg: jose.ES256, priv: k}
}

func (k signingKey) jwk() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"}
}

// sign makes a compact JWS of claims.
func (k signingKey) sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	opts := (&jose.SignerOptions{}).WithType("JWT")
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.kid}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func jwksJSON(t testing.TB, keys ...signingKey) []byte {
	t.Helper()
	var set jose.JSONWebKeySet
	for _, k := range keys {
		set.Keys = append(set.Keys, k.jwk())
	}
	data, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// testIssuer is an OIDC issuer on loopback serving discovery and a JWKS
// that a test can change, counting JWKS requests.
type testIssuer struct {
	srv       *httptest.Server
	jwksHits  atomic.Int32
	mu        sync.Mutex
	published []signingKey
	docIssuer string
}

func newTestIssuer(t *testing.T, keys ...signingKey) *testIssuer {
	t.Helper()
	iss := &testIssuer{published: keys}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		iss.mu.Lock()
		docIssuer := iss.docIssuer
		iss.mu.Unlock()
		if docIssuer == "" {
			docIssuer = iss.srv.URL
		}
		json.NewEncoder(w).Encode(map[string]string{"issuer": docIssuer, "jwks_uri": iss.srv.URL + "/keys"})
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, r *http.Request) {
		iss.jwksHits.Add(1)
		iss.mu.Lock()
		defer iss.mu.Unlock()
		w.Write(jwksJSON(t, iss.published...))
	})
	iss.srv = httptest.NewTLSServer(mux)
	t.Cleanup(iss.srv.Close)
	return iss
}

func (iss *testIssuer) publish(keys ...signingKey) {
	iss.mu.Lock()
	defer iss.mu.Unlock()
	iss.published = keys
}

// fakeClock is a clock a test moves.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func githubConfig(issuer string) IssuerConfig {
	return IssuerConfig{
		Name:    "github",
		Profile: ProfileGitHub,
		Issuer:  issuer,
		Allow:   []Rule{{"repository": "org/*", "ref": "refs/heads/main"}},
	}
}

func githubClaims(issuer string, now time.Time) map[string]any {
	return map[string]any{
		"iss":                issuer,
		"aud":                "example.org",
		"sub":                "repo:org/repo:ref:refs/heads/main",
		"jti":                "0f8b3c1e-5d1a-4f0e-9a67-1c2d3e4f5a6b",
		"iat":                now.Add(-time.Minute).Unix(),
		"nbf":                now.Add(-time.Minute).Unix(),
		"exp":                now.Add(4 * time.Minute).Unix(),
		"repository":         "org/repo",
		"repository_owner":   "org",
		"repository_id":      "4242",
		"ref":                "refs/heads/main",
		"ref_type":           "branch",
		"sha":                "8f2d7c1b0a9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c",
		"workflow":           "CI",
		"workflow_ref":       "org/repo/.github/workflows/ci.yml@refs/heads/main",
		"job_workflow_ref":   "org/repo/.github/workflows/ci.yml@refs/heads/main",
		"event_name":         "push",
		"run_id":             "123",
		"run_attempt":        "1",
		"actor":              "octocat",
		"runner_environment": "github-hosted",
	}
}

// githubSetup runs an issuer with one RSA key and a verifier for it.
type githubSetup struct {
	iss   *testIssuer
	key   signingKey
	clock *fakeClock
	v     *Verifier
}

func newGitHubSetup(t *testing.T, edit func(*IssuerConfig)) *githubSetup {
	t.Helper()
	s := &githubSetup{key: newRSAKey(t, "rsa-1"), clock: &fakeClock{now: testNow}}
	s.iss = newTestIssuer(t, s.key)
	cfg := githubConfig(s.iss.srv.URL)
	if edit != nil {
		edit(&cfg)
	}
	v, err := NewVerifier(context.Background(), cfg, testTD, WithHTTPClient(s.iss.srv.Client()), WithClock(s.clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	s.v = v
	return s
}

func (s *githubSetup) claims() map[string]any {
	return githubClaims(s.iss.srv.URL, s.clock.Now())
}

func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
