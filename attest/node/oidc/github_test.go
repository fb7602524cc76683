package oidc

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestGitHubActionsToken(t *testing.T) {
	gh := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer job-request-token" {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		w.Write([]byte(`{"value":"tok-for-` + r.URL.Query().Get("audience") + `"}`))
	}))
	defer gh.Close()
	t.Setenv(GitHubTokenURLEnv, gh.URL+"/token?api-version=2.0")
	t.Setenv(GitHubTokenTokenEnv, "job-request-token")
	if !InGitHubActions() {
		t.Fatal("InGitHubActions is false with the variable set")
	}
	tok, err := GitHubActionsToken(context.Background(), gh.Client(), "prod.example.com")
	if err != nil || tok != "tok-for-prod.example.com" {
		t.Fatalf("token %q, %v", tok, err)
	}
	t.Setenv(GitHubTokenTokenEnv, "wrong")
	if _, err := GitHubActionsToken(context.Background(), gh.Client(), "a"); err == nil || !strings.Contains(err.Error(), "id-token: write") {
		t.Fatalf("refused: %v", err)
	}
	t.Setenv(GitHubTokenURLEnv, "")
	if _, err := GitHubActionsToken(context.Background(), nil, "a"); err == nil || !strings.Contains(err.Error(), GitHubTokenURLEnv) {
		t.Fatalf("outside Actions: %v", err)
	}
}
