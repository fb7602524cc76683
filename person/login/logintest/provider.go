// Package logintest runs a small, real OpenID Connect provider on loopback
// for tests of writ's sign-in: discovery, the authorization-code flow with
// PKCE, the device authorization grant and a JWKS, issuing ES256-signed ID
// tokens for whichever user the test says signs in next.
package logintest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// clientID is the one public client the provider knows.
const clientID = "writ-test-client"

// Provider is an OpenID Connect provider serving on http://127.0.0.1.
// Consent is automatic: whoever SetUser named last signs in.
type Provider struct {
	// URL is the issuer; discovery is at URL/.well-known/openid-configuration.
	URL string

	opts    options
	handler http.Handler
	key     *ecdsa.PrivateKey
	kid     string
	signer  jose.Signer

	mu        sync.Mutex
	user      user
	codes     map[string]authCode
	devices   map[string]*deviceAuth
	decision  decision // for the next device authorization when none is pending
	slowDowns int
}

// user is who signs in.
type user struct {
	email    string
	verified bool
}

// subject derives a stable, opaque subject from the email, as real
// providers use identifiers that are not the email.
func (u user) subject() string {
	sum := sha256.Sum256([]byte(u.email))
	return "user-" + hex.EncodeToString(sum[:8])
}

// Option changes how a Provider behaves.
type Option func(*options)

type options struct {
	noDevice      bool
	autoApprove   bool
	pendingPolls  int
	slowDown      bool
	tokenTTL      time.Duration
	deviceCodeTTL time.Duration
}

// WithoutDeviceFlow leaves the device authorization endpoint out, like
// identity providers that do not offer the device flow.
func WithoutDeviceFlow() Option { return func(o *options) { o.noDevice = true } }

// WithDevicePendingPolls makes the provider answer authorization_pending n
// times and then approve, so device-flow tests need no ApproveDevice call.
func WithDevicePendingPolls(n int) Option {
	return func(o *options) { o.autoApprove, o.pendingPolls = true, n }
}

// WithDeviceSlowDown makes the provider answer the first poll of each
// device authorization with slow_down, and then answer slow_down again to
// any poll arriving before the longer interval (RFC 8628: 5 more seconds)
// has passed. SlowDowns then tells whether the client honoured it.
func WithDeviceSlowDown() Option { return func(o *options) { o.slowDown = true } }

// WithTokenTTL sets how long ID and access tokens live (default 5 minutes).
func WithTokenTTL(d time.Duration) Option { return func(o *options) { o.tokenTTL = d } }

// WithDeviceCodeTTL sets how long a device code lives (default 10 minutes;
// whole seconds, as expires_in is in seconds).
func WithDeviceCodeTTL(d time.Duration) Option { return func(o *options) { o.deviceCodeTTL = d } }

// New starts a provider that stops when the test ends. The first user is
// alice@example.com with a verified email.
func New(t testing.TB, opts ...Option) *Provider {
	t.Helper()
	p := &Provider{
		opts:    options{tokenTTL: 5 * time.Minute, deviceCodeTTL: 10 * time.Minute},
		user:    user{email: "alice@example.com", verified: true},
		codes:   map[string]authCode{},
		devices: map[string]*deviceAuth{},
	}
	for _, o := range opts {
		o(&p.opts)
	}
	p.newKey(t)
	p.handler = p.routes()
	srv := httptest.NewServer(p.handler)
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// newKey makes the provider's ES256 signing key.
func (p *Provider) newKey(t testing.TB) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("logintest: generating the signing key: %v", err)
	}
	p.key = key
	p.kid = randomString()[:16]
	p.signer, err = jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: p.kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatalf("logintest: making the ID token signer: %v", err)
	}
}

func (p *Provider) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", p.serveDiscovery)
	mux.HandleFunc("GET /authorize", p.serveAuthorize)
	mux.HandleFunc("POST /token", p.serveToken)
	mux.HandleFunc("GET /jwks", p.serveJWKS)
	if !p.opts.noDevice {
		mux.HandleFunc("POST /device_authorization", p.serveDeviceAuthorization)
	}
	return mux
}

// SetUser sets who signs in next, in both flows. verified becomes the
// email_verified claim.
func (p *Provider) SetUser(email string, verified bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.user = user{email: email, verified: verified}
}

// ClientID is the public client the provider accepts.
func (p *Provider) ClientID() string { return clientID }

// JWKSURL is where the provider serves its public keys.
func (p *Provider) JWKSURL() string { return p.URL + "/jwks" }

// JWKS returns the provider's public keys as a JSON Web Key Set.
func (p *Provider) JWKS() []byte {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: &p.key.PublicKey, KeyID: p.kid, Algorithm: string(jose.ES256), Use: "sig",
	}}}
	b, err := json.Marshal(set)
	if err != nil {
		panic("logintest: encoding the JWKS: " + err.Error())
	}
	return b
}

// WriteJWKS writes JWKS to path, for servers configured with a key file.
func (p *Provider) WriteJWKS(t testing.TB, path string) {
	t.Helper()
	if err := os.WriteFile(path, p.JWKS(), 0o644); err != nil {
		t.Fatalf("logintest: writing the JWKS: %v", err)
	}
}

// SlowDowns counts the slow_down answers given so far. With
// WithDeviceSlowDown, a client that honours slow_down gets exactly one per
// device sign-in.
func (p *Provider) SlowDowns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.slowDowns
}

func (p *Provider) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	doc := map[string]any{
		"issuer":                                p.URL,
		"authorization_endpoint":                p.URL + "/authorize",
		"token_endpoint":                        p.URL + "/token",
		"jwks_uri":                              p.JWKSURL(),
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{string(jose.ES256)},
		"code_challenge_methods_supported":      []string{"S256"},
		"token_endpoint_auth_methods_supported": []string{"none"},
		"scopes_supported":                      []string{"openid", "email", "profile"},
		"grant_types_supported":                 []string{"authorization_code", deviceGrant},
	}
	if !p.opts.noDevice {
		doc["device_authorization_endpoint"] = p.URL + "/device_authorization"
	}
	writeJSON(w, http.StatusOK, doc)
}

func (p *Provider) serveJWKS(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(p.JWKS())
}

// writeJSON answers with v as JSON, never cached since it may hold tokens.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// oauthError answers with an RFC 6749 error response.
func oauthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

// randomString returns 128 unguessable bits, base64url encoded.
func randomString() string {
	b := make([]byte, 16)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// InProcessClient returns an HTTP client that serves each request by
// calling the provider's handler in the calling goroutine, without the
// network. Under testing/synctest the provider then reads the same fake
// clock as the client, so polling intervals and code lifetimes pass at
// once instead of in real seconds; requests to any host reach the provider.
func (p *Provider) InProcessClient() *http.Client {
	return &http.Client{Transport: handlerTransport{p.handler}}
}

type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	resp := rec.Result()
	resp.Request = r
	return resp, nil
}
