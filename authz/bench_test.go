package authz

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/task"
)

// The benchmark world: 100,000 identities (70% workloads, 20% agents, 10%
// people), 10,000 open tasks of 2–5 members and 1–4 grants, 2,000 standing
// grants, and requests of 1–3 links of which about a third are built to be
// allowed.
const (
	benchWorkloads = 70_000
	benchAgents    = 20_000
	benchPeople    = 10_000
	benchTasks     = 10_000
	benchStanding  = 2_000
	benchRequests  = 1 << 16
)

type benchWorld struct {
	ix       *Index
	reqs     []Request
	allowed  float64
	building time.Duration
}

var (
	benchOnce sync.Once
	bench     benchWorld
)

func benchSetup(b *testing.B) *benchWorld {
	benchOnce.Do(func() {
		g := &benchGen{r: rand.New(rand.NewPCG(1, 2))}
		s := Snapshot{Tasks: make([]task.Task, benchTasks)}
		for i := range s.Tasks {
			s.Tasks[i] = g.task(b, i)
		}
		for i := range benchStanding {
			s.Standing = append(s.Standing, task.StandingGrant{ID: fmt.Sprintf("S-%d", i),
				Subject: mustBench(task.ParsePattern(fmt.Sprintf("spiffe://bench/ns/ns%d/sa/*", i%700))),
				Actions: []string{"read"}, Resources: []task.ResourcePattern{mustBench(task.ParseResourcePattern(fmt.Sprintf("db/env1/db%d", i%50)))}})
		}
		start := time.Now()
		bench.ix = NewIndex(s, t0)
		bench.building = time.Since(start)
		n := 0
		for i := range benchRequests {
			req := g.request(s.Tasks, i%3 == 0)
			bench.reqs = append(bench.reqs, req)
			if bench.ix.Decide(req, nil).Allow {
				n++
			}
		}
		bench.allowed = float64(n) / benchRequests
	})
	return &bench
}

func mustBench[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

type benchGen struct{ r *rand.Rand }

func (g *benchGen) workload() string {
	i := g.r.IntN(benchWorkloads)
	return fmt.Sprintf("spiffe://bench/ns/ns%d/sa/sa%d", i/100, i%100)
}

func (g *benchGen) agent() string {
	i := g.r.IntN(benchAgents)
	return fmt.Sprintf("spiffe://bench/agent/team%d/bot%d", i/20, i%20)
}

func (g *benchGen) person() string {
	return fmt.Sprintf("spiffe://bench/person/example.com/u%d", g.r.IntN(benchPeople))
}

// identity draws an ID with the world's mix of kinds.
func (g *benchGen) identity() string {
	switch n := g.r.IntN(10); {
	case n < 7:
		return g.workload()
	case n < 9:
		return g.agent()
	}
	return g.person()
}

// member draws a member pattern: mostly literal IDs, some wildcards over an
// agent team or a namespace's service accounts.
func (g *benchGen) member() string {
	id := g.identity()
	if g.r.IntN(5) == 0 && !strings.Contains(id, "/person/") {
		return id[:strings.LastIndexByte(id, '/')] + "/*"
	}
	return id
}

var benchActions = []string{"read", "write", "deploy", "exec", "delete"}

func (g *benchGen) resourcePattern() string {
	switch g.r.IntN(4) {
	case 0:
		return fmt.Sprintf("db/env%d/db%d", g.r.IntN(4), g.r.IntN(50))
	case 1:
		return fmt.Sprintf("db/env%d/*", g.r.IntN(4))
	case 2:
		return fmt.Sprintf("k8s/prod/ns/ns%d/**", g.r.IntN(700))
	}
	return fmt.Sprintf("mcp/tool%d/tool/*", g.r.IntN(100))
}

func (g *benchGen) task(b testing.TB, i int) task.Task {
	tk := task.Task{ID: fmt.Sprintf("T-%d", i), Title: "bench", Reason: "bench",
		Owner: spiffeid.RequireFromString(g.person()), Deadline: t0.Add(24 * time.Hour), State: task.StateDraft}
	for range 2 + g.r.IntN(4) {
		tk.Members = append(tk.Members, task.Member{Pattern: mustBench(task.ParsePattern(g.member()))})
	}
	for range 1 + g.r.IntN(4) {
		gr := task.Grant{Actions: []string{benchActions[g.r.IntN(len(benchActions))]},
			Resources: []task.ResourcePattern{mustBench(task.ParseResourcePattern(g.resourcePattern()))}}
		for _, m := range g.r.Perm(len(tk.Members))[:1+g.r.IntN(min(3, len(tk.Members)))] {
			gr.To = append(gr.To, tk.Members[m].Pattern)
		}
		tk.Grants = append(tk.Grants, gr)
	}
	slices.SortFunc(tk.Members, func(a, b task.Member) int { return strings.Compare(a.Pattern.String(), b.Pattern.String()) })
	tk.Members = slices.CompactFunc(tk.Members, func(a, b task.Member) bool { return a.Pattern.String() == b.Pattern.String() })
	if err := tk.Validate(spiffeid.RequireTrustDomainFromString("bench")); err != nil {
		b.Fatal(err)
	}
	if err := tk.Open(t0); err != nil {
		b.Fatal(err)
	}
	return tk
}

// request draws a request: when covered, from the recipients of one grant
// of one task, so it is allowed; otherwise from random identities and
// resources, so it is almost always denied.
func (g *benchGen) request(tasks []task.Task, covered bool) Request {
	n := 1 + g.r.IntN(3)
	if !covered {
		chain := make([]string, n)
		for i := range chain {
			chain[i] = g.identity()
		}
		return Request{Chain: ids(chain...), Action: benchActions[g.r.IntN(len(benchActions))], Resource: instantiate(g.resourcePattern())}
	}
	tk := &tasks[g.r.IntN(len(tasks))]
	gr := &tk.Grants[g.r.IntN(len(tk.Grants))]
	var chain []string
	for _, p := range gr.To[:min(n, len(gr.To))] {
		chain = append(chain, instantiate(p.String()))
	}
	return Request{Chain: ids(chain...), Action: gr.Actions[0], Resource: instantiate(gr.Resources[0].String())}
}

// instantiate replaces the wildcards of a pattern with a concrete segment.
func instantiate(p string) string {
	return strings.ReplaceAll(strings.ReplaceAll(p, "**", "x"), "*", "x")
}

// reportLatency reports the median and 99th percentile of ds and the rate.
func reportLatency(b *testing.B, ds []time.Duration, elapsed time.Duration, w *benchWorld) {
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(ds[len(ds)*99/100].Nanoseconds()), "p99-ns")
	b.ReportMetric(float64(len(ds))/elapsed.Seconds(), "decisions/s")
	b.ReportMetric(100*w.allowed, "allowed-%")
}

func BenchmarkDecide(b *testing.B) {
	w := benchSetup(b)
	b.Logf("index over %d tasks built in %v; %.1f%% of requests allowed", benchTasks, w.building, 100*w.allowed)
	ds := make([]time.Duration, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		req := w.reqs[i%len(w.reqs)]
		t := time.Now()
		w.ix.Decide(req, nil)
		ds[i] = time.Since(t)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	reportLatency(b, ds, elapsed, w)
}

func BenchmarkDecideParallel(b *testing.B) {
	w := benchSetup(b)
	var (
		mu  sync.Mutex
		all []time.Duration
		seq int
	)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		i := seq * 7919
		seq++
		mu.Unlock()
		var ds []time.Duration
		for pb.Next() {
			req := w.reqs[i%len(w.reqs)]
			i++
			t := time.Now()
			w.ix.Decide(req, nil)
			ds = append(ds, time.Since(t))
		}
		mu.Lock()
		all = append(all, ds...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	reportLatency(b, all, elapsed, w)
}

// BenchmarkDecideThroughput measures decisions without timing each one, so
// its ns/op excludes the clock reads the latency benchmarks add.
func BenchmarkDecideThroughput(b *testing.B) {
	w := benchSetup(b)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		w.ix.Decide(w.reqs[i%len(w.reqs)], nil)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "decisions/s")
}
