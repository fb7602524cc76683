package pemfile

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testPEMs(tb testing.TB) (certPEM, keyPEM []byte) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "pemfile test"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

func TestReadPrivateKeyRefusesReadableByOthers(t *testing.T) {
	_, keyPEM := testPEMs(t)
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, keyPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPrivateKey(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("ReadPrivateKey of a 0644 key = %v, want a refusal saying chmod 600", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPrivateKey(path); err != nil {
		t.Fatalf("ReadPrivateKey of a 0600 key: %v", err)
	}
}

func TestParseCertificatesRefusesOtherBlocks(t *testing.T) {
	certPEM, keyPEM := testPEMs(t)
	if certs, err := ParseCertificates("c.pem", certPEM); err != nil || len(certs) != 1 {
		t.Fatalf("ParseCertificates = %d certs, %v; want 1, nil", len(certs), err)
	}
	if _, err := ParseCertificates("c.pem", append(append([]byte{}, certPEM...), keyPEM...)); err == nil {
		t.Fatal("ParseCertificates accepted a file holding a private key")
	}
	if _, err := ParseCertificates("c.pem", []byte("garbage")); err == nil {
		t.Fatal("ParseCertificates accepted a file without certificates")
	}
}

// FuzzParse feeds the certificate and key parsers operator-supplied file
// contents: they must never panic, and whatever they accept must be usable.
func FuzzParse(f *testing.F) {
	certPEM, keyPEM := testPEMs(f)
	f.Add(keyPEM)
	f.Add(certPEM)
	f.Add(append(append([]byte{}, certPEM...), keyPEM...))
	f.Add(keyPEM[:len(keyPEM)/2])
	f.Add([]byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if certs, err := ParseCertificates("fuzz.pem", data); err == nil {
			if len(certs) == 0 {
				t.Fatal("accepted a file without certificates")
			}
			for _, c := range certs {
				if c == nil || len(c.Raw) == 0 {
					t.Fatal("accepted an empty certificate")
				}
			}
		}
		if signer, err := ParsePrivateKey("fuzz.pem", data); err == nil && signer.Public() == nil {
			t.Fatal("accepted a key without a public half")
		}
	})
}
