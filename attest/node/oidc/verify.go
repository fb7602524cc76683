package oidc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
	"writ.dev/writ/internal/quote"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/identity"
)

const (
	// MaxTokenSize bounds a token before it is parsed. Real ID tokens are
	// 1-3 KiB; the bound keeps a join request from costing much to refuse.
	MaxTokenSize = 16 << 10
	// DefaultLeeway is the clock skew tolerated between issuer and server.
	DefaultLeeway = 30 * time.Second
	// MaxLeeway bounds WithLeeway.
	MaxLeeway = 5 * time.Minute
	// maxJTI bounds a jti the caller must store.
	maxJTI = 256
)

// algorithms are the signature algorithms accepted. Only asymmetric ones:
// with HMAC, the issuer's public key could be used as a shared secret to
// forge tokens, and "none" is no signature at all.
var algorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.EdDSA,
}

// Result is what a verified token says about the node.
type Result struct {
	Issuer string
	// JTI identifies the token for the caller's replay check: each JTI is
	// accepted once per Issuer. For a token without a jti it is "sha256:"
	// and the hex SHA-256 of the signed claims, which, unlike the token's
	// text, cannot be varied without the issuer's key.
	JTI string
	// Expiry is until when the caller must remember JTI: the token's exp
	// plus the leeway, since the token is accepted until then.
	Expiry    time.Time
	Facts     map[string]string
	Selectors []identity.Selector // "<Name>:<fact>:<value>", sorted
	AgentID   spiffeid.ID         // NodeID rendered with Facts
}

// Option changes how a Verifier works.
type Option func(*options)

type options struct {
	client *http.Client
	now    func() time.Time
	leeway time.Duration
}

// WithHTTPClient sets the client for discovery and JWKS requests. The
// Verifier uses a copy bounded as the issuer's responses must be: 10 s per
// request at most, 1 MiB per response, no redirect off https.
func WithHTTPClient(c *http.Client) Option { return func(o *options) { o.client = c } }

// WithClock sets the clock tokens are checked against.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithLeeway sets the clock skew tolerated on exp, nbf and iat (default
// DefaultLeeway, at most MaxLeeway).
func WithLeeway(d time.Duration) Option { return func(o *options) { o.leeway = d } }

// Verifier checks tokens of one issuer. It is safe for concurrent use.
type Verifier struct {
	cfg      IssuerConfig
	td       spiffeid.TrustDomain
	facts    []factSpec
	check    func(map[string]any, map[string]string) error
	template nodeTemplate
	keys     keySource
	now      func() time.Time
	leeway   time.Duration
}

// NewVerifier validates c (filling its defaults) and prepares to verify
// its tokens for trust domain td. A static JWKS file is read now, so a bad
// file stops the server at startup. Discovery keys are fetched at the first
// Verify instead: an issuer outage while the server starts must not keep it
// from serving the agents that have already joined.
func NewVerifier(ctx context.Context, c IssuerConfig, td spiffeid.TrustDomain, opts ...Option) (*Verifier, error) {
	if err := c.Validate(td); err != nil {
		return nil, err
	}
	o := options{client: &http.Client{Timeout: fetchTimeout}, now: time.Now, leeway: DefaultLeeway}
	for _, opt := range opts {
		opt(&o)
	}
	if o.leeway < 0 || o.leeway > MaxLeeway {
		return nil, fmt.Errorf("oidc %s: leeway %s is out of range: 0 to %s", c.Name, o.leeway, MaxLeeway)
	}
	spec := profiles[c.Profile]
	facts, _ := c.facts(spec)
	tmpl, _ := parseTemplate(c.NodeID, factNames(facts))
	v := &Verifier{cfg: c, td: td, facts: facts, check: spec.check, template: tmpl, now: o.now, leeway: o.leeway}
	if c.JWKSFile != "" {
		keys, err := loadStaticKeys(c.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("oidc %s: jwks_file: %w", c.Name, err)
		}
		v.keys = keys
	} else {
		v.keys = newDiscoveredKeys(c.Issuer, o.client, o.now)
	}
	return v, nil
}

// Verify checks rawToken and returns what it says about the node. Errors
// say why the token was refused and never contain the token; they wrap
// ErrKeysUnavailable when the issuer's keys could not be fetched.
func (v *Verifier) Verify(ctx context.Context, rawToken string) (Result, error) {
	r, err := v.verify(ctx, rawToken)
	if err != nil {
		return Result{}, fmt.Errorf("oidc %s: %w", v.cfg.Name, err)
	}
	return r, nil
}

func (v *Verifier) verify(ctx context.Context, raw string) (Result, error) {
	payload, err := v.verifySignature(ctx, raw)
	if err != nil {
		return Result{}, err
	}
	claims, err := decodeClaims(payload)
	if err != nil {
		return Result{}, err
	}
	expiry, err := v.checkClaims(claims)
	if err != nil {
		return Result{}, err
	}
	jti, err := tokenID(claims, payload)
	if err != nil {
		return Result{}, err
	}
	// A replay record dropped at exp would let the token in again for as
	// long as the leeway still accepts it.
	r := Result{Issuer: v.cfg.Issuer, JTI: jti, Expiry: expiry.Add(v.leeway)}
	if err := v.describe(claims, &r); err != nil {
		return Result{}, err
	}
	return r, nil
}

// verifySignature parses raw as a compact JWS and returns its payload if
// one of the issuer's keys signed it.
func (v *Verifier) verifySignature(ctx context.Context, raw string) ([]byte, error) {
	raw = strings.TrimSpace(raw)
	if len(raw) > MaxTokenSize {
		return nil, fmt.Errorf("token is %d bytes, more than %d: not an ID token", len(raw), MaxTokenSize)
	}
	if err := checkEncoding(raw); err != nil {
		return nil, err
	}
	jws, err := jose.ParseSignedCompact(raw, algorithms)
	if err != nil {
		return nil, fmt.Errorf("not a JWT signed with an accepted algorithm: %v", err)
	}
	h := jws.Signatures[0].Protected
	// An unencoded payload (b64, flagged critical) is legal JWS but never
	// a JWT; refusing it keeps one way of reading the claims.
	for _, name := range []jose.HeaderKey{"crit", "b64"} {
		if _, ok := h.ExtraHeaders[name]; ok {
			return nil, fmt.Errorf("the token has header parameter %q, which an ID token does not use", name)
		}
	}
	payload, err := v.keys.verify(ctx, raw, h)
	switch {
	case errors.Is(err, errUnknownKey):
		return nil, v.unknownKey(jws, h)
	case errors.Is(err, errNotVerified) && v.cfg.JWKSFile != "":
		return nil, fmt.Errorf("the signature does not verify with the issuer's key %s: the token was altered or forged", quote.String(h.KeyID))
	case errors.Is(err, errNotVerified):
		// A remote key set does not tell a kid it lacks from a key that
		// does not verify: either way the issuer's keys refuse the token.
		return nil, v.explainIssuer(fmt.Sprintf("the signature does not verify with any key the issuer publishes (kid %s, %s): the token was altered or forged, or signed by another issuer", quote.String(h.KeyID), h.Algorithm), jws)
	case err != nil:
		return nil, err
	}
	return payload, nil
}

// checkEncoding refuses a token that is not three canonical base64url
// parts, so one token has one text.
func checkEncoding(raw string) error {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return fmt.Errorf("not a JWT: %d dot-separated parts instead of 3", len(parts))
	}
	for i, p := range parts {
		if _, err := base64.RawURLEncoding.Strict().DecodeString(p); err != nil {
			return fmt.Errorf("not a JWT: part %d is not base64url without padding", i+1)
		}
	}
	return nil
}

// unknownKey explains a token none of the keys in jwks_file may have
// signed.
func (v *Verifier) unknownKey(jws *jose.JSONWebSignature, h jose.Header) error {
	msg := fmt.Sprintf("signed by an unknown key (kid %s, %s)", quote.String(h.KeyID), h.Algorithm)
	if err := v.explainIssuer(msg, jws); err.Error() != msg {
		return err
	}
	return fmt.Errorf("%s; if the issuer rotated its keys, update jwks_file %s", msg, v.cfg.JWKSFile)
}

// explainIssuer adds to msg the issuer the token claims when it is another
// one, since that is the usual cause of a signature no key verifies.
func (v *Verifier) explainIssuer(msg string, jws *jose.JSONWebSignature) error {
	var claimed struct {
		Issuer string `json:"iss"`
	}
	if json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &claimed) == nil && claimed.Issuer != v.cfg.Issuer {
		return fmt.Errorf("%s; the token claims issuer %s, not %s", msg, quote.String(claimed.Issuer), quote.String(v.cfg.Issuer))
	}
	return errors.New(msg)
}

// decodeClaims reads the payload as a JSON object, keeping numbers exact.
func decodeClaims(payload []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil || claims == nil {
		return nil, errors.New("the token's claims are not a JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("the token's claims have data after the JSON object")
	}
	return claims, nil
}

// checkClaims checks iss, aud and the validity period, returning exp.
func (v *Verifier) checkClaims(claims map[string]any) (time.Time, error) {
	if iss, _ := claims["iss"].(string); iss != v.cfg.Issuer {
		return time.Time{}, fmt.Errorf("issuer %s is not %s", quote.String(iss), quote.String(v.cfg.Issuer))
	}
	if err := v.checkAudience(claims["aud"]); err != nil {
		return time.Time{}, err
	}
	return v.checkTimes(claims)
}

func (v *Verifier) checkAudience(aud any) error {
	var auds []string
	switch aud := aud.(type) {
	case string:
		auds = []string{aud}
	case []any:
		for _, a := range aud {
			if s, ok := a.(string); ok {
				auds = append(auds, s)
			}
		}
	}
	if slices.Contains(auds, v.cfg.Audience) {
		return nil
	}
	quoted := make([]string, len(auds))
	for i, a := range auds {
		quoted[i] = quote.String(a)
	}
	return fmt.Errorf("audience [%s] does not name this trust domain (want %s): request the token with audience %s",
		strings.Join(quoted, " "), quote.String(v.cfg.Audience), quote.String(v.cfg.Audience))
}

// checkTimes checks exp, nbf and iat against the clock with leeway, and the
// token's lifetime against MaxTTL. exp and iat are required: without them
// the lifetime is unknown.
func (v *Verifier) checkTimes(claims map[string]any) (time.Time, error) {
	now := v.now()
	exp, err := numericDate(claims, "exp", true)
	if err != nil {
		return time.Time{}, err
	}
	iat, err := numericDate(claims, "iat", true)
	if err != nil {
		return time.Time{}, err
	}
	nbf, err := numericDate(claims, "nbf", false)
	if err != nil {
		return time.Time{}, err
	}
	switch {
	case !now.Before(exp.Add(v.leeway)):
		return time.Time{}, fmt.Errorf("token expired at %s (now %s): get a fresh token", stamp(exp), stamp(now))
	case !nbf.IsZero() && now.Add(v.leeway).Before(nbf):
		return time.Time{}, fmt.Errorf("token is not valid before %s (now %s): check the clocks of issuer and server", stamp(nbf), stamp(now))
	case now.Add(v.leeway).Before(iat):
		return time.Time{}, fmt.Errorf("token is issued in the future, at %s (now %s): check the clocks of issuer and server", stamp(iat), stamp(now))
	case exp.Sub(iat) > v.cfg.MaxTTL:
		return time.Time{}, fmt.Errorf("token lifetime %s (exp - iat) exceeds max_ttl %s: request a shorter-lived token or raise max_ttl", exp.Sub(iat), v.cfg.MaxTTL)
	}
	return exp, nil
}

// numericDate reads a JWT NumericDate claim (seconds since the epoch).
func numericDate(claims map[string]any, name string, required bool) (time.Time, error) {
	v, ok := claims[name]
	if !ok {
		if required {
			return time.Time{}, fmt.Errorf("the token has no %s claim", name)
		}
		return time.Time{}, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, fmt.Errorf("claim %s is not a number of seconds", name)
	}
	f, err := n.Float64()
	// 1e11 seconds is in the year 5138: anything later is not a real time.
	if err != nil || math.IsNaN(f) || f < 0 || f > 1e11 {
		return time.Time{}, fmt.Errorf("claim %s is out of range", name)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// tokenID returns the jti for the replay check, or a digest of the signed
// claims when the issuer sets none.
func tokenID(claims map[string]any, payload []byte) (string, error) {
	v, ok := claims["jti"]
	if !ok {
		sum := sha256.Sum256(payload)
		return "sha256:" + hex.EncodeToString(sum[:]), nil
	}
	jti, ok := v.(string)
	if !ok || jti == "" || len(jti) > maxJTI || !printable(jti) {
		return "", fmt.Errorf("claim jti is not 1 to %d bytes of printable text", maxJTI)
	}
	return jti, nil
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// describe fills the facts, selectors and agent ID of r, refusing a token
// no rule allows.
func (v *Verifier) describe(claims map[string]any, r *Result) error {
	facts, err := extractFacts(claims, v.facts)
	if err != nil {
		return err
	}
	if v.check != nil {
		if err := v.check(claims, facts); err != nil {
			return err
		}
	}
	if err := matchRules(v.cfg.Allow, facts); err != nil {
		return err
	}
	if r.Selectors, err = selectors(v.cfg.Name, facts); err != nil {
		return err
	}
	if r.AgentID, err = v.template.render(facts, v.td); err != nil {
		return err
	}
	r.Facts = facts
	return nil
}
