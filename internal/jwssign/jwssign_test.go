package jwssign

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"encoding/base64"
	"io"
	"math/big"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

func ecKey(t *testing.T, c elliptic.Curve) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The JWS is byte for byte what the hand-built signers wrote: header
// members alg, kid, typ in that order, the payload exactly as given.
func TestCompactIsExact(t *testing.T) {
	p256 := ecKey(t, elliptic.P256())
	p384 := ecKey(t, elliptic.P384())
	p521 := ecKey(t, elliptic.P521())
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	payload := []byte(`{"sub":"spiffe://example.org/w","aud":"a","exp":2,"iat":1}`)
	for _, tc := range []struct {
		key crypto.Signer
		alg jose.SignatureAlgorithm
		typ string
	}{
		{p256, jose.ES256, "JWT"}, {p384, jose.ES384, "JWT"}, {p521, jose.ES512, "JWT"},
		{rsaKey, jose.RS256, "JWT"}, {ed, jose.EdDSA, "writ-delegation+jwt"},
	} {
		t.Run(string(tc.alg), func(t *testing.T) {
			k, err := New(tc.key, "kid-1", tc.alg)
			if err != nil {
				t.Fatal(err)
			}
			s, err := k.Signer(tc.typ)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := Compact(s, payload)
			if err != nil {
				t.Fatal(err)
			}
			parts := strings.Split(tok, ".")
			b64 := base64.RawURLEncoding
			wantHeader := `{"alg":"` + string(tc.alg) + `","kid":"kid-1","typ":"` + tc.typ + `"}`
			if parts[0] != b64.EncodeToString([]byte(wantHeader)) || parts[1] != b64.EncodeToString(payload) {
				t.Fatalf("token %s is not header %s and payload %s", tok, wantHeader, payload)
			}
			jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{tc.alg})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := jws.Verify(tc.key.Public()); err != nil {
				t.Fatalf("go-jose does not verify the signature: %v", err)
			}
		})
	}
}

func TestNewRefusesMismatchedAlgorithm(t *testing.T) {
	p256 := ecKey(t, elliptic.P256())
	p384 := ecKey(t, elliptic.P384())
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	for _, tc := range []struct {
		key crypto.Signer
		alg jose.SignatureAlgorithm
	}{
		{p256, jose.ES384}, {p384, jose.ES256}, {p256, jose.RS256}, {p256, jose.HS256},
		{ed, jose.ES256}, {p256, jose.EdDSA}, {nil, jose.ES256},
	} {
		if _, err := New(tc.key, "k", tc.alg); err == nil {
			t.Errorf("New bound a %T to %s", tc.key, tc.alg)
		}
	}
	k, err := New(p256, "k", jose.ES256)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.SignPayload([]byte("x"), jose.ES384); err == nil {
		t.Error("SignPayload signed with an algorithm the key is not bound to")
	}
}

// fault is a keystore that returns what it is told to.
type fault struct {
	pub  crypto.PublicKey
	sign func(io.Reader, []byte, crypto.SignerOpts) ([]byte, error)
}

func (f fault) Public() crypto.PublicKey { return f.pub }
func (f fault) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	return f.sign(r, d, o)
}

func TestFaultySignatureRefused(t *testing.T) {
	key := ecKey(t, elliptic.P256())
	der := func(r, s *big.Int) func(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
		return func(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
			return asn1.Marshal(struct{ R, S *big.Int }{r, s})
		}
	}
	for name, sign := range map[string]func(io.Reader, []byte, crypto.SignerOpts) ([]byte, error){
		"not DER": func(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) { return make([]byte, 64), nil },
		"trailing data": func(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
			sig, err := key.Sign(r, d, o)
			return append(sig, 0), err
		},
		"r too large": der(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1)),
		"s zero":      der(big.NewInt(1), big.NewInt(0)),
	} {
		k, err := New(fault{pub: key.Public(), sign: sign}, "k", jose.ES256)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.SignPayload([]byte("x"), jose.ES256); err == nil || !strings.Contains(err.Error(), "signing key") {
			t.Errorf("%s: error %v, want one naming the signing key", name, err)
		}
	}
}

func TestECDSAJWSSignaturePadsShortIntegers(t *testing.T) {
	der, err := asn1.Marshal(struct{ R, S *big.Int }{big.NewInt(1), big.NewInt(0x0102)})
	if err != nil {
		t.Fatal(err)
	}
	got, err := ecdsaJWSSignature(der, 32)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 64)
	want[31], want[62], want[63] = 1, 1, 2
	if string(got) != string(want) {
		t.Errorf("r||s = %x, want %x", got, want)
	}
}
