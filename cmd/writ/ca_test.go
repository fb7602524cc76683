package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"writ.dev/writ/audit"
)

// TestCACommands steers the authorities with the CLI against a real server.
func TestCACommands(t *testing.T) {
	dir := shortTempDir(t)
	data := filepath.Join(dir, "data")
	socket := filepath.Join(data, "admin.sock")
	cfg := filepath.Join(dir, "writ.yaml")
	if err := os.WriteFile(cfg, []byte("listen_address: \"\"\nops_address: \"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	startCommand(t, socket, "server", "--data-dir", data, "--trust-domain", "ca.test", "--config", cfg)

	show := writ(t, "ca", "show", "--socket", socket)
	if strings.Count(show, "active") != 2 || !strings.Contains(show, "x509") || !strings.Contains(show, "jwt") {
		t.Fatalf("ca show at start:\n%s", show)
	}
	type authority struct {
		Kind, ID, State string
		Tainted         bool
	}
	list := func() []authority {
		var out []authority
		for _, line := range strings.Split(strings.TrimSpace(writ(t, "ca", "show", "--socket", socket, "--json")), "\n") {
			var a authority
			if err := json.Unmarshal([]byte(line), &a); err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			out = append(out, a)
		}
		return out
	}
	var x509Active string
	for _, a := range list() {
		if a.Kind == "x509" && a.State == "active" {
			x509Active = a.ID
		}
	}
	if x509Active == "" {
		t.Fatal("no active x509 authority in --json output")
	}

	out := writ(t, "ca", "prepare", "--socket", socket, "--kind", "jwt")
	if !strings.Contains(out, "prepared") {
		t.Fatalf("prepare: %s", out)
	}
	if out := writ(t, "ca", "activate", "--socket", socket, "--kind", "jwt"); !strings.Contains(out, "active") {
		t.Fatalf("activate: %s", out)
	}
	msg := runFails(t, "ca", "revoke", "--socket", socket, "--kind", "x509", "--id", x509Active)
	if !strings.Contains(msg, "taint") {
		t.Fatalf("revoking the active CA: %s", msg)
	}
	if out := writ(t, "ca", "taint", "--socket", socket, "--kind", "x509", "--id", x509Active); !strings.Contains(out, "tainted") {
		t.Fatalf("taint: %s", out)
	}
	if out := writ(t, "ca", "revoke", "--socket", socket, "--kind", "x509", "--id", x509Active); !strings.Contains(out, "revoked") {
		t.Fatalf("revoke: %s", out)
	}
	for _, bad := range [][]string{
		{"ca", "taint", "--socket", socket, "--kind", "x509"},
		{"ca", "prepare", "--socket", socket, "--kind", "rsa"},
		{"ca", "revoke", "--socket", socket, "--kind", "x509", "--id", "feed"},
		{"ca", "rotate"},
	} {
		if msg := runFails(t, bad...); msg == "" {
			t.Errorf("writ %v failed without saying why", bad)
		}
	}
	if tail := writ(t, "audit", "tail", "--socket", socket, "-n", "6"); !strings.Contains(tail, audit.EventCAX509Revoke) || !strings.Contains(tail, audit.EventCAX509Taint) {
		t.Fatalf("audit tail after the verbs:\n%s", tail)
	}
}
