package ca

import (
	"crypto"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"writ.dev/writ/ca/catest"
	"writ.dev/writ/keystore"
)

func TestParseCSRAccepts(t *testing.T) {
	for _, kind := range csrKeyTypes {
		t.Run(kind, func(t *testing.T) {
			key := catest.Key(t, kind)
			pub, err := ParseCSR(catest.CSR(t, key, nil))
			if err != nil {
				t.Fatal(err)
			}
			if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
				t.Fatal("returned key is not the request's")
			}
		})
	}
}

func TestParseCSRRefuses(t *testing.T) {
	key := catest.Key(t, "ec-p256")
	valid := catest.CSR(t, key, nil)

	flippedSig := append([]byte(nil), valid...)
	flippedSig[len(flippedSig)-1] ^= 0x01

	// Swap the public key for another of the same size: the request then
	// claims a key its signature was not made with.
	other := catest.CSR(t, catest.Key(t, "ec-p384"), nil)
	parsedValid, _ := x509.ParseCertificateRequest(valid)
	otherKey := catest.FreshKey(t)
	otherSPKI, err := x509.MarshalPKIXPublicKey(otherKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	swappedKey := []byte(strings.Replace(string(valid), string(parsedValid.RawSubjectPublicKeyInfo), string(otherSPKI), 1))
	if string(swappedKey) == string(valid) {
		t.Fatal("key swap did nothing")
	}

	cert := newTestCA(t, keystore.ECP256, time.Now(), time.Hour).Cert.Raw

	cases := []struct {
		name string
		der  []byte
		want string
	}{
		{"empty", nil, "empty"},
		{"garbage", []byte("definitely not a request"), "not a DER-encoded PKCS#10"},
		{"truncated", valid[:len(valid)/2], "not a DER-encoded PKCS#10"},
		{"trailing data", append(append([]byte(nil), valid...), 0), "not a DER-encoded PKCS#10"},
		{"certificate", cert, "not a DER-encoded PKCS#10"},
		{"tampered signature", flippedSig, "signature does not verify"},
		{"swapped key", swappedKey, "signature does not verify"},
		{"RSA 1024", catest.CSR(t, catest.Key(t, "rsa-1024"), nil), "RSA key of 1024 bits is not allowed: use ECDSA P-256"},
		{"P-224", rawCSR(t, catest.Key(t, "ec-p224"), oidECDSAWithSHA256), "ECDSA curve P-224 is not allowed: use ECDSA P-256"},
		{"SHA-1", rawCSR(t, catest.Key(t, "rsa-2048"), oidSHA1WithRSA), "SHA1-RSA is not allowed"},
	}
	for _, tc := range cases {
		pub, err := ParseCSR(tc.der)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "csr: ") {
			t.Errorf("%s: got %v, want an error starting with \"csr: \" containing %q", tc.name, err, tc.want)
		}
		if pub != nil {
			t.Errorf("%s: returned a key with an error", tc.name)
		}
	}
	if _, err := ParseCSR(other); err != nil {
		t.Fatalf("untouched request refused: %v", err)
	}
	// The hand-built path makes requests ParseCSR accepts when nothing is
	// wrong with them, so the refusals above are for the stated reasons.
	if _, err := ParseCSR(rawCSR(t, catest.Key(t, "ec-p256"), oidECDSAWithSHA256)); err != nil {
		t.Fatalf("hand-built request refused: %v", err)
	}
}

func FuzzParseCSR(f *testing.F) {
	for _, kind := range csrKeyTypes {
		der := catest.CSR(f, catest.Key(f, kind), nil)
		f.Add(der)
		f.Add(der[:len(der)/2])
		f.Add(der[:len(der)-1])
	}
	f.Add(rawCSR(f, catest.Key(f, "ec-p224"), oidECDSAWithSHA256))
	f.Add(rawCSR(f, catest.Key(f, "rsa-2048"), oidSHA1WithRSA))
	f.Add([]byte{})
	f.Add([]byte("garbage"))
	f.Add([]byte{0x30, 0x80, 0x00, 0x00})
	f.Add([]byte{0x30, 0x84, 0xff, 0xff, 0xff, 0xff})

	now := time.Now()
	ca := newTestCA(f, keystore.ECP256, now, 24*time.Hour)
	id := catest.ID(f, "spiffe://example.org/fuzz")

	f.Fuzz(func(t *testing.T, der []byte) {
		pub, err := ParseCSR(der)
		if err != nil {
			if pub != nil {
				t.Fatal("key returned with an error")
			}
			if !strings.HasPrefix(err.Error(), "csr: ") {
				t.Fatalf("error without the csr: prefix: %v", err)
			}
			return
		}
		chain, err := ca.SignX509SVID(X509SVIDParams{PublicKey: pub, SPIFFEID: id, TTL: time.Hour}, now)
		if err != nil {
			t.Fatalf("accepted request cannot be signed: %v", err)
		}
		if !chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
			t.Fatal("leaf key differs from the request's")
		}
	})
}
