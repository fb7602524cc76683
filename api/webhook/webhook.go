// Package webhook is the wire form of writ's request event deliveries: the
// server signs each with its X.509-SVID, and a receiver verifies it with
// the SPIFFE trust bundle it already holds, so no key is handed out apart
// from the bundle and every server of a cluster is trusted alike.
package webhook

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

	jose "github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"writ.dev/writ/identity"
	"writ.dev/writ/internal/jwssign"
	"writ.dev/writ/internal/quote"
)

const (
	// JWSType is the "typ" header of every delivery, so a delivery is never
	// taken for a JWT-SVID or a caller header, nor they for it.
	JWSType = "writ-request-event+jws"
	// ContentType is the Content-Type of a delivery's body.
	ContentType = "application/jose"
	// EventHeader and DeliveryHeader repeat the event's type and id for
	// routing before verification; only the signed payload is authority.
	EventHeader    = "Writ-Event"
	DeliveryHeader = "Writ-Delivery"
	// Lifetime is how long a delivery is valid after it is signed. Each
	// attempt is signed afresh, so it only needs to cover one attempt plus
	// clock differences, and it bounds how long a receiver must remember
	// ids to refuse replays.
	Lifetime = 5 * time.Minute
	// MaxBodyBytes bounds what the verifier reads; a request event is far
	// smaller.
	MaxBodyBytes = 256 << 10
	// clockSkew is how far in the future iat may be.
	clockSkew = 5 * time.Second
	maxX5C    = 4
)

var algs = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.ES512, jose.RS256, jose.EdDSA}

// Event is a delivery's payload.
type Event struct {
	// Issuer is the SPIFFE ID of the server that signed the delivery.
	Issuer string `json:"iss"`
	// Audience is the receiver URL the delivery was made for, so one
	// receiver cannot replay it to another.
	Audience string `json:"aud"`
	IssuedAt int64  `json:"iat"`
	Expiry   int64  `json:"exp"`
	// ID names the event; retries of one event repeat it.
	ID       string `json:"id"`
	Type     string `json:"type"`
	ServerID string `json:"server_id"`
	// SentAt equals IssuedAt; kept for receivers that read it.
	SentAt   int64 `json:"sent_at"`
	Revision int64 `json:"revision"`
	// Request is the API's AccessRequest in protobuf JSON.
	Request json.RawMessage `json:"request"`
}

// Verify checks a delivery body and returns its event: a compact JWS of
// type JWSType signed by an X.509-SVID that chains to bundles, whose SPIFFE
// ID is a writ server's (spiffe://TD/writ/server/…, not any workload's),
// whose iss is that ID, made for audience (the receiver's URL as
// configured on the server) and valid at now. It does not refuse replays;
// use Replays for that.
func Verify(body []byte, bundles x509bundle.Source, audience string, now time.Time) (Event, error) {
	var ev Event
	if bundles == nil || audience == "" {
		return ev, errors.New("webhook: the verifier needs the trust bundle and the receiver's own URL")
	}
	if len(body) > MaxBodyBytes {
		return ev, fmt.Errorf("webhook: body is %d bytes; at most %d are accepted", len(body), MaxBodyBytes)
	}
	compact := strings.TrimSpace(string(body))
	jws, err := jose.ParseSignedCompact(compact, algs)
	if err != nil {
		return ev, errors.New("webhook: not a compact JWS signed with ES256, ES384, ES512, RS256 or EdDSA")
	}
	if len(jws.Signatures) != 1 {
		return ev, errors.New("webhook: want exactly one signature")
	}
	h := jws.Signatures[0].Protected
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != JWSType {
		return ev, fmt.Errorf("webhook: typ is %s, not %q; this is not a writ delivery", quote.Max(fmt.Sprint(h.ExtraHeaders[jose.HeaderType]), 40), JWSType)
	}
	if _, ok := h.ExtraHeaders["crit"]; ok {
		return ev, errors.New("webhook: the header names critical extensions, which no delivery uses")
	}
	certs, err := x5c(compact)
	if err != nil {
		return ev, fmt.Errorf("webhook: %w", err)
	}
	signer, _, err := x509svid.Verify(certs, bundles, x509svid.WithTime(now))
	if err != nil {
		return ev, fmt.Errorf("webhook: the signing certificate is not a valid X.509-SVID of a trusted domain: %s", quote.Max(err.Error(), 200))
	}
	if !identity.IsServerID(signer) {
		return ev, fmt.Errorf("webhook: signed by %s, which is not a writ server (spiffe://%s%s…)", quote.Max(signer.String(), 120), signer.TrustDomain(), identity.ServerPathPrefix())
	}
	payload, err := jws.Verify(certs[0].PublicKey)
	if err != nil {
		return ev, errors.New("webhook: the signature does not verify with the certificate in x5c")
	}
	if err := json.Unmarshal(payload, &ev); err != nil {
		return Event{}, errors.New("webhook: the payload is not a JSON object of the expected form")
	}
	iat, exp := time.Unix(ev.IssuedAt, 0), time.Unix(ev.Expiry, 0)
	var bad error
	switch {
	case ev.Issuer != signer.String():
		bad = fmt.Errorf("webhook: iss %s is not the signer %s", quote.Max(ev.Issuer, 120), signer)
	case ev.Audience != audience:
		bad = fmt.Errorf("webhook: made for %s, not for %s", quote.Max(ev.Audience, 120), quote.Max(audience, 120))
	case ev.IssuedAt == 0 || ev.Expiry == 0 || !exp.After(iat) || exp.Sub(iat) > Lifetime:
		bad = fmt.Errorf("webhook: iat and exp must be set, in order, at most %s apart", Lifetime)
	case iat.After(now.Add(clockSkew)):
		bad = errors.New("webhook: issued in the future; check the clocks of server and receiver")
	case !now.Before(exp):
		bad = fmt.Errorf("webhook: expired %s ago; a delivery is valid for %s after it is sent", now.Sub(exp).Truncate(time.Second), Lifetime)
	case ev.ID == "" || ev.Type == "" || len(ev.Request) == 0:
		bad = errors.New("webhook: id, type or request is missing")
	}
	if bad != nil {
		return Event{}, bad
	}
	return ev, nil
}

// x5c reads the certificate chain from the protected header: go-jose
// parses x5c but hands it out only through its own path verification,
// while SPIFFE verification needs it raw.
func x5c(compact string) ([]*x509.Certificate, error) {
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
	if len(h.X5C) == 0 || len(h.X5C) > maxX5C {
		return nil, fmt.Errorf("x5c must hold the server's SVID chain, 1 to %d certificates", maxX5C)
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

// Replays remembers the ids of verified deliveries until they expire, so a
// receiver acts on each event once. Retries of one event repeat its id: a
// receiver that already acted on an id should answer 2xx to a repeat, or
// the server keeps retrying. Safe for concurrent use.
type Replays struct {
	mu      sync.Mutex
	seen    map[string]int64 // id -> exp
	inserts int
}

// Seen records ev and reports whether its id was recorded before and has
// not expired. Call it only with events Verify returned: an unverified id
// could evict nothing but would fill memory until its exp.
func (r *Replays) Seen(ev Event, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = make(map[string]int64)
	}
	t := now.Unix()
	if r.inserts++; r.inserts%1024 == 0 {
		for id, exp := range r.seen {
			if exp <= t {
				delete(r.seen, id)
			}
		}
	}
	if exp, ok := r.seen[ev.ID]; ok && exp > t {
		return true
	}
	r.seen[ev.ID] = ev.Expiry
	return false
}

// Signer signs deliveries with the current X.509-SVID of a source, which
// renews: the jose signer is rebuilt when the leaf changes.
type Signer struct {
	svids x509svid.Source

	mu     sync.Mutex
	leaf   *x509.Certificate
	signer jose.Signer
	issuer string
}

// NewSigner signs with the SVIDs svids gives.
func NewSigner(svids x509svid.Source) *Signer { return &Signer{svids: svids} }

// Sign fills ev's iss, iat, exp and sent_at for now and audience and
// returns the delivery body.
func (s *Signer) Sign(ev Event, audience string, now time.Time) (string, error) {
	signer, issuer, err := s.current()
	if err != nil {
		return "", err
	}
	ev.Issuer, ev.Audience = issuer, audience
	ev.IssuedAt, ev.Expiry, ev.SentAt = now.Unix(), now.Add(Lifetime).Unix(), now.Unix()
	payload, err := json.Marshal(ev)
	if err != nil {
		return "", err
	}
	return jwssign.Compact(signer, payload)
}

func (s *Signer) current() (jose.Signer, string, error) {
	svid, err := s.svids.GetX509SVID()
	if err != nil {
		return nil, "", fmt.Errorf("the server's X.509-SVID: %w", err)
	}
	if svid == nil || len(svid.Certificates) == 0 || svid.PrivateKey == nil {
		return nil, "", errors.New("the server has no X.509-SVID with a key")
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
	chain := make([]string, len(svid.Certificates))
	for i, c := range svid.Certificates {
		chain[i] = base64.StdEncoding.EncodeToString(c.Raw)
	}
	opts := (&jose.SignerOptions{}).WithType(JWSType).WithHeader("x5c", chain)
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
	return "", fmt.Errorf("the SVID key (%T) cannot sign deliveries", k.Public())
}
