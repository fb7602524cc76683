package httpproxy

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"writ.dev/writ/gateway"
	"writ.dev/writ/internal/jwssign"
	"writ.dev/writ/internal/quote"
	"writ.dev/writ/internal/svidjws"
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
	// clockSkew is how far in the future a header's iat may be, for
	// gateways and upstreams whose clocks differ a little.
	clockSkew = 5 * time.Second
)

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
	gw, payload, err := svidjws.Verify(header, CallerHeaderType, "a caller header", bundles, now)
	if err != nil {
		return v, fmt.Errorf("writ-caller: %w", err)
	}
	if err := gateways(gw); err != nil {
		return v, fmt.Errorf("writ-caller: signed by %s, which is not an accepted gateway: %v", gw, err)
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

// headerSigner makes Writ-Caller headers with the gateway's current
// X.509-SVID, which renews.
type headerSigner struct {
	jws      *svidjws.Signer
	audience string
	ttl      time.Duration
}

func newHeaderSigner(svids x509svid.Source, audience string, ttl time.Duration) *headerSigner {
	return &headerSigner{jws: svidjws.NewSigner(svids, CallerHeaderType, "the gateway"), audience: audience, ttl: ttl}
}

// sign makes the header for one allowed request.
func (s *headerSigner) sign(now time.Time, d gateway.Decision, r gateway.Request, method, path string) (string, error) {
	signer, issuer, err := s.jws.Current()
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
