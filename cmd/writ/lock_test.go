package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runFails runs one client command that must fail and returns its stderr.
func runFails(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), args, &stdout, &stderr); code == 0 {
		t.Fatalf("writ %s succeeded: %s", strings.Join(args, " "), stdout.String())
	}
	return stderr.String()
}

// TestLockCommands locks an identity with the CLI against a real server,
// sees minting refused, lists and lifts the lock, and sees minting resume.
func TestLockCommands(t *testing.T) {
	dir := shortTempDir(t)
	data := filepath.Join(dir, "data")
	socket := filepath.Join(data, "admin.sock")
	cfg := filepath.Join(dir, "writ.yaml")
	if err := os.WriteFile(cfg, []byte("listen_address: \"\"\nops_address: \"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	startCommand(t, socket, "server", "--data-dir", data, "--trust-domain", "lock.test", "--config", cfg)
	mint := []string{"svid", "mint", "--socket", socket, "--jwt", "--spiffe-id", "spiffe://lock.test/ci/build", "--audience", "a"}
	writ(t, mint...)

	out := writ(t, "lock", "create", "--socket", socket, "--target", "id-prefix=spiffe://lock.test/ci", "--reason", "INC-9 runner compromised", "--json")
	var lock struct {
		ID     string `json:"id"`
		Target struct{ Kind, Value string }
		Reason string
	}
	if err := json.Unmarshal([]byte(out), &lock); err != nil || lock.ID == "" || lock.Target.Kind != "id-prefix" || lock.Reason != "INC-9 runner compromised" {
		t.Fatalf("lock create --json: %v: %s", err, out)
	}
	if msg := runFails(t, mint...); !strings.Contains(msg, lock.ID) || !strings.Contains(msg, "INC-9") {
		t.Fatalf("mint under a lock: %s", msg)
	}
	// Whole path segments only: /cicd is not under /ci.
	writ(t, "svid", "mint", "--socket", socket, "--jwt", "--spiffe-id", "spiffe://lock.test/cicd", "--audience", "a")

	out = writ(t, "lock", "create", "--socket", socket, "--target", "join-method=join_token", "--reason", "token leak", "--ttl", "1h")
	for _, want := range []string{"join-method=join_token", "token leak", "Expires at:"} {
		if !strings.Contains(out, want) {
			t.Errorf("lock create output lacks %q:\n%s", want, out)
		}
	}
	out = writ(t, "lock", "list", "--socket", socket)
	if !strings.Contains(out, lock.ID) || !strings.Contains(out, "id-prefix=spiffe://lock.test/ci") || !strings.Contains(out, "join-method=join_token") {
		t.Fatalf("lock list:\n%s", out)
	}
	if out := writ(t, "lock", "list", "--socket", socket, "--json"); strings.Count(out, "\n") != 2 {
		t.Fatalf("lock list --json: want two lines:\n%s", out)
	}

	// Bad input is refused naming the flag or field, and nothing is written.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--target", "spiffe-id=spiffe://lock.test/x"}, "--reason"},
		{[]string{"--target", "user=bob", "--reason", "r"}, "target"},
		{[]string{"--target", "spiffe-id", "--reason", "r"}, "KIND=VALUE"},
		{[]string{"--target", "spiffe-id=spiffe://other.test/x", "--reason", "r"}, "target.value"},
		{[]string{"--target", "spiffe-id=spiffe://lock.test/x", "--reason", "r", "--ttl", "soon"}, "ttl"},
	} {
		msg := runFails(t, append([]string{"lock", "create", "--socket", socket}, tc.args...)...)
		if !strings.Contains(msg, tc.want) {
			t.Errorf("lock create %v: error does not name %q: %s", tc.args, tc.want, msg)
		}
	}
	if out := writ(t, "lock", "list", "--socket", socket, "--json"); strings.Count(out, "\n") != 2 {
		t.Fatalf("refused creates wrote a lock:\n%s", out)
	}

	out = writ(t, "lock", "delete", "--socket", socket, "--id", lock.ID)
	if !strings.Contains(out, "deleted lock "+lock.ID) {
		t.Fatalf("lock delete: %s", out)
	}
	writ(t, mint...)
	if msg := runFails(t, "lock", "delete", "--socket", socket, "--id", lock.ID); !strings.Contains(msg, lock.ID) {
		t.Fatalf("deleting again: %s", msg)
	}
}
