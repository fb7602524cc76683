package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/ca/catest"
	"writ.dev/writ/keystore"
)

var testTD = spiffeid.RequireTrustDomainFromString("example.org")

// csrKeyTypes are the workload key types ParseCSR accepts.
var csrKeyTypes = []string{"ec-p256", "ec-p384", "ec-p521", "rsa-2048", "rsa-3072", "ed25519"}

var (
	oidECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidSHA1WithRSA     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 5}
)

// rawCSR builds a request by hand, for what crypto/x509 refuses to make:
// curves it does not sign with and outdated hashes.
func rawCSR(t testing.TB, key crypto.Signer, alg asn1.ObjectIdentifier) []byte {
	t.Helper()
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	subject, err := asn1.Marshal(pkix.Name{CommonName: "hand made"}.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	tbs, err := asn1.Marshal(struct {
		Version    int
		Subject    asn1.RawValue
		PublicKey  asn1.RawValue
		Attributes []asn1.RawValue `asn1:"tag:0"`
	}{0, asn1.RawValue{FullBytes: subject}, asn1.RawValue{FullBytes: spki}, []asn1.RawValue{}})
	if err != nil {
		t.Fatal(err)
	}
	var (
		digest []byte
		hash   crypto.Hash
	)
	switch {
	case alg.Equal(oidSHA1WithRSA):
		sum := sha1.Sum(tbs)
		digest, hash = sum[:], crypto.SHA1
	default:
		sum := sha256.Sum256(tbs)
		digest, hash = sum[:], crypto.SHA256
	}
	sig, err := key.Sign(rand.Reader, digest, hash)
	if err != nil {
		t.Fatal(err)
	}
	der, err := asn1.Marshal(struct {
		TBS       asn1.RawValue
		Algorithm pkix.AlgorithmIdentifier
		Signature asn1.BitString
	}{asn1.RawValue{FullBytes: tbs}, pkix.AlgorithmIdentifier{Algorithm: alg}, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// newTestCA makes a self-signed root of key type kt valid from now-ClockSkew
// to now+ttl.
func newTestCA(t testing.TB, kt keystore.KeyType, now time.Time, ttl time.Duration) *X509CA {
	t.Helper()
	signer, err := keystore.NewMemory().Generate(context.Background(), "ca", kt)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := NewRootCert(signer, testTD, pkix.Name{}, now, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return &X509CA{Cert: cert, Signer: signer}
}

// newIntermediate makes a CA under parent the way an upstream authority
// would, so chains of more than one level can be tested.
func newIntermediate(t testing.TB, parent *X509CA, now time.Time, ttl time.Duration) *X509CA {
	t.Helper()
	key := catest.FreshKey(t)
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	serial, err := randomSerial()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"writ"}, CommonName: "intermediate " + serial.String()},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          skid,
		URIs:                  parent.Cert.URIs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent.Cert, key.Public(), parent.Signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	var chain []*x509.Certificate
	if !IsSelfSigned(parent.Cert) {
		chain = append([]*x509.Certificate{parent.Cert}, parent.Chain...)
	}
	return &X509CA{Cert: cert, Signer: key, Chain: chain}
}
