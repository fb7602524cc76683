package login

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// AuthCode runs the authorization-code flow with PKCE (S256): the person
// signs in with a browser, which the identity provider sends back to a
// one-shot server on http://127.0.0.1:<random port>/callback. It returns
// the ID token, or an error when sign-in fails or ctx ends first.
func AuthCode(ctx context.Context, c Config) (idToken string, err error) {
	ctx, p, err := setup(ctx, &c)
	if err != nil {
		return "", err
	}
	// Only 127.0.0.1: other machines must not be able to deliver a code.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("login: listening for the browser's callback on 127.0.0.1: %w", err)
	}
	redirect := fmt.Sprintf("http://%s/callback", ln.Addr())
	cb := &callback{
		ctx:      ctx,
		oauth:    oauthConfig(&c, p, redirect),
		state:    randomString(),
		verifier: oauth2.GenerateVerifier(),
		done:     make(chan result, 1),
	}
	srv := &http.Server{Handler: cb, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer shutdown(srv)

	authURL := cb.oauth.AuthCodeURL(cb.state, oauth2.S256ChallengeOption(cb.verifier))
	showAuthURL(&c, authURL)
	select {
	case r := <-cb.done:
		return r.idToken, r.err
	case <-ctx.Done():
		return "", fmt.Errorf("login: gave up waiting for the browser sign-in: %w; run the sign-in again and finish it in the browser", ctx.Err())
	}
}

// showAuthURL tells the person where to sign in, and opens it for them when
// it can. The URL is always printed, so that a failed or missing browser
// leaves the person a way to continue.
func showAuthURL(c *Config, authURL string) {
	fmt.Fprintf(c.Out, "To sign in, open this URL in your browser:\n\n  %s\n\n", authURL)
	if c.OpenBrowser == nil {
		return
	}
	if err := c.OpenBrowser(authURL); err != nil {
		fmt.Fprintf(c.Out, "Could not open a browser (%v); open the URL above yourself.\n", err)
	}
}

// shutdown stops the callback server, giving a page being written a moment
// to reach the browser.
func shutdown(srv *http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if srv.Shutdown(ctx) != nil {
		srv.Close()
	}
}

// randomString returns 256 unguessable bits, base64url encoded.
func randomString() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// result is the outcome of the one callback that counts.
type result struct {
	idToken string
	err     error
}

// callback serves the loopback redirect. Requests with the wrong state are
// refused without ending the flow, so that a page forging a callback can
// neither sign the person in as someone else nor cancel their sign-in.
// The first callback with the right state decides the outcome.
type callback struct {
	ctx      context.Context
	oauth    *oauth2.Config
	state    string
	verifier string
	done     chan result

	mu      sync.Mutex
	handled bool
}

func (cb *callback) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/callback" {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(cb.state)) != 1 {
		page(w, http.StatusBadRequest, "Sign-in refused", "This sign-in response does not belong to the sign-in writ started. Start again from the command line.")
		return
	}
	if !cb.claim() {
		page(w, http.StatusConflict, "Already handled", "This sign-in has already been completed or failed. Check the command line.")
		return
	}
	res := cb.finish(q.Get("error"), q.Get("error_description"), q.Get("code"))
	if res.err != nil {
		page(w, http.StatusBadRequest, "Sign-in failed", res.err.Error())
	} else {
		page(w, http.StatusOK, "Signed in", "You are signed in to writ. You can close this tab.")
	}
	cb.done <- res
}

// claim reports whether this is the first callback with the right state.
func (cb *callback) claim() bool {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	first := !cb.handled
	cb.handled = true
	return first
}

// finish turns the identity provider's answer into an ID token, exchanging
// the code with the PKCE verifier that proves this process started the flow.
func (cb *callback) finish(errCode, errDesc, code string) result {
	if errCode != "" {
		return result{err: providerError(errCode, errDesc)}
	}
	if code == "" {
		return result{err: errors.New("login: the identity provider's callback has neither a code nor an error; run the sign-in again")}
	}
	tok, err := cb.oauth.Exchange(cb.ctx, code, oauth2.VerifierOption(cb.verifier))
	if err != nil {
		return result{err: fmt.Errorf("login: exchanging the authorization code at the identity provider: %w; run the sign-in again", err)}
	}
	id, err := idTokenOf(tok)
	return result{idToken: id, err: err}
}

// providerError explains an error the identity provider sent to the callback.
func providerError(code, desc string) error {
	what := code
	if desc != "" {
		what += ": " + desc
	}
	if code == "access_denied" {
		return fmt.Errorf("login: the identity provider denied the sign-in (%s); check that your account may use writ, then sign in again", what)
	}
	return fmt.Errorf("login: the identity provider refused the sign-in (%s); check writ's client configuration with your identity provider's administrators", what)
}

var pageTmpl = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>writ: {{.Title}}</title></head>
<body><h1>{{.Title}}</h1><p>{{.Message}}</p></body></html>
`))

// page writes a short HTML page for the person's browser.
func page(w http.ResponseWriter, status int, title, message string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	pageTmpl.Execute(w, struct{ Title, Message string }{title, message})
}
