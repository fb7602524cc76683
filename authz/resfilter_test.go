package authz

import (
	"testing"

	"writ.dev/writ/task"
)

// TestResFilterNoFalseNegatives checks that the filter never rules out a
// name a pattern matches, which would deny what a grant allows.
func TestResFilterNoFalseNegatives(t *testing.T) {
	patterns := []string{"db", "db/prod", "db/prod/x", "db/*", "db/**", "db/*/x", "*/prod", "**", "k8s/prod/ns/*"}
	names := []string{"db", "db/prod", "db/prod/x", "db/staging/x", "k8s/prod/ns/web", "x/prod", "db/prod/x/y"}
	for _, ps := range patterns {
		p := res(t, ps)
		f := newResFilter([]task.ResourcePattern{p})
		for _, n := range names {
			if p.Matches(n) && !f.mayMatch(newResKey(n)) {
				t.Errorf("filter of %s rules out %s, which it matches", ps, n)
			}
		}
	}
}
