package logintest

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

// deviceGrant is the RFC 8628 grant type.
const deviceGrant = "urn:ietf:params:oauth:grant-type:device_code"

// serveToken dispatches token requests by grant type. Only the public
// client is known, and it authenticates with nothing but its client_id.
func (p *Provider) serveToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "unreadable form: "+err.Error())
		return
	}
	if r.PostForm.Get("client_id") != clientID {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "unknown client_id")
		return
	}
	switch r.PostForm.Get("grant_type") {
	case "authorization_code":
		p.exchangeCode(w, r)
	case deviceGrant:
		p.pollDevice(w, r)
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "use authorization_code or "+deviceGrant)
	}
}

// claims are the ID token's claims.
type claims struct {
	Issuer        string `json:"iss"`
	Audience      string `json:"aud"`
	Subject       string `json:"sub"`
	Email         string `json:"email"`
	EmailVerified bool   `json:"email_verified"`
	IssuedAt      int64  `json:"iat"`
	Expiry        int64  `json:"exp"`
	Nonce         string `json:"nonce,omitempty"`
	ID            string `json:"jti"`
}

// issueTokens answers a successful token request for u.
func (p *Provider) issueTokens(w http.ResponseWriter, u user, nonce string) {
	now := time.Now()
	idToken, err := p.sign(claims{
		Issuer:        p.URL,
		Audience:      clientID,
		Subject:       u.subject(),
		Email:         u.email,
		EmailVerified: u.verified,
		IssuedAt:      now.Unix(),
		Expiry:        now.Add(p.opts.tokenTTL).Unix(),
		Nonce:         nonce,
		ID:            randomString(),
	})
	if err != nil {
		oauthError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": randomString(),
		"token_type":   "Bearer",
		"expires_in":   int64(p.opts.tokenTTL / time.Second),
		"id_token":     idToken,
	})
}

// sign makes a compact JWS of c with the provider's key.
func (p *Provider) sign(c claims) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	jws, err := p.signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// IDToken signs an ID token for email as the provider would hand it to its
// client after a sign-in, for tests that need a person's token without
// driving a sign-in flow (e.g. as the subject of a token exchange).
func (p *Provider) IDToken(t testing.TB, email string) string {
	t.Helper()
	now := time.Now()
	tok, err := p.sign(claims{
		Issuer: p.URL, Audience: clientID, Subject: user{email: email, verified: true}.subject(),
		Email: email, EmailVerified: true, IssuedAt: now.Unix(), Expiry: now.Add(p.opts.tokenTTL).Unix(),
		ID: randomString(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
