package ca

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"io"
	"math/big"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/ca/catest"
	"writ.dev/writ/keystore"
)

// encoderCAKeyTypes are the CA key types the leaf encoder handles: every
// keystore type, and the other keys NewRootCert accepts.
var encoderCAKeyTypes = []string{"ec-p256", "ec-p384", "ec-p521", "rsa-2048", "rsa-3072", "ed25519"}

// leafKeyTypes are the workload keys the byte-equality tests cover.
var leafKeyTypes = []string{"ec-p256", "ec-p384", "ec-p521", "rsa-2048", "ed25519"}

// testCAFor makes a self-signed root with catest.Key(kind) as its key, valid
// from start-ClockSkew for ttl.
func testCAFor(t testing.TB, kind string, subject pkix.Name, start time.Time, ttl time.Duration) *X509CA {
	t.Helper()
	key := catest.Key(t, kind)
	cert, err := NewRootCert(key, testTD, subject, start, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return &X509CA{Cert: cert, Signer: key}
}

// createReference is what crypto/x509 makes of the same inputs.
func createReference(t testing.TB, ca *X509CA, in *leafInputs) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, in.template(), ca.Cert, in.publicKey, ca.Signer)
	if err != nil {
		t.Fatalf("CreateCertificate: %v", err)
	}
	ref, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// deterministic reports whether ca's signatures depend only on the message
// (RSA PKCS #1 v1.5 and Ed25519), so whole certificates can be compared.
func deterministic(ca *X509CA) bool {
	switch signingFor(ca.Signer.Public()) {
	case sigSHA256WithRSA, sigPureEd25519:
		return true
	}
	return false
}

// compareLeaf issues in through the encoder and through CreateCertificate
// and fails unless the two TBSCertificates are the same bytes.
func compareLeaf(t *testing.T, ca *X509CA, in *leafInputs) {
	t.Helper()
	if signingFor(ca.Signer.Public()) == nil {
		t.Fatalf("CA key %T is not handled by the encoder", ca.Signer.Public())
	}
	tbs, err := encodeLeafTBS(ca.Cert, signingFor(ca.Signer.Public()), in)
	if err != nil {
		t.Fatalf("encodeLeafTBS: %v", err)
	}
	ref := createReference(t, ca, in)
	if !bytes.Equal(tbs, ref.RawTBSCertificate) {
		t.Fatalf("TBSCertificate differs from CreateCertificate's\n got %s\nwant %s", hex.EncodeToString(tbs), hex.EncodeToString(ref.RawTBSCertificate))
	}
	leaf, err := ca.issueLeaf(in)
	if err != nil {
		t.Fatalf("issueLeaf: %v", err)
	}
	if !bytes.Equal(leaf.RawTBSCertificate, ref.RawTBSCertificate) {
		t.Fatal("issued leaf's TBSCertificate differs from the encoded one")
	}
	if deterministic(ca) && !bytes.Equal(leaf.Raw, ref.Raw) {
		t.Fatalf("certificate differs from CreateCertificate's\n got %s\nwant %s", hex.EncodeToString(leaf.Raw), hex.EncodeToString(ref.Raw))
	}
	if err := leaf.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatalf("leaf signature: %v", err)
	}
}

func TestLeafEncodingMatchesCreateCertificate(t *testing.T) {
	// One CA per key type, valid from 1990 for 200 years, so that leaves on
	// either side of 2050 (UTCTime, then GeneralizedTime) are plausible.
	start := time.Date(1990, 1, 1, 0, 0, 0, 0, time.UTC)
	id := catest.ID(t, "spiffe://example.org/ns/prod/sa/api")
	type window struct {
		name                string
		notBefore, notAfter time.Time
	}
	windows := []window{
		{"before 2050", time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC), time.Date(2030, 5, 6, 8, 8, 9, 0, time.UTC)},
		{"across 2050", time.Date(2049, 12, 31, 23, 30, 0, 0, time.UTC), time.Date(2050, 1, 1, 0, 30, 0, 0, time.UTC)},
		{"last UTCTime second", time.Date(2049, 12, 31, 23, 59, 58, 0, time.UTC), time.Date(2049, 12, 31, 23, 59, 59, 0, time.UTC)},
		{"after 2050", time.Date(2061, 2, 3, 4, 5, 6, 0, time.UTC), time.Date(2061, 2, 4, 4, 5, 6, 0, time.UTC)},
		{"not UTC", time.Date(2030, 1, 1, 0, 0, 0, 0, time.FixedZone("x", 5*3600+30*60)), time.Date(2030, 1, 2, 0, 0, 0, 0, time.FixedZone("y", -7*3600))},
	}
	dnsSets := [][]string{
		nil,
		{"api.example.org"},
		{"*.example.org", "api_internal", "a"}, // CN not a PrintableString
	}
	serials := []*big.Int{
		big.NewInt(1),
		big.NewInt(0x7f),
		big.NewInt(0x80), // needs a leading zero byte
		new(big.Int).Lsh(big.NewInt(1), 127),
		mustSerial(t),
	}

	for _, caType := range encoderCAKeyTypes {
		ca := testCAFor(t, caType, pkix.Name{}, start, 200*365*24*time.Hour)
		for _, leafType := range leafKeyTypes {
			for i, dns := range dnsSets {
				for _, w := range windows {
					name := caType + "/" + leafType + "/dns" + string(rune('0'+i)) + "/" + w.name
					t.Run(name, func(t *testing.T) {
						serial := serials[len(name)%len(serials)]
						in, err := newLeafInputs(catest.Key(t, leafType).Public(), id.URL(), dns, serial, w.notBefore, w.notAfter)
						if err != nil {
							t.Fatal(err)
						}
						compareLeaf(t, ca, in)
					})
				}
			}
		}
	}

	t.Run("serials", func(t *testing.T) {
		ca := testCAFor(t, "ec-p256", pkix.Name{}, start, 100*365*24*time.Hour)
		for _, serial := range append(serials, big.NewInt(0), new(big.Int).Lsh(big.NewInt(1), 200)) {
			in, err := newLeafInputs(catest.Key(t, "ec-p256").Public(), id.URL(), nil, serial, windows[0].notBefore, windows[0].notAfter)
			if err != nil {
				t.Fatal(err)
			}
			compareLeaf(t, ca, in)
		}
	})
}

// The authority key identifier depends on the issuer: absent when the CA
// has no subject key identifier, or when the leaf's name equals the CA's.
func TestLeafEncodingIssuers(t *testing.T) {
	now := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	id := catest.ID(t, "spiffe://example.org/w")
	root := newTestCA(t, keystore.ECP256, now, 48*time.Hour)
	inter := newIntermediate(t, root, now, 24*time.Hour)

	noSKID := *root.Cert
	noSKID.SubjectKeyId = nil

	longName := pkix.Name{Organization: []string{strings.Repeat("o", 200)}, CommonName: strings.Repeat("c", 60)}
	cases := []struct {
		name string
		ca   *X509CA
		dns  []string
	}{
		{"intermediate", inter, []string{"api.example.org"}},
		{"CA without subject key id", &X509CA{Cert: &noSKID, Signer: root.Signer}, []string{"api.example.org"}},
		{"CA named like the leaf", testCAFor(t, "ec-p384", pkix.Name{Organization: []string{"writ"}}, now, time.Hour), nil},
		{"CA named like the leaf with CN", testCAFor(t, "rsa-2048", pkix.Name{Organization: []string{"writ"}, CommonName: "api"}, now, time.Hour), []string{"api"}},
		{"CA with a long name", testCAFor(t, "ec-p256", longName, now, time.Hour), []string{"api"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in, err := newLeafInputs(catest.Key(t, "ec-p256").Public(), id.URL(), tc.dns, mustSerial(t), now, now.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			compareLeaf(t, tc.ca, in)
		})
	}

	// Many and long DNS names push lengths past two bytes.
	t.Run("large", func(t *testing.T) {
		var dns []string
		for i := range 400 {
			dns = append(dns, strings.Repeat(string(rune('a'+i%26)), 60)+".example.org")
		}
		in, err := newLeafInputs(catest.Key(t, "rsa-3072").Public(), id.URL(), dns, mustSerial(t), now, now.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		compareLeaf(t, root, in)
	})
}

func mustSerial(t testing.TB) *big.Int {
	t.Helper()
	s, err := randomSerial()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// signerOnly hides the concrete key type, as an HSM or remote signer would.
type signerOnly struct {
	crypto.Signer
}

// corruptSigner returns signatures with one bit flipped.
type corruptSigner struct {
	crypto.Signer
}

func (s corruptSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := s.Signer.Sign(r, digest, opts)
	if err != nil {
		return nil, err
	}
	sig[len(sig)/2] ^= 0x01
	return sig, nil
}

func TestSignX509SVIDChecksOpaqueSigners(t *testing.T) {
	now := time.Now()
	id := catest.ID(t, "spiffe://example.org/w")
	pub := catest.Key(t, "ec-p256").Public()
	p := X509SVIDParams{PublicKey: pub, SPIFFEID: id, DNSNames: []string{"w.example.org"}, TTL: time.Hour}
	for _, caType := range encoderCAKeyTypes {
		t.Run(caType, func(t *testing.T) {
			ca := testCAFor(t, caType, pkix.Name{}, now, time.Hour)

			honest := &X509CA{Cert: ca.Cert, Signer: signerOnly{ca.Signer}}
			if isSoftwareKey(honest.Signer) {
				t.Fatal("wrapper taken for a software key")
			}
			chain, err := honest.SignX509SVID(p, now)
			if err != nil {
				t.Fatalf("an honest opaque signer is refused: %v", err)
			}
			checkLeaf(t, chain[0], id, pub)
			catest.VerifyChain(t, testTD, []*x509.Certificate{ca.Cert}, chain, now, id)

			bad := &X509CA{Cert: ca.Cert, Signer: corruptSigner{ca.Signer}}
			chain, err = bad.SignX509SVID(p, now)
			if err == nil || !strings.Contains(err.Error(), "does not verify") || !strings.HasPrefix(err.Error(), "ca: ") {
				t.Fatalf("a corrupted signature got %v, want an error saying it does not verify", err)
			}
			if chain != nil {
				t.Fatal("certificates returned with an error")
			}
		})
	}
}

func TestSignX509SVIDRefusesMismatchedKey(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, keystore.ECP256, now, time.Hour)
	p := X509SVIDParams{PublicKey: catest.Key(t, "ec-p256").Public(), SPIFFEID: catest.ID(t, "spiffe://example.org/w"), TTL: time.Hour}
	for _, other := range []crypto.Signer{catest.FreshKey(t), signerOnly{catest.FreshKey(t)}, catest.Key(t, "rsa-2048")} {
		wrong := &X509CA{Cert: ca.Cert, Signer: other}
		chain, err := wrong.SignX509SVID(p, now)
		if err == nil || !strings.Contains(err.Error(), "does not match") || chain != nil {
			t.Fatalf("%T not matching the CA certificate: got %v", other, err)
		}
	}
}

// A CA key the encoder does not handle still issues, through
// CreateCertificate.
func TestSignX509SVIDFallback(t *testing.T) {
	now := time.Now()
	key := catest.Key(t, "ec-p224")
	if signingFor(key.Public()) != nil {
		t.Fatal("P-224 is handled by the encoder; pick another key for this test")
	}
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          mustSerial(t),
		Subject:               pkix.Name{CommonName: "P-224 CA"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          skid,
		URIs:                  []*url.URL{testTD.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &X509CA{Cert: cert, Signer: key}
	id := catest.ID(t, "spiffe://example.org/w")
	pub := catest.Key(t, "ec-p256").Public()
	chain, err := ca.SignX509SVID(X509SVIDParams{PublicKey: pub, SPIFFEID: id, DNSNames: []string{"w"}, TTL: time.Minute}, now)
	if err != nil {
		t.Fatal(err)
	}
	checkLeaf(t, chain[0], id, pub)
	if err := chain[0].CheckSignatureFrom(cert); err != nil {
		t.Fatal(err)
	}

	bad := &X509CA{Cert: cert, Signer: corruptSigner{key}}
	if _, err := bad.SignX509SVID(X509SVIDParams{PublicKey: pub, SPIFFEID: id, TTL: time.Minute}, now); err == nil {
		t.Fatal("the fallback accepted a corrupted signature")
	}
}

func TestSPKIKeyBits(t *testing.T) {
	for _, kind := range append(leafKeyTypes, "rsa-3072") {
		spki, err := x509.MarshalPKIXPublicKey(catest.Key(t, kind).Public())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := spkiKeyBits(spki); err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		for _, bad := range [][]byte{nil, spki[:len(spki)-1], append(append([]byte{}, spki...), 0), {0x30, 0x84, 0, 0, 0, 1}} {
			if _, err := spkiKeyBits(bad); err == nil {
				t.Fatalf("%s: accepted malformed %x", kind, bad)
			}
		}
	}
}

var (
	fuzzCAsOnce sync.Once
	fuzzCAs     []*X509CA
	fuzzStart   = time.Date(1990, 1, 1, 0, 0, 0, 0, time.UTC)
	fuzzSpan    = 200 * 365 * 24 * time.Hour
)

// FuzzLeafEncoding feeds SignX509SVID's input checks arbitrary requests and
// compares every leaf they accept with CreateCertificate's, byte for byte.
func FuzzLeafEncoding(f *testing.F) {
	f.Add("api.example.org", "ns/prod/sa/api", int64(3600), []byte{1}, int64(40*365*24*3600), uint8(0))
	f.Add("", "w", int64(60), []byte{0x80}, int64(60*365*24*3600), uint8(5))
	f.Add("*.example.org,a,b_c", "a/b", int64(1<<30), []byte{0xff, 0xff}, int64(59*365*24*3600+364*24*3600), uint8(10))
	f.Add("x", "x", int64(10), []byte{}, int64(0), uint8(23))
	f.Fuzz(func(t *testing.T, dns, path string, ttlSeconds int64, serial []byte, offsetSeconds int64, kinds uint8) {
		fuzzCAsOnce.Do(func() {
			for _, kind := range encoderCAKeyTypes {
				fuzzCAs = append(fuzzCAs, testCAFor(t, kind, pkix.Name{}, fuzzStart, fuzzSpan))
			}
		})
		ca := fuzzCAs[int(kinds>>3)%len(fuzzCAs)]
		leafKind := leafKeyTypes[int(kinds&7)%len(leafKeyTypes)]

		id, err := spiffeid.FromPath(testTD, "/"+path)
		if err != nil {
			// Path syntax is spiffeid's business; keep the rest of the input.
			id = catest.ID(t, "spiffe://example.org/w")
		}
		var names []string
		if dns != "" {
			names = strings.Split(dns, ",")
		}
		span := int64(fuzzSpan / time.Second)
		ttl := ttlSeconds % span // keeps the sign: non-positive TTLs are refused
		offset := offsetSeconds % span
		if offset < 0 {
			offset = -offset
		}
		now := fuzzStart.Add(time.Duration(offset) * time.Second)
		p := X509SVIDParams{PublicKey: catest.Key(t, leafKind).Public(), SPIFFEID: id, DNSNames: names, TTL: time.Duration(ttl) * time.Second}
		in, err := ca.leafInputs(p, now)
		if err != nil {
			return // refused requests are not encoded
		}
		if len(serial) > 0 {
			in.serial = new(big.Int).SetBytes(serial)
		}
		compareLeaf(t, ca, in)
	})
}
