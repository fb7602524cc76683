package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"writ.dev/writ/agent/output"
)

func TestSVIDMintAgainstServer(t *testing.T) {
	f, sock := startFake(t)
	for _, tc := range []struct {
		keyType string
		check   func(crypto.PublicKey) bool
	}{
		{"ec-p256", func(k crypto.PublicKey) bool { e, ok := k.(*ecdsa.PublicKey); return ok && e.Curve == elliptic.P256() }},
		{"ec-p384", func(k crypto.PublicKey) bool { e, ok := k.(*ecdsa.PublicKey); return ok && e.Curve == elliptic.P384() }},
		{"rsa-2048", func(k crypto.PublicKey) bool { r, ok := k.(*rsa.PublicKey); return ok && r.N.BitLen() == 2048 }},
	} {
		t.Run(tc.keyType, func(t *testing.T) {
			// A directory that does not exist yet, two levels deep.
			out := filepath.Join(t.TempDir(), "certs", tc.keyType)
			stdout := mustRunCmd(t, runSVID, sock, "mint",
				"--spiffe-id", "spiffe://example.org/service/web",
				"--ttl", "30m", "--dns", "web.example.org",
				"--key-type", tc.keyType, "--out", out)
			for _, want := range []string{"spiffe://example.org/service/web", "Expires at:", filepath.Join(out, output.SVIDFile), filepath.Join(out, output.KeyFile), filepath.Join(out, output.BundleFile)} {
				if !strings.Contains(stdout, want) {
					t.Errorf("output lacks %q:\n%s", want, stdout)
				}
			}

			f.mu.Lock()
			req := f.lastMint
			f.mu.Unlock()
			if req.GetTtlSeconds() != 1800 || strings.Join(req.GetDnsNames(), ",") != "web.example.org" {
				t.Errorf("request = ttl %d, dns %v", req.GetTtlSeconds(), req.GetDnsNames())
			}

			assertMode(t, out, 0o700)
			assertMode(t, filepath.Join(out, output.KeyFile), 0o600)
			assertMode(t, filepath.Join(out, output.SVIDFile), 0o644)
			assertMode(t, filepath.Join(out, output.BundleFile), 0o644)
			entries, _ := os.ReadDir(out)
			if len(entries) != 3 {
				t.Errorf("out holds %d files, want 3 (no temporary files left)", len(entries))
			}

			chain := readPEMCerts(t, filepath.Join(out, output.SVIDFile))
			if len(chain) != 2 {
				t.Fatalf("svid.pem holds %d certificates, want leaf and intermediate", len(chain))
			}
			if chain[0].URIs[0].String() != "spiffe://example.org/service/web" || !chain[1].IsCA {
				t.Errorf("svid.pem is not leaf then intermediate")
			}
			if d := time.Until(chain[0].NotAfter); d < 25*time.Minute || d > 31*time.Minute {
				t.Errorf("leaf expires in %v, want 30m", d)
			}
			roots := readPEMCerts(t, filepath.Join(out, output.BundleFile))
			if len(roots) != 1 || !roots[0].Equal(f.root) {
				t.Errorf("bundle.pem is not the root")
			}

			keyPEM, err := os.ReadFile(filepath.Join(out, output.KeyFile))
			if err != nil {
				t.Fatal(err)
			}
			block, _ := pem.Decode(keyPEM)
			if block == nil || block.Type != "PRIVATE KEY" {
				t.Fatalf("svid.key is not a PKCS#8 PEM block")
			}
			key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			pub := key.(crypto.Signer).Public()
			if !tc.check(pub) {
				t.Errorf("key is not %s: %T", tc.keyType, pub)
			}
			if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(chain[0].PublicKey) {
				t.Error("svid.key does not match the certificate")
			}

			if openssl, err := exec.LookPath("openssl"); err == nil {
				cmd := exec.Command(openssl, "verify", "-CAfile", filepath.Join(out, output.BundleFile), "-untrusted", filepath.Join(out, output.SVIDFile), filepath.Join(out, output.SVIDFile))
				b, err := cmd.CombinedOutput()
				if err != nil {
					t.Errorf("openssl verify: %v\n%s", err, b)
				}
				t.Logf("openssl verify: %s", b)
			} else {
				t.Log("openssl not on PATH; skipping its check")
			}
		})
	}
}

func TestSVIDMintJSONAndReplace(t *testing.T) {
	_, sock := startFake(t)
	out := t.TempDir()
	if err := os.Chmod(out, 0o750); err != nil {
		t.Fatal(err)
	}
	// An older key left readable by others must come back 0600.
	if err := os.WriteFile(filepath.Join(out, output.KeyFile), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout := mustRunCmd(t, runSVID, sock, "mint", "--spiffe-id", "spiffe://example.org/a", "--out", out, "--json")
	var res map[string]string
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("--json output %q: %v", stdout, err)
	}
	if res["spiffe_id"] != "spiffe://example.org/a" || res["key"] != filepath.Join(out, output.KeyFile) {
		t.Errorf("--json = %v", res)
	}
	if _, err := time.Parse(time.RFC3339, res["expires_at"]); err != nil {
		t.Errorf("expires_at: %v", err)
	}
	assertMode(t, filepath.Join(out, output.KeyFile), 0o600)
	assertMode(t, out, 0o750) // an existing directory keeps its mode
}

func TestSVIDMintRefusesWrongCertificate(t *testing.T) {
	f, sock := startFake(t)
	f.mu.Lock()
	f.mintOtherKey = true
	f.mu.Unlock()
	out := filepath.Join(t.TempDir(), "svid")
	_, err := runCmd(t, runSVID, sock, "mint", "--spiffe-id", "spiffe://example.org/a", "--out", out)
	if err == nil || !strings.Contains(err.Error(), "not for the key generated here") || !strings.Contains(err.Error(), "nothing was written") {
		t.Errorf("err = %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("out was created: %v", err)
	}
}

func TestSVIDMintFlagErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"mint"}, "missing --spiffe-id, --out"},
		{[]string{"mint", "--spiffe-id", "spiffe://example.org/a"}, "missing --out"},
		{[]string{"mint", "--spiffe-id", "example.org/a", "--out", "x"}, "spiffe-id:"},
		{[]string{"mint", "--spiffe-id", "spiffe://example.org/a", "--out", "x", "--ttl", "1d"}, "ttl:"},
		{[]string{"mint", "--spiffe-id", "spiffe://example.org/a", "--out", "x", "--key-type", "ed25519"}, "ec-p256, ec-p384, rsa-2048, rsa-3072"},
		{[]string{"mint", "--jwt", "--spiffe-id", "spiffe://example.org/a"}, "missing --audience"},
		{[]string{"mint", "--jwt", "--spiffe-id", "spiffe://example.org/a", "--audience", "x", "--dns", "a.example.org"}, "--dns is for X.509-SVIDs"},
		{[]string{"mint", "--jwt", "--spiffe-id", "spiffe://example.org/a", "--audience", "x", "--key-type", "ec-p384"}, "--key-type is for X.509-SVIDs"},
		{[]string{"mint", "--jwt", "--spiffe-id", "spiffe://example.org/a", "--audience", " "}, "audience: value 1 of 1 is empty"},
		{[]string{"mint", "--spiffe-id", "spiffe://example.org/a", "--out", "x", "--audience", "x"}, "add --jwt"},
		{[]string{"renew"}, `unknown command "renew"`},
	} {
		_, _, err := runNoServer(t, runSVID, tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want it to contain %q", tt.args, err, tt.want)
		}
	}
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s has mode %#o, want %#o", path, got, want)
	}
}

func readPEMCerts(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, cert)
	}
	return certs
}
