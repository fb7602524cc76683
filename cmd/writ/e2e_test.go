package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	writv1 "writ.dev/writ/api/writ/v1"
)

// syncBuffer lets the test read what a running command has printed so far.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startCommand runs a long-lived writ command (server, dev) in the
// background and waits for its admin socket to accept connections.
func startCommand(t *testing.T, socket string, args ...string) (stdout *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, stdout, stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("command did not stop within 20s of cancellation")
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case code := <-done:
			t.Fatalf("%v exited with %d: %s", args, code, stderr.String())
		default:
		}
		if c, err := net.Dial("unix", socket); err == nil {
			c.Close()
			return stdout
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%v: admin socket %s never came up: %s", args, socket, stderr.String())
	return nil
}

// writ runs one client command and returns its output, failing on error.
func writ(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
		t.Fatalf("writ %s: exit %d: %s", strings.Join(args, " "), code, stderr.String())
	}
	return stdout.String()
}

func shortTempDir(t *testing.T) string {
	t.Helper()
	// Unix socket paths are limited to about 100 bytes; t.TempDir can be longer.
	dir, err := os.MkdirTemp("", "writ-e2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// TestServerFirstRun is the first-run promise: `writ server --data-dir DIR`
// starts with nothing else, and a minted SVID verifies with openssl.
func TestServerFirstRun(t *testing.T) {
	dir := shortTempDir(t)
	data := filepath.Join(dir, "data")
	socket := filepath.Join(data, "admin.sock")
	cfg := filepath.Join(dir, "writ.yaml")
	// Ephemeral ports keep parallel test runs apart; nothing else is configured.
	if err := os.WriteFile(cfg, []byte("listen_address: 127.0.0.1:0\nops_address: 127.0.0.1:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	startCommand(t, socket, "server", "--data-dir", data, "--trust-domain", "first.run", "--config", cfg)

	out := writ(t, "status", "--socket", socket)
	if !strings.Contains(out, "first.run") {
		t.Fatalf("status does not name the trust domain: %s", out)
	}
	writ(t, "entry", "create", "--socket", socket,
		"--spiffe-id", "spiffe://first.run/web", "--parent-id", "spiffe://first.run/node/a", "--selector", "unix:uid:1000")
	if out := writ(t, "entry", "list", "--socket", socket); !strings.Contains(out, "spiffe://first.run/web") {
		t.Fatalf("entry list: %s", out)
	}

	svidDir := filepath.Join(dir, "svid")
	writ(t, "svid", "mint", "--socket", socket, "--spiffe-id", "spiffe://first.run/me", "--ttl", "10m", "--out", svidDir)
	fi, err := os.Stat(filepath.Join(svidDir, "svid.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("svid.key: %v %v", fi, err)
	}
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not on PATH; the verification step needs it")
	}
	cmd := exec.Command(openssl, "verify", "-CAfile", filepath.Join(svidDir, "bundle.pem"),
		"-untrusted", filepath.Join(svidDir, "svid.pem"), filepath.Join(svidDir, "svid.pem"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl verify: %v: %s", err, out)
	}
}

// TestDev runs `writ dev` as a user would and follows its printed hints.
func TestDev(t *testing.T) {
	dir := shortTempDir(t)
	// Without a runtime directory dev puts the Workload API socket under
	// TMPDIR; the test's stands in for /tmp, which every user may search.
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("TMPDIR", dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, ".writ")
	socket := filepath.Join(data, "admin.sock")
	stdout := startCommand(t, socket, "dev", "--data-dir", data, "--listen", "127.0.0.1:0", "--ops-address", "127.0.0.1:0")
	// The hints are printed once Start returns, a moment after the socket
	// first accepts connections.
	hints := stdout.String()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(hints, "Stop with Ctrl-C") && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		hints = stdout.String()
	}
	for _, want := range []string{socket, "can administer this server", "svid mint"} {
		if !strings.Contains(hints, want) {
			t.Errorf("dev output lacks %q:\n%s", want, hints)
		}
	}
	t.Setenv("WRIT_SOCKET", socket)
	if out := writ(t, "bundle", "show"); !strings.Contains(out, "BEGIN CERTIFICATE") {
		t.Fatalf("bundle show: %s", out)
	}
	// The invoking user's processes have an identity over the Workload API.
	workloadSocket := filepath.Join(dir, fmt.Sprintf("writ-dev-%d", os.Getuid()), "agent.sock")
	endpoint := "unix://" + workloadSocket
	if !strings.Contains(hints, endpoint) {
		t.Errorf("dev output lacks the Workload API address %s:\n%s", endpoint, hints)
	}
	// Workloads of other users (the README's rules for another uid) must
	// reach the socket, while the data directory, which holds keys, stays
	// closed.
	assertReachableByAll(t, workloadSocket)
	if fi, err := os.Stat(data); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir %s: %v, %v; want mode 700", data, fi, err)
	}
	idDir := filepath.Join(dir, "id")
	out := writ(t, "fetch", "--endpoint", endpoint, "--out", idDir, "--jwt-audience", "demo")
	if !strings.Contains(out, "spiffe://example.org/user/") || !strings.Contains(out, "JWT-SVID for demo") {
		t.Fatalf("writ fetch: %s", out)
	}
	// --out writes the layout writ agent --out writes, the JWT-SVID included.
	for _, name := range []string{"svid.pem", "svid.key", "bundle.pem", "jwt-demo.token"} {
		if _, err := os.Stat(filepath.Join(idDir, name)); err != nil {
			t.Errorf("fetch --out: %v", err)
		}
	}
	if openssl, err := exec.LookPath("openssl"); err == nil {
		cmd := exec.Command(openssl, "verify", "-CAfile", filepath.Join(idDir, "bundle.pem"),
			"-untrusted", filepath.Join(idDir, "svid.pem"), filepath.Join(idDir, "svid.pem"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl verify of the fetched SVID: %v: %s", err, out)
		}
	}
}

// assertReachableByAll fails unless every user may connect to the socket
// at path: search permission on each directory above it and write
// permission on the socket itself.
func assertReachableByAll(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o002 == 0 {
		t.Errorf("socket %s is mode %o; other users cannot connect", path, fi.Mode().Perm())
	}
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			t.Errorf("directory %s above the socket is mode %o; other users cannot reach the socket", dir, fi.Mode().Perm())
		}
		if dir == filepath.Dir(dir) {
			return
		}
	}
}

// TestJWTSVIDMint mints a JWT-SVID with the CLI against a real server and
// validates it as a relying party would, with the trust domain's JWT keys.
func TestJWTSVIDMint(t *testing.T) {
	dir := shortTempDir(t)
	data := filepath.Join(dir, "data")
	socket := filepath.Join(data, "admin.sock")
	cfg := filepath.Join(dir, "writ.yaml")
	if err := os.WriteFile(cfg, []byte("listen_address: \"\"\nops_address: \"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	startCommand(t, socket, "server", "--data-dir", data, "--trust-domain", "jwt.test", "--config", cfg)

	cl, err := dial(target{socket: socket})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	resp, err := cl.bundles.GetBundle(context.Background(), &writv1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("jwt.test")
	bundle := jwtbundle.New(td)
	for _, k := range resp.JwtAuthorities {
		pub, err := x509.ParsePKIXPublicKey(k.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		if err := bundle.AddJWTAuthority(k.KeyId, pub); err != nil {
			t.Fatal(err)
		}
	}

	// To stdout: the token and nothing else.
	out := writ(t, "svid", "mint", "--socket", socket, "--jwt", "--spiffe-id", "spiffe://jwt.test/me",
		"--audience", "aud-a", "--audience", "aud-b", "--ttl", "2m")
	token := strings.TrimSuffix(out, "\n")
	if strings.ContainsAny(token, " \n") {
		t.Fatalf("stdout is not just the token: %q", out)
	}
	svid, err := jwtsvid.ParseAndValidate(token, bundle, []string{"aud-b"})
	if err != nil {
		t.Fatalf("minted JWT-SVID does not validate: %v", err)
	}
	if svid.ID.String() != "spiffe://jwt.test/me" || time.Until(svid.Expiry) > 2*time.Minute+time.Second {
		t.Fatalf("svid %s expiring %s", svid.ID, svid.Expiry)
	}

	// To a file, mode 0600.
	tokDir := filepath.Join(dir, "tok")
	out = writ(t, "svid", "mint", "--socket", socket, "--jwt", "--spiffe-id", "spiffe://jwt.test/me",
		"--audience", "aud-a", "--out", tokDir)
	path := filepath.Join(tokDir, "jwt-aud-a.token")
	if !strings.Contains(out, path) || strings.Contains(out, "eyJ") {
		t.Fatalf("output with --out: %s", out)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v %v", path, fi, err)
	}
	saved, _ := os.ReadFile(path)
	if _, err := jwtsvid.ParseAndValidate(strings.TrimSpace(string(saved)), bundle, []string{"aud-a"}); err != nil {
		t.Fatalf("saved JWT-SVID does not validate: %v", err)
	}

	// Refusals come back with the field named and nothing written.
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"svid", "mint", "--socket", socket, "--jwt", "--spiffe-id", "spiffe://jwt.test/me",
		"--audience", "a", "--ttl", "2h", "--out", filepath.Join(dir, "none")}, &stdout, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), "ttl_seconds") {
		t.Fatalf("ttl over the cap: exit %d: %s", code, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "none")); !os.IsNotExist(err) {
		t.Fatalf("refused mint created --out: %v", err)
	}
}

// TestBundleShowSPIFFE prints the SPIFFE bundle document with the CLI and
// loads it as a federating trust domain would.
func TestBundleShowSPIFFE(t *testing.T) {
	dir := shortTempDir(t)
	data := filepath.Join(dir, "data")
	socket := filepath.Join(data, "admin.sock")
	cfg := filepath.Join(dir, "writ.yaml")
	conf := "listen_address: \"\"\nops_address: \"\"\nbundle:\n  refresh_hint: 2m\nbundle_endpoint:\n  address: 127.0.0.1:0\n  profile: https_spiffe\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	startCommand(t, socket, "server", "--data-dir", data, "--trust-domain", "bundle.test", "--config", cfg)

	out := writ(t, "bundle", "show", "--socket", socket, "--format", "spiffe")
	td := spiffeid.RequireTrustDomainFromString("bundle.test")
	b, err := spiffebundle.Parse(td, []byte(out))
	if err != nil {
		t.Fatalf("bundle show --format spiffe does not parse as a SPIFFE bundle: %v\n%s", err, out)
	}
	if hint, ok := b.RefreshHint(); !ok || hint != 2*time.Minute {
		t.Fatalf("refresh hint %v %v, want 2m from the config", hint, ok)
	}
	if seq, ok := b.SequenceNumber(); !ok || seq == 0 {
		t.Fatalf("sequence %d %v", seq, ok)
	}
	if len(b.JWTAuthorities()) == 0 {
		t.Fatal("no JWT authorities")
	}
	// The X.509 authorities are the ones --format pem prints.
	pemOut := writ(t, "bundle", "show", "--socket", socket, "--format", "pem")
	var fromPEM []*x509.Certificate
	for rest := []byte(pemOut); ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		fromPEM = append(fromPEM, c)
	}
	if !x509bundle.FromX509Authorities(td, fromPEM).Equal(b.X509Bundle()) {
		t.Fatal("--format spiffe and --format pem disagree on the X.509 authorities")
	}

	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"bundle", "show", "--socket", socket, "--format", "jwks"}, &stdout, &stderr); code == 0 || !strings.Contains(stderr.String(), "pem, spiffe") {
		t.Fatalf("unknown format: exit %d: %s", code, stderr.String())
	}
}
