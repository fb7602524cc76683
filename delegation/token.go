// Package delegation issues and checks writ delegation tokens, and parses
// the RFC 8693 token-exchange requests that ask for them.
//
// A delegation token says that an agent (the actor) acts for a person (the
// subject) on one task, toward the named resource servers, for a few
// minutes. It is bound (RFC 8705 "cnf") to the X.509 certificate of the
// agent it was issued to, so a copy is worthless to anyone who cannot
// present that certificate over mutual TLS.
//
// Delegation tokens are signed with keys that are in neither the SPIFFE
// bundle nor the JWKS, and carry their own JOSE "typ", so that neither one
// can pass for a JWT-SVID or the other way round.
package delegation

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"time"
)

// TokenType is the JOSE "typ" header of a delegation token. JWT-SVID
// verifiers refuse it (they accept only "JWT" or "JOSE"), and this
// package's Verifier accepts nothing else.
const TokenType = "writ-delegation+jwt"

// TokenTypeURI identifies a delegation token in the RFC 8693
// "requested_token_type" and "issued_token_type" parameters.
const TokenTypeURI = "urn:writ:params:oauth:token-type:delegation"

// Claims is what a delegation token says.
type Claims struct {
	// Issuer ("iss") is the URL of the writ token endpoint that issued
	// the token.
	Issuer string
	// Subject ("sub") is the SPIFFE ID of the person the agents act for.
	Subject string
	// Audience ("aud") lists the resource servers the token is for:
	// exactly those the exchange request named, never empty.
	Audience []string
	// Actors is the agent chain, nearest actor first, written as the
	// nested RFC 8693 "act" claim: the nearest actor is the outermost
	// "act", and each earlier actor is nested inside the one that
	// followed it. Each is a SPIFFE ID.
	Actors []string
	// TaskID ("task") is the task the agent acts under. It is empty only
	// when a standing may_act grant let the agent act without one; that
	// decision is the token endpoint's, not this package's.
	TaskID string
	// Thumbprint ("cnf" member "x5t#S256") is Thumbprint of the nearest
	// actor's certificate.
	Thumbprint string
	// IssuedAt ("iat"), NotBefore ("nbf") and Expiry ("exp") are whole
	// seconds in the token.
	IssuedAt, NotBefore, Expiry time.Time
	// ID ("jti") is unique to the token, for audit and replay records.
	ID string
}

// Thumbprint returns the RFC 8705 "x5t#S256" of cert: the base64url
// SHA-256 of its DER encoding. It is "" for a nil certificate.
func Thumbprint(cert *x509.Certificate) string {
	if cert == nil {
		return ""
	}
	sum := sha256.Sum256(cert.Raw)
	return b64.EncodeToString(sum[:])
}

// wireClaims is the token payload, in the order the members are written.
type wireClaims struct {
	Issuer    string        `json:"iss"`
	Subject   string        `json:"sub"`
	Audience  audience      `json:"aud"`
	Expiry    int64         `json:"exp"`
	NotBefore int64         `json:"nbf"`
	IssuedAt  int64         `json:"iat"`
	ID        string        `json:"jti"`
	TaskID    string        `json:"task,omitempty"`
	Act       *actor        `json:"act"`
	Cnf       *confirmation `json:"cnf"`
}

// actor is one level of the RFC 8693 "act" claim.
type actor struct {
	Subject string `json:"sub"`
	Act     *actor `json:"act,omitempty"`
}

// confirmation is the RFC 7800 "cnf" claim with the RFC 8705 member.
type confirmation struct {
	X5tS256 string `json:"x5t#S256"`
}

// audience is "aud": a string for one audience, the form most relying
// parties compare most simply, and an array for more. Both are read.
type audience []string

func (a audience) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		return json.Marshal(a[0])
	}
	return json.Marshal([]string(a))
}

func (a *audience) UnmarshalJSON(data []byte) error {
	var one string
	if err := json.Unmarshal(data, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(data, &many); err != nil {
		return errors.New(`"aud" is neither a string nor an array of strings`)
	}
	*a = many
	return nil
}

// nestActors writes the chain, nearest actor first, as nested "act".
func nestActors(actors []string) *actor {
	var act *actor
	for i := len(actors) - 1; i >= 0; i-- {
		act = &actor{Subject: actors[i], Act: act}
	}
	return act
}

// flattenActors reads nested "act" back into a chain, nearest actor first.
func flattenActors(act *actor) []string {
	var actors []string
	for ; act != nil; act = act.Act {
		actors = append(actors, act.Subject)
	}
	return actors
}

// toWire converts c to the payload, with times in whole seconds.
func (c Claims) toWire() wireClaims {
	return wireClaims{
		Issuer:    c.Issuer,
		Subject:   c.Subject,
		Audience:  audience(c.Audience),
		Expiry:    c.Expiry.Unix(),
		NotBefore: c.NotBefore.Unix(),
		IssuedAt:  c.IssuedAt.Unix(),
		ID:        c.ID,
		TaskID:    c.TaskID,
		Act:       nestActors(c.Actors),
		Cnf:       &confirmation{X5tS256: c.Thumbprint},
	}
}

// claims converts the payload back.
func (w wireClaims) claims() Claims {
	c := Claims{
		Issuer:    w.Issuer,
		Subject:   w.Subject,
		Audience:  []string(w.Audience),
		Actors:    flattenActors(w.Act),
		TaskID:    w.TaskID,
		IssuedAt:  time.Unix(w.IssuedAt, 0).UTC(),
		NotBefore: time.Unix(w.NotBefore, 0).UTC(),
		Expiry:    time.Unix(w.Expiry, 0).UTC(),
		ID:        w.ID,
	}
	if w.Cnf != nil {
		c.Thumbprint = w.Cnf.X5tS256
	}
	return c
}
