package oidc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
)

// GitHub Actions hands a job these two variables when the workflow grants
// `permissions: id-token: write`; with them the job asks GitHub for an OIDC
// token naming the audience it chooses.
const (
	GitHubTokenURLEnv   = "ACTIONS_ID_TOKEN_REQUEST_URL"
	GitHubTokenTokenEnv = "ACTIONS_ID_TOKEN_REQUEST_TOKEN"
)

// InGitHubActions reports whether this process can ask GitHub for a job
// token.
func InGitHubActions() bool { return os.Getenv(GitHubTokenURLEnv) != "" }

// maxGitHubResponse bounds GitHub's answer: a token is a few KiB.
const maxGitHubResponse = 64 << 10

// GitHubActionsToken fetches the running job's OIDC token for audience,
// the token an agent joins with under the github profile.
func GitHubActionsToken(ctx context.Context, client *http.Client, audience string) (string, error) {
	u, err := url.Parse(os.Getenv(GitHubTokenURLEnv))
	if err != nil || u.Scheme == "" {
		return "", fmt.Errorf("%s is not a URL: run inside a GitHub Actions job whose workflow grants 'permissions: id-token: write'", GitHubTokenURLEnv)
	}
	q := u.Query()
	q.Set("audience", audience)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+os.Getenv(GitHubTokenTokenEnv))
	req.Header.Set("Accept", "application/json")
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("asking GitHub for the job's OIDC token: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxGitHubResponse))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("asking GitHub for the job's OIDC token: %s (does the workflow grant 'permissions: id-token: write'?)", resp.Status)
	}
	var out struct {
		Value string `json:"value"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.Value == "" {
		return "", fmt.Errorf("GitHub's token response has no token")
	}
	return out.Value, nil
}
