package logintest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"

	"golang.org/x/oauth2"
)

// noRedirects is a client that shows the provider's redirects instead of
// following them.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
	return http.ErrUseLastResponse
}}

const redirectURI = "http://127.0.0.1:4567/callback"

// authorize runs /authorize with the given parameters over the defaults and
// returns the redirect's query, failing unless it redirects.
func authorize(t *testing.T, p *Provider, params url.Values) url.Values {
	t.Helper()
	q := url.Values{
		"client_id":             {clientID},
		"redirect_uri":          {redirectURI},
		"response_type":         {"code"},
		"scope":                 {"openid email"},
		"state":                 {"s1"},
		"code_challenge_method": {"S256"},
	}
	for k, v := range params {
		q[k] = v
	}
	resp, err := noRedirects.Get(p.URL + "/authorize?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil {
		t.Fatalf("/authorize answered %s without a redirect", resp.Status)
	}
	return loc.Query()
}

// exchange posts an authorization_code grant and returns the status and
// the decoded answer.
func exchange(t *testing.T, p *Provider, code, verifier string) (int, map[string]any) {
	t.Helper()
	form := url.Values{
		"grant_type":    {"authorization_code"},
		"client_id":     {clientID},
		"code":          {code},
		"redirect_uri":  {redirectURI},
		"code_verifier": {verifier},
	}
	resp, err := http.PostForm(p.URL+"/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func TestTokenChecksPKCEVerifier(t *testing.T) {
	p := New(t)
	verifier := oauth2.GenerateVerifier()
	challenge := url.Values{"code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}}

	code := authorize(t, p, challenge).Get("code")
	if status, body := exchange(t, p, code, oauth2.GenerateVerifier()); status != http.StatusBadRequest || body["error"] != "invalid_grant" {
		t.Fatalf("wrong verifier: %d %v, want 400 invalid_grant", status, body)
	}
	if status, body := exchange(t, p, code, verifier); status != http.StatusBadRequest {
		t.Fatalf("reused code: %d %v, want 400: codes are single use", status, body)
	}

	code = authorize(t, p, challenge).Get("code")
	status, body := exchange(t, p, code, verifier)
	if status != http.StatusOK || body["id_token"] == nil || body["token_type"] != "Bearer" {
		t.Fatalf("right verifier: %d %v, want tokens", status, body)
	}
}

func TestAuthorizeRequiresPKCE(t *testing.T) {
	p := New(t)
	q := authorize(t, p, nil)
	if q.Get("error") != "invalid_request" || q.Get("state") != "s1" || q.Get("code") != "" {
		t.Fatalf("redirect query %v, want invalid_request with the state and no code", q)
	}
}

func TestAuthorizeRefusesNonLoopbackRedirect(t *testing.T) {
	p := New(t)
	q := url.Values{
		"client_id":             {clientID},
		"redirect_uri":          {"http://evil.example.com:80/callback"},
		"response_type":         {"code"},
		"scope":                 {"openid"},
		"code_challenge_method": {"S256"},
		"code_challenge":        {"x"},
	}
	resp, err := noRedirects.Get(p.URL + "/authorize?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %s, want 400 without a redirect", resp.Status)
	}
}

func TestDiscovery(t *testing.T) {
	p := New(t, WithoutDeviceFlow())
	resp, err := http.Get(p.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if doc["issuer"] != p.URL || doc["jwks_uri"] != p.JWKSURL() || doc["device_authorization_endpoint"] != nil {
		t.Fatalf("discovery %v", doc)
	}
	resp, err = http.Get(p.JWKSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var jwks struct{ Keys []map[string]any }
	if err := json.NewDecoder(resp.Body).Decode(&jwks); err != nil || len(jwks.Keys) != 1 || !strings.HasPrefix(jwks.Keys[0]["kty"].(string), "EC") {
		t.Fatalf("JWKS %v (%v), want one EC key", jwks, err)
	}
}

func TestWriteJWKS(t *testing.T) {
	p := New(t)
	path := t.TempDir() + "/jwks.json"
	p.WriteJWKS(t, path)
	got, err := os.ReadFile(path)
	if err != nil || string(got) != string(p.JWKS()) {
		t.Fatalf("file holds %q (%v), want the JWKS", got, err)
	}
}
