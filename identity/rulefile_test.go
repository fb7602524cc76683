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
			if r.SPIFFEID.IsZero() || r.ParentID.IsZero() || len(r.Selectors) == 0 {
				t.Fatalf("rule %d accepted incomplete: %+v", i, r)
			}
			if !r.ExpiresAt.IsZero() && !r.ExpiresAt.After(ruleFileNow) {
				t.Fatalf("rule %d accepted with a past expiry %s", i, r.ExpiresAt)
			}
		}
	})
}
