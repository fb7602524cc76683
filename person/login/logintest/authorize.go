package logintest

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// codeTTL bounds how long an authorization code can wait to be exchanged.
const codeTTL = time.Minute

// authCode is what an issued authorization code stands for.
type authCode struct {
	redirectURI string
	challenge   string
	nonce       string
	user        user
	expires     time.Time
}

// serveAuthorize consents at once for the current user. A bad client or
// redirect URI gets an error page rather than a redirect, so the provider
// never sends anything to an unvetted address.
func (p *Provider) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != clientID {
		http.Error(w, "unknown client_id", http.StatusBadRequest)
		return
	}
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || !loopbackRedirect(redirect) {
		http.Error(w, "redirect_uri must be http or https on 127.0.0.1, [::1] or localhost with a port", http.StatusBadRequest)
		return
	}
	if code, desc := checkAuthorize(q); code != "" {
		redirectTo(w, r, redirect, url.Values{"error": {code}, "error_description": {desc}, "state": {q.Get("state")}})
		return
	}
	code := randomString()
	p.mu.Lock()
	p.codes[code] = authCode{
		redirectURI: redirect.String(),
		challenge:   q.Get("code_challenge"),
		nonce:       q.Get("nonce"),
		user:        p.user,
		expires:     time.Now().Add(codeTTL),
	}
	p.mu.Unlock()
	redirectTo(w, r, redirect, url.Values{"code": {code}, "state": {q.Get("state")}})
}

// checkAuthorize returns the OAuth error for an authorization request the
// provider will not serve, or "" when it is acceptable. PKCE is required.
func checkAuthorize(q url.Values) (code, desc string) {
	switch {
	case q.Get("response_type") != "code":
		return "unsupported_response_type", "only response_type=code is supported"
	case !slices.Contains(strings.Fields(q.Get("scope")), "openid"):
		return "invalid_scope", "the openid scope is required"
	case q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "":
		return "invalid_request", "PKCE with code_challenge_method=S256 is required"
	}
	return "", ""
}

// loopbackRedirect reports whether u is a native app's loopback redirect
// (RFC 8252 section 7.3), or a web application's served on loopback in a
// test (the web console, over https).
func loopbackRedirect(u *url.URL) bool {
	if (u.Scheme != "http" && u.Scheme != "https") || u.Port() == "" || u.Fragment != "" {
		return false
	}
	host := u.Hostname()
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// redirectTo sends the browser back to the client with params added.
func redirectTo(w http.ResponseWriter, r *http.Request, to *url.URL, params url.Values) {
	u := *to
	q := u.Query()
	for k, v := range params {
		q[k] = v
	}
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// exchangeCode serves grant_type=authorization_code. The code is spent
// whether or not the exchange succeeds, so it can never be tried twice.
func (p *Provider) exchangeCode(w http.ResponseWriter, r *http.Request) {
	code := r.PostForm.Get("code")
	p.mu.Lock()
	ac, ok := p.codes[code]
	delete(p.codes, code)
	p.mu.Unlock()
	switch {
	case !ok || time.Now().After(ac.expires):
		oauthError(w, http.StatusBadRequest, "invalid_grant", "unknown, used or expired code")
	case r.PostForm.Get("redirect_uri") != ac.redirectURI:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "redirect_uri differs from the authorization request")
	case !verifierMatches(r.PostForm.Get("code_verifier"), ac.challenge):
		oauthError(w, http.StatusBadRequest, "invalid_grant", "code_verifier does not match code_challenge")
	default:
		p.issueTokens(w, ac.user, ac.nonce)
	}
}

// verifierMatches checks PKCE S256: BASE64URL(SHA256(verifier)) == challenge.
func verifierMatches(verifier, challenge string) bool {
	if verifier == "" {
		return false
	}
	sum := sha256.Sum256([]byte(verifier))
	got := base64.RawURLEncoding.EncodeToString(sum[:])
	return subtle.ConstantTimeCompare([]byte(got), []byte(challenge)) == 1
}
