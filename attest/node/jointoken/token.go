// Package jointoken is the one-time join token: the one secret writ
// tolerates, used once by a new agent to prove it was expected.
//
// A token is "wjt1.ID.SECRET.PINS". ID names it in logs, audit events and
// the agent's SPIFFE ID; SECRET is 32 random bytes (base64url) of which the
// server keeps only the SHA-256 digest; PINS are truncated SHA-256 digests
// of the public keys of the trust domain's X.509 authorities when the token
// was made, joined by "~". A new agent trusts the server only if the server's
// certificate chains to an authority whose key matches a pin, so the token
// also carries the trust it needs: no insecure bootstrap. The authorities
// in the bundle when the token is made include any prepared successor, so a
// rotation during the token's life (at most an hour) does not break it.
package jointoken

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

const (
	prefix     = "wjt1"
	idBytes    = 12
	secretSize = 32
	// PinSize is how much of an authority key's SHA-256 a pin keeps:
	// 128 bits is beyond a second-preimage search.
	PinSize = 16
	// maxPins bounds a token: one pin per authority in the bundle.
	maxPins = 32
	// MaxLength bounds a token's text.
	MaxLength = 4096
)

var b64 = base64.RawURLEncoding

// Token is a parsed join token.
type Token struct {
	ID     string
	Secret []byte
	Pins   [][]byte
}

// New makes a token pinned to authorities (the trust domain's X.509
// bundle), with a fresh random ID and secret.
func New(authorities []*x509.Certificate) (Token, error) {
	if len(authorities) == 0 {
		return Token{}, errors.New("jointoken: no authorities to pin: the trust bundle is empty")
	}
	if len(authorities) > maxPins {
		return Token{}, fmt.Errorf("jointoken: %d authorities, at most %d can be pinned", len(authorities), maxPins)
	}
	id := make([]byte, idBytes)
	secret := make([]byte, secretSize)
	rand.Read(id)
	rand.Read(secret)
	t := Token{ID: hex.EncodeToString(id), Secret: secret}
	for _, a := range authorities {
		t.Pins = append(t.Pins, Pin(a))
	}
	return t, nil
}

// Pin is the pin of an authority: the truncated SHA-256 of its
// SubjectPublicKeyInfo, so a renewed certificate for the same key matches.
func Pin(cert *x509.Certificate) []byte {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return sum[:PinSize]
}

// String is the token's text, to hand to one agent.
func (t Token) String() string {
	pins := make([]string, len(t.Pins))
	for i, p := range t.Pins {
		pins[i] = b64.EncodeToString(p)
	}
	return strings.Join([]string{prefix, t.ID, b64.EncodeToString(t.Secret), strings.Join(pins, "~")}, ".")
}

// SecretDigest is what the server stores and compares.
func (t Token) SecretDigest() []byte {
	sum := sha256.Sum256(t.Secret)
	return sum[:]
}

// Pinned reports whether cert is one of the pinned authorities.
func (t Token) Pinned(cert *x509.Certificate) bool {
	p := Pin(cert)
	for _, want := range t.Pins {
		if bytes.Equal(p, want) {
			return true
		}
	}
	return false
}

// Parse reads a token's text strictly. Errors never echo the secret.
func Parse(s string) (Token, error) {
	if len(s) > MaxLength {
		return Token{}, fmt.Errorf("jointoken: token is %d bytes, more than %d", len(s), MaxLength)
	}
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 4 || parts[0] != prefix {
		return Token{}, errors.New("jointoken: not a writ join token: expected wjt1.ID.SECRET.PINS (from 'writ token create')")
	}
	var t Token
	id, err := hex.DecodeString(parts[1])
	if err != nil || len(id) != idBytes {
		return Token{}, fmt.Errorf("jointoken: the token id is not %d hex digits", 2*idBytes)
	}
	t.ID = parts[1]
	if t.Secret, err = b64.Strict().DecodeString(parts[2]); err != nil || len(t.Secret) != secretSize {
		return Token{}, errors.New("jointoken: the token's secret part is damaged: copy the whole token again")
	}
	pins := strings.Split(parts[3], "~")
	if len(pins) > maxPins {
		return Token{}, fmt.Errorf("jointoken: %d pins, at most %d", len(pins), maxPins)
	}
	for i, p := range pins {
		b, err := b64.Strict().DecodeString(p)
		if err != nil || len(b) != PinSize {
			return Token{}, fmt.Errorf("jointoken: pin %d is damaged: copy the whole token again", i+1)
		}
		t.Pins = append(t.Pins, b)
	}
	if hex.EncodeToString(id) != t.ID {
		return Token{}, errors.New("jointoken: the token id must be lower-case hex")
	}
	return t, nil
}
