package oidc

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// rawIssuer is an issuer on loopback whose discovery document and JWKS
// responses a test writes, counting requests to each.
type rawIssuer struct {
	srv      *httptest.Server
	docHits  atomic.Int32
	jwksHits atomic.Int32
	doc      func(self string) map[string]any
	jwks     http.HandlerFunc
}

func newRawIssuer(t *testing.T, r *rawIssuer) *rawIssuer {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		r.docHits.Add(1)
		doc := map[string]any{"issuer": r.srv.URL, "jwks_uri": r.srv.URL + "/keys"}
		if r.doc != nil {
			doc = r.doc(r.srv.URL)
		}
		json.NewEncoder(w).Encode(doc)
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, req *http.Request) {
		r.jwksHits.Add(1)
		r.jwks(w, req)
	})
	r.srv = httptest.NewTLSServer(mux)
	t.Cleanup(r.srv.Close)
	return r
}

func (r *rawIssuer) verifier(t *testing.T, clock *fakeClock) *Verifier {
	t.Helper()
	v, err := NewVerifier(context.Background(), githubConfig(r.srv.URL), testTD, WithHTTPClient(r.srv.Client()), WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func wantUnavailable(t *testing.T, v *Verifier, token, want string) error {
	t.Helper()
	_, err := v.Verify(context.Background(), token)
	if !errors.Is(err, ErrKeysUnavailable) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Verify error = %v, want ErrKeysUnavailable saying %q", err, want)
	}
	return err
}

func TestJWKSSizeBounded(t *testing.T) {
	key := newRSAKey(t, "rsa-1")
	iss := newRawIssuer(t, &rawIssuer{jwks: func(w http.ResponseWriter, _ *http.Request) {
		// A valid JWKS padded past the bound: cutting it off would parse.
		set := jwksJSON(t, key)
		w.Write(set[:len(set)-1])
		w.Write([]byte(`,"pad":"` + strings.Repeat("x", maxDocument) + `"}`))
	}})
	clock := &fakeClock{now: testNow}
	v := iss.verifier(t, clock)
	err := wantUnavailable(t, v, key.sign(t, githubClaims(iss.srv.URL, testNow)), "larger than 1048576 bytes")
	if len(err.Error()) > 2*maxUpstreamError {
		t.Fatalf("error of %d bytes repeats the response", len(err.Error()))
	}
}

func TestDiscoverySizeBounded(t *testing.T) {
	key := newRSAKey(t, "rsa-1")
	iss := newRawIssuer(t, &rawIssuer{
		doc: func(self string) map[string]any {
			return map[string]any{"issuer": self, "jwks_uri": self + "/keys", "pad": strings.Repeat("x", maxDocument)}
		},
		jwks: func(w http.ResponseWriter, _ *http.Request) { w.Write(jwksJSON(t, key)) },
	})
	v := iss.verifier(t, &fakeClock{now: testNow})
	wantUnavailable(t, v, key.sign(t, githubClaims(iss.srv.URL, testNow)), "larger than 1048576 bytes")
	if n := iss.jwksHits.Load(); n != 0 {
		t.Fatalf("%d JWKS fetches after a refused discovery document", n)
	}
}

func TestUpstreamErrorBounded(t *testing.T) {
	key := newRSAKey(t, "rsa-1")
	iss := newRawIssuer(t, &rawIssuer{jwks: func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		w.Write([]byte("line one\nforged log line " + strings.Repeat("y", 10000)))
	}})
	v := iss.verifier(t, &fakeClock{now: testNow})
	err := wantUnavailable(t, v, key.sign(t, githubClaims(iss.srv.URL, testNow)), "500")
	if len(err.Error()) > 2*maxUpstreamError || strings.Contains(err.Error(), "\n") {
		t.Fatalf("error repeats the response body unbounded or unescaped: %q", err)
	}
}

func TestRedirectOffHTTPSRefused(t *testing.T) {
	key := newRSAKey(t, "rsa-1")
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(jwksJSON(t, key)) }))
	t.Cleanup(plain.Close)
	iss := newRawIssuer(t, &rawIssuer{jwks: func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+"/keys", http.StatusFound)
	}})
	v := iss.verifier(t, &fakeClock{now: testNow})
	wantUnavailable(t, v, key.sign(t, githubClaims(iss.srv.URL, testNow)), "which is not https")
}

func TestPlainJWKSURIRefused(t *testing.T) {
	key := newRSAKey(t, "rsa-1")
	iss := newRawIssuer(t, &rawIssuer{
		doc: func(self string) map[string]any {
			return map[string]any{"issuer": self, "jwks_uri": "http://" + strings.TrimPrefix(self, "https://") + "/keys"}
		},
		jwks: func(w http.ResponseWriter, _ *http.Request) { w.Write(jwksJSON(t, key)) },
	})
	v := iss.verifier(t, &fakeClock{now: testNow})
	wantUnavailable(t, v, key.sign(t, githubClaims(iss.srv.URL, testNow)), "is not an https URL")
}

// A token signed with an algorithm the issuer does not sign with is not
// tried against its keys, even one the key could verify.
func TestUnadvertisedAlgorithmRefused(t *testing.T) {
	key := newECKey(t, "ec-1")
	iss := newRawIssuer(t, &rawIssuer{
		doc: func(self string) map[string]any {
			return map[string]any{"issuer": self, "jwks_uri": self + "/keys", "id_token_signing_alg_values_supported": []string{"RS256"}}
		},
		jwks: func(w http.ResponseWriter, _ *http.Request) { w.Write(jwksJSON(t, key)) },
	})
	v := iss.verifier(t, &fakeClock{now: testNow})
	wantRefused(t, v, key.sign(t, githubClaims(iss.srv.URL, testNow)), "signed with ES256, which the issuer does not list")
	if n := iss.jwksHits.Load(); n != 0 {
		t.Fatalf("%d JWKS fetches for a token in an algorithm the issuer does not use", n)
	}
}

// An issuer that is down is asked again only after minRefresh, however
// many tokens arrive meanwhile.
func TestDiscoveryFailureRateLimited(t *testing.T) {
	key := newRSAKey(t, "rsa-1")
	var down atomic.Bool
	down.Store(true)
	iss := newRawIssuer(t, &rawIssuer{
		doc: func(self string) map[string]any {
			if down.Load() {
				return map[string]any{"issuer": "https://other.example"}
			}
			return map[string]any{"issuer": self, "jwks_uri": self + "/keys"}
		},
		jwks: func(w http.ResponseWriter, _ *http.Request) { w.Write(jwksJSON(t, key)) },
	})
	clock := &fakeClock{now: testNow}
	v := iss.verifier(t, clock)
	for range 3 {
		wantUnavailable(t, v, key.sign(t, githubClaims(iss.srv.URL, clock.Now())), `names issuer "https://other.example"`)
	}
	if n := iss.docHits.Load(); n != 1 {
		t.Fatalf("%d discovery requests within the rate limit, want 1", n)
	}
	down.Store(false)
	clock.Advance(minRefresh)
	// Asked again while go-oidc may still hold the failed fetch as in
	// flight (see above); the first answer after that is the real one.
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, err := v.Verify(context.Background(), key.sign(t, githubClaims(iss.srv.URL, clock.Now())))
		if err == nil {
			break
		}
		if iss.jwksHits.Load() >= 2 || time.Now().After(deadline) {
			t.Fatalf("after the issuer recovered: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBoundedClientTimeout(t *testing.T) {
	for _, base := range []time.Duration{0, time.Hour, time.Second} {
		c := boundedClient(&http.Client{Timeout: base}, "https://x/.well-known/openid-configuration", time.Now)
		if c.Timeout <= 0 || c.Timeout > fetchTimeout {
			t.Errorf("base timeout %s: client timeout %s, want (0, %s]", base, c.Timeout, fetchTimeout)
		}
	}
}

// An updated jwks_file is read again when a token names a key it lacks.
func TestJWKSFileReloaded(t *testing.T) {
	old, next := newECKey(t, "k8s-1"), newECKey(t, "k8s-2")
	file := writeFile(t, "jwks.json", jwksJSON(t, old))
	cfg := IssuerConfig{
		Name: "k8s", Profile: ProfileK8s, Issuer: "https://k8s.example", JWKSFile: file,
		Allow: []Rule{{"namespace": "ci"}},
	}
	v, err := NewVerifier(context.Background(), cfg, testTD, WithClock(func() time.Time { return testNow }))
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{
		"iss": "https://k8s.example", "aud": "example.org", "sub": "system:serviceaccount:ci:agent",
		"iat": testNow.Unix(), "exp": testNow.Add(time.Minute).Unix(),
		"kubernetes.io": map[string]any{"namespace": "ci", "serviceaccount": map[string]any{"name": "agent"}, "pod": map[string]any{"name": "p"}},
	}
	wantRefused(t, v, next.sign(t, claims), "update jwks_file")
	if err := os.WriteFile(file, jwksJSON(t, old, next), 0o644); err != nil {
		t.Fatal(err)
	}
	// The file's size changed, so the reload does not hang on mtime
	// granularity.
	if _, err := v.Verify(context.Background(), next.sign(t, claims)); err != nil {
		t.Fatalf("a key added to jwks_file is not used: %v", err)
	}
}

// A jwks_uri that redirects (within https) is followed: the hop is part of
// one admitted fetch, not a second one within the rate limit.
func TestJWKSRedirectFollowed(t *testing.T) {
	key := newRSAKey(t, "rsa-1")
	iss := newRawIssuer(t, &rawIssuer{jwks: func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("moved") == "" {
			http.Redirect(w, r, "/keys?moved=1", http.StatusFound)
			return
		}
		w.Write(jwksJSON(t, key))
	}})
	v := iss.verifier(t, &fakeClock{now: testNow})
	if _, err := v.Verify(context.Background(), key.sign(t, githubClaims(iss.srv.URL, testNow))); err != nil {
		t.Fatal(err)
	}
}

// Discovery that runs again after maxKeyAge starts an empty key set, whose
// first fetch goes ahead even right after the old set fetched.
func TestRediscoveryFetchesKeys(t *testing.T) {
	s := newGitHubSetup(t, nil)
	ctx := context.Background()
	if _, err := s.v.Verify(ctx, s.key.sign(t, s.claims())); err != nil {
		t.Fatal(err)
	}
	s.clock.Advance(maxKeyAge - time.Second)
	// go-oidc wakes the callers waiting on a key fetch just before it lets
	// the next fetch start, so a token right after one may be answered
	// from that fetch's keys; the unknown key is asked about until it
	// makes a fetch of its own (no fake time passes, so at most one can).
	unknown := newECKey(t, "ec-unknown").sign(t, s.claims())
	for deadline := time.Now().Add(10 * time.Second); s.iss.jwksHits.Load() < 2; {
		wantRefused(t, s.v, unknown, "does not verify")
		if time.Now().After(deadline) {
			t.Fatal("a token with an unknown key never made the verifier fetch the keys")
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.clock.Advance(2 * time.Second)
	if _, err := s.v.Verify(ctx, s.key.sign(t, s.claims())); err != nil {
		t.Fatalf("first token after rediscovery: %v", err)
	}
	if n := s.iss.jwksHits.Load(); n != 3 {
		t.Fatalf("%d JWKS fetches, want 3", n)
	}
}

// Right after a failed key fetch, a token is not refused as forged: the
// server holds no keys to tell, and says to try again.
func TestFailedFetchIsNotForgery(t *testing.T) {
	key := newRSAKey(t, "rsa-1")
	var broken atomic.Bool
	broken.Store(true)
	iss := newRawIssuer(t, &rawIssuer{jwks: func(w http.ResponseWriter, _ *http.Request) {
		if broken.Load() {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Write(jwksJSON(t, key))
	}})
	clock := &fakeClock{now: testNow}
	v := iss.verifier(t, clock)
	wantUnavailable(t, v, key.sign(t, githubClaims(iss.srv.URL, clock.Now())), "503")
	broken.Store(false)
	clock.Advance(time.Second)
	// Within the rate limit the verifier says to try again later, or (when
	// go-oidc answers from the fetch that just failed, whose in-flight
	// record it clears only after waking its callers) repeats that
	// failure: either way unavailable, never forged, and no new fetch.
	_, err := v.Verify(context.Background(), key.sign(t, githubClaims(iss.srv.URL, clock.Now())))
	if !errors.Is(err, ErrKeysUnavailable) || !(strings.Contains(err.Error(), "try again later") || strings.Contains(err.Error(), "503")) {
		t.Fatalf("Verify error = %v, want ErrKeysUnavailable saying \"try again later\" (or repeating the 503)", err)
	}
	if n := iss.jwksHits.Load(); n != 1 {
		t.Fatalf("%d JWKS fetches within the rate limit, want 1", n)
	}
	clock.Advance(minRefresh)
	// Asked again while go-oidc may still hold the failed fetch as in
	// flight (see above); the first answer after that is the real one.
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, err := v.Verify(context.Background(), key.sign(t, githubClaims(iss.srv.URL, clock.Now())))
		if err == nil {
			break
		}
		if iss.jwksHits.Load() >= 2 || time.Now().After(deadline) {
			t.Fatalf("after the issuer recovered: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
