package ca

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"testing"
	"time"

	"writ.dev/writ/ca/catest"
	"writ.dev/writ/keystore"
)

// The limits: what one P-256 signature costs, and what crypto/x509 needs to
// make a comparable leaf (it also verifies its own signature, so it costs
// about one Sign plus one Verify).

func BenchmarkECDSAP256Sign(b *testing.B) {
	key := catest.Key(b, "ec-p256").(*ecdsa.PrivateKey)
	digest := sha256.Sum256([]byte("a to-be-signed certificate stands in here"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ecdsa.SignASN1(rand.Reader, key, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkECDSAP256SignParallel(b *testing.B) {
	key := catest.Key(b, "ec-p256").(*ecdsa.PrivateKey)
	digest := sha256.Sum256([]byte("a to-be-signed certificate stands in here"))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := ecdsa.SignASN1(rand.Reader, key, digest[:]); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkECDSAP256Verify(b *testing.B) {
	key := catest.Key(b, "ec-p256").(*ecdsa.PrivateKey)
	digest := sha256.Sum256([]byte("a to-be-signed certificate stands in here"))
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !ecdsa.VerifyASN1(&key.PublicKey, digest[:], sig) {
			b.Fatal("does not verify")
		}
	}
}

// createCertificateSetup is the leaf SignX509SVID makes, as a template for
// crypto/x509, with everything SignX509SVID computes per leaf except the
// serial number already filled in.
func createCertificateSetup(b *testing.B) (*X509CA, any, *x509.Certificate) {
	now := time.Now()
	ca := newTestCA(b, keystore.ECP256, now, 24*time.Hour)
	pub := catest.Key(b, "ec-p256").Public()
	id := catest.ID(b, "spiffe://example.org/ns/prod/sa/api")
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"writ"}, CommonName: "api.example.org"},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URL()},
		DNSNames:              []string{"api.example.org"},
	}
	return ca, pub, tmpl
}

func BenchmarkCreateCertificate(b *testing.B) {
	ca, pub, tmpl := createCertificateSetup(b)
	b.ReportAllocs()
	for b.Loop() {
		serial, err := randomSerial()
		if err != nil {
			b.Fatal(err)
		}
		tmpl.SerialNumber = serial
		if _, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Signer); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCreateCertificateParallel(b *testing.B) {
	ca, pub, shared := createCertificateSetup(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		tmpl := *shared // each goroutine sets its own serial
		for pb.Next() {
			serial, err := randomSerial()
			if err != nil {
				b.Error(err)
				return
			}
			tmpl.SerialNumber = serial
			if _, err := x509.CreateCertificate(rand.Reader, &tmpl, ca.Cert, pub, ca.Signer); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func benchParams(b *testing.B) (*X509CA, X509SVIDParams, time.Time) {
	now := time.Now()
	ca := newTestCA(b, keystore.ECP256, now, 24*time.Hour)
	return ca, X509SVIDParams{
		PublicKey: catest.Key(b, "ec-p256").Public(),
		SPIFFEID:  catest.ID(b, "spiffe://example.org/ns/prod/sa/api"),
		DNSNames:  []string{"api.example.org"},
		TTL:       time.Hour,
	}, now
}

func BenchmarkSignX509SVID(b *testing.B) {
	ca, p, now := benchParams(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ca.SignX509SVID(p, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignX509SVIDParallel(b *testing.B) {
	ca, p, now := benchParams(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := ca.SignX509SVID(p, now); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// The whole issuance path for one request: check the CSR's signature
// (proof of possession), then sign the leaf.
func BenchmarkIssueFromCSR(b *testing.B) {
	ca, p, now := benchParams(b)
	csr := catest.CSR(b, catest.Key(b, "ec-p256"), nil)
	b.ReportAllocs()
	for b.Loop() {
		pub, err := ParseCSR(csr)
		if err != nil {
			b.Fatal(err)
		}
		p.PublicKey = pub
		if _, err := ca.SignX509SVID(p, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIssueFromCSRParallel(b *testing.B) {
	ca, shared, now := benchParams(b)
	csr := catest.CSR(b, catest.Key(b, "ec-p256"), nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		p := shared
		for pb.Next() {
			pub, err := ParseCSR(csr)
			if err != nil {
				b.Error(err)
				return
			}
			p.PublicKey = pub
			if _, err := ca.SignX509SVID(p, now); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkParseCSR(b *testing.B) {
	for _, kind := range []string{"ec-p256", "ed25519", "rsa-2048"} {
		der := catest.CSR(b, catest.Key(b, kind), nil)
		b.Run(kind, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseCSR(der); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
