package login_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"writ.dev/writ/person/login"
	"writ.dev/writ/person/login/logintest"
)

// TestWebFlow: a web application's sign-in sends the browser to the
// provider with its state and an S256 challenge, and exchanges the code
// for an ID token only with the verifier it kept; a provider's refusal is
// explained.
func TestWebFlow(t *testing.T) {
	p := logintest.New(t)
	p.SetUser("alice@example.com", true)
	const redirect = "https://127.0.0.1:4567/callback"
	web, err := login.NewWeb(t.Context(), login.Config{Issuer: p.URL, ClientID: p.ClientID()}, redirect)
	if err != nil {
		t.Fatal(err)
	}
	verifier := login.NewVerifier()
	authURL := web.AuthURL("state-1", verifier)
	u, err := url.Parse(authURL)
	if err != nil {
		t.Fatal(err)
	}
	if q := u.Query(); q.Get("state") != "state-1" || q.Get("code_challenge_method") != "S256" || q.Get("redirect_uri") != redirect || q.Get("code_challenge") == "" {
		t.Fatalf("authorization URL %s", authURL)
	}
	code := func() string {
		noRedirects := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := noRedirects.Get(authURL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, err := resp.Location()
		if err != nil {
			t.Fatalf("the provider answered %s", resp.Status)
		}
		return loc.Query().Get("code")
	}
	if _, err := web.Finish(t.Context(), "", "", code(), login.NewVerifier()); err == nil {
		t.Fatal("a code was exchanged with another verifier")
	}
	tok, err := web.Finish(t.Context(), "", "", code(), verifier)
	if err != nil || strings.Count(tok, ".") != 2 {
		t.Fatalf("ID token %q, %v", tok, err)
	}
	if _, err := web.Finish(t.Context(), "access_denied", "not for you", "", verifier); err == nil || !strings.Contains(err.Error(), "denied the sign-in") {
		t.Fatalf("a refusal: %v", err)
	}
	if _, err := web.Finish(t.Context(), "", "", "", verifier); err == nil {
		t.Fatal("an answer without a code was accepted")
	}
}
