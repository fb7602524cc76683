package guardrail

import (
	"math/rand/v2"
	"testing"
)

func benchRequests() []Request {
	rng := rand.New(rand.NewPCG(3, 4))
	rs := make([]Request, 256)
	for i := range rs {
		rs[i] = randomRequest(rng)
	}
	return rs
}

func BenchmarkDecideIndexed1000(b *testing.B) {
	text, _ := generate(1000, true)
	s := load(b, map[string]string{"gen.cedar": text})
	rs := benchRequests()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s.Decide(rs[i%len(rs)])
	}
}

// BenchmarkDecideAllPolicies1000 is the baseline: the same requests
// against the same policies, with cedar-go evaluating every policy.
func BenchmarkDecideAllPolicies1000(b *testing.B) {
	text, _ := generate(1000, true)
	ps := bruteForce(b, text)
	rs := benchRequests()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		req, ents := toCedar(rs[i%len(rs)])
		ps.IsAuthorized(ents, req)
	}
}
