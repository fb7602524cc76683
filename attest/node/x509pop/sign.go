package x509pop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
)

// messagePrefix separates x509pop signatures from every other use of a node
// key: a TLS handshake, a code signature or a later version of this
// protocol never signs data that starts with it, so no signature from there
// verifies here and none from here verifies there.
const messagePrefix = "writ x509pop v1\n"

// minRSABits is the smallest RSA key accepted, the common floor today.
const minRSABits = 2048

// pssOptions is how RSA signs the challenge. PSS rather than PKCS#1 v1.5
// because it has a security proof and no history of forgery bugs; the salt
// is the hash length so signer and verifier agree exactly.
var pssOptions = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}

// message is what the node signs for nonce.
func message(nonce []byte) []byte {
	return append([]byte(messagePrefix), nonce...)
}

// Sign is the node side: it signs the challenge with the key of the node's
// certificate. ECDSA keys sign the SHA-256 of the message (ASN.1 signature),
// RSA keys sign it with PSS (SHA-256, salt length equal to the hash) and
// Ed25519 keys sign the message itself. The message is
// "writ x509pop v1\n" followed by the nonce.
func Sign(c Challenge, key crypto.Signer) ([]byte, error) {
	if len(c.Nonce) != NonceSize {
		return nil, fmt.Errorf("x509pop: the challenge nonce is %d bytes, not %d: pass the challenge exactly as the server sent it", len(c.Nonce), NonceSize)
	}
	msg := message(c.Nonce)
	digest := sha256.Sum256(msg)
	var (
		sig []byte
		err error
	)
	switch pub := key.Public().(type) {
	case *ecdsa.PublicKey:
		sig, err = key.Sign(rand.Reader, digest[:], crypto.SHA256)
	case *rsa.PublicKey:
		sig, err = key.Sign(rand.Reader, digest[:], pssOptions)
	case ed25519.PublicKey:
		sig, err = key.Sign(rand.Reader, msg, crypto.Hash(0))
	default:
		return nil, fmt.Errorf("x509pop: cannot sign with a %T key: the node certificate's key must be ECDSA, RSA or Ed25519", pub)
	}
	if err != nil {
		return nil, fmt.Errorf("x509pop: signing the challenge: %w", err)
	}
	return sig, nil
}

// errBadSignature does not say why a signature failed to verify: the
// reasons (wrong key, wrong nonce, damaged bytes) look the same to the
// verifier, and the caller's remedy is the same.
var errBadSignature = errors.New("x509pop: the signature does not verify with the node certificate's key: " +
	"sign this challenge's nonce with the private key of the first certificate in the chain")

// verifySignature checks sig over nonce with the leaf's public key, using
// the scheme Sign uses for that key type.
func verifySignature(pub any, nonce, sig []byte) error {
	msg := message(nonce)
	digest := sha256.Sum256(msg)
	ok := false
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(pub, digest[:], sig)
	case *rsa.PublicKey:
		if bits := pub.N.BitLen(); bits < minRSABits {
			return fmt.Errorf("x509pop: the node certificate's RSA key has %d bits: issue one with at least %d", bits, minRSABits)
		}
		ok = rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, pssOptions) == nil
	case ed25519.PublicKey:
		ok = ed25519.Verify(pub, msg, sig)
	default:
		return fmt.Errorf("x509pop: the node certificate has a %T key: issue it with an ECDSA, RSA or Ed25519 key", pub)
	}
	if !ok {
		return errBadSignature
	}
	return nil
}
