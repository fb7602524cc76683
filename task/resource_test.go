package task

import (
	"strings"
	"testing"
)

func mustResource(t testing.TB, s string) ResourcePattern {
	t.Helper()
	r, err := ParseResourcePattern(s)
	if err != nil {
		t.Fatalf("ParseResourcePattern(%q): %v", s, err)
	}
	return r
}

func TestResourcePatternMatches(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"db/prod/payments", "db/prod/payments", true},
		{"db/prod/payments", "db/prod/payments2", false},
		{"db/prod/payments", "db/prod", false},
		{"db/prod/*", "db/prod/payments", true},
		{"db/prod/*", "db/prod/payments/table", false},
		{"db/prod/*", "db/prod", false},
		{"db/*/payments", "db/staging/payments", true},
		{"db/**", "db/prod/payments/table", true},
		{"db/**", "db", false},
		{"db/**", "dbx/prod", false},
		{"mcp/github/tool/create_issue", "mcp/github/tool/create_issue", true},
		{"k8s/prod/ns/*", "k8s/prod/ns/web", true},
		{"host/db.internal:5432", "host/db.internal:5432", true},
		{"user/alice@corp", "user/alice@corp", true},
	}
	for _, tt := range tests {
		if got := mustResource(t, tt.pattern).Matches(tt.name); got != tt.want {
			t.Errorf("%s matches %s = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
	if (ResourcePattern{}).Matches("db") {
		t.Error("the zero ResourcePattern matches a name")
	}
}

func TestParseResourcePatternErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "is empty"},
		{"/db/prod", "starts with '/'"},
		{"db//prod", `("//")`},
		{"db/prod/", "trailing '/'"},
		{"db/../prod", "dot segments"},
		{"db/pro*", "mixes '*'"},
		{"db/**/x", "only as the last segment"},
		{"db/pr od", "character ' '"},
		{"db/" + strings.Repeat("x", MaxResourceLen), "at most 512"},
		{strings.Repeat("a/", 32) + "a", "at most 32"},
	}
	for _, tt := range tests {
		_, err := ParseResourcePattern(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseResourcePattern(%q) = %v, want an error containing %q", tt.in, err, tt.want)
		}
	}
}

func TestCheckResourceNameRefusesWildcards(t *testing.T) {
	if err := CheckResourceName("db/prod/payments"); err != nil {
		t.Errorf("CheckResourceName: %v", err)
	}
	for _, name := range []string{"db/*", "db/**", "db/x*"} {
		if err := CheckResourceName(name); err == nil || !strings.Contains(err.Error(), "wildcards belong in grants") {
			t.Errorf("CheckResourceName(%q) = %v, want a wildcard error", name, err)
		}
	}
}

func TestCheckAction(t *testing.T) {
	for _, a := range []string{"read", "k8s:exec", "tool.call"} {
		if err := CheckAction(a); err != nil {
			t.Errorf("CheckAction(%q): %v", a, err)
		}
	}
	for a, want := range map[string]string{"": "is empty", "*": "not allowed in a request", "re ad": "character ' '", strings.Repeat("a", 65): "65 bytes"} {
		if err := CheckAction(a); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckAction(%q) = %v, want an error containing %q", a, err, want)
		}
	}
}

func FuzzParseResourcePattern(f *testing.F) {
	for _, s := range []string{"db/prod/payments", "db/*", "db/**", "mcp/github/tool/create_issue", "/x", "a//b", "a/**/b", "user@x:1"} {
		f.Add(s, "db/prod/payments")
	}
	f.Fuzz(func(t *testing.T, s, name string) {
		r, err := ParseResourcePattern(s)
		if err != nil {
			return
		}
		if r.String() != s {
			t.Fatalf("ParseResourcePattern(%q).String() = %q", s, r.String())
		}
		if q, err := ParseResourcePattern(r.String()); err != nil || q.String() != s {
			t.Fatalf("%q does not round-trip: %v", s, err)
		}
		if CheckResourceName(s) == nil && !r.Matches(s) {
			t.Fatalf("literal pattern %q does not match itself", s)
		}
		r.Matches(name) // must not panic on any name
	})
}
