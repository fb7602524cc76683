package delegation

import (
	"crypto"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// maxTokenSize bounds what Verify reads. A delegation token with the
// longest chain and a handful of audiences is well under 2 KiB; the bound
// keeps a hostile token from costing more than a small one.
const maxTokenSize = 8 << 10

// maxNumericDate is the last second of the year 9999. Later times are not
// meaningful in a token and would overflow time.Time arithmetic.
const maxNumericDate = 253402300799

// Verifier checks delegation tokens at a resource server.
type Verifier struct {
	keys     map[string]verifyKey
	issuer   string
	now      func() time.Time
	leeway   time.Duration
	maxChain int
}

type verifyKey struct {
	pub crypto.PublicKey
	alg algorithm
}

// NewVerifier returns a Verifier that accepts tokens from issuer signed by
// one of keys, found by kid. Each key is ECDSA P-256 (ES256) or Ed25519
// (EdDSA), and a token is checked only with its key's algorithm whatever
// its "alg" header says.
func NewVerifier(keys map[string]crypto.PublicKey, issuer string, opts ...Option) (*Verifier, error) {
	if len(keys) == 0 {
		return nil, errors.New("delegation: new verifier: no keys: give the token endpoint's delegation keys by kid")
	}
	if err := checkIssuerURL(issuer); err != nil {
		return nil, fmt.Errorf("delegation: new verifier: %w", err)
	}
	v := &Verifier{keys: make(map[string]verifyKey, len(keys)), issuer: issuer, now: time.Now, leeway: DefaultLeeway, maxChain: DefaultMaxChain}
	for kid, pub := range keys {
		if kid == "" {
			return nil, errors.New("delegation: new verifier: a key has an empty key ID: tokens name their key by kid")
		}
		alg, err := algorithmFor(pub)
		if err != nil {
			return nil, fmt.Errorf("delegation: new verifier: key %q: %w", kid, err)
		}
		v.keys[kid] = verifyKey{pub: pub, alg: alg}
	}
	if err := applyVerifier(v, opts); err != nil {
		return nil, fmt.Errorf("delegation: new verifier: %w", err)
	}
	return v, nil
}

// Verify checks token for a resource server known as audience, presented
// over mutual TLS by the holder of presented, and returns its claims.
//
// Verify checks the signature, that the token is a delegation token and
// not some other JWT signed by a key it trusts, its issuer, audience,
// validity period (with leeway), subject and actor chain, and that
// presented is the certificate the token was issued to: a token copied by
// anyone else, another agent included, is refused. Errors never contain
// the token.
func (v *Verifier) Verify(token, audience string, presented *x509.Certificate) (Claims, error) {
	c, err := v.verify(token, audience, presented)
	if err != nil {
		return Claims{}, fmt.Errorf("delegation: verify: %w", err)
	}
	return c, nil
}

// VerifyForExchange checks a delegation token given as the subject of a
// further exchange at the token endpoint (audience: the endpoint's
// issuer URL), when the agent it was issued to passes the work on to
// another. Everything Verify checks is checked except the certificate
// binding: the new actor proves itself with its own certificate and actor
// token, and the token it gets is bound to that certificate. The
// binding of this token still keeps it from being used at any resource
// server by anyone but the agent it was issued to.
func (v *Verifier) VerifyForExchange(token, audience string) (Claims, error) {
	if audience == "" {
		return Claims{}, errors.New("delegation: verify for exchange: no audience to check the token against")
	}
	w, err := v.parse(token)
	if err != nil {
		return Claims{}, fmt.Errorf("delegation: verify for exchange: %w", err)
	}
	c := w.claims()
	if err := v.checkClaims(c, w, audience); err != nil {
		return Claims{}, fmt.Errorf("delegation: verify for exchange: %w", err)
	}
	return c, nil
}

func (v *Verifier) verify(token, audience string, presented *x509.Certificate) (Claims, error) {
	if audience == "" {
		return Claims{}, errors.New("no audience to check the token against: pass this resource server's audience")
	}
	if presented == nil {
		return Claims{}, errors.New("no client certificate presented: a delegation token is accepted only over mutual TLS from the agent it was issued to")
	}
	w, err := v.parse(token)
	if err != nil {
		return Claims{}, err
	}
	c := w.claims()
	if err := v.checkClaims(c, w, audience); err != nil {
		return Claims{}, err
	}
	if subtle.ConstantTimeCompare([]byte(Thumbprint(presented)), []byte(c.Thumbprint)) != 1 {
		return Claims{}, fmt.Errorf("token is bound to another certificate: it was issued to %s and the presented certificate is not that agent's", c.Actors[0])
	}
	return c, nil
}

// parse checks the token's form, header and signature and decodes its
// payload.
func (v *Verifier) parse(token string) (wireClaims, error) {
	if len(token) > maxTokenSize {
		return wireClaims{}, fmt.Errorf("token is %d bytes, more than the %d a delegation token may be", len(token), maxTokenSize)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return wireClaims{}, errors.New("malformed token: a delegation token is a compact JWS, three base64url parts separated by dots")
	}
	key, err := v.checkHeader(parts[0])
	if err != nil {
		return wireClaims{}, err
	}
	sig, err := decodeSegment(parts[2], "signature")
	if err != nil {
		return wireClaims{}, err
	}
	signed := token[:len(parts[0])+1+len(parts[1])]
	if !verifySignature(key.pub, key.alg, []byte(signed), sig) {
		return wireClaims{}, errors.New("signature does not verify: the token was altered or not signed by the key its kid names")
	}
	payload, err := decodeSegment(parts[1], "payload")
	if err != nil {
		return wireClaims{}, err
	}
	var w wireClaims
	if err := decodeStrict(payload, &w, "claims"); err != nil {
		return wireClaims{}, err
	}
	return w, nil
}

// checkHeader returns the key the header names, once the header is
// exactly that of a delegation token signed with that key's algorithm.
func (v *Verifier) checkHeader(segment string) (verifyKey, error) {
	raw, err := decodeSegment(segment, "header")
	if err != nil {
		return verifyKey{}, err
	}
	var h jwsHeader
	if err := decodeStrict(raw, &h, "header"); err != nil {
		return verifyKey{}, err
	}
	if h.Typ != TokenType {
		return verifyKey{}, fmt.Errorf("not a delegation token (typ %q, want %q): JWT-SVIDs and other JWTs are not accepted here", truncate(h.Typ), TokenType)
	}
	key, ok := v.keys[h.Kid]
	if !ok {
		return verifyKey{}, fmt.Errorf("token is signed with unknown key %q: refresh the delegation keys if it was rotated", truncate(h.Kid))
	}
	if h.Alg != string(key.alg.name) {
		return verifyKey{}, fmt.Errorf("token alg %q is not %s, the algorithm of key %q", truncate(h.Alg), key.alg.name, h.Kid)
	}
	return key, nil
}

// checkClaims checks everything but the certificate binding.
func (v *Verifier) checkClaims(c Claims, w wireClaims, audience string) error {
	if c.Issuer != v.issuer {
		return fmt.Errorf("token is from issuer %q, not %q", truncate(c.Issuer), v.issuer)
	}
	if !slices.Contains(c.Audience, audience) {
		return fmt.Errorf("token is not for audience %q", audience)
	}
	if err := v.checkTimes(w); err != nil {
		return err
	}
	if err := checkSPIFFEID(c.Subject, "subject"); err != nil {
		return err
	}
	if err := checkActors(c.Actors, v.maxChain); err != nil {
		return err
	}
	return checkThumbprint(c.Thumbprint)
}

// checkTimes requires "exp", "nbf" and "iat", now before "exp" and not
// before "nbf" and "iat" less the leeway. The leeway covers an issuer whose
// clock runs ahead of this one; it never extends "exp": a token is dead
// from its expiry on, so a stolen one gains no time from clock tolerance.
func (v *Verifier) checkTimes(w wireClaims) error {
	if w.Expiry <= 0 || w.NotBefore <= 0 || w.IssuedAt <= 0 {
		return errors.New(`token lacks "exp", "nbf" or "iat"`)
	}
	if w.Expiry > maxNumericDate || w.NotBefore > maxNumericDate || w.IssuedAt > maxNumericDate {
		return errors.New(`token "exp", "nbf" or "iat" is past the year 9999`)
	}
	now := v.now()
	exp, nbf, iat := time.Unix(w.Expiry, 0), time.Unix(w.NotBefore, 0), time.Unix(w.IssuedAt, 0)
	switch {
	case !now.Before(exp):
		return fmt.Errorf("token expired at %s: ask the token endpoint for a new one", exp.UTC().Format(time.RFC3339))
	case now.Add(v.leeway).Before(nbf):
		return fmt.Errorf("token is not valid until %s: check the clocks of the token endpoint and this server", nbf.UTC().Format(time.RFC3339))
	case now.Add(v.leeway).Before(iat):
		return fmt.Errorf("token was issued in the future (%s): check the clocks of the token endpoint and this server", iat.UTC().Format(time.RFC3339))
	}
	return nil
}
