package x509pop

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/identity"
)

const (
	// maxChainCerts and maxCertSize bound what a node that has not yet
	// proved anything can make the server parse.
	maxChainCerts = 8
	maxCertSize   = 64 << 10
)

// Response is what the node sends back.
type Response struct {
	Chain     [][]byte // its certificate (DER) first, then intermediates
	Signature []byte   // over the challenge message (see Sign) with the certificate's key
}

// Result is what a successful join proved about the node.
type Result struct {
	// Fingerprint is the lower-case hex SHA-256 of the leaf's DER.
	Fingerprint string
	// Facts describe the certificate for logs and audit: fingerprint,
	// subject_cn, serial (lower-case hex), issuer_cn, san_dns (the first
	// DNS SAN) and ca_fingerprint (the trusted CA the leaf chains to;
	// several, comma-separated in sorted order, if it chains to more than
	// one). A fact whose value is empty or not printable is left out.
	Facts map[string]string
	// Selectors are of type SelectorType, sorted: "subject:cn:NAME",
	// "ca:fingerprint:HEX" (one per trusted CA the leaf chains to),
	// "san:dns:NAME" (one per DNS SAN) and "fingerprint:HEX". A selector
	// whose value identity.ValidateSelector refuses (such as a name with a
	// control character) is left out: no rule could name it anyway.
	Selectors []identity.Selector
	// AgentID is the node_id template filled from the certificate, in the
	// Verifier's trust domain.
	AgentID spiffeid.ID
	// NotAfter is the leaf's: the agent's SVID must not outlive it.
	NotAfter time.Time
}

// Verify checks the response r to challenge c: that c was issued by v, is
// unused and unexpired; that the leaf chains to a CA in the bundle through
// the intermediates in r.Chain, allows client authentication (ExtKeyUsage
// clientAuth, or no ExtKeyUsage at all, which RFC 5280 reads as any use),
// is valid now, is not a CA and may sign (digitalSignature, if it has a key
// usage at all); and that r.Signature is the leaf key's signature over c.
// Only c.Nonce is read. The nonce is used up even when Verify fails.
func (v *Verifier) Verify(c Challenge, r Response) (Result, error) {
	now := v.now()
	if err := v.take(c.Nonce, now); err != nil {
		return Result{}, err
	}
	leaf, intermediates, err := parseChain(r.Chain)
	if err != nil {
		return Result{}, err
	}
	if err := checkLeaf(leaf, now); err != nil {
		return Result{}, err
	}
	cas, err := v.verifyChain(leaf, intermediates, now)
	if err != nil {
		return Result{}, err
	}
	if err := verifySignature(leaf.PublicKey, c.Nonce, r.Signature); err != nil {
		return Result{}, err
	}
	return v.result(leaf, cas)
}

// parseChain parses the leaf and intermediates the node sent.
func parseChain(chain [][]byte) (*x509.Certificate, *x509.CertPool, error) {
	switch {
	case len(chain) == 0:
		return nil, nil, errors.New("x509pop: the response has no certificate: send the node certificate first, then any intermediates")
	case len(chain) > maxChainCerts:
		return nil, nil, fmt.Errorf("x509pop: the response has %d certificates, at most %d are accepted: send only the node certificate and its intermediates", len(chain), maxChainCerts)
	}
	certs := make([]*x509.Certificate, len(chain))
	for i, der := range chain {
		if len(der) > maxCertSize {
			return nil, nil, fmt.Errorf("x509pop: certificate %d of the chain is %d bytes, at most %d are accepted", i, len(der), maxCertSize)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("x509pop: certificate %d of the chain is not a DER certificate: %v; send DER, not PEM", i, err)
		}
		certs[i] = cert
	}
	intermediates := x509.NewCertPool()
	for _, cert := range certs[1:] {
		intermediates.AddCert(cert)
	}
	return certs[0], intermediates, nil
}

// checkLeaf checks what the chain verification does not, or does but with
// a message that would not tell the operator what to fix.
func checkLeaf(leaf *x509.Certificate, now time.Time) error {
	switch {
	case leaf.IsCA:
		return errors.New("x509pop: the first certificate of the chain is a CA certificate: send the node's own certificate, issued by the CA, first")
	case leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0:
		return errors.New("x509pop: the node certificate's key usage lacks digitalSignature, so its key may not sign: reissue it with digitalSignature")
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("x509pop: the node certificate is not valid until %s: check the server's and the CA's clocks",
			leaf.NotBefore.UTC().Format(time.RFC3339))
	case now.After(leaf.NotAfter):
		return fmt.Errorf("x509pop: the node certificate expired at %s: renew it", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// verifyChain checks that leaf chains to the bundle and returns the sorted
// fingerprints of the bundle CAs it chains to.
func (v *Verifier) verifyChain(leaf *x509.Certificate, intermediates *x509.CertPool, now time.Time) ([]string, error) {
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         v.roots,
		Intermediates: intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, chainError(err)
	}
	var cas []string
	for _, chain := range chains {
		cas = append(cas, fingerprint(chain[len(chain)-1]))
	}
	slices.Sort(cas)
	return slices.Compact(cas), nil
}

// chainError turns a chain verification failure into advice.
func chainError(err error) error {
	var unknown x509.UnknownAuthorityError
	if errors.As(err, &unknown) {
		return fmt.Errorf("x509pop: the node certificate does not chain to a CA in bundle_file (%v): "+
			"send its intermediates after it, or add its CA to bundle_file", err)
	}
	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) && invalid.Reason == x509.IncompatibleUsage {
		return errors.New("x509pop: the node certificate or an intermediate does not allow client authentication: " +
			"reissue it with ExtKeyUsage clientAuth, or with no ExtKeyUsage")
	}
	return fmt.Errorf("x509pop: the node certificate chain does not verify: %v", err)
}

// result describes a verified leaf.
func (v *Verifier) result(leaf *x509.Certificate, cas []string) (Result, error) {
	fp := fingerprint(leaf)
	serial := leaf.SerialNumber.Text(16)
	path, err := v.nodeID.render(map[string]string{
		placeholderFingerprint: fp,
		placeholderSubjectCN:   leaf.Subject.CommonName,
		placeholderSerial:      serial,
	})
	if err != nil {
		return Result{}, err
	}
	id, err := identity.ParseIDInTrustDomain("node_id", v.td.IDString()+path, v.td)
	if err != nil {
		return Result{}, fmt.Errorf("x509pop: the agent ID made from node_id is not valid: %w; shorten node_id, or use {{fingerprint}} in it instead of a long certificate value", err)
	}
	return Result{
		Fingerprint: fp,
		Facts:       facts(leaf, fp, serial, cas),
		Selectors:   selectors(leaf, fp, cas),
		AgentID:     id,
		NotAfter:    leaf.NotAfter,
	}, nil
}

func facts(leaf *x509.Certificate, fp, serial string, cas []string) map[string]string {
	f := map[string]string{}
	add := func(key, value string) {
		if printable(value) {
			f[key] = value
		}
	}
	add("fingerprint", fp)
	add("subject_cn", leaf.Subject.CommonName)
	add("serial", serial)
	add("issuer_cn", leaf.Issuer.CommonName)
	if len(leaf.DNSNames) > 0 {
		add("san_dns", leaf.DNSNames[0])
	}
	add("ca_fingerprint", strings.Join(cas, ","))
	return f
}

func selectors(leaf *x509.Certificate, fp string, cas []string) []identity.Selector {
	var sels []identity.Selector
	add := func(value string) {
		sel := identity.Selector{Type: SelectorType, Value: value}
		if identity.ValidateSelector("selector", sel) == nil {
			sels = append(sels, sel)
		}
	}
	add("fingerprint:" + fp)
	if cn := leaf.Subject.CommonName; cn != "" {
		add("subject:cn:" + cn)
	}
	for _, ca := range cas {
		add("ca:fingerprint:" + ca)
	}
	for _, name := range leaf.DNSNames {
		add("san:dns:" + name)
	}
	// A certificate may list a DNS name twice; a selector is listed once.
	slices.SortFunc(sels, func(a, b identity.Selector) int { return strings.Compare(a.Value, b.Value) })
	return slices.Compact(sels)
}

// printable reports whether a fact value can be logged and stored as is,
// by the same rule that selector values follow.
func printable(value string) bool {
	return identity.ValidateSelector("fact", identity.Selector{Type: SelectorType, Value: value}) == nil
}

// fingerprint is the lower-case hex SHA-256 of cert's DER.
func fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}
