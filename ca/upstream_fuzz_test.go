package ca

import (
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"writ.dev/writ/keystore"
)

// FuzzParseUpstreamPEM feeds the upstream certificate and key parsers
// operator-supplied file contents: they must never panic, and whatever they
// accept must be usable.
func FuzzParseUpstreamPEM(f *testing.F) {
	key := testKey(f, "ec-p256")
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		f.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	cert := newTestCA(f, keystore.ECP256, time.Now(), time.Hour).Cert
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	f.Add(keyPEM)
	f.Add(certPEM)
	f.Add(append(append([]byte{}, certPEM...), keyPEM...))
	f.Add(keyPEM[:len(keyPEM)/2])
	f.Add([]byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if certs, err := ParseCertificatesPEM("fuzz.pem", data); err == nil {
			if len(certs) == 0 {
				t.Fatal("accepted a file without certificates")
			}
			for _, c := range certs {
				if c == nil || len(c.Raw) == 0 {
					t.Fatal("accepted an empty certificate")
				}
			}
		}
		if signer, err := ParsePrivateKeyPEM("fuzz.pem", data); err == nil && signer.Public() == nil {
			t.Fatal("accepted a key without a public half")
		}
	})
}
