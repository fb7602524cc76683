package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"writ.dev/writ/person/login/logintest"
)

// TestLogin signs a person in with the device flow against a local identity
// provider, then reaches the server's remote API over mTLS with the saved
// identity; an address outside the allowed domain and an unverified one
// are refused.
func TestLogin(t *testing.T) {
	idp := logintest.New(t)
	dir := shortTempDir(t)
	data := filepath.Join(dir, "data")
	socket := filepath.Join(data, "admin.sock")
	jwks := filepath.Join(dir, "idp-jwks.json")
	idp.WriteJWKS(t, jwks)
	addr := freePort(t)
	cfg := filepath.Join(dir, "writ.yaml")
	conf := "listen_address: " + addr + "\nops_address: \"\"\npeople:\n  issuer: " + idp.URL + "\n  client_id: " + idp.ClientID() +
		"\n  jwks_file: " + jwks + "\n  allow:\n    - email_domain: example.com\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	startCommand(t, socket, "server", "--data-dir", data, "--trust-domain", "people.test", "--config", cfg)
	bundle := filepath.Join(dir, "bundle.pem")
	if err := os.WriteFile(bundle, []byte(writ(t, "bundle", "show", "--socket", socket)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(identityDirEnv, filepath.Join(dir, "identity"))

	idp.SetUser("Alice@Example.com", true)
	idp.ApproveDevice()
	out := writ(t, "login", "--server", addr, "--bundle", bundle, "--device")
	if !strings.Contains(out, "signed in as spiffe://people.test/person/example.com/alice") {
		t.Fatalf("login: %s", out)
	}
	if fi, err := os.Stat(filepath.Join(dir, "identity", "svid.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("saved key: %v %v", fi, err)
	}

	// The person reaches the server the way agents and workloads do.
	t.Setenv(serverEnv, addr)
	t.Setenv(socketEnv, "")
	if got := writ(t, "bundle", "show"); !strings.Contains(got, "BEGIN CERTIFICATE") {
		t.Fatalf("bundle show over mTLS: %s", got)
	}
	if msg := runFails(t, "entry", "list"); !strings.Contains(msg, "local administrators") {
		t.Fatalf("a person's SVID must not administer: %s", msg)
	}
	t.Setenv(serverEnv, "")

	idp.SetUser("mallory@evil.test", true)
	idp.ApproveDevice()
	if msg := runFails(t, "login", "--server", addr, "--bundle", bundle, "--device"); !strings.Contains(msg, "evil.test") {
		t.Fatalf("a domain the rules do not allow: %s", msg)
	}
	idp.SetUser("bob@example.com", false)
	idp.ApproveDevice()
	if msg := runFails(t, "login", "--server", addr, "--bundle", bundle, "--device"); !strings.Contains(msg, "not verified") {
		t.Fatalf("an unverified email: %s", msg)
	}
}
