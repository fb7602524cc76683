// Package ca signs: X509-SVIDs, JWT-SVIDs and CA certificates, from keys it
// is handed. It keeps no state and knows nothing of the store or the audit
// log; package ca/rotation keeps the authorities over time. The X.509 authority issues
// X509-SVIDs as the SPIFFE X509-SVID specification describes them: a leaf
// with exactly one URI SAN (its SPIFFE ID) that cannot sign certificates,
// under signing certificates that carry the trust domain's SPIFFE ID.
package ca

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ClockSkew is how far NotBefore is moved back so that a peer whose clock
// runs a little behind ours still accepts a certificate the moment it is made.
const ClockSkew = 30 * time.Second

const (
	// DefaultCATTL is a CA's lifetime when the configuration names none.
	DefaultCATTL = 24 * time.Hour
	// MinCATTL keeps a CA's half life well above ClockSkew, which is counted
	// in its validity and would otherwise rotate it at once.
	MinCATTL = time.Minute
)

// X509CA is one signing authority: Cert is its certificate and Signer its key.
// Chain holds certificates between Cert and the root, excluding the root
// (empty when Cert is a self-signed root).
type X509CA struct {
	Cert   *x509.Certificate
	Signer crypto.Signer
	Chain  []*x509.Certificate
}

// X509SVIDParams describes the leaf SignX509SVID issues.
type X509SVIDParams struct {
	PublicKey crypto.PublicKey
	SPIFFEID  spiffeid.ID
	// DNSNames become DNS SANs in order; the first is also the subject CN,
	// for clients that still look there.
	DNSNames []string
	TTL      time.Duration
}

// serialLimit bounds serial numbers to 128 random bits: unguessable, and
// within the 20 octets RFC 5280 allows even with DER's sign byte.
var serialLimit = new(big.Int).Lsh(big.NewInt(1), 128)

func randomSerial() (*big.Int, error) {
	for {
		n, err := rand.Int(rand.Reader, serialLimit)
		if err != nil {
			return nil, fmt.Errorf("ca: serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// subjectKeyID follows RFC 7093 method 1: the leftmost 160 bits of the
// SHA-256 of the subjectPublicKey bit string.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	keyBits, err := spkiKeyBits(spki)
	if err != nil {
		return nil, err
	}
	return keyIDFromBits(keyBits), nil
}

// NewRootCert self-signs a CA certificate for trust domain td, valid from
// now-ClockSkew to now+ttl. It names the trust domain in its only URI SAN,
// may sign certificates and CRLs and nothing else. An empty subject becomes
// O=writ, CN=writ CA <td>, with the serial number as SERIALNUMBER so that
// successive roots have distinct names.
func NewRootCert(signer crypto.Signer, td spiffeid.TrustDomain, subject pkix.Name, now time.Time, ttl time.Duration) (*x509.Certificate, error) {
	switch {
	case signer == nil:
		return nil, errors.New("ca: root certificate: no signing key")
	case td.IsZero():
		return nil, errors.New("ca: root certificate: trust domain is empty")
	case ttl <= 0:
		return nil, fmt.Errorf("ca: root certificate: TTL %s is not positive", ttl)
	}
	pub := signer.Public()
	if err := checkCAKey(pub); err != nil {
		return nil, err
	}
	tmpl, err := caTemplate(pub, td, subject, now.Add(-ClockSkew), now.Add(ttl))
	if err != nil {
		return nil, fmt.Errorf("ca: root certificate: %w", err)
	}
	// RFC 5280 lets a self-signed certificate omit this; naming itself lets
	// IsSelfSigned decide without checking a signature.
	tmpl.AuthorityKeyId = tmpl.SubjectKeyId
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("ca: root certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: root certificate: %w", err)
	}
	return cert, nil
}

// caTemplate is the certificate of a writ signing authority, root or
// intermediate: a CA for the trust domain (URI SAN spiffe://TD) that signs
// certificates and CRLs. An empty subject gets writ's default name, with the
// serial in it so that successive authorities have distinct names.
func caTemplate(pub crypto.PublicKey, td spiffeid.TrustDomain, subject pkix.Name, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	skid, err := subjectKeyID(pub)
	if err != nil {
		return nil, err
	}
	if isEmptyName(subject) {
		subject = pkix.Name{
			Organization: []string{"writ"},
			CommonName:   "writ CA " + td.Name(),
			SerialNumber: serial.String(),
		}
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          skid,
		URIs:                  []*url.URL{td.ID().URL()},
	}, nil
}

func isEmptyName(n pkix.Name) bool {
	return len(n.ToRDNSequence()) == 0
}

// checkCAKey accepts the key types keystore makes and any other key
// crypto/x509 can sign with; what it refuses would fail later, less clearly.
func checkCAKey(pub crypto.PublicKey) error {
	if err := checkPublicKey(pub); err != nil {
		return fmt.Errorf("ca: signing key: %w", err)
	}
	return nil
}

// TrustDomain is the trust domain the authority signs for: the one its
// certificate names in its URI SAN.
func (ca *X509CA) TrustDomain() (spiffeid.TrustDomain, error) {
	if ca == nil || ca.Cert == nil {
		return spiffeid.TrustDomain{}, errors.New("ca: no CA certificate")
	}
	for _, u := range ca.Cert.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		id, err := spiffeid.FromURI(u)
		if err != nil {
			return spiffeid.TrustDomain{}, fmt.Errorf("ca: CA certificate URI SAN %q: %w", u, err)
		}
		return id.TrustDomain(), nil
	}
	return spiffeid.TrustDomain{}, errors.New("ca: CA certificate has no spiffe:// URI SAN naming its trust domain")
}

// SignX509SVID issues an X509-SVID for p.PublicKey and returns the chain to
// hand to the workload: the leaf, then the intermediates up to but not
// including the root (the root travels in the trust bundle). Under a
// self-signed root that is the leaf alone.
//
// The leaf is valid from now-ClockSkew (never before the CA itself) until
// now+p.TTL, clamped to the CA's NotAfter so it never outlives its signer.
func (ca *X509CA) SignX509SVID(p X509SVIDParams, now time.Time) ([]*x509.Certificate, error) {
	in, err := ca.leafInputs(p, now)
	if err != nil {
		return nil, err
	}
	leaf, err := ca.issueLeaf(in)
	if err != nil {
		return nil, fmt.Errorf("ca: sign X509-SVID for %s: %w", p.SPIFFEID, err)
	}

	chain := make([]*x509.Certificate, 0, 2+len(ca.Chain))
	chain = append(chain, leaf)
	if !IsSelfSigned(ca.Cert) {
		chain = append(chain, ca.Cert)
	}
	chain = append(chain, ca.Chain...)
	return chain, nil
}

// leafInputs checks a request against the X509-SVID rules and this CA, and
// works out everything the leaf needs, a fresh serial number included.
func (ca *X509CA) leafInputs(p X509SVIDParams, now time.Time) (*leafInputs, error) {
	if ca == nil || ca.Cert == nil || ca.Signer == nil {
		return nil, errors.New("ca: sign X509-SVID: no active CA")
	}
	if p.SPIFFEID.IsZero() {
		return nil, errors.New("ca: sign X509-SVID: SPIFFE ID is empty")
	}
	if p.SPIFFEID.Path() == "" {
		return nil, fmt.Errorf("ca: sign X509-SVID: SPIFFE ID %q names the trust domain itself: an SVID needs a path", p.SPIFFEID)
	}
	if p.TTL <= 0 {
		return nil, fmt.Errorf("ca: sign X509-SVID for %s: TTL %s is not positive", p.SPIFFEID, p.TTL)
	}
	if err := checkPublicKey(p.PublicKey); err != nil {
		return nil, fmt.Errorf("ca: sign X509-SVID for %s: %w", p.SPIFFEID, err)
	}
	for _, name := range p.DNSNames {
		if err := checkDNSName(name); err != nil {
			return nil, fmt.Errorf("ca: sign X509-SVID for %s: %w", p.SPIFFEID, err)
		}
	}
	td, err := ca.TrustDomain()
	if err != nil {
		return nil, err
	}
	if !p.SPIFFEID.MemberOf(td) {
		return nil, fmt.Errorf("ca: sign X509-SVID: %s is not in trust domain %s, the only one this CA signs for", p.SPIFFEID, td)
	}
	if !ca.Cert.IsCA || ca.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("ca: sign X509-SVID: the CA certificate may not sign certificates (needs CA=true and keyCertSign)")
	}
	if !now.Before(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("ca: sign X509-SVID: the CA expired at %s; it must be rotated", ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}

	notBefore := now.Add(-ClockSkew)
	if notBefore.Before(ca.Cert.NotBefore) {
		notBefore = ca.Cert.NotBefore
	}
	notAfter := now.Add(p.TTL)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	// Certificates hold whole seconds; truncating both ends keeps the leaf
	// inside the CA's window, whose ends are whole seconds too.
	notBefore = notBefore.Truncate(time.Second)
	notAfter = notAfter.Truncate(time.Second)
	if !notAfter.After(notBefore) {
		return nil, fmt.Errorf("ca: sign X509-SVID for %s: the CA's remaining lifetime leaves no room for a certificate", p.SPIFFEID)
	}

	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	in, err := newLeafInputs(p.PublicKey, p.SPIFFEID.URL(), p.DNSNames, serial, notBefore, notAfter)
	if err != nil {
		return nil, fmt.Errorf("ca: sign X509-SVID for %s: %w", p.SPIFFEID, err)
	}
	return in, nil
}

// IsSelfSigned decides cheaply when the names differ or both key
// identifiers are present (as in every root NewRootCert makes); otherwise it
// has to check the signature, which costs about as much as signing.
func IsSelfSigned(c *x509.Certificate) bool {
	if !bytes.Equal(c.RawSubject, c.RawIssuer) {
		return false
	}
	if len(c.AuthorityKeyId) > 0 && len(c.SubjectKeyId) > 0 {
		return bytes.Equal(c.AuthorityKeyId, c.SubjectKeyId)
	}
	return c.CheckSignatureFrom(c) == nil
}

// checkDNSName accepts host names and a leading "*." wildcard: labels of 1
// to 63 letters, digits, '-' or '_', at most 253 characters in all.
func checkDNSName(name string) error {
	host := name
	if len(host) > 2 && host[:2] == "*." {
		host = host[2:]
	}
	if host == "" || len(name) > 253 {
		return fmt.Errorf("DNS name %q must be 1 to 253 characters", name)
	}
	label := 0
	for i := 0; i < len(host); i++ {
		c := host[i]
		switch {
		case c == '.':
			if label == 0 {
				return fmt.Errorf("DNS name %q has an empty label", name)
			}
			label = 0
			continue
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return fmt.Errorf("DNS name %q has character %q: use letters, digits, '-', '_' and '.'", name, c)
		}
		label++
		if label > 63 {
			return fmt.Errorf("DNS name %q has a label longer than 63 characters", name)
		}
	}
	if label == 0 {
		return fmt.Errorf("DNS name %q ends with an empty label", name)
	}
	return nil
}
