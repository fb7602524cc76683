package main

import (
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestAgentOneshot is a CI job's path: a token from `writ token create`,
// a rule for the job's uid, and `writ agent --oneshot --out DIR` writing
// the identity, which openssl verifies. The token then no longer works.
func TestAgentOneshot(t *testing.T) {
	dir := shortTempDir(t)
	data := filepath.Join(dir, "data")
	socket := filepath.Join(data, "admin.sock")
	addr := freePort(t)
	cfg := filepath.Join(dir, "writ.yaml")
	if err := os.WriteFile(cfg, []byte("listen_address: "+addr+"\nops_address: \"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	startCommand(t, socket, "server", "--data-dir", data, "--trust-domain", "ci.test", "--config", cfg)

	var tok struct {
		Token   string `json:"token"`
		AgentID string `json:"agent_id"`
	}
	if err := json.Unmarshal([]byte(writ(t, "token", "create", "--socket", socket, "--ttl", "10m", "--json")), &tok); err != nil {
		t.Fatal(err)
	}
	if tok.Token == "" || !strings.HasPrefix(tok.AgentID, "spiffe://ci.test/writ/agent/join-token/") {
		t.Fatalf("token create: %+v", tok)
	}
	writ(t, "entry", "create", "--socket", socket, "--spiffe-id", "spiffe://ci.test/job", "--parent-id", tok.AgentID,
		"--selector", "unix:uid:"+strconv.Itoa(os.Geteuid()))

	out := filepath.Join(dir, "id")
	t.Setenv(joinTokenEnv, tok.Token)
	got := writ(t, "agent", "--server", addr, "--data-dir", filepath.Join(dir, "agent"), "--oneshot", "--out", out, "--jwt-audience", "sts.example.com")
	if !strings.Contains(got, tok.AgentID) {
		t.Fatalf("agent --oneshot: %s", got)
	}
	for name, mode := range map[string]os.FileMode{"svid.pem": 0o644, "svid.key": 0o600, "bundle.pem": 0o644, "jwt-sts.example.com.token": 0o600} {
		fi, err := os.Stat(filepath.Join(out, name))
		if err != nil || fi.Mode().Perm() != mode {
			t.Fatalf("%s: %v %v; want mode %v", name, fi, err, mode)
		}
	}
	if openssl, err := exec.LookPath("openssl"); err == nil {
		cmd := exec.Command(openssl, "verify", "-CAfile", filepath.Join(out, "bundle.pem"), "-untrusted", filepath.Join(out, "svid.pem"), filepath.Join(out, "svid.pem"))
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl verify: %v: %s", err, b)
		}
	}

	// The token was burned: another agent cannot use it.
	msg := runFails(t, "agent", "--server", addr, "--data-dir", filepath.Join(dir, "other"), "--oneshot", "--out", filepath.Join(dir, "x"))
	if !strings.Contains(msg, "already used") {
		t.Fatalf("a second join with the same token: %s", msg)
	}
	// And one from the flag and the variable at once is refused up front.
	msg = runFails(t, "agent", "--server", addr, "--join-token", tok.Token, "--oneshot", "--out", filepath.Join(dir, "y"))
	if !strings.Contains(msg, "more than once") {
		t.Fatalf("token given twice: %s", msg)
	}
}

// TestAgentConfigDefaults: by default `writ agent` serves the Workload API
// where every user's workloads can reach it (not inside its 0700 data
// directory), and attests callers with the same attestors as `writ dev`.
func TestAgentConfigDefaults(t *testing.T) {
	dataDir := t.TempDir()
	cfg, err := agentConfig(agentFlags{serverAddr: "127.0.0.1:1", dataDir: dataDir}, "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if rel, err := filepath.Rel(dataDir, cfg.SocketPath); err == nil && !strings.HasPrefix(rel, "..") {
		t.Errorf("default socket %s is inside the data dir %s, which only the agent's user may enter", cfg.SocketPath, dataDir)
	}
	if cfg.SocketPath != defaultAgentSocket {
		t.Errorf("default socket %s, want %s", cfg.SocketPath, defaultAgentSocket)
	}
	var got, want []string
	for _, a := range cfg.Attestors {
		got = append(got, a.Type())
	}
	for _, a := range workloadAttestors(slog.New(slog.DiscardHandler)) {
		want = append(want, a.Type())
	}
	if !slices.Equal(got, want) || len(got) < 3 {
		t.Errorf("writ agent attests with %v, want what writ dev uses: %v", got, want)
	}

	for _, f := range []agentFlags{{socket: "none"}, {oneshot: true, out: "x"}} {
		f.dataDir = dataDir
		if cfg, _ := agentConfig(f, "", slog.New(slog.DiscardHandler)); cfg.SocketPath != "" {
			t.Errorf("%+v: socket %q, want none", f, cfg.SocketPath)
		}
	}
}
