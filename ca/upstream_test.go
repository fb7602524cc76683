package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
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

func (e *managerEnv) upstreamConfig(up *Upstream) X509ManagerConfig {
	cfg := e.config()
	cfg.Upstream = up
	return cfg
}

func verifyUpstreamChain(t *testing.T, chain []*x509.Certificate, pki *testPKI, now time.Time) {
	t.Helper()
	if len(chain) != 4 {
		t.Fatalf("SVID chain has %d certificates, want leaf, writ intermediate, issuing CA, policy CA", len(chain))
	}
	if !chain[2].Equal(pki.issuing.Cert) || !chain[3].Equal(pki.policy.Cert) {
		t.Fatal("SVID chain does not end with the upstream chain")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	roots := x509.NewCertPool()
	roots.AddCert(pki.root.Cert)
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("crypto/x509 Verify against the upstream root: %v", err)
	}
	bundle := x509bundle.FromX509Authorities(testTD, []*x509.Certificate{pki.root.Cert})
	if _, _, err := x509svid.Verify(chain, bundle, x509svid.WithTime(now)); err != nil {
		t.Fatalf("x509svid.Verify against the upstream root: %v", err)
	}
}

func TestUpstreamManager(t *testing.T) {
	env := newManagerEnv(t)
	env.clock.now = time.Now().Truncate(time.Second)
	now := env.clock.Now()
	pki := newTestPKI(t, now, 365*24*time.Hour)
	up := pki.upstream()
	m, err := NewX509Manager(context.Background(), env.upstreamConfig(up))
	if err != nil {
		t.Fatal(err)
	}
	a := m.Active()
	c := a.Cert
	if isSelfSigned(c) || !up.signs(c) {
		t.Fatal("the CA certificate is not signed by the upstream CA")
	}
	if !c.IsCA || !c.MaxPathLenZero || c.MaxPathLen != 0 {
		t.Fatalf("intermediate: IsCA=%v MaxPathLen=%d zero=%v, want a CA with path length 0", c.IsCA, c.MaxPathLen, c.MaxPathLenZero)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://example.org" {
		t.Fatalf("intermediate URI SANs %v, want spiffe://example.org", c.URIs)
	}
	if !samePublicKey(mustGetKey(t, env, m).Public(), c.PublicKey) {
		t.Fatal("the intermediate's key is not the one in the keystore")
	}
	if len(a.Chain) != 2 || !a.Chain[0].Equal(pki.issuing.Cert) || !a.Chain[1].Equal(pki.policy.Cert) {
		t.Fatal("X509CA.Chain is not the upstream certificate and its chain")
	}
	if b := m.Bundle(); len(b) != 1 || !b[0].Equal(pki.root.Cert) {
		t.Fatalf("bundle holds %d certificates, want the upstream root only", len(b))
	}
	listed, err := env.store.ListCACerts(context.Background(), now)
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || string(listed[0].CertDER) != string(pki.root.Cert.Raw) {
		t.Fatalf("store holds %d CA certificates, want the upstream root only", len(listed))
	}

	chain := signTestSVID(t, m.Active(), now)
	verifyUpstreamChain(t, chain, pki, now)
	opensslVerify(t, pki.root.Cert, chain)

	// A restart keeps the intermediate.
	m2, err := NewX509Manager(context.Background(), env.upstreamConfig(up))
	if err != nil {
		t.Fatal(err)
	}
	if !m2.Active().Cert.Equal(c) || len(m2.Active().Chain) != 2 {
		t.Fatal("restart did not keep the intermediate and its chain")
	}

	// Half life prepares a new intermediate under the upstream; five
	// sixths of life activates it.
	env.clock.Advance(DefaultCATTL/2 + time.Minute)
	for range 2 {
		rotated, err := m2.Rotate(context.Background())
		if err != nil || !rotated {
			t.Fatalf("Rotate = %v, %v; want a rotation step", rotated, err)
		}
		env.clock.Advance(DefaultCATTL / 3)
	}
	n := m2.Active()
	if n.Cert.Equal(c) || !up.signs(n.Cert) || len(n.Chain) != 2 {
		t.Fatal("the rotated CA is not a new intermediate under the upstream")
	}
	if b := m2.Bundle(); len(b) != 1 || !b[0].Equal(pki.root.Cert) {
		t.Fatalf("after rotation the bundle holds %d certificates, want the upstream root only", len(b))
	}
	if err := m2.RefreshBundle(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b := m2.Bundle(); len(b) != 1 || !b[0].Equal(pki.root.Cert) {
		t.Fatalf("after refresh the bundle holds %d certificates, want the upstream root only", len(b))
	}
	later := env.clock.Now()
	verifyUpstreamChain(t, signTestSVID(t, n, later), pki, later)
}

func mustGetKey(t *testing.T, env *managerEnv, m *X509Manager) crypto.Signer {
	t.Helper()
	k, err := env.ks.Get(context.Background(), activeStatus(t, m.Authorities()).KeyName)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func signTestSVID(t *testing.T, a *X509CA, now time.Time) []*x509.Certificate {
	t.Helper()
	pub, err := ParseCSR(makeCSR(t, testKey(t, "ec-p256"), nil))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := a.SignX509SVID(X509SVIDParams{PublicKey: pub, SPIFFEID: mustID(t, "spiffe://example.org/ns/prod/sa/api"), TTL: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	return chain
}

// opensslVerify has OpenSSL check chain (as SignX509SVID returns it)
// against root at the current time.
func opensslVerify(t *testing.T, root *x509.Certificate, chain []*x509.Certificate) {
	t.Helper()
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Log("openssl is not on PATH; skipping the OpenSSL cross-check")
		return
	}
	dir := t.TempDir()
	rootFile := filepath.Join(dir, "upstream-root.pem")
	chainFile := filepath.Join(dir, "chain.pem")
	leafFile := filepath.Join(dir, "leaf.pem")
	writePEM(t, rootFile, []*x509.Certificate{root})
	writePEM(t, chainFile, chain)
	writePEM(t, leafFile, chain[:1])
	out, err := exec.Command(openssl, "verify", "-x509_strict", "-CAfile", rootFile, "-untrusted", chainFile, leafFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "leaf.pem: OK") {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
	// Without the upstream intermediates it must fail, or the check
	// proves nothing about them.
	writePEM(t, chainFile, chain[:2])
	if out, err := exec.Command(openssl, "verify", "-CAfile", rootFile, "-untrusted", chainFile, leafFile).CombinedOutput(); err == nil {
		t.Fatalf("openssl verified a leaf without the upstream chain:\n%s", out)
	}
}

func TestUpstreamOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not on PATH")
	}
	now := time.Now()
	pki := newTestPKI(t, now, 30*24*time.Hour)
	certFile, keyFile, bundleFile := pki.files(t)
	up, err := LoadUpstream(certFile, keyFile, bundleFile)
	if err != nil {
		t.Fatal(err)
	}
	env := newManagerEnv(t)
	env.clock.now = now
	m, err := NewX509Manager(context.Background(), env.upstreamConfig(up))
	if err != nil {
		t.Fatal(err)
	}
	opensslVerify(t, pki.root.Cert, signTestSVID(t, m.Active(), now))
}

func TestUpstreamClampedToUpstreamExpiry(t *testing.T) {
	env := newManagerEnv(t)
	now := env.clock.Now()
	pki := newTestPKI(t, now, 3*time.Hour) // well under the 24h CA TTL
	up := pki.upstream()
	m, err := NewX509Manager(context.Background(), env.upstreamConfig(up))
	if err != nil {
		t.Fatal(err)
	}
	c := m.Active().Cert
	if !c.NotAfter.Equal(pki.issuing.Cert.NotAfter) {
		t.Fatalf("intermediate NotAfter %s, want it clamped to the upstream's %s", c.NotAfter, pki.issuing.Cert.NotAfter)
	}
	chain := signTestSVID(t, m.Active(), now)
	verifyUpstreamChain(t, chain, pki, now)

	// Past half life a successor could not outlive the upstream either,
	// so the CA is kept rather than re-made ever faster.
	env.clock.Advance(2 * time.Hour)
	rotated, err := m.Rotate(context.Background())
	if err != nil || rotated {
		t.Fatalf("Rotate = %v, %v; want no rotation while clamped to the upstream", rotated, err)
	}
	// Nor is an upstream that has so little left accepted at start.
	env.clock.Advance(time.Hour - 30*time.Second)
	if _, err := NewX509Manager(context.Background(), env.upstreamConfig(up)); err == nil || !strings.Contains(err.Error(), "renew it") {
		t.Fatalf("NewX509Manager with a nearly expired upstream: %v, want a refusal", err)
	}
	env.clock.Advance(time.Hour)
	if err := up.Validate(env.clock.Now()); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("Validate of an expired upstream: %v", err)
	}
}

func TestUpstreamSwitchFromSelfSigned(t *testing.T) {
	env := newManagerEnv(t)
	self := env.open(t)
	root := self.Active().Cert
	now := env.clock.Now()
	pki := newTestPKI(t, now, 365*24*time.Hour)
	m, err := NewX509Manager(context.Background(), env.upstreamConfig(pki.upstream()))
	if err != nil {
		t.Fatal(err)
	}
	if !pki.upstream().signs(m.Active().Cert) {
		t.Fatal("switching to an upstream kept the self-signed CA")
	}
	// The old root stays trusted until it expires: what it signed lives on.
	if !inBundle(m.Bundle(), root) || !inBundle(m.Bundle(), pki.root.Cert) {
		t.Fatal("bundle after the switch lacks the old root or the upstream root")
	}
	// And back: an intermediate without its upstream is replaced.
	m2 := env.open(t)
	if !isSelfSigned(m2.Active().Cert) {
		t.Fatal("removing the upstream kept the intermediate")
	}
	// A different upstream re-signs too.
	other := newTestPKI(t, now, 365*24*time.Hour)
	m3, err := NewX509Manager(context.Background(), env.upstreamConfig(other.upstream()))
	if err != nil {
		t.Fatal(err)
	}
	if !other.upstream().signs(m3.Active().Cert) {
		t.Fatal("a new upstream did not re-sign the CA")
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
