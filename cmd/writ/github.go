package main

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
	githubTokenURLEnv   = "ACTIONS_ID_TOKEN_REQUEST_URL"
	githubTokenTokenEnv = "ACTIONS_ID_TOKEN_REQUEST_TOKEN"
)

// githubActionsToken fetches the job's OIDC token for audience.
func githubActionsToken(ctx context.Context, audience string) (string, error) {
	u, err := url.Parse(os.Getenv(githubTokenURLEnv))
	if err != nil {
		return "", fmt.Errorf("%s: %w", githubTokenURLEnv, err)
	}
	q := u.Query()
	q.Set("audience", audience)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+os.Getenv(githubTokenTokenEnv))
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("asking GitHub for the job's OIDC token: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
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
