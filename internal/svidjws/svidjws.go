// Package svidjws makes and checks compact JWSs signed with an X.509-SVID
// that travels in the "x5c" header, so a receiver verifies them with the
// SPIFFE trust bundle it already has and no key published anywhere else.
// Webhook deliveries and the gateway's Writ-Caller header are both such
// tokens; this package holds what they share, and each caller checks the
// signer's SPIFFE ID and its own claims.
package svidjws

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"writ.dev/writ/internal/jwssign"
	"writ.dev/writ/internal/quote"
)

// Algs are the algorithms an SVID key may sign with.
var Algs = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.ES512, jose.RS256, jose.EdDSA}

// MaxChain bounds the certificates x5c may hold: a leaf and its
// intermediates, never more.
const MaxChain = 4

// Signer signs with the current X.509-SVID of a source, which renews: the
// jose signer is rebuilt when the leaf changes, and reused until then.
type Signer struct {
	source x509svid.Source
	typ    string
	owner  string

	mu     sync.Mutex
	leaf   *x509.Certificate
	signer jose.Signer
	issuer string
}

// NewSigner signs with source's SVIDs, writing typ as the "typ" header.
// owner names whose SVID it is in errors ("the gateway").
func NewSigner(source x509svid.Source, typ, owner string) *Signer {
	return &Signer{source: source, typ: typ, owner: owner}
}

// Current returns the signer for the SVID the source holds now and that
// SVID's SPIFFE ID, the issuer its tokens name.
func (s *Signer) Current() (jose.Signer, string, error) {
	svid, err := s.source.GetX509SVID()
	if err != nil {
		return nil, "", fmt.Errorf("%s's X.509-SVID: %w", s.owner, err)
	}
	if svid == nil || len(svid.Certificates) == 0 || svid.PrivateKey == nil {
		return nil, "", fmt.Errorf("%s has no X.509-SVID with a key", s.owner)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leaf == svid.Certificates[0] {
		return s.signer, s.issuer, nil
	}
	alg, err := algFor(svid.PrivateKey)
	if err != nil {
		return nil, "", fmt.Errorf("%s's SVID key: %w", s.owner, err)
	}
	key, err := jwssign.New(svid.PrivateKey, "", alg)
	if err != nil {
		return nil, "", err
	}
	x5c := make([]string, len(svid.Certificates))
	for i, c := range svid.Certificates {
		x5c[i] = base64.StdEncoding.EncodeToString(c.Raw)
	}
	opts := (&jose.SignerOptions{}).WithType(jose.ContentType(s.typ)).WithHeader("x5c", x5c)
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
	return "", fmt.Errorf("a %T cannot sign a JWS; use an EC P-256/384/521, RSA or Ed25519 key", k.Public())
}

// Verify checks a compact JWS of type typ: one signature by one of Algs,
// no critical extensions, an x5c chain that is a valid X.509-SVID of
// bundles at now, and a signature by that chain's leaf. It returns the
// signer's SPIFFE ID and the payload; checking that ID and the claims is
// the caller's. what names the token in the typ error ("a writ delivery").
// Errors do not repeat more of the token than a bounded quote.
func Verify(compact, typ, what string, bundles x509bundle.Source, now time.Time) (spiffeid.ID, []byte, error) {
	jws, err := jose.ParseSignedCompact(compact, Algs)
	if err != nil {
		return spiffeid.ID{}, nil, errors.New("not a compact JWS signed with ES256, ES384, ES512, RS256 or EdDSA")
	}
	if len(jws.Signatures) != 1 {
		return spiffeid.ID{}, nil, errors.New("want exactly one signature")
	}
	h := jws.Signatures[0].Protected
	if got, _ := h.ExtraHeaders[jose.HeaderType].(string); got != typ {
		return spiffeid.ID{}, nil, fmt.Errorf("typ is %s, not %q; this is not %s", quote.Max(fmt.Sprint(h.ExtraHeaders[jose.HeaderType]), 40), typ, what)
	}
	if _, ok := h.ExtraHeaders["crit"]; ok {
		return spiffeid.ID{}, nil, fmt.Errorf("the header names critical extensions, which %s never uses", what)
	}
	certs, err := chain(compact)
	if err != nil {
		return spiffeid.ID{}, nil, err
	}
	signer, _, err := x509svid.Verify(certs, bundles, x509svid.WithTime(now))
	if err != nil {
		return spiffeid.ID{}, nil, fmt.Errorf("the signing certificate is not a valid X.509-SVID of a trusted domain: %s", quote.Max(err.Error(), 200))
	}
	payload, err := jws.Verify(certs[0].PublicKey)
	if err != nil {
		return spiffeid.ID{}, nil, errors.New("the signature does not verify with the certificate in x5c")
	}
	return signer, payload, nil
}

// chain reads the certificates from the protected header: go-jose parses
// x5c but hands the chain out only through its own path verification,
// while SPIFFE verification needs it raw.
func chain(compact string) ([]*x509.Certificate, error) {
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
	if len(h.X5C) == 0 || len(h.X5C) > MaxChain {
		return nil, fmt.Errorf("x5c must hold the signer's SVID chain, 1 to %d certificates", MaxChain)
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
