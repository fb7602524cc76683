package ca

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"writ.dev/writ/ca/catest"
	"writ.dev/writ/keystore"
)

var (
	oidExtKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidExtSAN              = asn1.ObjectIdentifier{2, 5, 29, 17}
)

func extension(t *testing.T, cert *x509.Certificate, oid asn1.ObjectIdentifier) pkix.Extension {
	t.Helper()
	for _, e := range cert.Extensions {
		if e.Id.Equal(oid) {
			return e
		}
	}
	t.Fatalf("certificate lacks extension %s", oid)
	return pkix.Extension{}
}

func TestNewRootCert(t *testing.T) {
	now := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, kt := range keystore.KeyTypes {
		t.Run(string(kt), func(t *testing.T) {
			ca := newTestCA(t, kt, now, 24*time.Hour)
			c := ca.Cert
			if !c.IsCA || !c.BasicConstraintsValid {
				t.Fatal("root is not a CA")
			}
			if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
				t.Fatalf("key usage %b, want certSign|crlSign only", c.KeyUsage)
			}
			if !extension(t, c, oidExtKeyUsage).Critical || !extension(t, c, oidExtBasicConstraints).Critical {
				t.Fatal("keyUsage and basicConstraints must be critical")
			}
			if len(c.ExtKeyUsage) != 0 {
				t.Fatalf("root has EKUs %v", c.ExtKeyUsage)
			}
			if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://example.org" {
				t.Fatalf("URI SANs %v, want exactly spiffe://example.org", c.URIs)
			}
			if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
				t.Fatalf("serial %s is not a positive number of at most 128 bits", c.SerialNumber)
			}
			if len(c.SubjectKeyId) != 20 {
				t.Fatalf("subject key id %x", c.SubjectKeyId)
			}
			if !c.NotBefore.Equal(now.Add(-ClockSkew)) || !c.NotAfter.Equal(now.Add(24*time.Hour)) {
				t.Fatalf("validity %s..%s", c.NotBefore, c.NotAfter)
			}
			if err := c.CheckSignatureFrom(c); err != nil {
				t.Fatalf("not self-signed: %v", err)
			}
			if !IsSelfSigned(c) {
				t.Fatal("IsSelfSigned says no")
			}
			if got := c.Subject.CommonName; got != "writ CA example.org" {
				t.Fatalf("CN %q", got)
			}
			if c.Subject.SerialNumber != c.SerialNumber.String() {
				t.Fatalf("subject serial %q, want %s", c.Subject.SerialNumber, c.SerialNumber)
			}
			if td, err := ca.TrustDomain(); err != nil || td != testTD {
				t.Fatalf("TrustDomain: %v %v", td, err)
			}
		})
	}
}

func TestNewRootCertSubjectAndErrors(t *testing.T) {
	now := time.Now()
	key := catest.Key(t, "ec-p256")
	subject := pkix.Name{Organization: []string{"Acme"}, CommonName: "Acme root"}
	c, err := NewRootCert(key, testTD, subject, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject.CommonName != "Acme root" || c.Subject.Organization[0] != "Acme" || c.Subject.SerialNumber != "" {
		t.Fatalf("subject %s, want the one given", c.Subject)
	}
	other, err := NewRootCert(key, testTD, pkix.Name{}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	again, err := NewRootCert(key, testTD, pkix.Name{}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if other.SerialNumber.Cmp(again.SerialNumber) == 0 || other.Subject.String() == again.Subject.String() {
		t.Fatal("two default roots share a serial or subject")
	}

	cases := []struct {
		name   string
		signer crypto.Signer
		td     spiffeid.TrustDomain
		ttl    time.Duration
		want   string
	}{
		{"no signer", nil, testTD, time.Hour, "no signing key"},
		{"no trust domain", key, spiffeid.TrustDomain{}, time.Hour, "trust domain is empty"},
		{"zero ttl", key, testTD, 0, "not positive"},
		{"negative ttl", key, testTD, -time.Hour, "not positive"},
		{"weak key", catest.Key(t, "rsa-1024"), testTD, time.Hour, "RSA key of 1024 bits"},
	}
	for _, tc := range cases {
		_, err := NewRootCert(tc.signer, tc.td, pkix.Name{}, now, tc.ttl)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "ca: ") {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

// checkLeaf asserts the X509-SVID rules on a leaf.
func checkLeaf(t *testing.T, leaf *x509.Certificate, id spiffeid.ID, pub crypto.PublicKey) {
	t.Helper()
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		t.Fatalf("URI SANs %v, want exactly %s", leaf.URIs, id)
	}
	if leaf.IsCA || !leaf.BasicConstraintsValid {
		t.Fatal("leaf must carry basicConstraints CA=false")
	}
	if !extension(t, leaf, oidExtBasicConstraints).Critical || !extension(t, leaf, oidExtKeyUsage).Critical {
		t.Fatal("leaf keyUsage and basicConstraints must be critical")
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		t.Fatal("leaf lacks digitalSignature")
	}
	if leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		t.Fatalf("leaf may sign certificates or CRLs: %b", leaf.KeyUsage)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Fatalf("EKUs %v, want serverAuth and clientAuth", leaf.ExtKeyUsage)
	}
	if len(leaf.UnknownExtKeyUsage) != 0 || len(leaf.EmailAddresses) != 0 || len(leaf.IPAddresses) != 0 {
		t.Fatal("leaf carries SANs or EKUs it was not asked for")
	}
	if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() > 128 {
		t.Fatalf("serial %s", leaf.SerialNumber)
	}
	if !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
		t.Fatal("leaf public key is not the requested one")
	}
}

// checkParsesAsSVID hands the chain and key to go-spiffe's SVID parser,
// which applies the X509-SVID rules to every certificate in the chain.
func checkParsesAsSVID(t *testing.T, chain []*x509.Certificate, key crypto.Signer) {
	t.Helper()
	var raw []byte
	for _, c := range chain {
		raw = append(raw, c.Raw...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x509svid.ParseRaw(raw, keyDER); err != nil {
		t.Fatalf("x509svid.ParseRaw: %v", err)
	}
}

func TestSignX509SVIDEveryKeyType(t *testing.T) {
	now := time.Now()
	id := catest.ID(t, "spiffe://example.org/ns/prod/sa/api")
	for _, caType := range keystore.KeyTypes {
		ca := newTestCA(t, caType, now, 24*time.Hour)
		for _, csrType := range csrKeyTypes {
			t.Run(string(caType)+"/"+csrType, func(t *testing.T) {
				key := catest.Key(t, csrType)
				pub, err := ParseCSR(catest.CSR(t, key, nil))
				if err != nil {
					t.Fatal(err)
				}
				chain, err := ca.SignX509SVID(X509SVIDParams{PublicKey: pub, SPIFFEID: id, DNSNames: []string{"api.example.org", "api"}, TTL: time.Hour}, now)
				if err != nil {
					t.Fatal(err)
				}
				if len(chain) != 1 {
					t.Fatalf("chain under a self-signed root has %d certificates, want the leaf alone", len(chain))
				}
				leaf := chain[0]
				checkLeaf(t, leaf, id, pub)
				if !slices.Equal(leaf.DNSNames, []string{"api.example.org", "api"}) || leaf.Subject.CommonName != "api.example.org" {
					t.Fatalf("DNS %v CN %q", leaf.DNSNames, leaf.Subject.CommonName)
				}
				wantKU := x509.KeyUsageDigitalSignature
				if strings.HasPrefix(csrType, "rsa") {
					wantKU |= x509.KeyUsageKeyEncipherment
				}
				if leaf.KeyUsage != wantKU {
					t.Fatalf("key usage %b, want %b", leaf.KeyUsage, wantKU)
				}
				if !slices.Equal(leaf.AuthorityKeyId, ca.Cert.SubjectKeyId) {
					t.Fatal("authority key id does not name the CA")
				}
				catest.VerifyChain(t, testTD, []*x509.Certificate{ca.Cert}, chain, now, id)
				checkParsesAsSVID(t, chain, key)
			})
		}
	}
}

func TestSignX509SVIDValidity(t *testing.T) {
	now := time.Date(2030, 5, 6, 7, 8, 9, 500_000_000, time.UTC)
	ca := newTestCA(t, keystore.ECP256, now, time.Hour)
	id := catest.ID(t, "spiffe://example.org/w")
	pub := catest.Key(t, "ec-p256").Public()

	sign := func(at time.Time, ttl time.Duration) *x509.Certificate {
		t.Helper()
		chain, err := ca.SignX509SVID(X509SVIDParams{PublicKey: pub, SPIFFEID: id, TTL: ttl}, at)
		if err != nil {
			t.Fatal(err)
		}
		return chain[0]
	}

	later := now.Add(10 * time.Minute)
	leaf := sign(later, 5*time.Minute)
	if want := later.Add(-ClockSkew).Truncate(time.Second); !leaf.NotBefore.Equal(want) {
		t.Fatalf("NotBefore %s, want %s", leaf.NotBefore, want)
	}
	if want := later.Add(5 * time.Minute).Truncate(time.Second); !leaf.NotAfter.Equal(want) {
		t.Fatalf("NotAfter %s, want %s", leaf.NotAfter, want)
	}

	// Asking for more than the CA has left gets exactly what it has left.
	leaf = sign(later, 2*time.Hour)
	if !leaf.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Fatalf("NotAfter %s not clamped to the CA's %s", leaf.NotAfter, ca.Cert.NotAfter)
	}
	catest.VerifyChain(t, testTD, []*x509.Certificate{ca.Cert}, []*x509.Certificate{leaf}, later, id)

	// Right after the CA is made, and with our clock behind the CA's start,
	// the leaf still starts no earlier than the CA.
	for _, at := range []time.Time{now, now.Add(-time.Minute)} {
		leaf = sign(at, time.Minute)
		if leaf.NotBefore.Before(ca.Cert.NotBefore) {
			t.Fatalf("at %s: leaf NotBefore %s precedes the CA's %s", at, leaf.NotBefore, ca.Cert.NotBefore)
		}
	}
}

func TestSignX509SVIDRefuses(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, keystore.ECP256, now, time.Hour)
	pub := catest.Key(t, "ec-p256").Public()
	good := X509SVIDParams{PublicKey: pub, SPIFFEID: catest.ID(t, "spiffe://example.org/w"), TTL: time.Hour}
	if _, err := ca.SignX509SVID(good, now); err != nil {
		t.Fatal(err)
	}

	leafChain, err := ca.SignX509SVID(good, now)
	if err != nil {
		t.Fatal(err)
	}
	notCA := &X509CA{Cert: leafChain[0], Signer: catest.Key(t, "ec-p256")}
	noURI := &X509CA{Cert: &x509.Certificate{IsCA: true, KeyUsage: x509.KeyUsageCertSign, NotAfter: now.Add(time.Hour)}, Signer: ca.Signer}
	badURI := &X509CA{Cert: &x509.Certificate{URIs: []*url.URL{{Scheme: "spiffe", Host: "UPPER"}}}, Signer: ca.Signer}

	with := func(f func(p *X509SVIDParams)) X509SVIDParams {
		p := good
		f(&p)
		return p
	}
	cases := []struct {
		name string
		ca   *X509CA
		p    X509SVIDParams
		now  time.Time
		want string
	}{
		{"zero SPIFFE ID", ca, with(func(p *X509SVIDParams) { p.SPIFFEID = spiffeid.ID{} }), now, "SPIFFE ID is empty"},
		{"other trust domain", ca, with(func(p *X509SVIDParams) { p.SPIFFEID = catest.ID(t, "spiffe://evil.org/w") }), now, "not in trust domain example.org"},
		{"trust domain ID", ca, with(func(p *X509SVIDParams) { p.SPIFFEID = testTD.ID() }), now, "needs a path"},
		{"zero TTL", ca, with(func(p *X509SVIDParams) { p.TTL = 0 }), now, "not positive"},
		{"negative TTL", ca, with(func(p *X509SVIDParams) { p.TTL = -time.Second }), now, "not positive"},
		{"no key", ca, with(func(p *X509SVIDParams) { p.PublicKey = nil }), now, "no public key"},
		{"weak RSA", ca, with(func(p *X509SVIDParams) { p.PublicKey = catest.Key(t, "rsa-1024").Public() }), now, "RSA key of 1024 bits"},
		{"P-224", ca, with(func(p *X509SVIDParams) { p.PublicKey = catest.Key(t, "ec-p224").Public() }), now, "P-224 is not allowed"},
		{"unknown key", ca, with(func(p *X509SVIDParams) { p.PublicKey = "a string" }), now, "string keys are not allowed"},
		{"empty DNS name", ca, with(func(p *X509SVIDParams) { p.DNSNames = []string{""} }), now, "DNS name"},
		{"DNS name with space", ca, with(func(p *X509SVIDParams) { p.DNSNames = []string{"a b"} }), now, "DNS name"},
		{"DNS name with empty label", ca, with(func(p *X509SVIDParams) { p.DNSNames = []string{"a..b"} }), now, "empty label"},
		{"expired CA", ca, good, ca.Cert.NotAfter, "expired"},
		{"long expired CA", ca, good, ca.Cert.NotAfter.Add(time.Hour), "expired"},
		{"nil CA", nil, good, now, "no active CA"},
		{"no signer", &X509CA{Cert: ca.Cert}, good, now, "no active CA"},
		{"leaf as CA", notCA, good, now, "may not sign certificates"},
		{"CA without URI", noURI, good, now, "no spiffe:// URI SAN"},
		{"CA with bad URI", badURI, good, now, "URI SAN"},
	}
	for _, tc := range cases {
		chain, err := tc.ca.SignX509SVID(tc.p, tc.now)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "ca: ") {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
		if chain != nil {
			t.Errorf("%s: returned certificates with an error", tc.name)
		}
	}
	for _, name := range []string{"a", "a.b", "*.example.org", "x-y_z.example", strings.Repeat("a", 63) + ".b"} {
		p := with(func(p *X509SVIDParams) { p.DNSNames = []string{name} })
		if _, err := ca.SignX509SVID(p, now); err != nil {
			t.Errorf("DNS name %q refused: %v", name, err)
		}
	}
}

// A request's own wishes (CA=true, extra URI SANs, DNS names, a subject,
// key usages) must not reach the certificate.
func TestSignX509SVIDIgnoresCSRContent(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, keystore.ECP256, now, time.Hour)
	key := catest.Key(t, "ec-p256")
	caTrue, err := asn1.Marshal(struct {
		IsCA       bool `asn1:"optional"`
		MaxPathLen int  `asn1:"optional,default:-1"`
	}{IsCA: true, MaxPathLen: 5})
	if err != nil {
		t.Fatal(err)
	}
	certSign, err := asn1.Marshal(asn1.BitString{Bytes: []byte{0x06}, BitLength: 7})
	if err != nil {
		t.Fatal(err)
	}
	csr := catest.CSR(t, key, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: "root of everything", Organization: []string{"evil"}},
		DNSNames:       []string{"evil.example.org"},
		EmailAddresses: []string{"evil@example.org"},
		URIs: []*url.URL{
			{Scheme: "spiffe", Host: "example.org", Path: "/admin"},
			{Scheme: "spiffe", Host: "other.org", Path: "/w"},
		},
		ExtraExtensions: []pkix.Extension{
			{Id: oidExtBasicConstraints, Critical: true, Value: caTrue},
			{Id: oidExtKeyUsage, Critical: true, Value: certSign},
		},
	})
	parsed, err := x509.ParseCertificateRequest(csr)
	if err != nil {
		t.Fatal(err)
	}
	asks := map[string]bool{}
	for _, e := range parsed.Extensions {
		asks[e.Id.String()] = true
	}
	if len(parsed.URIs) != 2 || !asks[oidExtBasicConstraints.String()] || !asks[oidExtKeyUsage.String()] {
		t.Fatal("test request does not ask for what it should")
	}

	pub, err := ParseCSR(csr)
	if err != nil {
		t.Fatal(err)
	}
	id := catest.ID(t, "spiffe://example.org/w")
	chain, err := ca.SignX509SVID(X509SVIDParams{PublicKey: pub, SPIFFEID: id, TTL: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]
	checkLeaf(t, leaf, id, key.Public())
	if len(leaf.DNSNames) != 0 || leaf.Subject.CommonName != "" || slices.Contains(leaf.Subject.Organization, "evil") {
		t.Fatalf("leaf took the request's names: DNS %v subject %s", leaf.DNSNames, leaf.Subject)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Fatalf("key usage %b", leaf.KeyUsage)
	}
	if len(leaf.Extensions) != 6 {
		var ids []string
		for _, e := range leaf.Extensions {
			ids = append(ids, e.Id.String())
		}
		t.Fatalf("leaf extensions %v, want keyUsage, EKU, basicConstraints, SKID, AKID and SAN only", ids)
	}
	if extension(t, leaf, oidExtSAN).Critical {
		t.Fatal("SAN is critical although the subject is not empty")
	}
	catest.VerifyChain(t, testTD, []*x509.Certificate{ca.Cert}, chain, now, id)
}

func TestSignX509SVIDIntermediates(t *testing.T) {
	now := time.Now()
	root := newTestCA(t, keystore.ECP384, now, 48*time.Hour)
	inter1 := newIntermediate(t, root, now, 24*time.Hour)
	inter2 := newIntermediate(t, inter1, now, 12*time.Hour)
	if len(inter1.Chain) != 0 || len(inter2.Chain) != 1 {
		t.Fatalf("intermediate chains %d %d", len(inter1.Chain), len(inter2.Chain))
	}
	id := catest.ID(t, "spiffe://example.org/w")
	key := catest.Key(t, "ec-p256")
	for _, tc := range []struct {
		name string
		ca   *X509CA
		want []*x509.Certificate
	}{
		{"one intermediate", inter1, []*x509.Certificate{inter1.Cert}},
		{"two intermediates", inter2, []*x509.Certificate{inter2.Cert, inter1.Cert}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chain, err := tc.ca.SignX509SVID(X509SVIDParams{PublicKey: key.Public(), SPIFFEID: id, TTL: 100 * time.Hour}, now)
			if err != nil {
				t.Fatal(err)
			}
			if len(chain) != 1+len(tc.want) {
				t.Fatalf("chain has %d certificates, want %d", len(chain), 1+len(tc.want))
			}
			for i, c := range tc.want {
				if !chain[i+1].Equal(c) {
					t.Fatalf("chain[%d] is %s, want %s", i+1, chain[i+1].Subject, c.Subject)
				}
			}
			if !chain[0].NotAfter.Equal(tc.ca.Cert.NotAfter) {
				t.Fatal("leaf outlives its signer")
			}
			checkLeaf(t, chain[0], id, key.Public())
			catest.VerifyChain(t, testTD, []*x509.Certificate{root.Cert}, chain, now, id)
			checkParsesAsSVID(t, chain, key)
		})
	}
}

func TestIsSelfSignedWithoutKeyIDs(t *testing.T) {
	now := time.Now()
	root := newTestCA(t, keystore.ECP256, now, time.Hour)
	// Same subject and issuer but no key identifiers: decided by signature.
	c := *root.Cert
	c.AuthorityKeyId, c.SubjectKeyId = nil, nil
	if !IsSelfSigned(&c) {
		t.Fatal("self-signed root without key ids not recognised")
	}
	inter := newIntermediate(t, root, now, time.Hour)
	if IsSelfSigned(inter.Cert) {
		t.Fatal("intermediate taken as self-signed")
	}
}

func TestSignX509SVIDConcurrent(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, keystore.ECP256, now, time.Hour)
	pub := catest.Key(t, "ec-p256").Public()
	var wg sync.WaitGroup
	serials := make(chan string, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := catest.ID(t, fmt.Sprintf("spiffe://example.org/w/%d", i))
			chain, err := ca.SignX509SVID(X509SVIDParams{PublicKey: pub, SPIFFEID: id, TTL: time.Minute}, now)
			if err != nil {
				t.Error(err)
				return
			}
			serials <- chain[0].SerialNumber.String()
		}()
	}
	wg.Wait()
	close(serials)
	seen := map[string]bool{}
	for s := range serials {
		if seen[s] {
			t.Fatal("two leaves share a serial number")
		}
		seen[s] = true
	}
}
