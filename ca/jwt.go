package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/internal/jwssign"
)

// The JWT authority signs JWT-SVIDs as the SPIFFE JWT-SVID specification
// describes them: a compact JWS whose header names the key (kid) and whose
// claims name the workload (sub), who may accept it (aud) and until when
// (exp). go-jose builds the JWS over an OpaqueSigner (internal/jwssign), so
// signing goes through a crypto.Signer from the keystore and the private key
// never leaves it; go-jose and go-spiffe check the result in the tests.

// jwtType is the JWS "typ" of a JWT-SVID; the specification allows "JWT" or
// "JOSE", and "JWT" is what relying parties outside SPIFFE expect.
const jwtType = "JWT"

// jwsAlgorithm is what signing and publishing need to know about a key.
type jwsAlgorithm struct {
	name string // JWS "alg"
	// coordSize is the byte length of an ECDSA coordinate, the JWK's x
	// and y; zero for RSA.
	coordSize int
	curve     string // JWK "crv", ECDSA only
}

// jwtKeysAllowed lists the keys every JWT-SVID verifier must accept; Ed25519
// is left out because the SPIFFE libraries and cloud IAMs do not take EdDSA.
const jwtKeysAllowed = "ECDSA P-256 (ES256), P-384 (ES384) or P-521 (ES512), or RSA of 2048 to 8192 bits (RS256)"

// jwsSigningAlgs are the "alg" values this package signs with, in the order
// OIDC discovery lists them (RS256 first, as OpenID Connect expects).
var jwsSigningAlgs = []string{"RS256", "ES256", "ES384", "ES512"}

func jwsAlgorithmFor(pub crypto.PublicKey) (jwsAlgorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			break
		}
		switch k.Curve {
		case elliptic.P256():
			return jwsAlgorithm{name: "ES256", coordSize: 32, curve: "P-256"}, nil
		case elliptic.P384():
			return jwsAlgorithm{name: "ES384", coordSize: 48, curve: "P-384"}, nil
		case elliptic.P521():
			return jwsAlgorithm{name: "ES512", coordSize: 66, curve: "P-521"}, nil
		}
		return jwsAlgorithm{}, fmt.Errorf("ECDSA curve %s cannot sign JWTs: use %s", k.Curve.Params().Name, jwtKeysAllowed)
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			break
		}
		if bits := k.N.BitLen(); bits < MinRSABits || bits > MaxRSABits {
			return jwsAlgorithm{}, fmt.Errorf("RSA key of %d bits cannot sign JWTs: use %s", bits, jwtKeysAllowed)
		}
		return jwsAlgorithm{name: "RS256"}, nil
	case nil:
		return jwsAlgorithm{}, fmt.Errorf("no public key: use %s", jwtKeysAllowed)
	default:
		return jwsAlgorithm{}, fmt.Errorf("%s keys cannot sign JWT-SVIDs: use %s", keyKind(pub), jwtKeysAllowed)
	}
	return jwsAlgorithm{}, fmt.Errorf("malformed %s public key: use %s", keyKind(pub), jwtKeysAllowed)
}

// JWTAuthority is one JWT signing key: Signer holds it (normally in the
// keystore), KeyID is the "kid" its tokens and the bundle name it by, and
// NotAfter is when it stops signing; no token it signs outlives it.
type JWTAuthority struct {
	Signer   crypto.Signer
	KeyID    string
	NotAfter time.Time
	// TrustDomain, when set, is the only trust domain whose SPIFFE IDs the
	// authority signs for: its key is published in that domain's bundle
	// alone, so a token for another domain would never verify.
	TrustDomain spiffeid.TrustDomain
}

// JWTSVIDParams describes the token SignJWTSVID issues.
type JWTSVIDParams struct {
	SPIFFEID spiffeid.ID
	// Audience lists who may accept the token; at least one, none empty.
	Audience []string
	TTL      time.Duration
	// Issuer becomes the "iss" claim when set; relying parties that
	// federate through OIDC discovery match it against the issuer there.
	Issuer string
}

// jwtSVIDClaims is the payload, in the order the members are written.
type jwtSVIDClaims struct {
	Subject string `json:"sub"`
	// Audience is a string for one audience and an array for more, the
	// form most relying parties compare most simply.
	Audience any    `json:"aud"`
	Expiry   int64  `json:"exp"`
	IssuedAt int64  `json:"iat"`
	Issuer   string `json:"iss,omitempty"`
	// ID sets every token apart, however alike its other claims: a
	// token endpoint accepts a subject token once, and two tokens for the
	// same subject and audience in the same second must not count as one.
	ID string `json:"jti"`
}

// SignJWTSVID issues a JWT-SVID for p.SPIFFEID, as a compact JWS.
//
// "iat" is now and "exp" is now+p.TTL, clamped to the authority's NotAfter;
// both are whole seconds, as JWT NumericDates are read by most verifiers.
func (a *JWTAuthority) SignJWTSVID(p JWTSVIDParams, now time.Time) (string, error) {
	alg, claims, err := a.jwtSVIDInputs(p, now)
	if err != nil {
		return "", err
	}
	key, err := jwssign.New(a.Signer, a.KeyID, jose.SignatureAlgorithm(alg.name))
	if err != nil {
		return "", fmt.Errorf("ca: sign JWT-SVID: JWT authority key: %w", err)
	}
	signer, err := key.Signer(jwtType)
	if err != nil {
		return "", fmt.Errorf("ca: sign JWT-SVID: JWT authority key: %w", err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("ca: sign JWT-SVID for %s: claims: %w", p.SPIFFEID, err)
	}
	tok, err := jwssign.Compact(signer, payload)
	if err != nil {
		return "", fmt.Errorf("ca: sign JWT-SVID for %s: %w", p.SPIFFEID, err)
	}
	return tok, nil
}

// jwtSVIDInputs checks a request against the JWT-SVID rules and this
// authority, and works out the claims.
func (a *JWTAuthority) jwtSVIDInputs(p JWTSVIDParams, now time.Time) (jwsAlgorithm, *jwtSVIDClaims, error) {
	if a == nil || a.Signer == nil {
		return jwsAlgorithm{}, nil, errors.New("ca: sign JWT-SVID: no active JWT authority")
	}
	if a.KeyID == "" {
		return jwsAlgorithm{}, nil, errors.New("ca: sign JWT-SVID: the JWT authority has no key ID: verifiers find its key by kid (see KeyIDFor)")
	}
	if a.NotAfter.IsZero() {
		return jwsAlgorithm{}, nil, errors.New("ca: sign JWT-SVID: the JWT authority has no NotAfter: set when its key stops signing")
	}
	if p.SPIFFEID.IsZero() {
		return jwsAlgorithm{}, nil, errors.New("ca: sign JWT-SVID: SPIFFE ID is empty")
	}
	if p.SPIFFEID.Path() == "" {
		return jwsAlgorithm{}, nil, fmt.Errorf("ca: sign JWT-SVID: SPIFFE ID %q names the trust domain itself: an SVID needs a path", p.SPIFFEID)
	}
	if !a.TrustDomain.IsZero() && !p.SPIFFEID.MemberOf(a.TrustDomain) {
		return jwsAlgorithm{}, nil, fmt.Errorf("ca: sign JWT-SVID: %s is not in trust domain %s, the only one this authority signs for", p.SPIFFEID, a.TrustDomain)
	}
	if len(p.Audience) == 0 {
		return jwsAlgorithm{}, nil, fmt.Errorf("ca: sign JWT-SVID for %s: audience is empty: name at least one party that may accept the token", p.SPIFFEID)
	}
	for i, aud := range p.Audience {
		if aud == "" {
			return jwsAlgorithm{}, nil, fmt.Errorf("ca: sign JWT-SVID for %s: audience %d of %d is an empty string", p.SPIFFEID, i+1, len(p.Audience))
		}
	}
	if p.TTL <= 0 {
		return jwsAlgorithm{}, nil, fmt.Errorf("ca: sign JWT-SVID for %s: TTL %s is not positive", p.SPIFFEID, p.TTL)
	}
	if !now.Before(a.NotAfter) {
		return jwsAlgorithm{}, nil, fmt.Errorf("ca: sign JWT-SVID: the JWT authority %q expired at %s (NotAfter); it must be rotated", a.KeyID, a.NotAfter.UTC().Format(time.RFC3339))
	}
	alg, err := jwsAlgorithmFor(a.Signer.Public())
	if err != nil {
		return jwsAlgorithm{}, nil, fmt.Errorf("ca: sign JWT-SVID: JWT authority key: %w", err)
	}

	exp := now.Add(p.TTL)
	if exp.After(a.NotAfter) {
		exp = a.NotAfter
	}
	// Unix() rounds down, so exp stays within NotAfter; a token that would
	// already be expired in whole seconds is refused rather than issued.
	iat, expSec := now.Unix(), exp.Unix()
	if expSec <= iat {
		return jwsAlgorithm{}, nil, fmt.Errorf("ca: sign JWT-SVID for %s: the JWT authority's remaining lifetime (until %s) leaves no room for a token", p.SPIFFEID, a.NotAfter.UTC().Format(time.RFC3339))
	}

	claims := &jwtSVIDClaims{
		Subject:  p.SPIFFEID.String(),
		Expiry:   expSec,
		IssuedAt: iat,
		Issuer:   p.Issuer,
		ID:       rand.Text(),
	}
	if len(p.Audience) == 1 {
		claims.Audience = p.Audience[0]
	} else {
		claims.Audience = p.Audience
	}
	return alg, claims, nil
}

var b64 = base64.RawURLEncoding

// publicJWK is a public key as RFC 7517 writes it, members in the order
// they are written.
type publicJWK struct {
	Kty string `json:"kty"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
	Kid string `json:"kid,omitempty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
}

// newPublicJWK writes pub's key members (and alg); use and kid are left to
// the caller.
func newPublicJWK(pub crypto.PublicKey) (publicJWK, error) {
	alg, err := jwsAlgorithmFor(pub)
	if err != nil {
		return publicJWK{}, err
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		point, err := k.Bytes() // 0x04 || X || Y
		if err != nil {
			return publicJWK{}, fmt.Errorf("ECDSA public key: %w", err)
		}
		if len(point) != 1+2*alg.coordSize {
			return publicJWK{}, fmt.Errorf("ECDSA public key: %d-byte point for %s", len(point), alg.curve)
		}
		return publicJWK{
			Kty: "EC",
			Alg: alg.name,
			Crv: alg.curve,
			X:   b64.EncodeToString(point[1 : 1+alg.coordSize]),
			Y:   b64.EncodeToString(point[1+alg.coordSize:]),
		}, nil
	case *rsa.PublicKey:
		return publicJWK{
			Kty: "RSA",
			Alg: alg.name,
			N:   b64.EncodeToString(k.N.Bytes()),
			E:   b64.EncodeToString(big.NewInt(int64(k.E)).Bytes()),
		}, nil
	}
	return publicJWK{}, fmt.Errorf("%s keys cannot sign JWT-SVIDs: use %s", keyKind(pub), jwtKeysAllowed)
}

// KeyIDFor returns the RFC 7638 JWK thumbprint of pub (SHA-256,
// base64url): the same key always gets the same kid, on every server, and
// anyone holding the public key can recompute it.
func KeyIDFor(pub crypto.PublicKey) (string, error) {
	jwk, err := newPublicJWK(pub)
	if err != nil {
		return "", fmt.Errorf("ca: JWT key ID: %w", err)
	}
	// RFC 7638 hashes the required members only, in lexicographic order
	// and without whitespace. Every value is base64url or a fixed curve
	// name, so none needs escaping.
	var canonical string
	switch jwk.Kty {
	case "EC":
		canonical = `{"crv":"` + jwk.Crv + `","kty":"EC","x":"` + jwk.X + `","y":"` + jwk.Y + `"}`
	case "RSA":
		canonical = `{"e":"` + jwk.E + `","kty":"RSA","n":"` + jwk.N + `"}`
	}
	sum := sha256.Sum256([]byte(canonical))
	return b64.EncodeToString(sum[:]), nil
}

// JWTKey is a JWT authority's public key as it is published.
type JWTKey struct {
	KeyID     string
	PublicKey crypto.PublicKey
	// NotAfter is when the key stops signing. A JWKS has no member for it;
	// it tells the caller when the key may leave the set, which is once the
	// last token it signed (no later than NotAfter) has expired.
	NotAfter time.Time
}

type jwks struct {
	Keys []publicJWK `json:"keys"`
}

// JWKS returns keys as an RFC 7517 JWK Set of signing keys, in the order
// given, for relying parties that fetch it through OIDC discovery. A key
// listed twice under one kid is published once; two different keys under
// one kid are refused, since a verifier could not tell which one to use.
func JWKS(keys []JWTKey) ([]byte, error) {
	set := jwks{Keys: make([]publicJWK, 0, len(keys))}
	seen := make(map[string]crypto.PublicKey, len(keys))
	for i, k := range keys {
		if k.KeyID == "" {
			return nil, fmt.Errorf("ca: JWKS: key %d of %d has no key ID", i+1, len(keys))
		}
		if prev, dup := seen[k.KeyID]; dup {
			if same, ok := prev.(interface{ Equal(crypto.PublicKey) bool }); ok && same.Equal(k.PublicKey) {
				continue
			}
			return nil, fmt.Errorf("ca: JWKS: key ID %q names two different keys: each key needs its own kid", k.KeyID)
		}
		jwk, err := newPublicJWK(k.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("ca: JWKS: key %q: %w", k.KeyID, err)
		}
		jwk.Kid = k.KeyID
		jwk.Use = "sig"
		seen[k.KeyID] = k.PublicKey
		set.Keys = append(set.Keys, jwk)
	}
	out, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("ca: JWKS: %w", err)
	}
	return out, nil
}

type oidcDiscoveryDocument struct {
	Issuer                           string   `json:"issuer"`
	JWKSURI                          string   `json:"jwks_uri"`
	ResponseTypesSupported           []string `json:"response_types_supported"`
	SubjectTypesSupported            []string `json:"subject_types_supported"`
	IDTokenSigningAlgValuesSupported []string `json:"id_token_signing_alg_values_supported"`
}

// OIDCDiscovery returns the /.well-known/openid-configuration document a
// cloud IAM reads to trust JWT-SVIDs whose "iss" is issuer: where the JWKS
// is and which algorithms sign. Only what OpenID Connect Discovery requires
// is included; writ is not a full OpenID provider.
//
// Both URLs must be absolute https URLs (http is accepted for loopback
// hosts, for local testing); the issuer may carry a path but no query or
// fragment, and is kept byte for byte, since verifiers compare it exactly.
func OIDCDiscovery(issuer, jwksURI string) ([]byte, error) {
	if err := checkOIDCURL(issuer, true); err != nil {
		return nil, fmt.Errorf("ca: OIDC discovery: issuer: %w", err)
	}
	if err := checkOIDCURL(jwksURI, false); err != nil {
		return nil, fmt.Errorf("ca: OIDC discovery: jwks_uri: %w", err)
	}
	out, err := json.Marshal(oidcDiscoveryDocument{
		Issuer:                           issuer,
		JWKSURI:                          jwksURI,
		ResponseTypesSupported:           []string{"id_token"},
		SubjectTypesSupported:            []string{"public"},
		IDTokenSigningAlgValuesSupported: jwsSigningAlgs,
	})
	if err != nil {
		return nil, fmt.Errorf("ca: OIDC discovery: %w", err)
	}
	return out, nil
}

func checkOIDCURL(s string, issuer bool) error {
	if s == "" {
		return errors.New("is empty: give an absolute https URL")
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %w", s, err)
	}
	if u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("%q is not an absolute URL: give one like https://auth.example.org", s)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopbackHost(u.Hostname()) {
			return fmt.Errorf("%q uses http: relying parties fetch it only over https (http is accepted for loopback hosts alone)", s)
		}
	default:
		return fmt.Errorf("%q has scheme %q: use https", s, u.Scheme)
	}
	if u.User != nil {
		return fmt.Errorf("%q carries user information: remove it", s)
	}
	if strings.Contains(s, "#") {
		return fmt.Errorf("%q has a fragment: remove it", s)
	}
	if issuer && strings.Contains(s, "?") {
		return fmt.Errorf("%q has a query, which an OpenID issuer may not have", s)
	}
	return nil
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
