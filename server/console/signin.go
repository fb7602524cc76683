package console

import (
	"context"
	"net/http"
	"time"

	"writ.dev/writ/internal/quote"
	"writ.dev/writ/person/login"
)

const (
	// providerTimeout bounds each talk with the identity provider.
	providerTimeout = 15 * time.Second
	// maxErrorCode bounds the OAuth error code a page repeats: the codes
	// RFC 6749 defines are short words.
	maxErrorCode = 64
)

// webFlow discovers the identity provider once it answers.
func (c *Console) webFlow(ctx context.Context) (*login.Web, error) {
	c.webMu.Lock()
	defer c.webMu.Unlock()
	if c.web != nil {
		return c.web, nil
	}
	ctx, cancel := context.WithTimeout(ctx, providerTimeout)
	defer cancel()
	web, err := login.NewWeb(ctx, login.Config{Issuer: c.cfg.Issuer, ClientID: c.cfg.ClientID, HTTPClient: c.cfg.HTTPClient}, c.origin+"/callback")
	if err != nil {
		return nil, err
	}
	c.web = web
	return web, nil
}

// signIn sends the browser to the identity provider with a fresh state and
// PKCE challenge; the verifier stays on the server.
func (c *Console) signIn(w http.ResponseWriter, r *http.Request) {
	if !c.allowSignIn(w, r) {
		return
	}
	web, err := c.webFlow(r.Context())
	if err != nil {
		c.cfg.Log.Warn("console: identity provider unavailable", "err", err)
		c.fail(w, r, http.StatusBadGateway, "The identity provider could not be reached, so nobody can sign in right now: try again in a minute, and tell the server's operators if it persists.")
		return
	}
	verifier := login.NewVerifier()
	state := c.sessions.beginLogin(verifier)
	setCookie(w, loginCookie, state, http.SameSiteLaxMode, int(loginTTL/time.Second))
	http.Redirect(w, r, web.AuthURL(state, verifier), http.StatusSeeOther)
}

// callback finishes a sign-in: the state must be the one this browser was
// given (its cookie) and one the server is waiting for; the code is
// exchanged with the verifier; the ID token is checked as 'writ login'
// checks it.
func (c *Console) callback(w http.ResponseWriter, r *http.Request) {
	if !c.allowSignIn(w, r) {
		return
	}
	q := r.URL.Query()
	state := q.Get("state")
	ck, err := r.Cookie(loginCookie)
	if err != nil || state == "" || ck.Value != state {
		c.fail(w, r, http.StatusBadRequest, "This sign-in answer does not belong to a sign-in this browser started: start again from the sign-in page.")
		return
	}
	setCookie(w, loginCookie, "", http.SameSiteLaxMode, -1)
	pl, ok := c.sessions.finishLogin(state)
	if !ok {
		c.fail(w, r, http.StatusBadRequest, "This sign-in took too long or was already used: start again from the sign-in page.")
		return
	}
	web, err := c.webFlow(r.Context())
	if err != nil {
		c.fail(w, r, http.StatusBadGateway, "The identity provider could not be reached: sign in again in a minute.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), providerTimeout)
	defer cancel()
	errCode := q.Get("error")
	if len(errCode) > maxErrorCode {
		errCode = errCode[:maxErrorCode]
	}
	idToken, err := web.Finish(ctx, errCode, quote.Max(q.Get("error_description"), 200), q.Get("code"), pl.verifier)
	if err != nil {
		c.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	person, err := c.cfg.SignIn(ctx, idToken)
	if err != nil {
		c.fail(w, r, http.StatusForbidden, "Sign-in refused: "+err.Error())
		return
	}
	se := c.sessions.start(person)
	setCookie(w, sessionCookie, se.id, http.SameSiteStrictMode, 0)
	c.cfg.Log.Info("console: person signed in", "person", person.String())
	// The provider's redirect was a cross-site navigation, and a redirect
	// from here would be one too, so the Strict cookie would not go with
	// it: the page moves on by itself, as a same-site navigation.
	c.render(w, r, http.StatusOK, "signedin", &page{Title: "Signed in"})
}

func (c *Console) signOut(w http.ResponseWriter, r *http.Request) {
	se := sessionFrom(r.Context())
	c.sessions.end(se.id)
	if c.cfg.SignedOut != nil {
		c.cfg.SignedOut(r.Context(), se.person)
	}
	setCookie(w, sessionCookie, "", http.SameSiteStrictMode, -1)
	c.render(w, r.WithContext(context.Background()), http.StatusOK, "signin", &page{Title: "Signed out", Notice: "You are signed out."})
}

// allowSignIn applies the sign-in rate limit, answering 429 past it.
func (c *Console) allowSignIn(w http.ResponseWriter, r *http.Request) bool {
	if c.cfg.AllowSignIn == nil {
		return true
	}
	if err := c.cfg.AllowSignIn(r); err != nil {
		c.fail(w, r, http.StatusTooManyRequests, err.Error())
		return false
	}
	return true
}
