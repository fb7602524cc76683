package identity

import (
	"fmt"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// A workload as a Kubernetes or unix attestor describes it: a dozen
// selectors, of which a rule typically names a few.
func benchWorkload() []Selector {
	return []Selector{
		{"unix", "uid:1000"}, {"unix", "gid:1000"}, {"unix", "user:svc"}, {"unix", "path:/usr/local/bin/web"},
		{"k8s", "ns:payments"}, {"k8s", "sa:web"}, {"k8s", "pod-name:web-7d9f8-xk2p1"},
		{"k8s", "pod-label:app:web"}, {"k8s", "pod-label:tier:frontend"}, {"k8s", "node-name:ip-10-0-3-17"},
		{"k8s", "container-name:web"}, {"k8s", "container-image:registry.example.org/web:4.2"},
	}
}

func benchRule() Rule {
	return Rule{
		SPIFFEID:  spiffeid.RequireFromString("spiffe://example.org/service/web"),
		ParentID:  testAgent,
		Selectors: []Selector{{"k8s", "ns:payments"}, {"k8s", "sa:web"}, {"k8s", "pod-label:app:web"}},
		ExpiresAt: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC),
	}
}

func BenchmarkAppliesTo(b *testing.B) {
	rule := benchRule()
	workload := NewSelectorSet(benchWorkload())
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if !rule.AppliesTo(testAgent, nil, workload, now) {
			b.Fatal("rule should apply")
		}
	}
}

// BenchmarkAppliesToManyRules is an agent sorting its cached rules for one
// workload: 1000 rules with the right parent, 10 of which match.
func BenchmarkAppliesToManyRules(b *testing.B) {
	rules := make([]Rule, 1000)
	for i := range rules {
		rules[i] = benchRule()
		if i%100 != 0 {
			rules[i].Selectors = []Selector{{"k8s", fmt.Sprintf("ns:team-%d", i)}, {"k8s", "sa:web"}}
		}
	}
	workload := NewSelectorSet(benchWorkload())
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		for i := range rules {
			if rules[i].AppliesTo(testAgent, nil, workload, now) {
				n++
			}
		}
		if n != 10 {
			b.Fatalf("matched %d rules, want 10", n)
		}
	}
}

func BenchmarkContainsAll(b *testing.B) {
	workload := NewSelectorSet(benchWorkload())
	want := benchRule().Selectors
	b.ReportAllocs()
	for b.Loop() {
		if !workload.ContainsAll(want) {
			b.Fatal("should contain")
		}
	}
}

func BenchmarkNewSelectorSet(b *testing.B) {
	sels := benchWorkload()
	b.ReportAllocs()
	for b.Loop() {
		_ = NewSelectorSet(sels)
	}
}

func BenchmarkParseID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseID("spiffe_id", "spiffe://example.org/ns/payments/sa/web"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkValidate(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		r := validRule()
		if err := r.Validate(testTD, testLimits); err != nil {
			b.Fatal(err)
		}
	}
}
