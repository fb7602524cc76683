package login

import (
	"context"
	"fmt"

	"golang.org/x/oauth2"
)

// Web is the authorization-code flow with PKCE for a web application that
// signs people in with its own redirect URL (the web console), rather than
// a one-shot loopback server. The browser carries the code; the
// application exchanges it with the verifier only it knows.
type Web struct {
	c     Config
	oauth *oauth2.Config
}

// NewWeb discovers the identity provider's endpoints. redirectURL is where
// the provider sends the browser back; it must be registered with the
// provider for c.ClientID.
func NewWeb(ctx context.Context, c Config, redirectURL string) (*Web, error) {
	_, p, err := setup(ctx, &c)
	if err != nil {
		return nil, err
	}
	return &Web{c: c, oauth: oauthConfig(&c, p, redirectURL)}, nil
}

// AuthURL is where to send the browser to sign in. state ties the answer
// to this browser; the challenge is derived from verifier (S256).
func (w *Web) AuthURL(state, verifier string) string {
	return w.oauth.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier))
}

// Finish turns the provider's answer on the redirect (code, or error and
// error_description) into an ID token.
func (w *Web) Finish(ctx context.Context, errCode, errDesc, code, verifier string) (string, error) {
	if errCode != "" {
		return "", providerError(errCode, errDesc)
	}
	if code == "" {
		return "", fmt.Errorf("login: the identity provider's answer has neither a code nor an error; sign in again")
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, w.c.HTTPClient)
	tok, err := w.oauth.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		return "", fmt.Errorf("login: exchanging the authorization code at the identity provider: %w; sign in again", err)
	}
	return idTokenOf(tok)
}

// NewVerifier returns a fresh PKCE code verifier.
func NewVerifier() string { return oauth2.GenerateVerifier() }
