// Package jwssign signs compact JWS with a crypto.Signer through go-jose's
// OpaqueSigner: go-jose builds the header and the serialization, while the
// private key stays wherever the crypto.Signer keeps it (the keystore, an
// HSM through PKCS#11), since only the signing input ever reaches it.
package jwssign

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"

	jose "github.com/go-jose/go-jose/v4"
)

// Key is a jose.OpaqueSigner bound to one key and one algorithm, so the
// algorithm is fixed when the key is chosen and never by a caller later.
type Key struct {
	signer crypto.Signer
	alg    jose.SignatureAlgorithm
	hash   crypto.Hash // zero for EdDSA, which signs the message itself
	// coordSize is the byte length of an ECDSA coordinate, for the fixed
	// r||s form JWS uses; zero for other keys.
	coordSize int
	pub       jose.JSONWebKey
}

var _ jose.OpaqueSigner = (*Key)(nil)

// New binds signer to alg and names it kid. alg must suit the key: ES256,
// ES384 and ES512 for ECDSA P-256, P-384 and P-521, RS256 for RSA, EdDSA
// for Ed25519. Which keys a token type accepts is the caller's policy.
func New(signer crypto.Signer, kid string, alg jose.SignatureAlgorithm) (*Key, error) {
	if signer == nil {
		return nil, errors.New("no signing key")
	}
	k := &Key{signer: signer, alg: alg}
	pub := signer.Public()
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		var curve elliptic.Curve
		switch alg {
		case jose.ES256:
			curve, k.hash = elliptic.P256(), crypto.SHA256
		case jose.ES384:
			curve, k.hash = elliptic.P384(), crypto.SHA384
		case jose.ES512:
			curve, k.hash = elliptic.P521(), crypto.SHA512
		}
		if p == nil || p.Curve == nil || curve == nil || p.Curve != curve {
			return nil, fmt.Errorf("an ECDSA key of this curve cannot sign %s", alg)
		}
		k.coordSize = (curve.Params().BitSize + 7) / 8
	case *rsa.PublicKey:
		if p == nil || alg != jose.RS256 {
			return nil, fmt.Errorf("an RSA key cannot sign %s: use RS256", alg)
		}
		k.hash = crypto.SHA256
	case ed25519.PublicKey:
		if alg != jose.EdDSA {
			return nil, fmt.Errorf("an Ed25519 key cannot sign %s: use EdDSA", alg)
		}
	default:
		return nil, fmt.Errorf("%T keys cannot sign JWS", pub)
	}
	k.pub = jose.JSONWebKey{Key: pub, KeyID: kid, Algorithm: string(alg), Use: "sig"}
	return k, nil
}

// Public returns the public key; go-jose writes its KeyID as "kid".
func (k *Key) Public() *jose.JSONWebKey {
	pub := k.pub
	return &pub
}

// Algs returns the one algorithm the key was bound to.
func (k *Key) Algs() []jose.SignatureAlgorithm { return []jose.SignatureAlgorithm{k.alg} }

// SignPayload signs the JWS signing input, returning the signature in the
// form JWS carries it.
func (k *Key) SignPayload(payload []byte, alg jose.SignatureAlgorithm) ([]byte, error) {
	if alg != k.alg {
		return nil, fmt.Errorf("signing key is bound to %s, not %s", k.alg, alg)
	}
	if k.hash == 0 {
		sig, err := k.signer.Sign(rand.Reader, payload, crypto.Hash(0))
		if err != nil {
			return nil, fmt.Errorf("signing key: %w", err)
		}
		return sig, nil
	}
	h := k.hash.New()
	h.Write(payload)
	sig, err := k.signer.Sign(rand.Reader, h.Sum(nil), k.hash)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if k.coordSize > 0 {
		return ecdsaJWSSignature(sig, k.coordSize)
	}
	return sig, nil
}

// Signer returns a jose.Signer with k that writes typ as the "typ" header.
// The header is then exactly {"alg","kid","typ"}, members in that order.
func (k *Key) Signer(typ string) (jose.Signer, error) {
	return jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: k}, (&jose.SignerOptions{}).WithType(jose.ContentType(typ)))
}

// Compact signs payload with s and returns the compact serialization.
func Compact(s jose.Signer, payload []byte) (string, error) {
	jws, err := s.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// ecdsaJWSSignature turns the ASN.1 DER signature a crypto.Signer returns
// into the r||s form RFC 7518 section 3.4 requires, each integer big-endian
// and padded to size bytes. A keystore is outside code, so what it returns
// is checked rather than trusted.
func ecdsaJWSSignature(der []byte, size int) ([]byte, error) {
	var sig struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &sig)
	if err != nil {
		return nil, fmt.Errorf("signing key returned a malformed ECDSA signature: %w", err)
	}
	if len(rest) != 0 {
		return nil, errors.New("signing key returned an ECDSA signature with trailing data")
	}
	if sig.R.Sign() <= 0 || sig.S.Sign() <= 0 || sig.R.BitLen() > 8*size || sig.S.BitLen() > 8*size {
		return nil, errors.New("signing key returned an ECDSA signature out of range for its curve")
	}
	out := make([]byte, 2*size)
	sig.R.FillBytes(out[:size])
	sig.S.FillBytes(out[size:])
	return out, nil
}
