// Package webhook is the wire form of writ's request event deliveries: the
// server signs each with its X.509-SVID, and a receiver verifies it with
// the SPIFFE trust bundle it already holds, so no key is handed out apart
// from the bundle and every server of a cluster is trusted alike.
package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"writ.dev/writ/identity"
	"writ.dev/writ/internal/jwssign"
	"writ.dev/writ/internal/quote"
	"writ.dev/writ/internal/svidjws"
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
)

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
	signer, payload, err := svidjws.Verify(strings.TrimSpace(string(body)), JWSType, "a writ delivery", bundles, now)
	if err != nil {
		return ev, fmt.Errorf("webhook: %w", err)
	}
	if !identity.IsServerID(signer) {
		return ev, fmt.Errorf("webhook: signed by %s, which is not a writ server (spiffe://%s%s…)", quote.Max(signer.String(), 120), signer.TrustDomain(), identity.ServerPathPrefix())
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
// renews.
type Signer struct{ jws *svidjws.Signer }

// NewSigner signs with the SVIDs svids gives.
func NewSigner(svids x509svid.Source) *Signer {
	return &Signer{jws: svidjws.NewSigner(svids, JWSType, "the server")}
}

// Sign fills ev's iss, iat, exp and sent_at for now and audience and
// returns the delivery body.
func (s *Signer) Sign(ev Event, audience string, now time.Time) (string, error) {
	signer, issuer, err := s.jws.Current()
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
