package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
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
