package identity

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var ruleFileNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestParseRuleFile(t *testing.T) {
	rules, err := ParseRuleFile([]byte(`entries:
  - spiffe_id: spiffe://example.org/billing
    parent_id: spiffe://example.org/node/db-1
    selectors: ["unix:uid:1001", "unix:gid:50"]
    x509_ttl: 30m
    dns_names: [billing.internal]
    hint: billing
    expires_at: 2027-06-30T00:00:00Z
`), ruleFileNow, 10)
	if err != nil || len(rules) != 1 {
		t.Fatalf("ParseRuleFile: %v %v", rules, err)
	}
	r := rules[0]
	if r.SPIFFEID.String() != "spiffe://example.org/billing" || r.X509TTL != 30*time.Minute || len(r.Selectors) != 2 ||
		r.Selectors[1] != (Selector{Type: "unix", Value: "gid:50"}) || r.ExpiresAt.Year() != 2027 || r.Hint != "billing" {
		t.Fatalf("rule = %+v", r)
	}
}

// TestParseRuleFileParentSelectors: a rule may name its parents by node
// selectors alone, and a bad one is placed at its index.
func TestParseRuleFileParentSelectors(t *testing.T) {
	rules, err := ParseRuleFile([]byte(`entries:
  - spiffe_id: spiffe://example.org/deployer
    parent_selectors: ["github:repository:acme/payments", "github:ref:refs/heads/main"]
    selectors: ["unix:uid:1001"]
`), ruleFileNow, 10)
	if err != nil || len(rules) != 1 {
		t.Fatalf("ParseRuleFile: %v %v", rules, err)
	}
	r := rules[0]
	want := []Selector{{"github", "repository:acme/payments"}, {"github", "ref:refs/heads/main"}}
	if !r.ParentID.IsZero() || len(r.ParentSelectors) != 2 || r.ParentSelectors[0] != want[0] || r.ParentSelectors[1] != want[1] {
		t.Fatalf("rule = %+v", r)
	}
	if err := r.Validate(testTD, testLimits); err != nil {
		t.Fatalf("the parsed rule does not validate: %v", err)
	}

	for _, tt := range []struct{ name, doc, want string }{
		{"bad parent selector", `entries:
  - spiffe_id: spiffe://example.org/deployer
    parent_selectors:
      - github:repository:acme/payments
      - github
    selectors: ["unix:uid:1001"]
`, "line 5: entries[0].parent_selectors[1]: "},
		{"not a list", `entries:
  - spiffe_id: spiffe://example.org/deployer
    parent_selectors: github:ref:main
    selectors: ["unix:uid:1001"]
`, "line 3: entries[0].parent_selectors: is the value"},
		{"empty and no parent_id", `entries:
  - spiffe_id: spiffe://example.org/deployer
    parent_selectors: []
    selectors: ["unix:uid:1001"]
`, "line 3: entries[0]: has no parent_id or parent_selectors"},
		{"neither", `entries:
  - spiffe_id: spiffe://example.org/deployer
    selectors: ["unix:uid:1001"]
`, "line 2: entries[0]: has no parent_id or parent_selectors"},
		{"misspelled", `entries:
  - spiffe_id: spiffe://example.org/deployer
    parent-selectors: [github:ref:main]
    selectors: ["unix:uid:1001"]
`, "did you mean parent_selectors?"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rules, err := ParseRuleFile([]byte(tt.doc), ruleFileNow, 10)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseRuleFile = %v, %v; want an error containing %q", rules, err, tt.want)
			}
		})
	}
}

func TestParseRuleFileErrorsBounded(t *testing.T) {
	long := strings.Repeat("x", 10000)
	for _, doc := range []string{
		"entries: [{" + long[:1000] + ": 1}]", // YAML keys stop at 1024 bytes
		"entries: [{spiffe_id: " + long + "}]",
		long,
	} {
		_, err := ParseRuleFile([]byte(doc), ruleFileNow, 10)
		if err == nil || len(err.Error()) > 1000 {
			t.Errorf("error for a long input is %d bytes: %.200v", len(err.Error()), err)
		}
		var rfe *RuleFileError
		if !errors.As(err, &rfe) || rfe.Line != 1 {
			t.Errorf("not placed on line 1: %v", err)
		}
	}
}

// FuzzParseRuleFile checks that no input makes the parser panic, that what
// it accepts is complete enough to send, and that errors stay short.
func FuzzParseRuleFile(f *testing.F) {
	f.Add([]byte("entries: [{spiffe_id: spiffe://a/b, parent_id: spiffe://a/c, selectors: [x:y], x509_ttl: 1h, expires_at: 2030-01-02T15:04:05Z}]"))
	f.Add([]byte("entries: [{spiffe_id: spiffe://a/b, parent_selectors: [github:repository:a/b, github:ref:main], selectors: [x:y]}]"))
	f.Add([]byte("entries: &a [*a]"))
	f.Add([]byte("entries:\n  - {spiffe_id: spiffe://a/b, parent_id: spiffe://a/c, selectors: [], dns_names: [a.b]}\n---\n"))
	f.Add([]byte(`{"entries": [{"id": "r1", "spiffe_id": "spiffe://a/b", "parent_id": "spiffe://a/c", "selectors": ["unix:uid:1"], "jwt_ttl": 300}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		rules, err := ParseRuleFile(data, ruleFileNow, 100)
		if err != nil {
			if len(err.Error()) > 4096 {
				t.Fatalf("error of %d bytes echoes too much input", len(err.Error()))
			}
			return
		}
		for i, r := range rules {
			if r.SPIFFEID.IsZero() || (r.ParentID.IsZero() && len(r.ParentSelectors) == 0) || len(r.Selectors) == 0 {
				t.Fatalf("rule %d accepted incomplete: %+v", i, r)
			}
			if !r.ExpiresAt.IsZero() && !r.ExpiresAt.After(ruleFileNow) {
				t.Fatalf("rule %d accepted with a past expiry %s", i, r.ExpiresAt)
			}
		}
	})
}
