package oidc

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/identity"
)

func TestValidateDefaults(t *testing.T) {
	c := IssuerConfig{Name: "github", Profile: ProfileGitHub, Allow: []Rule{{"repository": "org/*"}}}
	if err := c.Validate(testTD); err != nil {
		t.Fatal(err)
	}
	if c.Issuer != "https://token.actions.githubusercontent.com" || c.Audience != "example.org" ||
		c.NodeID != "/node/github/{{repository...}}/{{run_id}}/{{run_attempt}}" || c.MaxTTL != time.Hour {
		t.Errorf("defaults not filled: %+v", c)
	}
	g := IssuerConfig{Name: "gitlab", Profile: ProfileGitLab, Allow: []Rule{{"namespace_path": "group"}}}
	if err := g.Validate(testTD); err != nil || g.Issuer != "https://gitlab.com" {
		t.Errorf("gitlab: %v, issuer %q", err, g.Issuer)
	}
}

func TestValidateErrors(t *testing.T) {
	ok := func() IssuerConfig {
		return IssuerConfig{Name: "github", Profile: ProfileGitHub, Allow: []Rule{{"repository": "org/*"}}}
	}
	for _, tc := range []struct {
		name  string
		edit  func(*IssuerConfig)
		field string
		want  string
	}{
		{"bad name", func(c *IssuerConfig) { c.Name = "GitHub" }, "name", "is not allowed"},
		{"unknown profile", func(c *IssuerConfig) { c.Profile = "jenkins" }, "profile", "is not a profile"},
		{"no rules", func(c *IssuerConfig) { c.Allow = nil }, "allow", "nobody may join"},
		{"empty rule", func(c *IssuerConfig) { c.Allow = append(c.Allow, Rule{}) }, "allow[1]", "is empty"},
		{"unknown fact", func(c *IssuerConfig) {
			c.Allow = []Rule{{"repository": "org/*"}, {"repository": "org/*"}, {"repo": "x"}}
		}, "allow[2].repo", "is not a fact"},
		{"bad glob", func(c *IssuerConfig) { c.Allow = []Rule{{"repository": "org/[a"}} }, "allow[0].repository", "is malformed"},
		{"empty pattern", func(c *IssuerConfig) { c.Allow = []Rule{{"repository": "org/*", "ref": ""}} }, "allow[0].ref", "pattern is empty"},
		{"no owner", func(c *IssuerConfig) { c.Allow = []Rule{{"ref": "refs/heads/main"}} }, "allow[0]", "does not pin an owner"},
		{"wildcard owner", func(c *IssuerConfig) { c.Allow = []Rule{{"repository": "*/repo"}} }, "allow[0]", "does not pin an owner"},
		{"http issuer", func(c *IssuerConfig) { c.Issuer = "http://issuer.example" }, "issuer", "is not an https URL"},
		{"missing jwks file", func(c *IssuerConfig) { c.JWKSFile = "/nonexistent/jwks.json" }, "jwks_file", "no such file"},
		{"facts on a fixed profile", func(c *IssuerConfig) { c.Facts = []string{"sub"} }, "facts", "is for the generic profile"},
		{"unknown placeholder", func(c *IssuerConfig) { c.NodeID = "/node/{{repo}}" }, "node_id", "{{repo}} does not name a fact"},
		{"relative template", func(c *IssuerConfig) { c.NodeID = "node/{{run_id}}" }, "node_id", "does not start with '/'"},
		{"bad literal", func(c *IssuerConfig) { c.NodeID = "/no de/{{run_id}}" }, "node_id", "character ' '"},
		{"dot literal", func(c *IssuerConfig) { c.NodeID = "/node/../{{run_id}}" }, "node_id", `".." is not allowed`},
		{"trailing slash", func(c *IssuerConfig) { c.NodeID = "/node/{{run_id}}/" }, "node_id", `"" is not allowed`},
		{"no placeholder", func(c *IssuerConfig) { c.NodeID = "/node/fixed" }, "node_id", "has no placeholder"},
		{"path placeholder mixed", func(c *IssuerConfig) { c.NodeID = "/node/x{{repository...}}" }, "node_id", "on its own"},
		{"unclosed placeholder", func(c *IssuerConfig) { c.NodeID = "/node/{{run_id" }, "node_id", "without '}}'"},
		{"max_ttl too long", func(c *IssuerConfig) { c.MaxTTL = 48 * time.Hour }, "max_ttl", "out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok()
			tc.edit(&c)
			assertFieldError(t, c.Validate(testTD), tc.field, tc.want)
		})
	}
}

func TestValidateGenericAndK8s(t *testing.T) {
	for _, tc := range []struct {
		name  string
		c     IssuerConfig
		field string
		want  string
	}{
		{"generic without facts", IssuerConfig{Name: "ci", Profile: ProfileGeneric, Issuer: "https://ci.example", NodeID: "/n/{{sub}}", Allow: []Rule{{"sub": "x"}}},
			"facts", "is required for the generic profile"},
		{"generic without node_id", IssuerConfig{Name: "ci", Profile: ProfileGeneric, Issuer: "https://ci.example", Facts: []string{"sub"}, Allow: []Rule{{"sub": "x"}}},
			"node_id", "does not start with '/'"},
		{"generic bad fact path", IssuerConfig{Name: "ci", Profile: ProfileGeneric, Issuer: "https://ci.example", Facts: []string{"sub", "a..b"}, NodeID: "/n/{{sub}}", Allow: []Rule{{"sub": "x"}}},
			"facts[1]", "is not a claim path"},
		{"generic repeated fact", IssuerConfig{Name: "ci", Profile: ProfileGeneric, Issuer: "https://ci.example", Facts: []string{"sub", "sub"}, NodeID: "/n/{{sub}}", Allow: []Rule{{"sub": "x"}}},
			"facts[1]", "is listed twice"},
		{"k8s without issuer", IssuerConfig{Name: "k8s", Profile: ProfileK8s, Allow: []Rule{{"namespace": "ci"}}},
			"issuer", "is required for profile k8s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assertFieldError(t, tc.c.Validate(testTD), tc.field, tc.want)
		})
	}
	c := IssuerConfig{Name: "github", Profile: ProfileGitHub, Allow: []Rule{{"repository": "org/*"}}}
	assertFieldError(t, c.Validate(spiffeid.TrustDomain{}), "audience", "no trust domain")
}

// assertFieldError checks that err holds an *identity.FieldError for field
// whose message contains want.
func assertFieldError(t *testing.T, err error, field, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("Validate accepted the config; want %s: ...%s...", field, want)
	}
	var errs []error
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		errs = joined.Unwrap()
	} else {
		errs = []error{err}
	}
	for _, e := range errs {
		var fe *identity.FieldError
		if errors.As(e, &fe) && fe.Field == field && strings.Contains(fe.Msg, want) {
			return
		}
	}
	t.Fatalf("Validate error %q has no %s: ...%s...", err, field, want)
}
