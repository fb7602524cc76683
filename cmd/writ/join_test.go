package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"writ.dev/writ/attest/node/oidc"
)

// fakeGitHub is GitHub Actions' OIDC token endpoint as a job sees it: it
// signs a job token for the audience asked, with key.
func fakeGitHub(t *testing.T, key *ecdsa.PrivateKey, repo, runID string, audience *atomic.Value) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer job-request-token" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		aud := r.URL.Query().Get("audience")
		audience.Store(aud)
		now := time.Now()
		claims := map[string]any{
			"iss": "https://token.actions.githubusercontent.com", "aud": aud, "sub": "repo:" + repo + ":ref:refs/heads/main",
			"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "jti": "jti-" + runID,
			"repository": repo, "repository_owner": strings.Split(repo, "/")[0], "repository_id": "42", "ref": "refs/heads/main",
			"ref_type": "branch", "sha": "abc", "workflow": "ci", "workflow_ref": repo + "/.github/workflows/ci.yml@refs/heads/main",
			"job_workflow_ref": repo + "/.github/workflows/ci.yml@refs/heads/main", "event_name": "push", "run_id": runID,
			"run_attempt": "1", "actor": "octocat",
		}
		payload, _ := json.Marshal(claims)
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "gh"}}, (&jose.SignerOptions{}).WithType("JWT"))
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		jws, _ := signer.Sign(payload)
		tok, _ := jws.CompactSerialize()
		json.NewEncoder(w).Encode(map[string]string{"value": tok})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestAgentJoinsFromGitHubActions is the README's GitHub Actions recipe: a
// job with no secret at all joins with its OIDC token, which the agent asks
// GitHub for itself, and writes its identity for the job to use.
func TestAgentJoinsFromGitHubActions(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := shortTempDir(t)
	data := filepath.Join(dir, "data")
	socket := filepath.Join(data, "admin.sock")
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "gh", Algorithm: "ES256", Use: "sig"}}})
	jwksFile := filepath.Join(dir, "github-jwks.json")
	if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	cfg := filepath.Join(dir, "writ.yaml")
	conf := "listen_address: " + addr + "\nops_address: \"\"\nnode_attestation:\n  oidc:\n    - name: github\n      profile: github\n" +
		"      jwks_file: " + jwksFile + "\n      allow:\n        - repository: acme/payments\n          ref: refs/heads/main\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	startCommand(t, socket, "server", "--data-dir", data, "--trust-domain", "ci.test", "--config", cfg)
	bundle := filepath.Join(dir, "bundle.pem")
	if err := os.WriteFile(bundle, []byte(writ(t, "bundle", "show", "--socket", socket)), 0o644); err != nil {
		t.Fatal(err)
	}
	agentID := "spiffe://ci.test/node/github/acme/payments/9001/1"
	writ(t, "entry", "create", "--socket", socket, "--spiffe-id", "spiffe://ci.test/deployer", "--parent-id", agentID,
		"--selector", "unix:uid:"+strconv.Itoa(os.Geteuid()))

	var audience atomic.Value
	gh := fakeGitHub(t, key, "acme/payments", "9001", &audience)
	t.Setenv(oidc.GitHubTokenURLEnv, gh.URL+"/token?api-version=2.0")
	t.Setenv(oidc.GitHubTokenTokenEnv, "job-request-token")
	out := filepath.Join(dir, "id")
	got := writ(t, "agent", "--server", addr, "--data-dir", filepath.Join(dir, "agent"), "--bundle", bundle,
		"--join-method", "github", "--oneshot", "--out", out)
	if !strings.Contains(got, agentID) {
		t.Fatalf("agent: %s", got)
	}
	if aud, _ := audience.Load().(string); aud != "ci.test" {
		t.Fatalf("the agent asked GitHub for audience %q, want the trust domain ci.test", aud)
	}
	if _, err := os.Stat(filepath.Join(out, "svid.pem")); err != nil {
		t.Fatal(err)
	}

	// Without the bundle there is nothing to verify the server with.
	msg := runFails(t, "agent", "--server", addr, "--data-dir", filepath.Join(dir, "agent2"), "--join-method", "github", "--oneshot", "--out", filepath.Join(dir, "x"))
	if !strings.Contains(msg, "--bundle") {
		t.Fatalf("join without a bundle: %s", msg)
	}
}

// TestGitHubActionsRuleServesEveryRun is the README's GitHub Actions
// recipe with a rule that names its parents by node selectors: each run
// joins as its own agent (the run id is in the agent's ID), and one rule
// for the repository gives every run its identity, while a rule for
// another repository gives it none.
func TestGitHubActionsRuleServesEveryRun(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := shortTempDir(t)
	data := filepath.Join(dir, "data")
	socket := filepath.Join(data, "admin.sock")
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "gh", Algorithm: "ES256", Use: "sig"}}})
	jwksFile := filepath.Join(dir, "github-jwks.json")
	if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	cfg := filepath.Join(dir, "writ.yaml")
	conf := "listen_address: " + addr + "\nops_address: \"\"\nnode_attestation:\n  oidc:\n    - name: github\n      profile: github\n" +
		"      jwks_file: " + jwksFile + "\n      allow:\n        - repository: acme/payments\n          ref: refs/heads/main\n" +
		"      node_id: /node/github/{{repository...}}/{{run_id}}/{{run_attempt}}\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	startCommand(t, socket, "server", "--data-dir", data, "--trust-domain", "ci.test", "--config", cfg)
	bundle := filepath.Join(dir, "bundle.pem")
	if err := os.WriteFile(bundle, []byte(writ(t, "bundle", "show", "--socket", socket)), 0o644); err != nil {
		t.Fatal(err)
	}
	uid := "unix:uid:" + strconv.Itoa(os.Geteuid())
	writ(t, "entry", "create", "--socket", socket, "--spiffe-id", "spiffe://ci.test/deployer",
		"--parent-selector", "github:repository:acme/payments", "--parent-selector", "github:ref:refs/heads/main", "--selector", uid)
	// A rule for another repository must not reach these runs: --spiffe-id
	// below would otherwise find it.
	writ(t, "entry", "create", "--socket", socket, "--spiffe-id", "spiffe://ci.test/web-deployer",
		"--parent-selector", "github:repository:acme/web", "--selector", uid)
	// The same kind of rule from a rule file, which names no parent_id.
	rules := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rules, []byte("entries:\n  - spiffe_id: spiffe://ci.test/migrator\n"+
		"    parent_selectors: [\"github:repository:acme/payments\", \"github:ref:refs/heads/main\"]\n"+
		"    selectors: [\""+uid+"\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := writ(t, "entry", "create", "--socket", socket, "--file", rules); !strings.Contains(got, "created 1 entr") {
		t.Errorf("entry create --file: %s", got)
	}
	if got := writ(t, "entry", "list", "--socket", socket); !strings.Contains(got, "github:ref:refs/heads/main+github:repository:acme/payments") {
		t.Errorf("entry list does not show the parent selectors:\n%s", got)
	}

	t.Setenv(oidc.GitHubTokenTokenEnv, "job-request-token")
	// Run 9002 asks for the rule from the file.
	for run, want := range map[string]string{"9001": "spiffe://ci.test/deployer", "9002": "spiffe://ci.test/migrator"} {
		var audience atomic.Value
		gh := fakeGitHub(t, key, "acme/payments", run, &audience)
		t.Setenv(oidc.GitHubTokenURLEnv, gh.URL+"/token?api-version=2.0")
		out := filepath.Join(dir, "id-"+run)
		got := writ(t, "agent", "--server", addr, "--data-dir", filepath.Join(dir, "agent-"+run), "--bundle", bundle,
			"--join-method", "github", "--oneshot", "--out", out, "--spiffe-id", want)
		if agentID := "spiffe://ci.test/node/github/acme/payments/" + run + "/1"; !strings.Contains(got, agentID) {
			t.Fatalf("run %s: agent: %s", run, got)
		}
		pemData, err := os.ReadFile(filepath.Join(out, "svid.pem"))
		if err != nil {
			t.Fatalf("run %s: %v", run, err)
		}
		block, _ := pem.Decode(pemData)
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if len(cert.URIs) != 1 || cert.URIs[0].String() != want {
			t.Errorf("run %s got %v, want %s", run, cert.URIs, want)
		}
	}

	var audience atomic.Value
	gh := fakeGitHub(t, key, "acme/payments", "9003", &audience)
	t.Setenv(oidc.GitHubTokenURLEnv, gh.URL+"/token?api-version=2.0")
	msg := runFails(t, "agent", "--server", addr, "--data-dir", filepath.Join(dir, "agent-9003"), "--bundle", bundle,
		"--join-method", "github", "--oneshot", "--out", filepath.Join(dir, "id-9003"), "--spiffe-id", "spiffe://ci.test/web-deployer", "--timeout", "1s")
	if !strings.Contains(msg, "no identity") {
		t.Errorf("a run of acme/payments asking for acme/web's identity: %s", msg)
	}
}
