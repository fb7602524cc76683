package guardrail

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	cedar "github.com/cedar-policy/cedar-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// genPolicy is a generated policy with its scope kept beside it, so the
// test can say which policies may apply without asking the index.
type genPolicy struct {
	actions  []string // nil: any
	op       resourceOp
	resource string
}

func (g genPolicy) applies(action, resource string) bool {
	if g.actions != nil && !slices.Contains(g.actions, action) {
		return false
	}
	switch g.op {
	case exactResource:
		return resource == g.resource
	case underResource:
		return resource == g.resource || strings.HasPrefix(resource, g.resource+"/")
	}
	return true
}

// generate returns n policies over distinct resource roots and ten
// actions, with a few unconstrained scopes and a few policies that fail to
// evaluate. withPermits mixes in permit policies.
func generate(n int, withPermits bool) (string, []genPolicy) {
	var b strings.Builder
	gens := make([]genPolicy, n)
	conds := []string{
		`principal.kind == "agent"`,
		`context.hour < 12`,
		`!context.person_in_chain`,
		`true`,
	}
	for i := range n {
		g := &gens[i]
		effect := "forbid"
		if withPermits && i%5 == 0 {
			effect = "permit"
		}
		a := fmt.Sprintf("a%d", i%10)
		action := fmt.Sprintf(`action == writ::Action::%q`, a)
		switch {
		case i%101 == 0:
			action = "action"
		case i%7 == 0:
			b2 := fmt.Sprintf("a%d", (i+1)%10)
			action = fmt.Sprintf(`action in [writ::Action::%q, writ::Action::%q]`, a, b2)
			g.actions = []string{a, b2}
		default:
			g.actions = []string{a}
		}
		root := fmt.Sprintf("r%d", i%250)
		resource := fmt.Sprintf(`resource in writ::Resource::%q`, root)
		g.op, g.resource = underResource, root
		switch {
		case i%103 == 0:
			resource, g.op, g.resource = "resource", anyResource, ""
		case i%3 == 0:
			g.op, g.resource = exactResource, root+"/x"
			resource = fmt.Sprintf(`resource == writ::Resource::%q`, g.resource)
		case i%4 == 0:
			g.resource = root + "/x"
			resource = fmt.Sprintf(`resource in writ::Resource::%q`, g.resource)
		}
		cond := conds[i%len(conds)]
		if i%97 == 0 {
			cond = `context.facts.missing == "x"`
		}
		fmt.Fprintf(&b, "@id(\"p%d\")\n%s(principal, %s, %s) when { %s };\n", i, effect, action, resource, cond)
	}
	return b.String(), gens
}

// bruteForce parses the same text into a plain cedar-go PolicySet keyed by
// @id, to judge requests by evaluating every policy.
func bruteForce(t testing.TB, text string) *cedar.PolicySet {
	t.Helper()
	list, err := cedar.NewPolicyListFromBytes("gen.cedar", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	ps := cedar.NewPolicySet()
	for _, p := range list {
		ps.Add(cedar.PolicyID(p.Annotations()["id"]), p)
	}
	return ps
}

func randomRequest(rng *rand.Rand) Request {
	principals := []spiffeid.ID{agent, person, node, workload}
	root := fmt.Sprintf("r%d", rng.IntN(260))
	resource := []string{root, root + "/x", root + "/x/y", root + "/z", root + "x"}[rng.IntN(5)]
	chain := principals[:rng.IntN(len(principals))+1]
	return Request{
		Principal: principals[rng.IntN(len(principals))],
		Action:    fmt.Sprintf("a%d", rng.IntN(12)),
		Resource:  resource,
		Context: Context{
			Time:  time.Date(2025, 6, 10, rng.IntN(24), 0, 0, 0, time.UTC),
			Chain: chain,
		},
	}
}

func TestIndexMatchesBruteForce(t *testing.T) {
	for _, withPermits := range []bool{false, true} {
		t.Run(fmt.Sprintf("permits=%v", withPermits), func(t *testing.T) {
			text, gens := generate(1000, withPermits)
			s := load(t, map[string]string{"gen.cedar": text})
			ps := bruteForce(t, text)
			rng := rand.New(rand.NewPCG(1, 2))
			for range 500 {
				r := randomRequest(rng)
				checkCandidates(t, s, gens, r)
				checkSameDecision(t, s, ps, r, withPermits)
			}
		})
	}
}

// checkCandidates checks that Decide evaluated exactly the policies whose
// scopes can match, and so far fewer than the whole set.
func checkCandidates(t *testing.T, s *Set, gens []genPolicy, r Request) {
	t.Helper()
	want := 0
	for _, g := range gens {
		if g.applies(r.Action, r.Resource) {
			want++
		}
	}
	before := s.evaluated.Load()
	s.Decide(r)
	got := s.evaluated.Load() - before
	if got != int64(want) {
		t.Fatalf("%s on %s: evaluated %d policies, want the %d whose scopes match", r.Action, r.Resource, got, want)
	}
	if got > 50 {
		t.Fatalf("%s on %s: evaluated %d of %d policies; the index should leave a handful", r.Action, r.Resource, got, len(gens))
	}
}

func checkSameDecision(t *testing.T, s *Set, ps *cedar.PolicySet, r Request, withPermits bool) {
	t.Helper()
	d := s.Decide(r)
	req, ents := toCedar(r)
	dec, diag := ps.IsAuthorized(ents, req)
	forbidden := dec == cedar.Deny && len(diag.Reasons) > 0
	allowed := bool(dec == cedar.Allow) || !withPermits && !forbidden
	if d.Allowed != allowed || d.Forbidden != forbidden {
		t.Fatalf("%+v: indexed %+v, brute force %v %+v", r, d, dec, diag)
	}
	if want := policyNames(diag.Reasons); (d.Forbidden || d.Permitted) && !slices.Equal(d.Policies, want) {
		t.Fatalf("%+v: indexed policies %v, brute force %v", r, d.Policies, want)
	}
	if len(d.Errors) != len(diag.Errors) {
		t.Fatalf("%+v: indexed errors %v, brute force %v", r, d.Errors, diag.Errors)
	}
}
