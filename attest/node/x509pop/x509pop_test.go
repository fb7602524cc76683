package x509pop

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
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/identity"
)

// t0 is the time every test certificate is made around.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// Keys are made once: RSA generation is slow, and no test depends on a
// key being fresh.
var (
	ecKey  = sync.OnceValue(func() crypto.Signer { return must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader)) })
	rsaKey = sync.OnceValue(func() crypto.Signer { return must(rsa.GenerateKey(rand.Reader, 2048)) })
	edKey  = sync.OnceValue(func() crypto.Signer {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	})
)

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	return must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
}

// authority is a test CA or intermediate.
type authority struct {
	cert *x509.Certificate
	key  crypto.Signer
}

var serial atomic.Int64

func create(t testing.TB, tmpl *x509.Certificate, parent *authority, pub crypto.PublicKey, selfKey crypto.Signer) *x509.Certificate {
	t.Helper()
	tmpl.SerialNumber = big.NewInt(serial.Add(1) + 0x1000)
	parentCert, signer := tmpl, selfKey
	if parent != nil {
		parentCert, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func caTemplate(cn string) *x509.Certificate {
	return &x509.Certificate{
		Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: t0.Add(-24 * time.Hour), NotAfter: t0.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
}

// newAuthority makes a self-signed CA; with parent set, an intermediate under it.
func newAuthority(t testing.TB, cn string, parent *authority) *authority {
	t.Helper()
	key := newKey(t)
	return &authority{cert: create(t, caTemplate(cn), parent, key.Public(), key), key: key}
}

func leafTemplate(cn string) *x509.Certificate {
	return &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		DNSNames:    []string{"node1.example.org", "alt.example.org", "node1.example.org"},
		NotBefore:   t0.Add(-time.Hour),
		NotAfter:    t0.Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}

// node is a leaf certificate, its key and the intermediates it is sent with.
type node struct {
	chain []*x509.Certificate
	key   crypto.Signer
}

func (a *authority) issue(t testing.TB, tmpl *x509.Certificate, key crypto.Signer, intermediates ...*authority) node {
	t.Helper()
	n := node{chain: []*x509.Certificate{create(t, tmpl, a, key.Public(), nil)}, key: key}
	for _, i := range intermediates {
		n.chain = append(n.chain, i.cert)
	}
	return n
}

func (n node) respond(t testing.TB, c Challenge) Response {
	t.Helper()
	sig, err := Sign(c, n.key)
	if err != nil {
		t.Fatal(err)
	}
	return Response{Chain: n.der(), Signature: sig}
}

func (n node) der() [][]byte {
	var der [][]byte
	for _, c := range n.chain {
		der = append(der, c.Raw)
	}
	return der
}

// clock is a settable clock for WithClock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func writeBundle(t testing.TB, certs ...*x509.Certificate) string {
	t.Helper()
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	path := filepath.Join(t.TempDir(), "bundle.pem")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type fixture struct {
	root, inter *authority
	clock       *clock
	v           *Verifier
}

func newFixture(t testing.TB, nodeID string) *fixture {
	t.Helper()
	f := &fixture{clock: &clock{now: t0}}
	f.root = newAuthority(t, "root", nil)
	f.inter = newAuthority(t, "intermediate", f.root)
	v, err := LoadVerifier(Config{BundleFile: writeBundle(t, f.root.cert), NodeID: nodeID}, td, WithClock(f.clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	f.v = v
	return f
}

// refuse checks that Verify refuses r to c with an error containing want.
func (f *fixture) refuse(t *testing.T, c Challenge, r Response, want string) {
	t.Helper()
	res, err := f.v.Verify(c, r)
	if err == nil {
		t.Fatalf("Verify accepted %v, want an error containing %q", res.AgentID, want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("Verify error = %q, want it to contain %q", err, want)
	}
}

func sha(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

func TestVerifyKeyTypes(t *testing.T) {
	f := newFixture(t, "")
	for _, kt := range []struct {
		name string
		key  func() crypto.Signer
	}{{"ecdsa-p256", ecKey}, {"rsa-2048", rsaKey}, {"ed25519", edKey}} {
		for _, viaIntermediate := range []bool{false, true} {
			name := kt.name + "/direct"
			issuer, intermediates := f.root, []*authority(nil)
			if viaIntermediate {
				name = kt.name + "/intermediate"
				issuer, intermediates = f.inter, []*authority{f.inter}
			}
			t.Run(name, func(t *testing.T) {
				n := issuer.issue(t, leafTemplate("node1"), kt.key(), intermediates...)
				c := f.v.NewChallenge()
				res, err := f.v.Verify(c, n.respond(t, c))
				if err != nil {
					t.Fatal(err)
				}
				checkResult(t, res, n, f.root.cert)
			})
		}
	}
}

func checkResult(t *testing.T, res Result, n node, root *x509.Certificate) {
	t.Helper()
	leaf := n.chain[0]
	fp, caFP := sha(leaf.Raw), sha(root.Raw)
	if res.Fingerprint != fp {
		t.Errorf("Fingerprint = %s, want %s", res.Fingerprint, fp)
	}
	if want := "spiffe://example.org/node/x509pop/" + fp; res.AgentID.String() != want {
		t.Errorf("AgentID = %s, want %s", res.AgentID, want)
	}
	if !res.NotAfter.Equal(leaf.NotAfter) {
		t.Errorf("NotAfter = %s, want the leaf's %s", res.NotAfter, leaf.NotAfter)
	}
	var got []string
	for _, sel := range res.Selectors {
		if err := identity.ValidateSelector("selector", sel); err != nil {
			t.Errorf("invalid selector: %v", err)
		}
		got = append(got, sel.String())
	}
	want := []string{
		"x509pop:ca:fingerprint:" + caFP,
		"x509pop:fingerprint:" + fp,
		"x509pop:san:dns:alt.example.org",
		"x509pop:san:dns:node1.example.org",
		"x509pop:subject:cn:node1",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Selectors = %q, want %q", got, want)
	}
	wantFacts := map[string]string{
		"fingerprint": fp, "subject_cn": "node1", "serial": leaf.SerialNumber.Text(16),
		"issuer_cn": leaf.Issuer.CommonName, "san_dns": "node1.example.org", "ca_fingerprint": caFP,
	}
	for k, v := range wantFacts {
		if res.Facts[k] != v {
			t.Errorf("Facts[%s] = %q, want %q", k, res.Facts[k], v)
		}
	}
	if len(res.Facts) != len(wantFacts) {
		t.Errorf("Facts = %v, want only %v", res.Facts, wantFacts)
	}
}

func TestChallenge(t *testing.T) {
	f := newFixture(t, "")
	n := f.root.issue(t, leafTemplate("node1"), newKey(t))

	t.Run("fresh", func(t *testing.T) {
		c := f.v.NewChallenge()
		if len(c.Nonce) != NonceSize || !c.Expires.Equal(t0.Add(ChallengeTTL)) {
			t.Fatalf("challenge = %d-byte nonce expiring %s", len(c.Nonce), c.Expires)
		}
		if other := f.v.NewChallenge(); string(other.Nonce) == string(c.Nonce) {
			t.Fatal("two challenges share a nonce")
		}
	})
	t.Run("expired", func(t *testing.T) {
		f := newFixture(t, "")
		n := f.root.issue(t, leafTemplate("node1"), newKey(t))
		c := f.v.NewChallenge()
		r := n.respond(t, c)
		f.clock.Advance(ChallengeTTL)
		f.refuse(t, c, r, "challenge expired")
	})
	t.Run("expiry is the issued one", func(t *testing.T) {
		f := newFixture(t, "")
		n := f.root.issue(t, leafTemplate("node1"), newKey(t))
		c := f.v.NewChallenge()
		r := n.respond(t, c)
		f.clock.Advance(ChallengeTTL + time.Second)
		c.Expires = c.Expires.Add(time.Hour)
		f.refuse(t, c, r, "expired")
	})
	t.Run("replayed", func(t *testing.T) {
		c := f.v.NewChallenge()
		r := n.respond(t, c)
		if _, err := f.v.Verify(c, r); err != nil {
			t.Fatal(err)
		}
		f.refuse(t, c, r, "already used")
	})
	t.Run("used up by a failed attempt", func(t *testing.T) {
		c := f.v.NewChallenge()
		r := n.respond(t, c)
		bad := r
		bad.Signature = slices.Clone(r.Signature)
		bad.Signature[len(bad.Signature)-1] ^= 1
		f.refuse(t, c, bad, "signature does not verify")
		f.refuse(t, c, r, "already used")
	})
	t.Run("not issued", func(t *testing.T) {
		c := Challenge{Nonce: make([]byte, NonceSize), Expires: t0.Add(time.Minute)}
		rand.Read(c.Nonce)
		f.refuse(t, c, n.respond(t, c), "not issued by this server")
	})
}

// TestConcurrentReplay answers one challenge many times at once: exactly
// one answer may succeed.
func TestConcurrentReplay(t *testing.T) {
	f := newFixture(t, "")
	n := f.root.issue(t, leafTemplate("node1"), newKey(t))
	c := f.v.NewChallenge()
	r := n.respond(t, c)
	var ok atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if _, err := f.v.Verify(c, r); err == nil {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Fatalf("%d concurrent answers to one challenge succeeded, want 1", ok.Load())
	}
}

func TestPendingIsBounded(t *testing.T) {
	f := newFixture(t, "")
	n := f.root.issue(t, leafTemplate("node1"), newKey(t))
	first := f.v.NewChallenge()
	for range maxPending {
		f.v.NewChallenge()
	}
	if len(f.v.pending) > maxPending || len(f.v.issued) > maxPending {
		t.Fatalf("%d challenges remembered, at most %d allowed", len(f.v.pending), maxPending)
	}
	f.refuse(t, first, n.respond(t, first), "not issued by this server")
	last := f.v.NewChallenge()
	if _, err := f.v.Verify(last, n.respond(t, last)); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(ChallengeTTL)
	f.v.NewChallenge()
	if len(f.v.pending) != 1 || len(f.v.issued) != 1 {
		t.Fatalf("expired challenges were not pruned: %d remembered", len(f.v.pending))
	}
}

func TestVerifyRefuses(t *testing.T) {
	f := newFixture(t, "")
	good := f.root.issue(t, leafTemplate("node1"), newKey(t))

	withTemplate := func(edit func(*x509.Certificate)) *x509.Certificate {
		tmpl := leafTemplate("node1")
		edit(tmpl)
		return tmpl
	}
	other := newAuthority(t, "other", nil)

	for _, tc := range []struct {
		name    string
		respond func(c Challenge) Response
		want    string
	}{{
		name:    "leaf from another CA",
		respond: func(c Challenge) Response { return other.issue(t, leafTemplate("node1"), newKey(t)).respond(t, c) },
		want:    "does not chain to a CA in bundle_file",
	}, {
		name:    "intermediate missing from the chain",
		respond: func(c Challenge) Response { return f.inter.issue(t, leafTemplate("node1"), newKey(t)).respond(t, c) },
		want:    "does not chain to a CA in bundle_file",
	}, {
		name: "expired leaf",
		respond: func(c Challenge) Response {
			tmpl := withTemplate(func(l *x509.Certificate) { l.NotBefore, l.NotAfter = t0.Add(-2*time.Hour), t0.Add(-time.Second) })
			return f.root.issue(t, tmpl, newKey(t)).respond(t, c)
		},
		want: "expired at",
	}, {
		name: "leaf not yet valid",
		respond: func(c Challenge) Response {
			tmpl := withTemplate(func(l *x509.Certificate) { l.NotBefore = t0.Add(time.Minute) })
			return f.root.issue(t, tmpl, newKey(t)).respond(t, c)
		},
		want: "not valid until",
	}, {
		name: "CA certificate as the leaf",
		respond: func(c Challenge) Response {
			return node{chain: []*x509.Certificate{f.root.cert}, key: f.root.key}.respond(t, c)
		},
		want: "is a CA certificate",
	}, {
		name: "intermediate as the leaf",
		respond: func(c Challenge) Response {
			return node{chain: []*x509.Certificate{f.inter.cert}, key: f.inter.key}.respond(t, c)
		},
		want: "is a CA certificate",
	}, {
		name: "signature over another nonce",
		respond: func(c Challenge) Response {
			r := good.respond(t, c)
			r.Signature = good.respond(t, f.v.NewChallenge()).Signature
			return r
		},
		want: "signature does not verify",
	}, {
		name: "signature made with another key",
		respond: func(c Challenge) Response {
			r := good.respond(t, c)
			r.Signature = node{key: newKey(t)}.respond(t, c).Signature
			return r
		},
		want: "signature does not verify",
	}, {
		name: "RSA PKCS#1 v1.5 signature",
		respond: func(c Challenge) Response {
			n := f.root.issue(t, leafTemplate("node1"), rsaKey())
			digest := sha256.Sum256(message(c.Nonce))
			sig := must(rsaKey().Sign(rand.Reader, digest[:], crypto.SHA256))
			return Response{Chain: n.der(), Signature: sig}
		},
		want: "signature does not verify",
	}, {
		name: "signature without the domain prefix",
		respond: func(c Challenge) Response {
			n := f.root.issue(t, leafTemplate("node1"), edKey())
			return Response{Chain: n.der(), Signature: must(edKey().Sign(rand.Reader, c.Nonce, crypto.Hash(0)))}
		},
		want: "signature does not verify",
	}, {
		name: "ExtKeyUsage serverAuth only",
		respond: func(c Challenge) Response {
			tmpl := withTemplate(func(l *x509.Certificate) { l.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} })
			return f.root.issue(t, tmpl, newKey(t)).respond(t, c)
		},
		want: "does not allow client authentication",
	}, {
		name: "key usage without digitalSignature",
		respond: func(c Challenge) Response {
			tmpl := withTemplate(func(l *x509.Certificate) { l.KeyUsage = x509.KeyUsageKeyAgreement })
			return f.root.issue(t, tmpl, newKey(t)).respond(t, c)
		},
		want: "lacks digitalSignature",
	}, {
		name:    "no chain",
		respond: func(c Challenge) Response { return Response{Signature: good.respond(t, c).Signature} },
		want:    "has no certificate",
	}, {
		name: "PEM instead of DER",
		respond: func(c Challenge) Response {
			r := good.respond(t, c)
			r.Chain[0] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Chain[0]})
			return r
		},
		want: "not a DER certificate",
	}, {
		name: "too long a chain",
		respond: func(c Challenge) Response {
			r := good.respond(t, c)
			for range maxChainCerts {
				r.Chain = append(r.Chain, f.inter.cert.Raw)
			}
			return r
		},
		want: "at most 8",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			c := f.v.NewChallenge()
			f.refuse(t, c, tc.respond(c), tc.want)
		})
	}
}

// TestNoExtKeyUsage accepts a leaf with no ExtKeyUsage, which RFC 5280
// reads as any use, and no KeyUsage.
func TestNoExtKeyUsage(t *testing.T) {
	f := newFixture(t, "")
	tmpl := leafTemplate("node1")
	tmpl.ExtKeyUsage, tmpl.KeyUsage = nil, 0
	n := f.root.issue(t, tmpl, newKey(t))
	c := f.v.NewChallenge()
	if _, err := f.v.Verify(c, n.respond(t, c)); err != nil {
		t.Fatal(err)
	}
}

func TestNodeIDTemplate(t *testing.T) {
	slashed := leafTemplate("rack1/node1")
	plain := leafTemplate("node1")

	t.Run("subject_cn with a slash is refused", func(t *testing.T) {
		f := newFixture(t, "/node/{{subject_cn}}")
		c := f.v.NewChallenge()
		f.refuse(t, c, f.root.issue(t, slashed, newKey(t)).respond(t, c), "contains '/'")
	})
	t.Run("default template takes any subject", func(t *testing.T) {
		f := newFixture(t, "")
		n := f.root.issue(t, slashed, newKey(t))
		c := f.v.NewChallenge()
		res, err := f.v.Verify(c, n.respond(t, c))
		if err != nil {
			t.Fatal(err)
		}
		if want := "/node/x509pop/" + sha(n.chain[0].Raw); res.AgentID.Path() != want {
			t.Fatalf("AgentID path = %s, want %s", res.AgentID.Path(), want)
		}
		if !slices.Contains(res.Selectors, identity.Selector{Type: SelectorType, Value: "subject:cn:rack1/node1"}) {
			t.Fatalf("no subject selector in %v", res.Selectors)
		}
	})
	t.Run("all placeholders", func(t *testing.T) {
		f := newFixture(t, "/node/{{subject_cn}}/{{serial}}/{{fingerprint}}")
		n := f.root.issue(t, plain, newKey(t))
		c := f.v.NewChallenge()
		res, err := f.v.Verify(c, n.respond(t, c))
		if err != nil {
			t.Fatal(err)
		}
		leaf := n.chain[0]
		if want := "/node/node1/" + leaf.SerialNumber.Text(16) + "/" + sha(leaf.Raw); res.AgentID.Path() != want {
			t.Fatalf("AgentID path = %s, want %s", res.AgentID.Path(), want)
		}
	})
	for _, tc := range []struct{ cn, want string }{
		{"", "is empty"},
		{"..", "dot segment"},
		{"node 1", "contains ' '"},
		{"nöde", "contains 'ö'"},
	} {
		t.Run("subject_cn "+tc.cn, func(t *testing.T) {
			f := newFixture(t, "/node/{{subject_cn}}")
			c := f.v.NewChallenge()
			f.refuse(t, c, f.root.issue(t, leafTemplate(tc.cn), newKey(t)).respond(t, c), tc.want)
		})
	}
}

// TestUnprintableNames leaves out the selectors and facts a rule could
// never name, and keeps the rest.
func TestUnprintableNames(t *testing.T) {
	f := newFixture(t, "")
	tmpl := leafTemplate("node\x01")
	tmpl.DNSNames = nil
	n := f.root.issue(t, tmpl, newKey(t))
	c := f.v.NewChallenge()
	res, err := f.v.Verify(c, n.respond(t, c))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := res.Facts["subject_cn"]; ok {
		t.Errorf("unprintable subject_cn kept in facts: %q", res.Facts)
	}
	if _, ok := res.Facts["san_dns"]; ok {
		t.Errorf("san_dns fact for a certificate without DNS SANs: %q", res.Facts)
	}
	if len(res.Selectors) != 2 {
		t.Errorf("Selectors = %v, want the fingerprint and CA ones only", res.Selectors)
	}
}

// TestSeveralTrustedCAs gives a leaf that chains to two bundle CAs one CA
// selector for each.
func TestSeveralTrustedCAs(t *testing.T) {
	root := newAuthority(t, "root", nil)
	inter := newAuthority(t, "intermediate", root)
	v, err := LoadVerifier(Config{BundleFile: writeBundle(t, root.cert, inter.cert)}, td, WithClock(func() time.Time { return t0 }))
	if err != nil {
		t.Fatal(err)
	}
	n := inter.issue(t, leafTemplate("node1"), newKey(t), inter)
	c := v.NewChallenge()
	res, err := v.Verify(c, n.respond(t, c))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{sha(root.cert.Raw), sha(inter.cert.Raw)}
	slices.Sort(want)
	for _, fp := range want {
		if !slices.Contains(res.Selectors, identity.Selector{Type: SelectorType, Value: "ca:fingerprint:" + fp}) {
			t.Errorf("no selector for trusted CA %s in %v", fp, res.Selectors)
		}
	}
	if got := res.Facts["ca_fingerprint"]; got != strings.Join(want, ",") {
		t.Errorf("ca_fingerprint = %s, want %s", got, strings.Join(want, ","))
	}
}

func TestWeakRSAKey(t *testing.T) {
	f := newFixture(t, "")
	n := f.root.issue(t, leafTemplate("node1"), must(rsa.GenerateKey(rand.Reader, 1024)))
	c := f.v.NewChallenge()
	f.refuse(t, c, n.respond(t, c), "RSA key has 1024 bits")
}

func TestAgentIDTooLong(t *testing.T) {
	f := newFixture(t, "/node/{{subject_cn}}")
	n := f.root.issue(t, leafTemplate(strings.Repeat("n", identity.MaxIDLen)), newKey(t))
	c := f.v.NewChallenge()
	f.refuse(t, c, n.respond(t, c), "shorten node_id")
}

func TestSign(t *testing.T) {
	if _, err := Sign(Challenge{Nonce: []byte("short")}, newKey(t)); err == nil || !strings.Contains(err.Error(), "not 32") {
		t.Fatalf("Sign of a short nonce: err = %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Config
		want string // "" for valid
	}{
		{"default node_id", Config{BundleFile: "ca.pem"}, ""},
		{"custom node_id", Config{BundleFile: "ca.pem", NodeID: "/dc1/{{subject_cn}}/{{serial}}"}, ""},
		{"no bundle", Config{}, "bundle_file: is required"},
		{"relative node_id", Config{BundleFile: "ca.pem", NodeID: "node/{{fingerprint}}"}, "node_id: \"node/{{fingerprint}}\" must start with '/'"},
		{"no placeholder", Config{BundleFile: "ca.pem", NodeID: "/node/fixed"}, "node_id: \"/node/fixed\" has no placeholder"},
		{"unknown placeholder", Config{BundleFile: "ca.pem", NodeID: "/node/{{hostname}}"}, "unknown placeholder"},
		{"placeholder inside a segment", Config{BundleFile: "ca.pem", NodeID: "/node/n-{{serial}}"}, "a placeholder must be a whole path segment"},
		{"unclosed placeholder", Config{BundleFile: "ca.pem", NodeID: "/node/{{serial"}, "a placeholder must be a whole path segment"},
		{"trailing slash", Config{BundleFile: "ca.pem", NodeID: "/node/{{serial}}/"}, "path segment 3 is empty"},
		{"empty segment", Config{BundleFile: "ca.pem", NodeID: "//{{serial}}"}, "path segment 1 is empty"},
		{"dot segment", Config{BundleFile: "ca.pem", NodeID: "/../{{serial}}"}, "dot segment"},
		{"bad character", Config{BundleFile: "ca.pem", NodeID: "/nöde/{{serial}}"}, "contains 'ö'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestLoadVerifier(t *testing.T) {
	root := newAuthority(t, "root", nil)
	leaf := root.issue(t, leafTemplate("node1"), newKey(t)).chain[0]
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("secret key bytes")})
	for _, tc := range []struct {
		name, bundle, want string
		td                 spiffeid.TrustDomain
	}{
		{"missing file", filepath.Join(dir, "absent.pem"), "bundle_file: open", td},
		{"empty file", write("empty.pem", []byte("# no certificates\n")), "holds no PEM certificates", td},
		{"leaf in bundle", writeBundle(t, root.cert, leaf), "PEM block 2 (subject \"CN=node1\") is not a CA certificate", td},
		{"private key in bundle", write("key.pem", keyPEM), "is a \"PRIVATE KEY\", not a CERTIFICATE", td},
		{"no trust domain", writeBundle(t, root.cert), "no trust domain", spiffeid.TrustDomain{}},
		{"invalid config", "", "bundle_file: is required", td},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadVerifier(Config{BundleFile: tc.bundle}, tc.td)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadVerifier() = %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "secret key bytes") {
				t.Fatalf("error echoes the bundle's key: %v", err)
			}
		})
	}
}

// FuzzVerify feeds arbitrary chains and signatures to Verify. Each input
// answers a fresh challenge, and no key of the bundle's CA is known to the
// fuzzer, so Verify must never accept one, nor panic.
func FuzzVerify(f *testing.F) {
	root := newAuthority(f, "root", nil)
	inter := newAuthority(f, "intermediate", root)
	v, err := LoadVerifier(Config{BundleFile: writeBundle(f, root.cert)}, td, WithClock(func() time.Time { return t0 }))
	if err != nil {
		f.Fatal(err)
	}
	for _, key := range []crypto.Signer{newKey(f), edKey()} {
		n := inter.issue(f, leafTemplate("node1"), key, inter)
		r := n.respond(f, v.NewChallenge())
		f.Add(r.Chain[0], r.Chain[1], r.Signature)
		f.Add(r.Chain[0], []byte(nil), r.Signature)
	}
	f.Add([]byte(nil), []byte(nil), []byte(nil))
	f.Add(inter.cert.Raw, root.cert.Raw, []byte{0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01})
	f.Fuzz(func(t *testing.T, leaf, intermediate, sig []byte) {
		var chain [][]byte
		for _, der := range [][]byte{leaf, intermediate} {
			if len(der) > 0 {
				chain = append(chain, der)
			}
		}
		c := v.NewChallenge()
		if res, err := v.Verify(c, Response{Chain: chain, Signature: sig}); err == nil {
			t.Fatalf("Verify accepted a fuzzed response as %v", res.AgentID)
		}
	})
}
