package delegation

import (
	"crypto"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"writ.dev/writ/internal/jwssign"
)

// Signer issues delegation tokens with one key.
type Signer struct {
	jws      jose.Signer
	issuer   string
	now      func() time.Time
	maxTTL   time.Duration
	maxChain int
}

// NewSigner returns a Signer that signs with key, names it kid, and writes
// issuer as "iss". The key must be an ECDSA P-256 key (ES256) or an Ed25519
// key (EdDSA), and must not be a JWT-SVID key: delegation keys are
// published to resource servers apart from the SPIFFE bundle.
func NewSigner(key crypto.Signer, kid, issuer string, opts ...Option) (*Signer, error) {
	if key == nil {
		return nil, fmt.Errorf("delegation: new signer: no key: use %s", keysAllowed)
	}
	alg, err := algorithmFor(key.Public())
	if err != nil {
		return nil, fmt.Errorf("delegation: new signer: %w", err)
	}
	if kid == "" {
		return nil, errors.New("delegation: new signer: key ID is empty: verifiers find the key by kid")
	}
	if err := checkIssuerURL(issuer); err != nil {
		return nil, fmt.Errorf("delegation: new signer: %w", err)
	}
	opaque, err := jwssign.New(key, kid, alg.name)
	if err != nil {
		return nil, fmt.Errorf("delegation: new signer: %w", err)
	}
	jws, err := opaque.Signer(TokenType)
	if err != nil {
		return nil, fmt.Errorf("delegation: new signer: %w", err)
	}
	s := &Signer{jws: jws, issuer: issuer, now: time.Now, maxTTL: DefaultMaxTTL, maxChain: DefaultMaxChain}
	if err := applySigner(s, opts); err != nil {
		return nil, fmt.Errorf("delegation: new signer: %w", err)
	}
	return s, nil
}

// Issue signs c as a delegation token. The caller sets Subject, Audience,
// Actors, TaskID, Thumbprint and Expiry; Issue sets Issuer (the caller may
// leave it empty or repeat the Signer's), IssuedAt and NotBefore (now) and
// ID, which the caller must leave zero.
//
// Issue refuses a lifetime over the Signer's cap and claims a Verifier
// would refuse, so that a bug at the token endpoint shows up as an error
// there rather than as tokens that fail far away.
func (s *Signer) Issue(c Claims) (string, error) {
	now := s.now()
	if err := s.check(c, now); err != nil {
		return "", fmt.Errorf("delegation: issue for %q: %w", truncate(c.Subject), err)
	}
	// rand.Text is 128 random bits: no two tokens share a "jti".
	c.Issuer, c.IssuedAt, c.NotBefore, c.ID = s.issuer, now, now, rand.Text()
	payload, err := json.Marshal(c.toWire())
	if err != nil {
		return "", fmt.Errorf("delegation: issue for %s: claims: %w", c.Subject, err)
	}
	tok, err := jwssign.Compact(s.jws, payload)
	if err != nil {
		return "", fmt.Errorf("delegation: issue for %s: %w", c.Subject, err)
	}
	return tok, nil
}

// check refuses claims the Signer would not stand behind.
func (s *Signer) check(c Claims, now time.Time) error {
	if c.Issuer != "" && c.Issuer != s.issuer {
		return fmt.Errorf("issuer %q is not this signer's %q: leave Issuer empty", c.Issuer, s.issuer)
	}
	if !c.IssuedAt.IsZero() || !c.NotBefore.IsZero() || c.ID != "" {
		return errors.New("IssuedAt, NotBefore and ID are set by Issue: leave them zero")
	}
	if err := checkSPIFFEID(c.Subject, "subject"); err != nil {
		return err
	}
	if err := checkActors(c.Actors, s.maxChain); err != nil {
		return err
	}
	if err := checkAudience(c.Audience); err != nil {
		return err
	}
	if err := checkThumbprint(c.Thumbprint); err != nil {
		return err
	}
	return s.checkExpiry(c.Expiry, now)
}

// checkExpiry requires a lifetime of at least a second, in whole seconds
// as the token carries it, and no more than the cap.
func (s *Signer) checkExpiry(exp, now time.Time) error {
	if exp.IsZero() {
		return fmt.Errorf("no Expiry: set it, at most %s from now", s.maxTTL)
	}
	ttl := exp.Sub(now)
	if ttl > s.maxTTL {
		return fmt.Errorf("lifetime %s is over the cap of %s: shorten Expiry", ttl.Round(time.Second), s.maxTTL)
	}
	if exp.Unix() <= now.Unix() {
		return fmt.Errorf("Expiry %s leaves no whole second of lifetime", exp.UTC().Format(time.RFC3339))
	}
	return nil
}
