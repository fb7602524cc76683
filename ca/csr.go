package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
)

// RSA key sizes accepted in requests. The upper bound keeps the cost of
// checking a request's signature small for whoever sends one.
const (
	MinRSABits = 2048
	MaxRSABits = 8192
)

const allowedKeys = "ECDSA P-256, P-384 or P-521, RSA of 2048 to 8192 bits, or Ed25519"

// ParseCSR parses a DER PKCS#10 certificate request, checks its signature
// (proof that the sender holds the private key) and returns its public key.
// Everything else in the request (subject, SANs, extensions) is ignored by
// design: what a certificate says is decided by identity rules, never by the
// requester.
func ParseCSR(der []byte) (crypto.PublicKey, error) {
	if len(der) == 0 {
		return nil, errors.New("csr: request is empty: send a DER-encoded PKCS#10 request")
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("csr: not a DER-encoded PKCS#10 request: %w", err)
	}
	if csr.PublicKey == nil {
		return nil, fmt.Errorf("csr: public key algorithm %s is not allowed: use %s", csr.PublicKeyAlgorithm, allowedKeys)
	}
	// The key is checked before the signature so an oversized key costs
	// nothing to refuse.
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("csr: %w", err)
	}
	switch csr.SignatureAlgorithm {
	case x509.MD2WithRSA, x509.MD5WithRSA, x509.SHA1WithRSA, x509.ECDSAWithSHA1, x509.DSAWithSHA1:
		// crypto/x509 still accepts SHA-1 on requests; writ does not.
		return nil, fmt.Errorf("csr: signature algorithm %s is not allowed: sign with SHA-256 or stronger", csr.SignatureAlgorithm)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr: signature does not verify, so the sender has not shown it holds the private key: %w", err)
	}
	return csr.PublicKey, nil
}

// checkPublicKey accepts the key types an X509-SVID may carry.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			break
		}
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return fmt.Errorf("ECDSA curve %s is not allowed: use %s", k.Curve.Params().Name, allowedKeys)
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			break
		}
		if bits := k.N.BitLen(); bits < MinRSABits || bits > MaxRSABits {
			return fmt.Errorf("RSA key of %d bits is not allowed: use %s", bits, allowedKeys)
		}
		return nil
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			break
		}
		return nil
	case nil:
		return fmt.Errorf("no public key: use %s", allowedKeys)
	default:
		return fmt.Errorf("%s keys are not allowed: use %s", keyKind(pub), allowedKeys)
	}
	return fmt.Errorf("malformed %s public key: use %s", keyKind(pub), allowedKeys)
}

func keyKind(pub crypto.PublicKey) string {
	switch pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA"
	case *rsa.PublicKey:
		return "RSA"
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", pub)
}
