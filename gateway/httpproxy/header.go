package httpproxy

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"writ.dev/writ/gateway"
	"writ.dev/writ/internal/jwssign"
	"writ.dev/writ/internal/quote"
)

// CallerHeader is the header that tells the upstream who is calling. The
// gateway removes any copy a client sends, whatever its case or spelling
// with '_', and sets its own.
const CallerHeader = "Writ-Caller"

// CallerHeaderType is the "typ" of a Writ-Caller JWS, so it can never be
// taken for a JWT-SVID or a delegation token, and they never for it.
const CallerHeaderType = "writ-caller+jwt"

// Bounds the verifier puts on what it reads before checking a signature.
const (
	maxCallerHeaderBytes = 16 << 10
	maxX5CCerts          = 4
	// clockSkew is how far in the future a header's iat may be, for
	// gateways and upstreams whose clocks differ a little.
	clockSkew = 5 * time.Second
)

// callerAlgs are the algorithms an SVID key may sign a header with.
var callerAlgs = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.ES512, jose.RS256, jose.EdDSA}

// callerClaims is the header's payload.
type callerClaims struct {
	Issuer   string   `json:"iss"`
	Audience string   `json:"aud"`
	IssuedAt int64    `json:"iat"`
	Expiry   int64    `json:"exp"`
	ID       string   `json:"jti"`
	Chain    []string `json:"chain"`
	Action   string   `json:"action"`
	Resource string   `json:"resource"`
	Method   string   `json:"method"`
	Path     string   `json:"path"`
}

// VerifiedCaller is what a valid Writ-Caller header says.
type VerifiedCaller struct {
	// Gateway is the SPIFFE ID of the gateway that signed the header.
	Gateway spiffeid.ID
	// Chain is the identities the request was allowed for, caller first
	// (the agent, then whoever it acts for).
	Chain []spiffeid.ID
	// Action and Resource are what was decided.
	Action, Resource string
	// Method and Path are the request the decision was for; Path is the
	// escaped path the gateway forwarded.
	Method, Path string
	// ID is unique per header, for upstreams that refuse replays.
	ID                string
	IssuedAt, Expires time.Time
}

// VerifyCallerHeader checks a Writ-Caller header for an upstream written in
// Go: the signature by an X.509-SVID that chains to bundles and whose
// SPIFFE ID gateways accepts (a valid SVID alone is not enough, or any
// workload could vouch for any caller), the type, the audience and the
// lifetime at now. It does not compare the header with the request; use
// VerifyRequest for that.
func VerifyCallerHeader(header string, bundles x509bundle.Source, gateways spiffeid.Matcher, audience string, now time.Time) (VerifiedCaller, error) {
	var v VerifiedCaller
	if bundles == nil || gateways == nil || audience == "" {
		return v, errors.New("writ-caller: the verifier needs a trust bundle, the gateways to accept and its own audience")
	}
	if header == "" {
		return v, errors.New("writ-caller: no " + CallerHeader + " header; the request did not come through a writ gateway")
	}
	if len(header) > maxCallerHeaderBytes {
		return v, fmt.Errorf("writ-caller: header is %d bytes; at most %d are accepted", len(header), maxCallerHeaderBytes)
	}
	jws, err := jose.ParseSignedCompact(header, callerAlgs)
	if err != nil {
		return v, errors.New("writ-caller: not a compact JWS signed with ES256, ES384, ES512, RS256 or EdDSA")
	}
	if len(jws.Signatures) != 1 {
		return v, errors.New("writ-caller: want exactly one signature")
	}
	h := jws.Signatures[0].Protected
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != CallerHeaderType {
		return v, fmt.Errorf("writ-caller: typ is %s, not %q; this is not a caller header", quote.Max(fmt.Sprint(h.ExtraHeaders[jose.HeaderType]), 40), CallerHeaderType)
	}
	if _, ok := h.ExtraHeaders["crit"]; ok {
		return v, errors.New("writ-caller: the header names critical extensions, which no caller header uses")
	}
	certs, err := x5cFromCompact(header)
	if err != nil {
		return v, fmt.Errorf("writ-caller: %w", err)
	}
	gw, _, err := x509svid.Verify(certs, bundles, x509svid.WithTime(now))
	if err != nil {
		return v, fmt.Errorf("writ-caller: the signing certificate is not a valid X.509-SVID of a trusted domain: %v", err)
	}
	if err := gateways(gw); err != nil {
		return v, fmt.Errorf("writ-caller: signed by %s, which is not an accepted gateway: %v", gw, err)
	}
	payload, err := jws.Verify(certs[0].PublicKey)
	if err != nil {
		return v, errors.New("writ-caller: the signature does not verify with the certificate in x5c")
	}
	var c callerClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return v, errors.New("writ-caller: the claims are not a JSON object of the expected form")
	}
	iat, exp := time.Unix(c.IssuedAt, 0), time.Unix(c.Expiry, 0)
	switch {
	case c.Issuer != gw.String():
		return v, fmt.Errorf("writ-caller: iss %s is not the signer %s", quote.Max(c.Issuer, 80), gw)
	case c.Audience != audience:
		return v, fmt.Errorf("writ-caller: made for %s, not for %s", quote.Max(c.Audience, 80), quote.Max(audience, 80))
	case c.IssuedAt == 0 || c.Expiry == 0 || !exp.After(iat) || exp.Sub(iat) > MaxCallerHeaderTTL:
		return v, fmt.Errorf("writ-caller: iat and exp must be set, in order, at most %s apart", MaxCallerHeaderTTL)
	case iat.After(now.Add(clockSkew)):
		return v, errors.New("writ-caller: issued in the future; check the clocks of gateway and upstream")
	case !now.Before(exp):
		return v, fmt.Errorf("writ-caller: expired %s ago", now.Sub(exp).Truncate(time.Second))
	case c.ID == "" || c.Action == "" || c.Resource == "" || c.Method == "" || c.Path == "" || len(c.Chain) == 0:
		return v, errors.New("writ-caller: jti, chain, action, resource, method or path is missing")
	}
	for _, s := range c.Chain {
		id, err := spiffeid.FromString(s)
		if err != nil {
			return v, fmt.Errorf("writ-caller: chain member %s is not a SPIFFE ID", quote.Max(s, 80))
		}
		v.Chain = append(v.Chain, id)
	}
	v.Gateway, v.Action, v.Resource, v.Method, v.Path, v.ID = gw, c.Action, c.Resource, c.Method, c.Path, c.ID
	v.IssuedAt, v.Expires = iat, exp
	return v, nil
}

// VerifyRequest verifies r's Writ-Caller header as VerifyCallerHeader does
// and checks it was made for this request: same method and path, so a
// header for GET /orders/1 cannot be replayed on DELETE /orders/2.
func VerifyRequest(r *http.Request, bundles x509bundle.Source, gateways spiffeid.Matcher, audience string, now time.Time) (VerifiedCaller, error) {
	values := r.Header.Values(CallerHeader)
	if len(values) > 1 {
		return VerifiedCaller{}, errors.New("writ-caller: more than one header")
	}
	v, err := VerifyCallerHeader(r.Header.Get(CallerHeader), bundles, gateways, audience, now)
	if err != nil {
		return VerifiedCaller{}, err
	}
	if path := requestPath(r); v.Method != r.Method || v.Path != path {
		return VerifiedCaller{}, fmt.Errorf("writ-caller: made for %s %s, not for this request (%s %s)",
			quote.Max(v.Method, 20), quote.Max(v.Path, 80), quote.Max(r.Method, 20), quote.Max(path, 80))
	}
	return v, nil
}

// x5cFromCompact reads the certificate chain from the protected header of
// a compact JWS: go-jose parses x5c but hands the chain out only through
// its own verification, while SPIFFE verification needs it raw.
func x5cFromCompact(compact string) ([]*x509.Certificate, error) {
	protected, _, _ := strings.Cut(compact, ".")
	raw, err := base64.RawURLEncoding.DecodeString(protected)
	if err != nil {
		return nil, errors.New("the protected header is not base64url")
	}
	var h struct {
		X5C []string `json:"x5c"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, errors.New("the protected header is not a JSON object of the expected form")
	}
	if len(h.X5C) == 0 || len(h.X5C) > maxX5CCerts {
		return nil, fmt.Errorf("x5c must hold the gateway's chain, 1 to %d certificates", maxX5CCerts)
	}
	certs := make([]*x509.Certificate, 0, len(h.X5C))
	for i, s := range h.X5C {
		der, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("x5c[%d] is not base64", i)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("x5c[%d] is not an X.509 certificate", i)
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// headerSigner makes Writ-Caller headers with the gateway's current
// X.509-SVID, which renews: the jose signer is rebuilt when the leaf
// changes.
type headerSigner struct {
	svids    x509svid.Source
	audience string
	ttl      time.Duration

	mu     sync.Mutex
	leaf   *x509.Certificate
	signer jose.Signer
	issuer string
}

func (s *headerSigner) current() (jose.Signer, string, error) {
	svid, err := s.svids.GetX509SVID()
	if err != nil {
		return nil, "", fmt.Errorf("the gateway's X.509-SVID: %w", err)
	}
	if svid == nil || len(svid.Certificates) == 0 || svid.PrivateKey == nil {
		return nil, "", errors.New("the gateway has no X.509-SVID with a key")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leaf == svid.Certificates[0] {
		return s.signer, s.issuer, nil
	}
	alg, err := algFor(svid.PrivateKey)
	if err != nil {
		return nil, "", err
	}
	key, err := jwssign.New(svid.PrivateKey, "", alg)
	if err != nil {
		return nil, "", err
	}
	x5c := make([]string, len(svid.Certificates))
	for i, c := range svid.Certificates {
		x5c[i] = base64.StdEncoding.EncodeToString(c.Raw)
	}
	opts := (&jose.SignerOptions{}).WithType(CallerHeaderType).WithHeader("x5c", x5c)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		return nil, "", err
	}
	s.leaf, s.signer, s.issuer = svid.Certificates[0], signer, svid.ID.String()
	return signer, s.issuer, nil
}

func algFor(k crypto.Signer) (jose.SignatureAlgorithm, error) {
	switch p := k.Public().(type) {
	case *ecdsa.PublicKey:
		switch p.Curve {
		case elliptic.P256():
			return jose.ES256, nil
		case elliptic.P384():
			return jose.ES384, nil
		case elliptic.P521():
			return jose.ES512, nil
		}
	case *rsa.PublicKey:
		return jose.RS256, nil
	case ed25519.PublicKey:
		return jose.EdDSA, nil
	}
	return "", fmt.Errorf("the gateway's SVID key (%T) cannot sign caller headers", k.Public())
}

// sign makes the header for one allowed request.
func (s *headerSigner) sign(now time.Time, d gateway.Decision, r gateway.Request, method, path string) (string, error) {
	signer, issuer, err := s.current()
	if err != nil {
		return "", err
	}
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	payload, err := json.Marshal(callerClaims{
		Issuer:   issuer,
		Audience: s.audience,
		IssuedAt: now.Unix(),
		Expiry:   now.Add(s.ttl).Unix(),
		ID:       base64.RawURLEncoding.EncodeToString(jti[:]),
		Chain:    d.Chain,
		Action:   r.Action,
		Resource: r.Resource,
		Method:   method,
		Path:     path,
	})
	if err != nil {
		return "", err
	}
	return jwssign.Compact(signer, payload)
}
