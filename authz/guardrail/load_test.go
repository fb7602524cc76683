package guardrail

import (
	"slices"
	"strings"
	"testing"
)

func TestLoadErrors(t *testing.T) {
	ok := `@id("a") forbid(principal, action, resource);`
	tests := []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{"syntax", map[string]string{"bad.cedar": "@id(\"a\")\nforbid(principal, action, resource)\nwhen { context.x == };"}, []string{"bad.cedar:3:"}},
		{"scanner", map[string]string{"bad.cedar": "@id(\"a\")\nforbid(principal, action, resource) when { \"open };"}, []string{"bad.cedar:2:"}},
		{"missing id", map[string]string{"x.cedar": ok + "\n\nforbid(principal, action, resource);"}, []string{"x.cedar:3:1", "no @id"}},
		{"empty id", map[string]string{"x.cedar": `@id("") forbid(principal, action, resource);`}, []string{"x.cedar:1:1", "no @id"}},
		{"duplicate id across files", map[string]string{"a.cedar": ok, "b.cedar": "\n" + ok}, []string{"b.cedar:2:1", `"a"`, "a.cedar:1:1"}},
		{"foreign action type", map[string]string{"x.cedar": `@id("a") forbid(principal, action == Action::"read", resource);`}, []string{"x.cedar:1:1", `"a"`, "action scope names type Action", "writ::Action"}},
		{"foreign resource type", map[string]string{"x.cedar": `@id("a") forbid(principal, action, resource in Resource::"db");`}, []string{"resource scope names type Resource"}},
		{"foreign principal type", map[string]string{"x.cedar": `@id("a") forbid(principal is User, action, resource);`}, []string{"principal scope names type User"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := make(map[string][]byte)
			for k, v := range tt.files {
				files[k] = []byte(v)
			}
			s, err := Load(files)
			if err == nil {
				t.Fatalf("Load succeeded with %d policies, want error", s.Len())
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestLoadAcceptsScopeForms(t *testing.T) {
	s := load(t, map[string]string{"x.cedar": `
@id("1") forbid(principal == writ::Identity::"spiffe://example.org/agent/claude", action in [writ::Action::"a", writ::Action::"a", writ::Action::"b"], resource == writ::Resource::"db");
@id("2") forbid(principal is writ::Identity in writ::Identity::"spiffe://x/y", action in writ::Action::"a", resource is writ::Resource in writ::Resource::"db");
@id("3") forbid(principal is writ::Identity, action, resource is writ::Resource);`})
	if s.Len() != 3 {
		t.Fatalf("Len = %d, want 3", s.Len())
	}
	if d := s.Decide(req(agent, "a", "db")); !d.Forbidden || !slices.Equal(d.Policies, []string{"1", "3"}) {
		t.Fatalf("got %+v, want forbidden by policies 1 and 3 (2 names another principal)", d)
	}
}
