package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"writ.dev/writ/person/login/logintest"
)

var taskIDWord = regexp.MustCompile(`task (\S+):`)

// TestTokenExchangeAndRemoteIdentity follows README's delegation and
// remote-identity usage with the built binary: an agent's workload gets a
// delegation token for a person with `writ token exchange`, and acts as
// its own identity over mTLS with --server --identity workload, where the
// server's access table lets it and nowhere else.
func TestTokenExchangeAndRemoteIdentity(t *testing.T) {
	dir := shortTempDir(t)
	sh := newShell(t, dir)
	listen, tokenAddr := freePort(t), freePort(t)
	// People's tokens come from their identity provider: the subject of
	// an exchange is an ID token from the people issuer.
	idp := logintest.New(t)
	jwks := filepath.Join(dir, "idp-jwks.json")
	idp.WriteJWKS(t, jwks)
	conf := fmt.Sprintf("listen_address: %s\nops_address: \"\"\ntoken_endpoint:\n  address: %s\n"+
		"people:\n  issuer: %s\n  client_id: %s\n  jwks_file: %s\n  allow:\n    - email_domain: example.com\n",
		listen, tokenAddr, idp.URL, idp.ClientID(), jwks)
	if err := os.WriteFile(filepath.Join(dir, "writ.yaml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	admin := filepath.Join(dir, "data", "admin.sock")
	sh.start("writ server --data-dir data --config writ.yaml", admin)
	sh.run("export WRIT_SOCKET=" + admin)

	// An agent, and a rule giving this test's processes the agent identity
	// payroll-bot through it.
	var tok struct {
		Token   string `json:"token"`
		AgentID string `json:"agent_id"`
	}
	if err := json.Unmarshal([]byte(sh.run("writ token create --json")), &tok); err != nil {
		t.Fatal(err)
	}
	const bot, ceo = "spiffe://example.org/agent/payroll-bot", "spiffe://example.org/person/example.com/ceo"
	sh.run(fmt.Sprintf("writ entry create --spiffe-id %s --parent-id %s --selector unix:uid:%d", bot, tok.AgentID, os.Getuid()))
	agentSock := filepath.Join(dir, "agent", "agent.sock")
	sh.env["WRIT_JOIN_TOKEN"] = tok.Token
	sh.start("writ agent --server "+listen+" --data-dir agent --socket "+agentSock, agentSock)
	delete(sh.env, "WRIT_JOIN_TOKEN")

	// The task under which the bot acts for the CEO (README: Tasks and decisions).
	out := sh.run("writ task create --title payroll --reason 'board meeting' --owner " + ceo + " --deadline 2h --member " + ceo + " --member " + bot)
	m := taskIDWord.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("task create printed no task ID: %s", out)
	}
	taskID := m[1]
	sh.run("writ task grant --id " + taskID + " --action read --resource hr/salaries --to " + ceo + " --to " + bot)
	sh.run("writ task open --id " + taskID)

	// The person's tokens: ID tokens from the people issuer, each used once.
	endpoint := "https://" + tokenAddr + "/token"
	idToken := func(name, email string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(idp.IDToken(t, email)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	idToken("ceo.jwt", "ceo@example.com")
	idToken("ceo2.jwt", "CEO@Example.com") // the same person, however spelled
	idToken("ceo3.jwt", "ceo@example.com")
	idToken("intern.jwt", "intern@example.com")

	sh.run("export SPIFFE_ENDPOINT_SOCKET=unix://" + agentSock)
	// The rule reaches the agent within moments of its joining.
	for deadline := time.Now().Add(30 * time.Second); ; {
		if c := sh.command("writ fetch --timeout 2s"); c.Run() == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent never served this process its identity")
		}
	}

	// As the README's delegation section writes it.
	token := strings.TrimSpace(sh.run("writ token exchange --subject-token ceo.jwt --subject-token-type id_token --audience payroll --scope task:" + taskID + " --endpoint " + endpoint))
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token exchange printed %q, not a compact JWS", token)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Sub string `json:"sub"`
		Act struct {
			Sub string `json:"sub"`
		} `json:"act"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Sub != ceo || claims.Act.Sub != bot {
		t.Fatalf("delegation token claims %s (%v): want sub %s acted on by %s", payload, err, ceo, bot)
	}
	full := sh.run("writ token exchange --subject-token - --subject-token-type id_token --audience payroll --endpoint " + endpoint + " --json < ceo2.jwt")
	if !strings.Contains(full, `"issued_token_type":"urn:writ:params:oauth:token-type:delegation"`) {
		t.Fatalf("--json: %s", full)
	}
	// A refusal says why: the bot does not share a task with an unrelated person.
	if msg := sh.fails("writ token exchange --subject-token intern.jwt --subject-token-type id_token --audience payroll --endpoint " + endpoint); !strings.Contains(msg, "invalid_target") {
		t.Errorf("exchange for a person outside the task: %s", msg)
	}

	// The workload reaches the remote API as itself: a decision it may ask
	// for, administration it may not.
	remote := "--server " + listen + " --identity workload"
	sh.env["WRIT_SOCKET"] = ""
	// Decided as a resource server would decide the bot: by the certificate
	// it presents, acting for the person its delegation token names (a
	// token for this "resource server", the bot itself).
	sh.run("writ token exchange --subject-token ceo3.jwt --subject-token-type id_token --audience " + bot + " --endpoint " + endpoint + " > deleg.jwt")
	out = sh.run("writ check " + remote + " --action read --resource hr/salaries --delegation-token deleg.jwt")
	if !strings.HasPrefix(out, "ALLOW") || !strings.Contains(out, bot) || !strings.Contains(out, ceo) {
		t.Errorf("check over mTLS with a delegation token: %s", out)
	}
	if out := sh.run("writ check " + remote + " --action write --resource hr/salaries || true"); !strings.HasPrefix(out, "DENY") {
		t.Errorf("check over mTLS for an action not granted: %s", out)
	}
	// Naming a chain stays with administrators.
	if msg := sh.fails("writ check " + remote + " --action read --resource hr/salaries --chain " + bot); !strings.Contains(msg, "permission denied") || !strings.Contains(msg, "--socket") {
		t.Errorf("named chain over mTLS: %s", msg)
	}
	if out := sh.run("writ bundle show " + remote); !strings.Contains(out, "BEGIN CERTIFICATE") {
		t.Errorf("bundle show over mTLS: %s", out)
	}
	msg := sh.fails("writ lock create " + remote + " --target spiffe-id=" + ceo + " --reason test")
	if !strings.Contains(msg, "permission denied") || !strings.Contains(msg, "--socket") {
		t.Errorf("administration over mTLS: %s", msg)
	}
	if msg := sh.fails("writ status --socket " + admin + " " + remote); !strings.Contains(msg, "not both") {
		t.Errorf("--socket with --server: %s", msg)
	}
}
