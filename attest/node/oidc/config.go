// Package oidc verifies the JWTs that let a node agent join without a
// secret: OIDC ID tokens from a CI system (GitHub Actions, GitLab CI) or any
// issuer the server trusts, and Kubernetes projected service-account tokens.
//
// The token proves which job or pod the agent runs in. An IssuerConfig says
// which issuer to trust, which claims become facts (and so selectors), who
// may join (allow rules over the facts) and how the agent's SPIFFE ID is
// built from the facts (the node_id template). A Verifier checks a token
// against one IssuerConfig; the caller still has to refuse a jti it has
// seen before, because a token can be replayed until it expires.
package oidc

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"slices"
	"strings"
	"time"
	"writ.dev/writ/internal/quote"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/identity"
)

// Profile is a ready-made description of an issuer's tokens: which claims
// become facts, the default issuer and the default node_id.
type Profile string

// The profiles writ knows.
const (
	ProfileGitHub  Profile = "github"  // issuer https://token.actions.githubusercontent.com
	ProfileGitLab  Profile = "gitlab"  // issuer https://gitlab.com (self-managed: set Issuer)
	ProfileK8s     Profile = "k8s"     // Kubernetes projected service-account tokens (PSAT)
	ProfileGeneric Profile = "generic" // any issuer; Facts and NodeID are configured
	ProfilePerson  Profile = "person"  // people signing in (writ login): a verified email; issuer required
)

// Defaults and bounds of IssuerConfig settings.
const (
	DefaultMaxTTL = time.Hour
	// MaxMaxTTL bounds max_ttl: a token that lives longer than a day is a
	// standing credential, which these join methods exist to avoid.
	MaxMaxTTL = 24 * time.Hour
)

// IssuerConfig is one trusted issuer. The server embeds it in its config;
// the YAML keys are the tag names.
type IssuerConfig struct {
	// Name names this join method instance, e.g. "github"; it is the type
	// of the selectors the node gets. 1 to 32 of a-z, 0-9, '_' and '-'.
	Name    string  `yaml:"name"`
	Profile Profile `yaml:"profile"`
	// Issuer is the exact "iss" of the tokens. Required unless the profile
	// has a default (github; gitlab for gitlab.com). Without JWKSFile it
	// must be an https URL serving OIDC discovery.
	Issuer string `yaml:"issuer"`
	// JWKSFile is a static JWKS, e.g. a cluster's
	// `kubectl get --raw /openid/v1/jwks`. Empty: the keys are found by
	// discovery at Issuer/.well-known/openid-configuration.
	JWKSFile string `yaml:"jwks_file"`
	// Audience is the "aud" tokens must carry. Default: the trust domain
	// name.
	Audience string `yaml:"audience"`
	// Facts, for the generic profile only, lists the claims that become
	// facts; a dotted path ("a.b") reaches into nested objects. A token
	// without one of them is refused.
	Facts []string `yaml:"facts"`
	// Allow says who may join: a token must match at least one rule.
	Allow []Rule `yaml:"allow"`
	// NodeID is the template of the agent's SPIFFE ID path, e.g.
	// "/node/github/{{repository...}}/{{run_id}}". {{fact}} is one path
	// segment, {{fact...}} a path of one or more. Default: the profile's.
	NodeID string `yaml:"node_id"`
	// MaxTTL refuses tokens whose exp-iat exceeds it (default 1h), so a
	// long-lived token leaked from a log cannot be used to join. GitLab ID
	// tokens live as long as the job's timeout: raise it for longer jobs.
	MaxTTL time.Duration `yaml:"max_ttl"`
}

// Rule maps fact names to glob patterns. A token matches when every fact
// matches its pattern with path.Match semantics on the whole value, so "*"
// does not cross "/": "org/*" matches "org/repo" but not "org/a/b".
type Rule map[string]string

// Validate fills defaults and checks c for tokens whose audience defaults
// to trustDomain. It returns every problem at once, each an
// *identity.FieldError naming the YAML key ("allow[2].repository"), so the
// server can nest the names under its own key.
func (c *IssuerConfig) Validate(trustDomain spiffeid.TrustDomain) error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &identity.FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	if trustDomain.IsZero() {
		add("audience", "cannot be defaulted: no trust domain is configured")
	}
	if !validName(c.Name) {
		add("name", "%s is not allowed: use 1 to 32 of a-z, 0-9, '_' and '-', e.g. \"github\"", quote.String(c.Name))
	}
	spec, ok := profiles[c.Profile]
	if !ok {
		add("profile", "%s is not a profile: use github, gitlab, k8s, generic or person", quote.String(string(c.Profile)))
		return errors.Join(errs...)
	}
	c.defaults(spec, trustDomain)
	errs = append(errs, c.validateIssuer()...)
	facts, factErrs := c.facts(spec)
	errs = append(errs, factErrs...)
	errs = append(errs, c.validateRules(spec, facts)...)
	if _, err := parseTemplate(c.NodeID, factNames(facts)); err != nil {
		add("node_id", "%v", err)
	}
	if c.MaxTTL <= 0 || c.MaxTTL > MaxMaxTTL {
		add("max_ttl", "%s is out of range: more than 0 and at most %s", c.MaxTTL, MaxMaxTTL)
	}
	return errors.Join(errs...)
}

func (c *IssuerConfig) defaults(spec profileSpec, td spiffeid.TrustDomain) {
	if c.Issuer == "" {
		c.Issuer = spec.issuer
	}
	if c.NodeID == "" {
		c.NodeID = spec.nodeID
	}
	if c.Audience == "" && !td.IsZero() {
		c.Audience = td.Name()
	}
	if c.MaxTTL == 0 {
		c.MaxTTL = DefaultMaxTTL
	}
}

func (c *IssuerConfig) validateIssuer() []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &identity.FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	switch {
	case c.Issuer == "":
		add("issuer", "is required for profile %s: the exact \"iss\" of the tokens, e.g. https://kubernetes.default.svc", c.Profile)
	case c.JWKSFile == "":
		if problem := checkDiscoveryURL(c.Issuer); problem != "" {
			add("issuer", "%s %s; or set jwks_file to use a static key set", quote.String(c.Issuer), problem)
		}
	default:
		if fi, err := os.Stat(c.JWKSFile); err != nil {
			add("jwks_file", "%v", err)
		} else if !fi.Mode().IsRegular() {
			add("jwks_file", "%s is not a regular file", c.JWKSFile)
		}
	}
	if c.Audience == "" {
		add("audience", "is required: the \"aud\" tokens must carry")
	}
	return errs
}

// checkDiscoveryURL says why u cannot be fetched for discovery, or "".
// Discovery must use https: whoever can change the key set in transit can
// mint tokens the server accepts.
func checkDiscoveryURL(u string) string {
	p, err := url.Parse(u)
	switch {
	case err != nil:
		return "is not a URL"
	case p.Scheme != "https" || p.Host == "":
		return "is not an https URL; discovery needs one, e.g. https://token.actions.githubusercontent.com"
	case p.RawQuery != "" || p.Fragment != "" || p.User != nil:
		return "has a query, fragment or user info, which an issuer may not have"
	}
	return ""
}

// facts resolves the profile's facts; for the generic profile they come
// from c.Facts.
func (c *IssuerConfig) facts(spec profileSpec) ([]factSpec, []error) {
	if c.Profile != ProfileGeneric {
		if len(c.Facts) > 0 {
			return spec.facts, []error{&identity.FieldError{Field: "facts",
				Msg: fmt.Sprintf("is for the generic profile; profile %s has fixed facts: %s", c.Profile, strings.Join(factNames(spec.facts), ", "))}}
		}
		return spec.facts, nil
	}
	if len(c.Facts) == 0 {
		return nil, []error{&identity.FieldError{Field: "facts", Msg: "is required for the generic profile: list the claims that become facts, e.g. [sub, project.id]"}}
	}
	var errs []error
	facts := make([]factSpec, 0, len(c.Facts))
	for i, name := range c.Facts {
		field := fmt.Sprintf("facts[%d]", i)
		switch {
		case !validFactName(name):
			errs = append(errs, &identity.FieldError{Field: field, Msg: fmt.Sprintf("%s is not a claim path: use names of a-z, A-Z, 0-9, '_' and '-' joined by '.', e.g. project.id", quote.String(name))})
		case slices.Contains(c.Facts[:i], name):
			errs = append(errs, &identity.FieldError{Field: field, Msg: fmt.Sprintf("%s is listed twice", quote.String(name))})
		default:
			facts = append(facts, factSpec{name: name, claim: strings.Split(name, "."), required: true})
		}
	}
	return facts, errs
}

func (c *IssuerConfig) validateRules(spec profileSpec, facts []factSpec) []error {
	if len(c.Allow) == 0 {
		return []error{&identity.FieldError{Field: "allow", Msg: "is required: with no rules nobody may join; add a rule such as {repository: org/*}"}}
	}
	var errs []error
	for i, rule := range c.Allow {
		field := fmt.Sprintf("allow[%d]", i)
		if len(rule) == 0 {
			errs = append(errs, &identity.FieldError{Field: field, Msg: "is empty: a rule names at least one fact"})
			continue
		}
		for _, name := range sortedKeys(rule) {
			if problem := checkRulePattern(name, rule[name], facts); problem != "" {
				errs = append(errs, &identity.FieldError{Field: field + "." + name, Msg: problem})
			}
		}
		if len(spec.ownerFacts) > 0 && !pinsOwner(rule, spec.ownerFacts) {
			errs = append(errs, &identity.FieldError{Field: field, Msg: fmt.Sprintf(
				"does not pin an owner: every project on issuer %s can get a token with any audience, so a rule must name one of %s with a literal first path segment (e.g. org/*)",
				c.Issuer, strings.Join(spec.ownerFacts, ", "))})
		}
	}
	return errs
}

func checkRulePattern(name, pattern string, facts []factSpec) string {
	if !slices.Contains(factNames(facts), name) {
		return fmt.Sprintf("is not a fact; facts: %s", strings.Join(factNames(facts), ", "))
	}
	if pattern == "" {
		return "the pattern is empty; give a value or a glob such as org/*"
	}
	if _, err := path.Match(pattern, ""); err != nil {
		return fmt.Sprintf("pattern %s is malformed: %v", quote.String(pattern), err)
	}
	return ""
}

// pinsOwner reports whether rule constrains one of ownerFacts to a literal
// first path segment, so it cannot match another owner's projects.
func pinsOwner(rule Rule, ownerFacts []string) bool {
	for _, name := range ownerFacts {
		pattern, ok := rule[name]
		if !ok {
			continue
		}
		first, _, _ := strings.Cut(pattern, "/")
		if first != "" && !strings.ContainsAny(first, `*?[\`) {
			return true
		}
	}
	return false
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// validFactName accepts dotted claim paths whose parts can appear in a
// selector and a node_id placeholder unambiguously.
func validFactName(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for part := range strings.SplitSeq(s, ".") {
		if part == "" {
			return false
		}
		for i := 0; i < len(part); i++ {
			c := part[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
				return false
			}
		}
	}
	return true
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
