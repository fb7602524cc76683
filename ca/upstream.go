package ca

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/internal/pemfile"
)

// Upstream is a CA of a company's PKI that writ's authority sits under. The
// server's own CA key is still made in its keystore; only its certificate is
// signed by Signer instead of by itself, and the trust bundle becomes Roots.
type Upstream struct {
	// Cert is the upstream CA certificate that signs writ's intermediate.
	Cert *x509.Certificate
	// Chain holds the certificates between Cert and a root, excluding the
	// root; empty when Cert is itself one of Roots.
	Chain []*x509.Certificate
	// Signer is Cert's private key.
	Signer crypto.Signer
	// Roots are the trust anchors of the upstream PKI; they are what writ
	// publishes as the trust domain's X.509 authorities.
	Roots []*x509.Certificate
}

// minUpstreamLife is how much validity the upstream certificate must have
// left to be accepted: below it, every intermediate writ made would be
// nearly expired at birth.
const minUpstreamLife = MinCATTL

// LoadUpstream reads an upstream CA from PEM files: certFile holds the
// signing CA certificate, optionally followed by its chain up to but
// excluding the root; keyFile its private key (PKCS#8, SEC 1 or PKCS#1),
// which must not be accessible by group or others; bundleFile the roots of
// the upstream PKI. The result has passed Validate at the current time.
func LoadUpstream(certFile, keyFile, bundleFile string) (*Upstream, error) {
	certs, err := pemfile.ReadCertificates(certFile)
	if err != nil {
		return nil, fmt.Errorf("ca: upstream certificate: %w", err)
	}
	signer, err := pemfile.ReadPrivateKey(keyFile)
	if err != nil {
		return nil, fmt.Errorf("ca: upstream key: %w", err)
	}
	roots, err := pemfile.ReadCertificates(bundleFile)
	if err != nil {
		return nil, fmt.Errorf("ca: upstream bundle: %w", err)
	}
	u := &Upstream{Cert: certs[0], Signer: signer, Roots: roots}
	// A chain that carries the root as well is common and harmless; the
	// root travels in the bundle, so it is dropped from what SVIDs carry.
	for _, c := range certs[1:] {
		if !containsCert(roots, c) {
			u.Chain = append(u.Chain, c)
		}
	}
	if err := u.Validate(time.Now()); err != nil {
		return nil, err
	}
	return u, nil
}

// Validate checks that the upstream can sign writ's intermediate at now: the
// key matches the certificate, the certificate is a CA allowed to sign
// another CA below it, it is valid for a while yet, and it chains to Roots
// through Chain.
func (u *Upstream) Validate(now time.Time) error {
	switch {
	case u == nil || u.Cert == nil:
		return errors.New("ca: upstream: no CA certificate")
	case u.Signer == nil:
		return errors.New("ca: upstream: no private key")
	case len(u.Roots) == 0:
		return errors.New("ca: upstream: the bundle holds no root certificate")
	}
	c := u.Cert
	pub, ok := u.Signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(c.PublicKey) {
		return fmt.Errorf("ca: upstream: the private key does not match the certificate %q: give the key of that certificate", c.Subject)
	}
	if !c.BasicConstraintsValid || !c.IsCA {
		return fmt.Errorf("ca: upstream: certificate %q is not a CA (basic constraints CA=true missing): give the certificate of a CA that may sign intermediates", c.Subject)
	}
	if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("ca: upstream: certificate %q may not sign certificates (key usage lacks keyCertSign)", c.Subject)
	}
	if c.MaxPathLen == 0 && c.MaxPathLenZero {
		return fmt.Errorf("ca: upstream: certificate %q has path length 0, so it may not sign writ's intermediate CA: use a CA with a path length of at least 1", c.Subject)
	}
	if err := checkCAKey(c.PublicKey); err != nil {
		return fmt.Errorf("ca: upstream: certificate %q: %w", c.Subject, err)
	}
	if now.Before(c.NotBefore) {
		return fmt.Errorf("ca: upstream: certificate %q is not valid until %s", c.Subject, c.NotBefore.UTC().Format(time.RFC3339))
	}
	if !now.Before(c.NotAfter) {
		return fmt.Errorf("ca: upstream: certificate %q expired at %s: renew it with the upstream PKI", c.Subject, c.NotAfter.UTC().Format(time.RFC3339))
	}
	if left := c.NotAfter.Sub(now); left < minUpstreamLife {
		return fmt.Errorf("ca: upstream: certificate %q expires at %s, in %s: renew it with the upstream PKI", c.Subject, c.NotAfter.UTC().Format(time.RFC3339), left.Round(time.Second))
	}
	for i, r := range u.Roots {
		if !r.IsCA {
			return fmt.Errorf("ca: upstream: bundle certificate %d (%q) is not a CA", i+1, r.Subject)
		}
	}
	if _, err := c.Verify(x509.VerifyOptions{
		Roots:         certPool(u.Roots),
		Intermediates: certPool(u.Chain),
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return fmt.Errorf("ca: upstream: certificate %q does not chain to the bundle's roots through the given chain: %w", c.Subject, err)
	}
	return nil
}

// Signs reports whether cert is an intermediate this upstream signed.
func (u *Upstream) Signs(cert *x509.Certificate) bool {
	return bytes.Equal(cert.RawIssuer, u.Cert.RawSubject) && cert.CheckSignatureFrom(u.Cert) == nil
}

// VerifyIntermediate checks that cert chains to the roots at now, so that
// an upstream path length or name constraint that leaves no room for writ
// is caught before the intermediate signs anything.
func (u *Upstream) VerifyIntermediate(cert *x509.Certificate, now time.Time) error {
	_, err := cert.Verify(x509.VerifyOptions{
		Roots:         certPool(u.Roots),
		Intermediates: certPool(append([]*x509.Certificate{u.Cert}, u.Chain...)),
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Errorf("ca: the intermediate signed by upstream %q does not verify against the upstream roots: %w", u.Cert.Subject, err)
	}
	return nil
}

// NewIntermediateCert has the upstream sign a CA certificate for signer's
// public key in trust domain td: CA with path length 0 (it signs SVIDs
// only), the trust domain's SPIFFE ID as its only URI SAN, valid from
// now-ClockSkew to now+ttl but never beyond the upstream certificate. An
// empty subject gets the same default as NewRootCert.
func NewIntermediateCert(signer crypto.Signer, up *Upstream, td spiffeid.TrustDomain, subject pkix.Name, now time.Time, ttl time.Duration) (*x509.Certificate, error) {
	switch {
	case signer == nil:
		return nil, errors.New("ca: intermediate certificate: no signing key")
	case up == nil || up.Cert == nil || up.Signer == nil:
		return nil, errors.New("ca: intermediate certificate: no upstream CA")
	case td.IsZero():
		return nil, errors.New("ca: intermediate certificate: trust domain is empty")
	case ttl <= 0:
		return nil, fmt.Errorf("ca: intermediate certificate: TTL %s is not positive", ttl)
	}
	pub := signer.Public()
	if err := checkCAKey(pub); err != nil {
		return nil, err
	}
	notBefore := now.Add(-ClockSkew)
	if notBefore.Before(up.Cert.NotBefore) {
		notBefore = up.Cert.NotBefore
	}
	notAfter := now.Add(ttl)
	if notAfter.After(up.Cert.NotAfter) {
		notAfter = up.Cert.NotAfter
	}
	notBefore, notAfter = notBefore.Truncate(time.Second), notAfter.Truncate(time.Second)
	if !notAfter.After(notBefore) {
		return nil, fmt.Errorf("ca: intermediate certificate: the upstream CA expires at %s, leaving no room for a certificate", up.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	tmpl, err := caTemplate(pub, td, subject, notBefore, notAfter)
	if err != nil {
		return nil, fmt.Errorf("ca: intermediate certificate: %w", err)
	}
	// Path length 0: this authority signs leaves only.
	tmpl.MaxPathLen, tmpl.MaxPathLenZero = 0, true
	// crypto/x509 takes the authority key identifier from the upstream's
	// subject key identifier, and checks the signature it made.
	der, err := x509.CreateCertificate(rand.Reader, tmpl, up.Cert, pub, up.Signer)
	if err != nil {
		return nil, fmt.Errorf("ca: intermediate certificate: upstream signing: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: intermediate certificate: %w", err)
	}
	return cert, nil
}

func certPool(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func containsCert(certs []*x509.Certificate, c *x509.Certificate) bool {
	for _, have := range certs {
		if have.Equal(c) {
			return true
		}
	}
	return false
}
