package oidc

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"writ.dev/writ/identity"
)

func wantRefused(t *testing.T, v *Verifier, token, want string) {
	t.Helper()
	_, err := v.Verify(context.Background(), token)
	if err == nil {
		t.Fatalf("Verify accepted the token; want an error containing %q", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("Verify error %q does not contain %q", err, want)
	}
	if len(token) > 40 && strings.Contains(err.Error(), token) {
		t.Fatalf("Verify error echoes the token: %q", err)
	}
}

func TestGitHubToken(t *testing.T) {
	s := newGitHubSetup(t, nil)
	r, err := s.v.Verify(context.Background(), s.key.sign(t, s.claims()))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.AgentID.String(), "spiffe://example.org/node/github/org/repo/123/1"; got != want {
		t.Errorf("AgentID = %s, want %s", got, want)
	}
	if r.Issuer != s.iss.srv.URL || r.JTI != "0f8b3c1e-5d1a-4f0e-9a67-1c2d3e4f5a6b" {
		t.Errorf("Issuer, JTI = %q, %q", r.Issuer, r.JTI)
	}
	if want := testNow.Add(4*time.Minute + DefaultLeeway); !r.Expiry.Equal(want) {
		t.Errorf("Expiry = %s, want %s", r.Expiry, want)
	}
	if r.Facts["repository"] != "org/repo" || r.Facts["run_attempt"] != "1" {
		t.Errorf("Facts = %v", r.Facts)
	}
	if _, ok := r.Facts["environment"]; ok {
		t.Errorf("environment is absent from the token but a fact: %v", r.Facts)
	}
	if len(r.Selectors) != len(r.Facts) {
		t.Errorf("%d selectors for %d facts", len(r.Selectors), len(r.Facts))
	}
	want := identity.Selector{Type: "github", Value: "repository:org/repo"}
	found := false
	for i, sel := range r.Selectors {
		if err := identity.ValidateSelector("selector", sel); err != nil {
			t.Error(err)
		}
		if i > 0 && r.Selectors[i-1].Value >= sel.Value {
			t.Errorf("selectors not sorted: %v", r.Selectors)
		}
		found = found || sel == want
	}
	if !found {
		t.Errorf("selectors %v lack %v", r.Selectors, want)
	}
}

func TestTimeChecks(t *testing.T) {
	s := newGitHubSetup(t, nil)
	for _, tc := range []struct {
		name string
		edit func(c map[string]any)
		want string
	}{
		{"expired", func(c map[string]any) {
			c["iat"], c["exp"] = testNow.Add(-10*time.Minute).Unix(), testNow.Add(-time.Minute).Unix()
		}, "token expired at 2030-01-02T03:03:05Z"},
		{"not yet valid", func(c map[string]any) { c["nbf"] = testNow.Add(2 * time.Minute).Unix() }, "not valid before"},
		{"issued in the future", func(c map[string]any) { c["iat"] = testNow.Add(2 * time.Minute).Unix() }, "issued in the future"},
		{"too long-lived", func(c map[string]any) { c["exp"] = testNow.Add(2 * time.Hour).Unix() }, "exceeds max_ttl 1h0m0s"},
		{"no exp", func(c map[string]any) { delete(c, "exp") }, "no exp claim"},
		{"exp not a number", func(c map[string]any) { c["exp"] = "tomorrow" }, "exp is not a number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := s.claims()
			tc.edit(c)
			wantRefused(t, s.v, s.key.sign(t, c), tc.want)
		})
	}
}

func TestLeeway(t *testing.T) {
	s := newGitHubSetup(t, nil)
	c := s.claims()
	c["exp"] = testNow.Add(-10 * time.Second).Unix() // within the default 30s
	c["nbf"] = testNow.Add(10 * time.Second).Unix()
	r, err := s.v.Verify(context.Background(), s.key.sign(t, c))
	if err != nil {
		t.Fatalf("a token within the leeway was refused: %v", err)
	}
	// Accepted past its exp, it must be remembered for as long: a replay
	// record kept only until exp would let it in again.
	if want := testNow.Add(-10*time.Second + DefaultLeeway); !r.Expiry.Equal(want) {
		t.Fatalf("Expiry = %s, want exp plus the leeway, %s", r.Expiry, want)
	}
}

func TestIssuerAndAudience(t *testing.T) {
	s := newGitHubSetup(t, nil)
	c := s.claims()
	c["aud"] = []string{"sts.amazonaws.com", "other.org"}
	wantRefused(t, s.v, s.key.sign(t, c), `audience ["sts.amazonaws.com" "other.org"] does not name this trust domain (want "example.org")`)

	c = s.claims()
	c["aud"] = []string{"sts.amazonaws.com", "example.org"}
	if _, err := s.v.Verify(context.Background(), s.key.sign(t, c)); err != nil {
		t.Fatalf("aud containing the trust domain refused: %v", err)
	}

	c = s.claims()
	c["iss"] = "https://token.actions.githubusercontent.com"
	wantRefused(t, s.v, s.key.sign(t, c), `issuer "https://token.actions.githubusercontent.com" is not "`+s.iss.srv.URL+`"`)
}

func TestWrongKey(t *testing.T) {
	s := newGitHubSetup(t, nil)
	// Same kid as the published key: the signature must not verify.
	impostor := newRSAKey(t, "rsa-1")
	wantRefused(t, s.v, impostor.sign(t, s.claims()), "signature does not verify")
	// A kid the issuer never published.
	stranger := newECKey(t, "ec-stranger")
	wantRefused(t, s.v, stranger.sign(t, s.claims()), `does not verify with any key the issuer publishes (kid "ec-stranger", ES256)`)
}

func TestForgedAlgorithms(t *testing.T) {
	s := newGitHubSetup(t, nil)
	payload, _ := json.Marshal(s.claims())
	b64 := base64.RawURLEncoding.EncodeToString

	none := b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + b64(payload) + "."
	wantRefused(t, s.v, none, `not a JWT signed with an accepted algorithm: unexpected signature algorithm "none"`)
	wantRefused(t, s.v, none+b64([]byte("x")), `unexpected signature algorithm "none"`)

	// HS256 keyed with the issuer's public key, the classic confusion.
	der, err := x509.MarshalPKIXPublicKey(s.key.priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range [][]byte{der, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})} {
		input := b64([]byte(`{"alg":"HS256","typ":"JWT","kid":"rsa-1"}`)) + "." + b64(payload)
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(input))
		wantRefused(t, s.v, input+"."+b64(mac.Sum(nil)), `unexpected signature algorithm "HS256"`)
	}
}

func TestKeyRotation(t *testing.T) {
	s := newGitHubSetup(t, nil)
	ctx := context.Background()
	if _, err := s.v.Verify(ctx, s.key.sign(t, s.claims())); err != nil {
		t.Fatal(err)
	}
	if n := s.iss.jwksHits.Load(); n != 1 {
		t.Fatalf("%d JWKS fetches for the first token, want 1", n)
	}
	next := newECKey(t, "ec-2")
	s.iss.publish(s.key, next)
	s.clock.Advance(time.Minute)
	// go-oidc wakes the callers of a key fetch just before it lets the
	// next fetch start, so a token right after one may be answered from
	// that fetch's keys once; the rotated-in key is asked about until it
	// makes its own fetch (no fake time passes, so at most one can).
	rotated := next.sign(t, s.claims())
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, err := s.v.Verify(ctx, rotated)
		if err == nil {
			break
		}
		if s.iss.jwksHits.Load() >= 2 || time.Now().After(deadline) {
			t.Fatalf("a token signed with the rotated-in key was refused: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := s.iss.jwksHits.Load(); n != 2 {
		t.Fatalf("%d JWKS fetches after the rotation, want 2", n)
	}
	// Unknown kids right after a fetch do not reach the issuer again.
	for range 3 {
		wantRefused(t, s.v, newECKey(t, "ec-unknown").sign(t, s.claims()), "does not verify with any key the issuer publishes")
	}
	if n := s.iss.jwksHits.Load(); n != 2 {
		t.Fatalf("%d JWKS fetches after unknown kids within the rate limit, want still 2", n)
	}
	// Keys known for a while are fetched again, so a withdrawn key stops working.
	s.iss.publish(next)
	s.clock.Advance(maxKeyAge + time.Minute)
	wantRefused(t, s.v, s.key.sign(t, s.claims()), "does not verify with any key the issuer publishes")
}

func TestDiscoveryIssuerMismatch(t *testing.T) {
	s := newGitHubSetup(t, nil)
	s.iss.mu.Lock()
	s.iss.docIssuer = "https://evil.example"
	s.iss.mu.Unlock()
	_, err := s.v.Verify(context.Background(), s.key.sign(t, s.claims()))
	if !errors.Is(err, ErrKeysUnavailable) || !strings.Contains(err.Error(), `names issuer "https://evil.example"`) {
		t.Fatalf("Verify error = %v, want ErrKeysUnavailable naming the other issuer", err)
	}
}

func TestRules(t *testing.T) {
	s := newGitHubSetup(t, func(c *IssuerConfig) {
		c.Allow = []Rule{
			{"repository": "org/*", "ref": "refs/heads/main"},
			{"repository_owner": "org", "environment": "prod"},
		}
	})
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		edit func(map[string]any)
		want string // "" = accepted
	}{
		{"first rule", func(map[string]any) {}, ""},
		{"second rule", func(c map[string]any) { c["ref"], c["environment"] = "refs/heads/dev", "prod" }, ""},
		{"other repository", func(c map[string]any) { c["repository"], c["repository_owner"] = "other/repo", "other" },
			`allow[0]: repository "other/repo" is not "org/*"; allow[1]: environment is absent from the token`},
		{"star does not cross slash", func(c map[string]any) { c["repository"] = "org/a/b" },
			`allow[0]: repository "org/a/b" is not "org/*"`},
		{"other ref", func(c map[string]any) { c["ref"] = "refs/heads/dev" },
			`allow[0]: ref "refs/heads/dev" is not "refs/heads/main"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := s.claims()
			tc.edit(c)
			token := s.key.sign(t, c)
			if tc.want == "" {
				if _, err := s.v.Verify(ctx, token); err != nil {
					t.Fatal(err)
				}
				return
			}
			wantRefused(t, s.v, token, "no allow rule matched: "+tc.want)
		})
	}
}

func TestNodeIDValuesRefused(t *testing.T) {
	s := newGitHubSetup(t, func(c *IssuerConfig) {
		c.Allow = []Rule{{"repository_owner": "org"}}
	})
	single := newGitHubSetup(t, func(c *IssuerConfig) {
		c.Allow = []Rule{{"repository_owner": "org"}}
		c.NodeID = "/node/{{repository}}/{{run_id}}"
	})
	for _, tc := range []struct {
		name string
		v    *githubSetup
		fact string
		val  string
		want string
	}{
		{"slash in a single segment", single, "repository", "org/repo", `fact repository "org/repo" contains '/' but {{repository}} takes one path segment`},
		{"dot-dot in a path", s, "repository", "org/..", `has the segment ".."`},
		{"dot-dot as a segment", s, "run_id", "..", `has the segment ".."`},
		{"dot in a path", s, "repository", "./repo", `has the segment "."`},
		{"empty segment", s, "repository", "org//repo", "empty path segment"},
		{"empty value", s, "run_attempt", "", "is empty"},
		{"forbidden character", s, "run_id", "12%2F3", `has character '%' at byte 2`},
		{"unicode", s, "repository", "org/rëpo", `has character 'ë' at byte 5`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.v.claims()
			c[tc.fact] = tc.val
			wantRefused(t, tc.v.v, tc.v.key.sign(t, c), tc.want)
		})
	}
}

func TestNumericRunID(t *testing.T) {
	s := newGitHubSetup(t, nil)
	c := s.claims()
	c["run_id"] = json.Number("9007199254740993") // beyond float64 precision
	c["run_attempt"] = 2
	r, err := s.v.Verify(context.Background(), s.key.sign(t, c))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.AgentID.Path(), "/node/github/org/repo/9007199254740993/2"; got != want {
		t.Errorf("AgentID path = %s, want %s", got, want)
	}
}

func TestObjectFactRefused(t *testing.T) {
	s := newGitHubSetup(t, nil)
	c := s.claims()
	c["workflow"] = map[string]any{"name": "CI"}
	wantRefused(t, s.v, s.key.sign(t, c), "claim workflow is a JSON object")
}

func TestSelectorValueRefused(t *testing.T) {
	s := newGitHubSetup(t, nil)
	c := s.claims()
	c["workflow"] = "CI\x1b[31m"
	wantRefused(t, s.v, s.key.sign(t, c), "fact workflow:")
}

func TestTokenSize(t *testing.T) {
	s := newGitHubSetup(t, nil)
	c := s.claims()
	c["padding"] = strings.Repeat("x", MaxTokenSize)
	wantRefused(t, s.v, s.key.sign(t, c), "more than 16384")
	if n := s.iss.jwksHits.Load(); n != 0 {
		t.Errorf("an oversized token caused %d key fetches", n)
	}
}

func TestJTIFallback(t *testing.T) {
	s := newGitHubSetup(t, nil)
	c := s.claims()
	delete(c, "jti")
	token := s.key.sign(t, c)
	r, err := s.v.Verify(context.Background(), token)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.JTI, "sha256:") || len(r.JTI) != len("sha256:")+64 {
		t.Errorf("JTI = %q, want sha256:<hex>", r.JTI)
	}
	// The last character of an RS256 signature carries 2 bits and 4 zero
	// bits; setting one gives another text for the same bytes, which must
	// be refused rather than given another JTI.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	idx := strings.IndexByte(alphabet, token[len(token)-1])
	alt := token[:len(token)-1] + string(alphabet[idx|1])
	wantRefused(t, s.v, alt, "not base64url")
}

func TestK8sStaticJWKS(t *testing.T) {
	key := newECKey(t, "k8s-1")
	file := writeFile(t, "jwks.json", jwksJSON(t, key))
	const issuer = "https://kubernetes.default.svc.cluster.local"
	cfg := IssuerConfig{
		Name: "k8s", Profile: ProfileK8s, Issuer: issuer, JWKSFile: file,
		Allow: []Rule{{"namespace": "ci", "service_account": "writ-agent"}},
	}
	clock := &fakeClock{now: testNow}
	v, err := NewVerifier(context.Background(), cfg, testTD, WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	claims := func() map[string]any {
		return map[string]any{
			"iss": issuer, "aud": []string{"example.org"}, "sub": "system:serviceaccount:ci:writ-agent",
			"iat": testNow.Unix(), "nbf": testNow.Unix(), "exp": testNow.Add(time.Hour).Unix(),
			"kubernetes.io": map[string]any{
				"namespace":      "ci",
				"node":           map[string]any{"name": "worker-1", "uid": "n-uid"},
				"pod":            map[string]any{"name": "agent-7d9f", "uid": "p-uid"},
				"serviceaccount": map[string]any{"name": "writ-agent", "uid": "sa-uid"},
			},
		}
	}
	r, err := v.Verify(context.Background(), key.sign(t, claims()))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"namespace": "ci", "service_account": "writ-agent", "pod_name": "agent-7d9f", "pod_uid": "p-uid", "node_name": "worker-1"}
	if !maps.Equal(r.Facts, want) {
		t.Errorf("Facts = %v, want %v", r.Facts, want)
	}
	if got := r.AgentID.String(); got != "spiffe://example.org/node/k8s/ci/agent-7d9f" {
		t.Errorf("AgentID = %s", got)
	}
	if !strings.HasPrefix(r.JTI, "sha256:") {
		t.Errorf("JTI = %q, want a digest for a token without jti", r.JTI)
	}

	c := claims()
	c["sub"] = "system:serviceaccount:kube-system:admin"
	wantRefused(t, v, key.sign(t, c), "does not match the kubernetes.io claim")

	c = claims()
	c["kubernetes.io"].(map[string]any)["namespace"] = "other"
	c["sub"] = "system:serviceaccount:other:writ-agent"
	wantRefused(t, v, key.sign(t, c), `namespace "other" is not "ci"`)

	wantRefused(t, v, newECKey(t, "k8s-2").sign(t, claims()), "update jwks_file")
}

func TestGenericDottedFacts(t *testing.T) {
	key := newRSAKey(t, "gen-1")
	iss := newTestIssuer(t, key)
	cfg := IssuerConfig{
		Name: "ci", Profile: ProfileGeneric, Issuer: iss.srv.URL, Audience: "writ",
		Facts:  []string{"sub", "project.id", "project.group.name", "build.number", "build.trusted"},
		Allow:  []Rule{{"project.group.name": "platform", "build.trusted": "true"}},
		NodeID: "/node/ci/{{project.group.name}}/p{{project.id}}/{{build.number}}",
	}
	v, err := NewVerifier(context.Background(), cfg, testTD, WithHTTPClient(iss.srv.Client()), WithClock(func() time.Time { return testNow }))
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{
		"iss": iss.srv.URL, "aud": "writ", "sub": "build-runner", "jti": "j1",
		"iat": testNow.Unix(), "exp": testNow.Add(time.Minute).Unix(),
		"project": map[string]any{"id": 77, "group": map[string]any{"name": "platform"}},
		"build":   map[string]any{"number": "5", "trusted": true},
	}
	r, err := v.Verify(context.Background(), key.sign(t, claims))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.AgentID.Path(); got != "/node/ci/platform/p77/5" {
		t.Errorf("AgentID path = %s", got)
	}
	if r.Facts["build.trusted"] != "true" || r.Facts["project.id"] != "77" {
		t.Errorf("Facts = %v", r.Facts)
	}
	delete(claims["project"].(map[string]any), "id")
	wantRefused(t, v, key.sign(t, claims), "claim project.id is missing")
}

func TestNewVerifierBadJWKSFile(t *testing.T) {
	file := writeFile(t, "jwks.json", []byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`))
	cfg := IssuerConfig{Name: "k8s", Profile: ProfileK8s, Issuer: "https://k8s", JWKSFile: file, Allow: []Rule{{"namespace": "ci"}}}
	_, err := NewVerifier(context.Background(), cfg, testTD)
	if err == nil || !strings.Contains(err.Error(), "no usable public signature key") {
		t.Fatalf("NewVerifier error = %v, want a refusal of a JWKS with only a symmetric key", err)
	}
}

func TestParseJWKSSkipsUnusableKeys(t *testing.T) {
	k := newECKey(t, "ok")
	good, _ := json.Marshal(k.jwk())
	enc := k.jwk()
	enc.Use, enc.KeyID = "enc", "enc"
	encJSON, _ := json.Marshal(enc)
	data := `{"keys":[{"kty":"oct","k":"c2VjcmV0"},{"kty":"XYZ"},` + string(encJSON) + `,` + string(good) + `]}`
	keys, err := parseJWKS([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0].KeyID != "ok" {
		t.Fatalf("parseJWKS kept %v, want only the signature key", keys)
	}
}
