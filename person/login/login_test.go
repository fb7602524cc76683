package login_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"writ.dev/writ/person/login"
	"writ.dev/writ/person/login/logintest"
)

// testContext bounds a flow so that a broken one fails the test instead of
// hanging it.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func config(p *logintest.Provider, out io.Writer) login.Config {
	return login.Config{Issuer: p.URL, ClientID: p.ClientID(), Out: out}
}

// idClaims verifies idToken with the provider's JWKS and returns its claims.
func idClaims(t *testing.T, p *logintest.Provider, idToken string) map[string]any {
	t.Helper()
	var keys jose.JSONWebKeySet
	if err := json.Unmarshal(p.JWKS(), &keys); err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSigned(idToken, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	found := keys.Key(jws.Signatures[0].Header.KeyID)
	if len(found) != 1 {
		t.Fatalf("ID token kid %q not in the JWKS", jws.Signatures[0].Header.KeyID)
	}
	payload, err := jws.Verify(found[0])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func checkClaims(t *testing.T, p *logintest.Provider, idToken, email string, verified bool) {
	t.Helper()
	c := idClaims(t, p, idToken)
	if c["email"] != email || c["email_verified"] != verified || c["iss"] != p.URL || c["aud"] != p.ClientID() {
		t.Errorf("claims = %v, want email %s (verified %v) from %s for %s", c, email, verified, p.URL, p.ClientID())
	}
	for _, k := range []string{"sub", "iat", "exp", "jti"} {
		if c[k] == nil {
			t.Errorf("claim %s missing from %v", k, c)
		}
	}
}

func TestDiscoveryRefusesPlainHTTPIssuer(t *testing.T) {
	c := login.Config{Issuer: "http://idp.example.com", ClientID: "writ", Out: io.Discard}
	_, err := login.AuthCode(testContext(t), c)
	if err == nil || !strings.Contains(err.Error(), "https") {
		t.Fatalf("AuthCode with an http issuer: err = %v, want a refusal asking for https", err)
	}
	_, err = login.Device(testContext(t), c)
	if err == nil || !strings.Contains(err.Error(), "https") {
		t.Fatalf("Device with an http issuer: err = %v, want a refusal asking for https", err)
	}
}

func TestDiscoveryRefusesOtherIssuer(t *testing.T) {
	p := logintest.New(t)
	c := config(p, io.Discard)
	c.Issuer += "/"
	_, err := login.Device(testContext(t), c)
	if err == nil || !strings.Contains(err.Error(), "names issuer") {
		t.Fatalf("err = %v, want an issuer mismatch", err)
	}
}

// browser plays the person's browser: it follows the sign-in redirects to
// the loopback callback and checks the page it ends on.
func browser(t *testing.T, wantStatus int, wantText string) func(string) error {
	return func(u string) error {
		resp, err := http.Get(u)
		if err != nil {
			t.Errorf("browser: %v", err)
			return err
		}
		checkPage(t, resp, wantStatus, wantText)
		return nil
	}
}

func checkPage(t *testing.T, resp *http.Response, wantStatus int, wantText string) {
	t.Helper()
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus || !strings.Contains(string(body), wantText) {
		t.Errorf("page %s: status %d, body %q; want %d with %q", resp.Request.URL.Path, resp.StatusCode, body, wantStatus, wantText)
	}
}

func TestAuthCode(t *testing.T) {
	p := logintest.New(t)
	p.SetUser("bob@example.com", false)
	var out bytes.Buffer
	c := config(p, &out)
	c.OpenBrowser = browser(t, http.StatusOK, "You can close this tab")
	idToken, err := login.AuthCode(testContext(t), c)
	if err != nil {
		t.Fatal(err)
	}
	checkClaims(t, p, idToken, "bob@example.com", false)
	if !strings.Contains(out.String(), p.URL+"/authorize?") {
		t.Errorf("output %q does not show the sign-in URL", out.String())
	}
	if strings.Contains(out.String(), idToken) {
		t.Error("the ID token was printed")
	}
}

// callbackURL returns the loopback callback and state from an
// authorization URL.
func callbackURL(t *testing.T, authURL string) (redirect, state string) {
	u, err := url.Parse(authURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query().Get("redirect_uri"), u.Query().Get("state")
}

func TestAuthCodeRefusesWrongState(t *testing.T) {
	p := logintest.New(t)
	c := config(p, io.Discard)
	signIn := browser(t, http.StatusOK, "You can close this tab")
	c.OpenBrowser = func(authURL string) error {
		redirect, _ := callbackURL(t, authURL)
		resp, err := http.Get(redirect + "?" + url.Values{"code": {"forged"}, "state": {"forged"}}.Encode())
		if err != nil {
			t.Fatal(err)
		}
		checkPage(t, resp, http.StatusBadRequest, "does not belong")
		return signIn(authURL)
	}
	idToken, err := login.AuthCode(testContext(t), c)
	if err != nil {
		t.Fatal(err)
	}
	checkClaims(t, p, idToken, "alice@example.com", true)
}

func TestAuthCodeAccessDenied(t *testing.T) {
	p := logintest.New(t)
	c := config(p, io.Discard)
	c.OpenBrowser = func(authURL string) error {
		redirect, state := callbackURL(t, authURL)
		q := url.Values{"error": {"access_denied"}, "error_description": {"not today"}, "state": {state}}
		resp, err := http.Get(redirect + "?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		checkPage(t, resp, http.StatusBadRequest, "Sign-in failed")
		return nil
	}
	_, err := login.AuthCode(testContext(t), c)
	if err == nil || !strings.Contains(err.Error(), "denied") || !strings.Contains(err.Error(), "access_denied") {
		t.Fatalf("err = %v, want the identity provider's access_denied", err)
	}
}

func TestAuthCodeStopsWithContext(t *testing.T) {
	p := logintest.New(t)
	ctx, cancel := context.WithCancel(t.Context())
	c := config(p, io.Discard)
	c.OpenBrowser = func(string) error { cancel(); return nil }
	_, err := login.AuthCode(ctx, c)
	if err == nil || !strings.Contains(err.Error(), "gave up waiting") {
		t.Fatalf("err = %v, want the wait to end with the context", err)
	}
}
