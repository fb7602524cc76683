package ca

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"writ.dev/writ/ca/catest"
)

func TestLoadUpstream(t *testing.T) {
	now := time.Now()
	pki := catest.NewPKI(t, now, 30*24*time.Hour)
	certFile, keyFile, bundleFile := pki.Files(t)
	up, err := LoadUpstream(certFile, keyFile, bundleFile)
	if err != nil {
		t.Fatal(err)
	}
	if !up.Cert.Equal(pki.Issuing.Cert) || len(up.Chain) != 1 || len(up.Roots) != 1 {
		t.Fatalf("loaded cert/chain/roots wrong: chain %d roots %d", len(up.Chain), len(up.Roots))
	}

	// A cert file that carries the root as well loads, without it in Chain.
	dir := t.TempDir()
	withRoot := filepath.Join(dir, "with-root.pem")
	catest.WritePEM(t, withRoot, []*x509.Certificate{pki.Issuing.Cert, pki.Policy.Cert, pki.Root.Cert})
	if up, err := LoadUpstream(withRoot, keyFile, bundleFile); err != nil || len(up.Chain) != 1 {
		t.Fatalf("cert file with the root: %v", err)
	}

	other := catest.NewPKI(t, now, 30*24*time.Hour)
	_, otherKey, otherBundle := other.Files(t)
	noChain := filepath.Join(dir, "no-chain.pem")
	catest.WritePEM(t, noChain, []*x509.Certificate{pki.Issuing.Cert})
	leaf := catest.Cert(t, "not a CA", pki.Issuing, now.Add(-time.Hour), now.Add(24*time.Hour), 0, false)
	leafCert, leafKey := filepath.Join(dir, "leaf.pem"), filepath.Join(dir, "leaf.key")
	catest.WritePEM(t, leafCert, []*x509.Certificate{leaf.Cert, pki.Issuing.Cert, pki.Policy.Cert})
	catest.WriteKeyPEM(t, leafKey, leaf.Signer)
	zero := catest.Cert(t, "path length 0", pki.Policy, now.Add(-time.Hour), now.Add(24*time.Hour), 0, true)
	zeroCert, zeroKey := filepath.Join(dir, "zero.pem"), filepath.Join(dir, "zero.key")
	catest.WritePEM(t, zeroCert, []*x509.Certificate{zero.Cert, pki.Policy.Cert})
	catest.WriteKeyPEM(t, zeroKey, zero.Signer)
	expired := catest.Cert(t, "expired", pki.Policy, now.Add(-48*time.Hour), now.Add(-time.Hour), 1, true)
	expCert, expKey := filepath.Join(dir, "expired.pem"), filepath.Join(dir, "expired.key")
	catest.WritePEM(t, expCert, []*x509.Certificate{expired.Cert, pki.Policy.Cert})
	catest.WriteKeyPEM(t, expKey, expired.Signer)
	readable := filepath.Join(dir, "readable.key")
	catest.WriteKeyPEM(t, readable, pki.Issuing.Signer)
	if err := os.Chmod(readable, 0o640); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not pem\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, cert, key, bundle, want string
	}{
		{"key does not match", certFile, otherKey, bundleFile, "does not match"},
		{"not a CA", leafCert, leafKey, bundleFile, "not a CA"},
		{"path length 0", zeroCert, zeroKey, bundleFile, "path length 0"},
		{"other PKI's roots", certFile, keyFile, otherBundle, "does not chain to the bundle"},
		{"chain missing", noChain, keyFile, bundleFile, "does not chain to the bundle"},
		{"group-readable key", certFile, readable, bundleFile, "accessible by group or others"},
		{"expired", expCert, expKey, bundleFile, "expired"},
		{"cert file not PEM", garbage, keyFile, bundleFile, "no PEM CERTIFICATE"},
		{"key file not a key", certFile, certFile, bundleFile, "not a private key"},
		{"bundle missing", certFile, keyFile, filepath.Join(dir, "nope.pem"), "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.key == certFile {
				if err := os.Chmod(certFile, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := LoadUpstream(tc.cert, tc.key, tc.bundle)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadUpstream: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
