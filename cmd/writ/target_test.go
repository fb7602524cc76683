package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTargetResolve(t *testing.T) {
	t.Chdir(t.TempDir())
	t.Setenv(socketEnv, "")
	t.Setenv(serverEnv, "")
	if _, _, err := (target{socket: "/a.sock", server: "h:1"}).resolve(); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("--socket and --server: %v", err)
	}
	if _, _, err := (target{identity: identityWorkload}).resolve(); err == nil || !strings.Contains(err.Error(), "--server") {
		t.Errorf("--identity without a server: %v", err)
	}
	if _, server, err := (target{server: "h:1"}).resolve(); err != nil || server != "h:1" {
		t.Errorf("--server: %q %v", server, err)
	}
	t.Setenv(serverEnv, "env:2")
	if _, server, _ := (target{}).resolve(); server != "env:2" {
		t.Errorf("$%s: %q", serverEnv, server)
	}
	// A socket named anywhere wins over the environment's server.
	if socket, server, _ := (target{socket: "/a.sock"}).resolve(); socket != "/a.sock" || server != "" {
		t.Errorf("--socket with $%s set: %q %q", serverEnv, socket, server)
	}
	t.Setenv(socketEnv, "/env.sock")
	if socket, server, _ := (target{}).resolve(); socket != "/env.sock" || server != "" {
		t.Errorf("$%s and $%s: %q %q", socketEnv, serverEnv, socket, server)
	}
	if _, err := loadIdentity("root"); err == nil || !strings.Contains(err.Error(), "login") || !strings.Contains(err.Error(), "workload") {
		t.Errorf("unknown identity: %v", err)
	}
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", "")
	if _, err := loadIdentity(identityWorkload); err == nil || !strings.Contains(err.Error(), "SPIFFE_ENDPOINT_SOCKET") {
		t.Errorf("workload identity without the Workload API: %v", err)
	}
	t.Setenv(identityDirEnv, t.TempDir())
	if _, err := loadIdentity(identityLogin); err == nil || !strings.Contains(err.Error(), "writ login") {
		t.Errorf("no saved identity: %v", err)
	}
}

// TestTokenExchangeRefusals: bad input is refused before anything is
// fetched or sent, saying what to give instead.
func TestTokenExchangeRefusals(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "tok")
	if err := os.WriteFile(tok, []byte("a.b.c\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	two := filepath.Join(dir, "two")
	if err := os.WriteFile(two, []byte("a.b.c d.e.f\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", "")
	t.Setenv(tokenEndpointEnv, "")
	base := []string{"exchange", "--audience", "payroll"}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--subject-token", tok}, "missing --endpoint"},
		{[]string{"--subject-token", tok, "--endpoint", "http://h:1/token"}, "not an https URL"},
		{[]string{"--subject-token", tok, "--endpoint", "https://h:1/token", "--subject-token-type", "saml"}, "use jwt, id_token or delegation"},
		{[]string{"--subject-token", two, "--endpoint", "https://h:1/token"}, "does not hold one token"},
		{[]string{"--subject-token", filepath.Join(dir, "absent"), "--endpoint", "https://h:1/token"}, "subject-token:"},
		{[]string{"--subject-token", tok, "--endpoint", "https://h:1/token"}, "SPIFFE_ENDPOINT_SOCKET"},
	} {
		err := runToken(context.Background(), append(base, tt.args...), &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want %q", tt.args, err, tt.want)
		}
	}
}
