package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testPKI is a company PKI as writ meets it: a root, a policy CA under it
// and an issuing CA under that, none of them knowing about SPIFFE.
type testPKI struct {
	root, policy, issuing *X509CA
}

func makePKICert(t testing.TB, cn string, parent *X509CA, notBefore, notAfter time.Time, pathLen int, isCA bool) *X509CA {
	t.Helper()
	key := testKeyFresh(t)
	serial, err := randomSerial()
	if err != nil {
		t.Fatal(err)
	}
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Example Corp"}, CommonName: cn},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		IsCA:                  isCA,
		SubjectKeyId:          skid,
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
	return &X509CA{Cert: cert, Signer: key}
}

// newTestPKI makes a PKI valid around now whose issuing CA ends after
// issuingLife.
func newTestPKI(t testing.TB, now time.Time, issuingLife time.Duration) *testPKI {
	t.Helper()
	start := now.Add(-time.Hour)
	root := makePKICert(t, "Example Root CA", nil, start, now.Add(10*365*24*time.Hour), -1, true)
	policy := makePKICert(t, "Example Policy CA", root, start, now.Add(5*365*24*time.Hour), -1, true)
	issuing := makePKICert(t, "Example Issuing CA", policy, start, now.Add(issuingLife), 1, true)
	return &testPKI{root: root, policy: policy, issuing: issuing}
}

func (p *testPKI) upstream() *Upstream {
	return &Upstream{
		Cert:   p.issuing.Cert,
		Chain:  []*x509.Certificate{p.policy.Cert},
		Signer: p.issuing.Signer,
		Roots:  []*x509.Certificate{p.root.Cert},
	}
}

// files writes the PKI as an operator would hand it over.
func (p *testPKI) files(t *testing.T) (certFile, keyFile, bundleFile string) {
	t.Helper()
	dir := t.TempDir()
	certFile = filepath.Join(dir, "upstream.pem")
	keyFile = filepath.Join(dir, "upstream.key")
	bundleFile = filepath.Join(dir, "roots.pem")
	writePEM(t, certFile, []*x509.Certificate{p.issuing.Cert, p.policy.Cert})
	writeKeyPEM(t, keyFile, p.issuing.Signer)
	writePEM(t, bundleFile, []*x509.Certificate{p.root.Cert})
	return certFile, keyFile, bundleFile
}

func writeKeyPEM(t testing.TB, path string, key crypto.Signer) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLoadUpstream(t *testing.T) {
	now := time.Now()
	pki := newTestPKI(t, now, 30*24*time.Hour)
	certFile, keyFile, bundleFile := pki.files(t)
	up, err := LoadUpstream(certFile, keyFile, bundleFile)
	if err != nil {
		t.Fatal(err)
	}
	if !up.Cert.Equal(pki.issuing.Cert) || len(up.Chain) != 1 || len(up.Roots) != 1 {
		t.Fatalf("loaded cert/chain/roots wrong: chain %d roots %d", len(up.Chain), len(up.Roots))
	}

	// A cert file that carries the root as well loads, without it in Chain.
	dir := t.TempDir()
	withRoot := filepath.Join(dir, "with-root.pem")
	writePEM(t, withRoot, []*x509.Certificate{pki.issuing.Cert, pki.policy.Cert, pki.root.Cert})
	if up, err := LoadUpstream(withRoot, keyFile, bundleFile); err != nil || len(up.Chain) != 1 {
		t.Fatalf("cert file with the root: %v", err)
	}

	other := newTestPKI(t, now, 30*24*time.Hour)
	_, otherKey, otherBundle := other.files(t)
	noChain := filepath.Join(dir, "no-chain.pem")
	writePEM(t, noChain, []*x509.Certificate{pki.issuing.Cert})
	leaf := makePKICert(t, "not a CA", pki.issuing, now.Add(-time.Hour), now.Add(24*time.Hour), 0, false)
	leafCert, leafKey := filepath.Join(dir, "leaf.pem"), filepath.Join(dir, "leaf.key")
	writePEM(t, leafCert, []*x509.Certificate{leaf.Cert, pki.issuing.Cert, pki.policy.Cert})
	writeKeyPEM(t, leafKey, leaf.Signer)
	zero := makePKICert(t, "path length 0", pki.policy, now.Add(-time.Hour), now.Add(24*time.Hour), 0, true)
	zeroCert, zeroKey := filepath.Join(dir, "zero.pem"), filepath.Join(dir, "zero.key")
	writePEM(t, zeroCert, []*x509.Certificate{zero.Cert, pki.policy.Cert})
	writeKeyPEM(t, zeroKey, zero.Signer)
	expired := makePKICert(t, "expired", pki.policy, now.Add(-48*time.Hour), now.Add(-time.Hour), 1, true)
	expCert, expKey := filepath.Join(dir, "expired.pem"), filepath.Join(dir, "expired.key")
	writePEM(t, expCert, []*x509.Certificate{expired.Cert, pki.policy.Cert})
	writeKeyPEM(t, expKey, expired.Signer)
	readable := filepath.Join(dir, "readable.key")
	writeKeyPEM(t, readable, pki.issuing.Signer)
	if err := os.Chmod(readable, 0o640); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not pem\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, cert, key, bundle, want string
	}{
		{"key does not match", certFile, otherKey, bundleFile, "does not match"},
		{"not a CA", leafCert, leafKey, bundleFile, "not a CA"},
		{"path length 0", zeroCert, zeroKey, bundleFile, "path length 0"},
		{"other PKI's roots", certFile, keyFile, otherBundle, "does not chain to the bundle"},
		{"chain missing", noChain, keyFile, bundleFile, "does not chain to the bundle"},
		{"group-readable key", certFile, readable, bundleFile, "accessible by group or others"},
		{"expired", expCert, expKey, bundleFile, "expired"},
		{"cert file not PEM", garbage, keyFile, bundleFile, "no PEM CERTIFICATE"},
		{"key file not a key", certFile, certFile, bundleFile, "not a private key"},
		{"bundle missing", certFile, keyFile, filepath.Join(dir, "nope.pem"), "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.key == certFile {
				if err := os.Chmod(certFile, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := LoadUpstream(tc.cert, tc.key, tc.bundle)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadUpstream: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
