package jointoken

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"
)

func testCA(t testing.TB) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestRoundTrip(t *testing.T) {
	a, b, other := testCA(t), testCA(t), testCA(t)
	tok, err := New([]*x509.Certificate{a, b})
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(tok.String())
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != tok.String() || got.ID != tok.ID {
		t.Fatalf("round trip changed the token")
	}
	if !got.Pinned(a) || !got.Pinned(b) || got.Pinned(other) {
		t.Fatal("pins do not match the authorities they were made from")
	}
	if string(got.SecretDigest()) != string(tok.SecretDigest()) {
		t.Fatal("secret digest differs")
	}
	again, _ := New([]*x509.Certificate{a})
	if again.ID == tok.ID || string(again.Secret) == string(tok.Secret) {
		t.Fatal("two tokens share an id or secret")
	}
	if _, err := New(nil); err == nil {
		t.Fatal("a token without pins was made")
	}
}

func TestParseErrors(t *testing.T) {
	tok, _ := New([]*x509.Certificate{testCA(t)})
	good := tok.String()
	parts := strings.Split(good, ".")
	secret := parts[2]
	for name, s := range map[string]string{
		"empty":        "",
		"other prefix": "wjt2." + strings.Join(parts[1:], "."),
		"short id":     strings.Join([]string{parts[0], parts[1][:10], parts[2], parts[3]}, "."),
		"upper id":     strings.Join([]string{parts[0], strings.ToUpper(parts[1]), parts[2], parts[3]}, "."),
		"cut secret":   strings.Join([]string{parts[0], parts[1], parts[2][:20], parts[3]}, "."),
		"bad pin":      strings.Join([]string{parts[0], parts[1], parts[2], "!!"}, "."),
		"no pins":      strings.Join([]string{parts[0], parts[1], parts[2], ""}, "."),
		"extra part":   good + ".x",
		"too long":     strings.Repeat("a", MaxLength+1),
	} {
		_, err := Parse(s)
		if err == nil {
			t.Errorf("%s: parsed", name)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("%s: the error echoes the secret", name)
		}
	}
}

func FuzzParse(f *testing.F) {
	tok, _ := New([]*x509.Certificate{testCA(f)})
	f.Add(tok.String())
	f.Add("wjt1.000000000000000000000000.AAAA.AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(got.String())
		if err != nil || again.String() != got.String() {
			t.Fatalf("a parsed token does not round-trip: %v", err)
		}
	})
}
