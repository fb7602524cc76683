package review

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// BenchmarkSelectLastOf256 is the worst case of rule selection: a full
// rules file where only the last rule matches.
func BenchmarkSelectLastOf256(b *testing.B) {
	var src strings.Builder
	src.WriteString("rules:\n")
	for i := range MaxRules - 1 {
		fmt.Fprintf(&src, "  - {name: r%d, match: {actions: [write], resources: [db/team%d/**]}, require: [{from: [spiffe://example.org/person/**], count: 1}]}\n", i, i)
	}
	src.WriteString("  - {name: last, match: {actions: [write], resources: [db/prod/**]}, require: [{from: [spiffe://example.org/person/**], count: 1}]}\n")
	rules := mustRules(b, src.String())
	r := &Request{Kind: KindJoin, Task: "T", Chain: chain(aliceHelper, alice), Reason: "x", Asks: []Ask{mustAsk(b, "write:db/prod/payments")}}
	b.ReportAllocs()
	for b.Loop() {
		if rule, err := Select(rules, r, r.Asks, t0); err != nil || rule.Name != "last" {
			b.Fatal(rule, err)
		}
	}
}

// BenchmarkEvaluateScenario evaluates the prod write of the scenario with
// the reviews that approve it, some of them refused on the way.
func BenchmarkEvaluateScenario(b *testing.B) {
	rules := mustRules(b, scenarioRules)
	r, rule := submit(b, rules, chain(aliceHelper, alice), "write:db/prod/payments")
	reviews := []Review{approve(chain(bob)), approve(chain(alice)), approve(chain(bobHelper, bob)), approve(chain(carol)), approve(chain(sam))}
	now := t0.Add(time.Minute)
	b.ReportAllocs()
	for b.Loop() {
		if out := Evaluate(rule, r, reviews, now); out.State != StateApproved {
			b.Fatal(out.Why)
		}
	}
}

func BenchmarkParseRulesScenario(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseRules([]byte(scenarioRules), td); err != nil {
			b.Fatal(err)
		}
	}
}
