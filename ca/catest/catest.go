// Package catest is test support for ca and the packages built on it: keys
// made once per test binary, a company PKI as writ meets one, and the
// checks every chain writ issues must pass. It imports nothing of writ's,
// so ca's own tests can use it without an import cycle.
package catest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ID parses a SPIFFE ID a test spells out, failing the test on a typo.
func ID(t testing.TB, s string) spiffeid.ID {
	t.Helper()
	id, err := spiffeid.FromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

var (
	keysMu sync.Mutex
	keys   = map[string]crypto.Signer{}
)

// Key returns one key per type for the whole test binary: RSA keys are
// slow to make and nothing that uses these depends on a key being fresh.
// kind is a keystore key type name, or ec-p224 or rsa-1024 for keys writ
// must refuse.
func Key(t testing.TB, kind string) crypto.Signer {
	t.Helper()
	keysMu.Lock()
	defer keysMu.Unlock()
	if k, ok := keys[kind]; ok {
		return k
	}
	var (
		k   crypto.Signer
		err error
	)
	switch kind {
	case "ec-p224":
		k, err = ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	case "ec-p256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ec-p384":
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ec-p521":
		k, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "rsa-1024":
		k, err = rsa.GenerateKey(rand.Reader, 1024)
	case "rsa-2048":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case "rsa-3072":
		k, err = rsa.GenerateKey(rand.Reader, 3072)
	case "ed25519":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("unknown test key type %q", kind)
	}
	if err != nil {
		t.Fatalf("generate %s: %v", kind, err)
	}
	keys[kind] = k
	return k
}

// FreshKey is a new P-256 key, for certificates that must not share one.
func FreshKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// CSR is a certificate request signed by key, from tmpl (nil: empty).
func CSR(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// Authority is a certificate and the key that signs under it.
type Authority struct {
	Cert   *x509.Certificate
	Signer crypto.Signer
}

// PKI is a company PKI as writ meets it: a root, a policy CA under it and
// an issuing CA under that, none of them knowing about SPIFFE.
type PKI struct {
	Root, Policy, Issuing *Authority
}

// NewPKI makes a PKI valid around now whose issuing CA ends after
// issuingLife.
func NewPKI(t testing.TB, now time.Time, issuingLife time.Duration) *PKI {
	t.Helper()
	start := now.Add(-time.Hour)
	root := Cert(t, "Example Root CA", nil, start, now.Add(10*365*24*time.Hour), -1, true)
	policy := Cert(t, "Example Policy CA", root, start, now.Add(5*365*24*time.Hour), -1, true)
	issuing := Cert(t, "Example Issuing CA", policy, start, now.Add(issuingLife), 1, true)
	return &PKI{Root: root, Policy: policy, Issuing: issuing}
}

// Cert makes a certificate of the company PKI under parent (nil: self
// signed): a CA with path length pathLen (-1: unlimited) when isCA, else a
// leaf.
func Cert(t testing.TB, cn string, parent *Authority, notBefore, notAfter time.Time, pathLen int, isCA bool) *Authority {
	t.Helper()
	key := FreshKey(t)
	// The PKI needs only serials that differ and key identifiers that are
	// present, not ca's own rules for either.
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	skid := sha256.Sum256(spki)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Example Corp"}, CommonName: cn},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		IsCA:                  isCA,
		SubjectKeyId:          skid[:20],
	}
	if isCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		tmpl.MaxPathLen = pathLen
		tmpl.MaxPathLenZero = pathLen == 0
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
	issuer, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		issuer, signer = parent.Cert, parent.Signer
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &Authority{Cert: cert, Signer: key}
}

// Files writes the PKI as an operator would hand it over: the issuing CA
// with its chain, its key, and the root as the bundle.
func (p *PKI) Files(t testing.TB) (certFile, keyFile, bundleFile string) {
	t.Helper()
	dir := t.TempDir()
	certFile = filepath.Join(dir, "upstream.pem")
	keyFile = filepath.Join(dir, "upstream.key")
	bundleFile = filepath.Join(dir, "roots.pem")
	WritePEM(t, certFile, []*x509.Certificate{p.Issuing.Cert, p.Policy.Cert})
	WriteKeyPEM(t, keyFile, p.Issuing.Signer)
	WritePEM(t, bundleFile, []*x509.Certificate{p.Root.Cert})
	return certFile, keyFile, bundleFile
}

// WriteKeyPEM writes key as PKCS #8 PEM, mode 0600.
func WriteKeyPEM(t testing.TB, path string, key crypto.Signer) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// WritePEM writes certs as PEM, in order.
func WritePEM(t testing.TB, path string, certs []*x509.Certificate) {
	t.Helper()
	var data []byte
	for _, c := range certs {
		data = append(data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// VerifyChain checks chain against roots with crypto/x509 for both TLS
// roles and with go-spiffe's X509-SVID verification in trust domain td,
// which must find id.
func VerifyChain(t testing.TB, td spiffeid.TrustDomain, roots, chain []*x509.Certificate, now time.Time, id spiffeid.ID) {
	t.Helper()
	rootPool := x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := chain[0].Verify(x509.VerifyOptions{Roots: rootPool, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Fatalf("crypto/x509 verify for EKU %v: %v", usage, err)
		}
	}
	bundle := x509bundle.FromX509Authorities(td, roots)
	got, _, err := x509svid.Verify(chain, bundle, x509svid.WithTime(now))
	if err != nil {
		t.Fatalf("x509svid.Verify: %v", err)
	}
	if got != id {
		t.Fatalf("x509svid.Verify returned %s, want %s", got, id)
	}
}
