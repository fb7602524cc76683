package ca

import (
	"crypto/x509"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"writ.dev/writ/ca/catest"
	"writ.dev/writ/keystore"
)

// TestOpenSSLVerifies has OpenSSL, an independent X.509 implementation,
// check the chains writ hands out, in both TLS roles.
func TestOpenSSLVerifies(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not on PATH; skipping the cross-check of issued chains with OpenSSL")
	}
	now := time.Now()
	id := catest.ID(t, "spiffe://example.org/ns/prod/sa/api")

	type setup struct {
		name    string
		root    *X509CA
		signer  *X509CA
		csrType string
	}
	var setups []setup
	for _, kt := range keystore.KeyTypes {
		root := newTestCA(t, kt, now, 24*time.Hour)
		setups = append(setups, setup{"self-signed " + string(kt), root, root, "ec-p256"})
	}
	for _, csrType := range csrKeyTypes {
		root := newTestCA(t, keystore.ECP256, now, 24*time.Hour)
		setups = append(setups, setup{"self-signed leaf " + csrType, root, root, csrType})
	}
	root := newTestCA(t, keystore.RSA2048, now, 48*time.Hour)
	inter1 := newIntermediate(t, root, now, 24*time.Hour)
	inter2 := newIntermediate(t, inter1, now, 12*time.Hour)
	setups = append(setups,
		setup{"one intermediate", root, inter1, "ec-p256"},
		setup{"two intermediates", root, inter2, "rsa-2048"},
	)

	for _, s := range setups {
		t.Run(s.name, func(t *testing.T) {
			pub, err := ParseCSR(catest.CSR(t, catest.Key(t, s.csrType), nil))
			if err != nil {
				t.Fatal(err)
			}
			chain, err := s.signer.SignX509SVID(X509SVIDParams{PublicKey: pub, SPIFFEID: id, DNSNames: []string{"api.example.org"}, TTL: time.Hour}, now)
			if err != nil {
				t.Fatal(err)
			}
			if s.signer == s.root && len(chain) != 1 {
				t.Fatalf("self-signed mode returned %d certificates, want the leaf only", len(chain))
			}
			dir := t.TempDir()
			bundle := filepath.Join(dir, "bundle.pem")
			leaf := filepath.Join(dir, "leaf.pem")
			catest.WritePEM(t, bundle, []*x509.Certificate{s.root.Cert})
			catest.WritePEM(t, leaf, chain[:1])
			args := []string{"verify", "-x509_strict", "-CAfile", bundle}
			if len(chain) > 1 {
				untrusted := filepath.Join(dir, "chain.pem")
				catest.WritePEM(t, untrusted, chain[1:])
				args = append(args, "-untrusted", untrusted)
			}
			for _, purpose := range []string{"sslserver", "sslclient"} {
				cmd := exec.Command(openssl, append(append([]string{}, args...), "-purpose", purpose, leaf)...)
				out, err := cmd.CombinedOutput()
				if err != nil || !strings.Contains(string(out), "leaf.pem: OK") {
					t.Fatalf("openssl %s (purpose %s): %v\n%s", strings.Join(cmd.Args[1:], " "), purpose, err, out)
				}
			}
			// Without the intermediates OpenSSL must fail, or the test
			// proves nothing about them.
			if len(chain) > 1 {
				out, err := exec.Command(openssl, "verify", "-CAfile", bundle, leaf).CombinedOutput()
				if err == nil {
					t.Fatalf("openssl verified a leaf without its intermediates:\n%s", out)
				}
			}
		})
	}
}
