package task

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func mustPattern(t testing.TB, s string) Pattern {
	t.Helper()
	p, err := ParsePattern(s)
	if err != nil {
		t.Fatalf("ParsePattern(%q): %v", s, err)
	}
	return p
}

func TestPatternMatches(t *testing.T) {
	tests := []struct {
		pattern, id string
		want        bool
	}{
		{"spiffe://td/ci", "spiffe://td/ci", true},
		{"spiffe://td/ci", "spiffe://td/cicd", false},
		{"spiffe://td/ci", "spiffe://td/ci/runner", false},
		{"spiffe://td/ci/*", "spiffe://td/ci/runner", true},
		{"spiffe://td/ci/*", "spiffe://td/cicd/runner", false},
		{"spiffe://td/ci/*", "spiffe://td/ci", false},
		{"spiffe://td/ci/*", "spiffe://td/ci/runner/1", false},
		{"spiffe://td/ci/**", "spiffe://td/ci", false},
		{"spiffe://td/ci/**", "spiffe://td/ci/runner", true},
		{"spiffe://td/ci/**", "spiffe://td/ci/runner/1/2", true},
		{"spiffe://td/ci/**", "spiffe://td/cicd/runner", false},
		{"spiffe://td/*/web", "spiffe://td/ns/web", true},
		{"spiffe://td/*/web", "spiffe://td/ns/api", false},
		{"spiffe://td/**", "spiffe://td/anything/at/all", true},
		{"spiffe://td/agent/payroll-bot/*", "spiffe://td/agent/payroll-bot/7", true},
		{"spiffe://td/person/example.com/**", "spiffe://td/person/example.com/ceo", true},
		{"spiffe://td/ci", "spiffe://other/ci", false},
		{"spiffe://td/**", "spiffe://td", false},
		{"spiffe://td/CI", "spiffe://td/ci", false},
	}
	for _, tt := range tests {
		id := spiffeid.RequireFromString(tt.id)
		if got := mustPattern(t, tt.pattern).Matches(id); got != tt.want {
			t.Errorf("%s matches %s = %v, want %v", tt.pattern, tt.id, got, tt.want)
		}
	}
	if (Pattern{}).Matches(spiffeid.RequireFromString("spiffe://td/x")) {
		t.Error("the zero Pattern matches an ID")
	}
}

func TestParsePatternErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "is empty"},
		{"td/ci", `does not start with "spiffe://"`},
		{"spiffe://td", "has no path"},
		{"spiffe://TD/ci", "must be lowercase"},
		{"spiffe://td/ci/", "trailing '/'"},
		{"spiffe://td//ci", `is empty ("//")`},
		{"spiffe://td/ci/..", "dot segments"},
		{"spiffe://td/ci*", "mixes '*'"},
		{"spiffe://td/**/ci", "only as the last segment"},
		{"spiffe://td/c%20i", "character '%'"},
		{"spiffe://*/ci", "trust domain"},
		{"spiffe://td/" + strings.Repeat("a/", 40) + "a", "at most 32"},
		{"spiffe://td/person/example.com/Erin", `person IDs are lowercase (sign-in lowercases the email); use "spiffe://td/person/example.com/erin"`},
		{"spiffe://td/person/Example.com/*", `use "spiffe://td/person/example.com/*"`},
	}
	for _, tt := range tests {
		_, err := ParsePattern(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParsePattern(%q) = %v, want an error containing %q", tt.in, err, tt.want)
		}
	}
}

func TestPatternCovers(t *testing.T) {
	tests := []struct {
		p, q string
		want bool
	}{
		{"spiffe://td/ci", "spiffe://td/ci", true},
		{"spiffe://td/ci", "spiffe://td/cicd", false},
		{"spiffe://td/ci/*", "spiffe://td/ci/runner", true},
		{"spiffe://td/ci/*", "spiffe://td/ci/**", false},
		{"spiffe://td/ci/**", "spiffe://td/ci/*", true},
		{"spiffe://td/ci/**", "spiffe://td/ci/a/b/**", true},
		{"spiffe://td/ci/**", "spiffe://td/ci", false},
		{"spiffe://td/ci/runner", "spiffe://td/ci/*", false},
		{"spiffe://td/*/web", "spiffe://td/ns/web", true},
		{"spiffe://td/ci/*", "spiffe://other/ci/x", false},
	}
	for _, tt := range tests {
		if got := mustPattern(t, tt.p).Covers(mustPattern(t, tt.q)); got != tt.want {
			t.Errorf("%s covers %s = %v, want %v", tt.p, tt.q, got, tt.want)
		}
	}
}

func TestLiteralPrefix(t *testing.T) {
	tests := map[string]string{
		"spiffe://td/ci":                    "spiffe://td/ci",
		"spiffe://td/ci/*":                  "spiffe://td/ci",
		"spiffe://td/*/web":                 "spiffe://td",
		"spiffe://td/person/example.com/**": "spiffe://td/person/example.com",
	}
	for in, want := range tests {
		if got := mustPattern(t, in).LiteralPrefix(); got != want {
			t.Errorf("LiteralPrefix(%s) = %q, want %q", in, got, want)
		}
	}
}

func TestPatternText(t *testing.T) {
	var p Pattern
	if err := p.UnmarshalText([]byte("spiffe://td/ci/*")); err != nil {
		t.Fatal(err)
	}
	if b, _ := p.MarshalText(); string(b) != "spiffe://td/ci/*" {
		t.Errorf("MarshalText = %q", b)
	}
	if err := p.UnmarshalText([]byte("spiffe://td/ci*")); err == nil {
		t.Error("UnmarshalText accepted a bad pattern")
	}
}

func FuzzParsePattern(f *testing.F) {
	for _, s := range []string{"spiffe://td/ci", "spiffe://td/ci/*", "spiffe://td/**", "spiffe://td/a/**/b", "spiffe://TD/x", "spiffe://td//", "spiffe://td/a*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePattern(s)
		if err != nil {
			return
		}
		if p.String() != s {
			t.Fatalf("ParsePattern(%q).String() = %q", s, p.String())
		}
		q, err := ParsePattern(p.String())
		if err != nil || q.String() != s || !q.Covers(p) || !p.Covers(q) {
			t.Fatalf("%q does not round-trip: %v", s, err)
		}
		if id, err := spiffeid.FromString(p.LiteralPrefix()); err == nil && p.Matches(id) != (p.LiteralPrefix() == s) {
			t.Fatalf("%q matches its literal prefix %q only if it has no wildcard", s, p.LiteralPrefix())
		}
	})
}
