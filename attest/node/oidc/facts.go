package oidc

import (
	"encoding/json"
	"fmt"
	"path"
	"strconv"
	"strings"
	"writ.dev/writ/internal/quote"

	"writ.dev/writ/identity"
)

// factSpec says where a fact comes from: claim is the path of names into
// nested objects. A required fact must be in every token.
type factSpec struct {
	name     string
	claim    []string
	required bool
	// derived facts come from other facts (the profile's check fills
	// them), not from a claim of their own.
	derived bool
}

// profileSpec is what a Profile fixes.
type profileSpec struct {
	issuer string
	nodeID string
	facts  []factSpec
	// ownerFacts are the facts of which a rule must pin one, on issuers
	// shared by everyone (a rule on "ref" alone would admit any project).
	ownerFacts []string
	// check compares what the issuer states twice.
	check func(claims map[string]any, facts map[string]string) error
}

var profiles = map[Profile]profileSpec{
	ProfileGitHub: {
		issuer: "https://token.actions.githubusercontent.com",
		nodeID: "/node/github/{{repository...}}/{{run_id}}/{{run_attempt}}",
		facts: topLevel([]string{"repository", "repository_owner", "repository_id", "ref", "ref_type", "sha",
			"workflow", "workflow_ref", "job_workflow_ref", "event_name", "run_id", "run_attempt", "actor"},
			[]string{"environment", "runner_environment"}),
		ownerFacts: []string{"repository", "repository_owner", "repository_id"},
	},
	ProfileGitLab: {
		issuer: "https://gitlab.com",
		nodeID: "/node/gitlab/{{project_path...}}/{{job_id}}",
		facts: topLevel([]string{"project_path", "namespace_path", "project_id", "ref", "ref_type", "ref_protected",
			"pipeline_source", "pipeline_id", "job_id", "user_login"},
			[]string{"environment", "runner_id"}),
		ownerFacts: []string{"project_path", "namespace_path", "project_id"},
	},
	ProfileK8s: {
		nodeID: "/node/k8s/{{namespace}}/{{pod_name}}",
		facts: []factSpec{
			{name: "namespace", claim: []string{"kubernetes.io", "namespace"}, required: true},
			{name: "service_account", claim: []string{"kubernetes.io", "serviceaccount", "name"}, required: true},
			{name: "pod_name", claim: []string{"kubernetes.io", "pod", "name"}},
			{name: "pod_uid", claim: []string{"kubernetes.io", "pod", "uid"}},
			{name: "node_name", claim: []string{"kubernetes.io", "node", "name"}},
		},
		check: checkK8sSubject,
	},
	ProfilePerson: {
		nodeID: "/person/{{email_domain}}/{{email_local}}",
		facts: []factSpec{
			{name: "email", claim: []string{"email"}, required: true},
			{name: "email_verified", claim: []string{"email_verified"}, required: true},
			{name: "email_local", derived: true},
			{name: "email_domain", derived: true},
		},
		check: checkPersonEmail,
	},
	ProfileGeneric: {},
}

// checkPersonEmail admits only a verified address, and splits it: a SPIFFE
// path segment cannot hold "@", so a person is /person/DOMAIN/LOCAL, both
// lowercased by identity's one rule for people's IDs.
func checkPersonEmail(_ map[string]any, facts map[string]string) error {
	if facts["email_verified"] != "true" {
		return fmt.Errorf("email %s is not verified by the issuer", quote.String(facts["email"]))
	}
	local, domain, err := identity.PersonEmailParts("email", facts["email"])
	if err != nil {
		return err
	}
	facts["email_local"], facts["email_domain"] = local, domain
	return nil
}

// topLevel lists facts named like their top-level claims.
func topLevel(required, optional []string) []factSpec {
	var facts []factSpec
	for _, n := range required {
		facts = append(facts, factSpec{name: n, claim: []string{n}, required: true})
	}
	for _, n := range optional {
		facts = append(facts, factSpec{name: n, claim: []string{n}})
	}
	return facts
}

// checkK8sSubject refuses a token whose "sub" names another service account
// than its kubernetes.io claim: one of them was not written by the API server.
func checkK8sSubject(claims map[string]any, facts map[string]string) error {
	want := "system:serviceaccount:" + facts["namespace"] + ":" + facts["service_account"]
	if sub, _ := claims["sub"].(string); sub != want {
		return fmt.Errorf("sub %s does not match the kubernetes.io claim (want %s)", quote.String(sub), quote.String(want))
	}
	return nil
}

func factNames(facts []factSpec) []string {
	names := make([]string, len(facts))
	for i, f := range facts {
		names[i] = f.name
	}
	return names
}

// extractFacts reads specs from the verified claims. An absent optional
// fact (or a JSON null) is left out.
func extractFacts(claims map[string]any, specs []factSpec) (map[string]string, error) {
	facts := make(map[string]string, len(specs))
	for _, spec := range specs {
		if spec.derived {
			continue
		}
		v, ok := lookup(claims, spec.claim)
		if !ok || v == nil {
			if spec.required {
				return nil, fmt.Errorf("claim %s is missing; the issuer always sets it, so the token is not of the configured profile", strings.Join(spec.claim, "."))
			}
			continue
		}
		s, err := factValue(v)
		if err != nil {
			return nil, fmt.Errorf("claim %s %v", strings.Join(spec.claim, "."), err)
		}
		facts[spec.name] = s
	}
	return facts, nil
}

func lookup(claims map[string]any, claimPath []string) (any, bool) {
	var v any = claims
	for _, name := range claimPath {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = obj[name]; !ok {
			return nil, false
		}
	}
	return v, true
}

// factValue turns a claim into text. Numbers are allowed because some
// issuers send IDs such as run_id as JSON numbers; they are written in
// decimal so a large ID keeps every digit.
func factValue(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case bool:
		return strconv.FormatBool(v), nil
	case json.Number:
		return decimal(v)
	default:
		return "", fmt.Errorf("is a JSON %s; a fact must be a string, number or boolean", jsonKind(v))
	}
}

func decimal(n json.Number) (string, error) {
	s := n.String()
	if isDigits(strings.TrimPrefix(s, "-")) {
		return s, nil
	}
	f, err := n.Float64()
	if err != nil {
		return "", fmt.Errorf("is the number %s, which is out of range", quote.String(s))
	}
	return strconv.FormatFloat(f, 'f', -1, 64), nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func jsonKind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "object"
	case []any:
		return "array"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// matchRules returns nil if facts match at least one rule, else why each
// rule did not match.
func matchRules(rules []Rule, facts map[string]string) error {
	reasons := make([]string, 0, len(rules))
	for i, rule := range rules {
		reason := ruleMismatch(rule, facts)
		if reason == "" {
			return nil
		}
		reasons = append(reasons, fmt.Sprintf("allow[%d]: %s", i, reason))
	}
	return fmt.Errorf("no allow rule matched: %s", strings.Join(reasons, "; "))
}

// ruleMismatch says which fact of rule did not match, or "".
func ruleMismatch(rule Rule, facts map[string]string) string {
	for _, name := range sortedKeys(rule) {
		value, ok := facts[name]
		if !ok {
			return fmt.Sprintf("%s is absent from the token", name)
		}
		// Patterns were checked by Validate, so Match cannot fail here.
		if ok, _ := path.Match(rule[name], value); !ok {
			return fmt.Sprintf("%s %s is not %s", name, quote.String(value), quote.String(rule[name]))
		}
	}
	return ""
}

// selectors turns facts into sorted "<typ>:<fact>:<value>" selectors,
// refusing a value no selector may hold rather than altering it.
func selectors(typ string, facts map[string]string) ([]identity.Selector, error) {
	sels := make([]identity.Selector, 0, len(facts))
	for _, name := range sortedKeys(facts) {
		sel := identity.Selector{Type: typ, Value: name + ":" + facts[name]}
		if err := identity.ValidateSelector(name, sel); err != nil {
			return nil, fmt.Errorf("fact %v", err)
		}
		sels = append(sels, sel)
	}
	if err := identity.SortSelectors(sels); err != nil {
		return nil, err
	}
	return sels, nil
}
