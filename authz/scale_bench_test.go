package authz

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"writ.dev/writ/task"
)

// benchScaleEnded is how many recently ended tasks the scale benchmarks
// put in the index beside the live ones: the index keeps tasks ended in
// the last day so that denials can name them.
const benchScaleEnded = 15_000

// scaleWorld is an index over live open tasks and ended (closed) ones, drawn
// from the benchmark world's identities, with requests of which a third
// are allowed by a live task, a third would have been allowed by an ended
// one, and a third are drawn at random.
func scaleWorld(b testing.TB, live, ended int) (Snapshot, []Request) {
	g := &benchGen{r: rand.New(rand.NewPCG(uint64(live), uint64(ended)))}
	s := Snapshot{Tasks: make([]task.Task, live+ended)}
	for i := range s.Tasks {
		s.Tasks[i] = g.task(b, i)
		if i >= live {
			if err := s.Tasks[i].Close(t0.Add(-time.Hour)); err != nil {
				b.Fatal(err)
			}
		}
	}
	reqs := make([]Request, 0, benchRequests)
	for i := range benchRequests {
		switch {
		case i%3 == 0:
			reqs = append(reqs, g.request(s.Tasks[:live], true))
		case i%3 == 1 && ended > 0:
			reqs = append(reqs, g.request(s.Tasks[live:], true))
		default:
			reqs = append(reqs, g.request(nil, false))
		}
	}
	return s, reqs
}

// BenchmarkDecideScale measures Decide on indexes of 1, 1,000 and 15,000
// live tasks, without and with 15,000 ended tasks beside them, in the
// 100,000-identity world of BenchmarkDecide. A decision looks only at the
// grants that could apply to the identities asking, so its latency should
// not grow with the number of tasks.
func BenchmarkDecideScale(b *testing.B) {
	for _, ended := range []int{0, benchScaleEnded} {
		for _, live := range []int{1, 1_000, 15_000} {
			b.Run(fmt.Sprintf("live=%d/ended=%d", live, ended), func(b *testing.B) {
				s, reqs := scaleWorld(b, live, ended)
				ix := NewIndex(s, t0)
				allowed, isAllowed := 0, make([]bool, len(reqs))
				for i, r := range reqs {
					if isAllowed[i] = ix.Decide(r, nil).Allow; isAllowed[i] {
						allowed++
					}
				}
				ds := make([]time.Duration, b.N)
				b.ReportAllocs()
				b.ResetTimer()
				start := time.Now()
				for i := range b.N {
					req := reqs[i%len(reqs)]
					t := time.Now()
					ix.Decide(req, nil)
					ds[i] = time.Since(t)
				}
				elapsed := time.Since(start)
				b.StopTimer()
				// Allowed decisions on their own: the ones that should not
				// pay for the ended tasks kept to explain denials.
				var allowedDs []time.Duration
				for i, d := range ds {
					if isAllowed[i%len(reqs)] {
						allowedDs = append(allowedDs, d)
					}
				}
				reportLatency(b, ds, elapsed, &benchWorld{allowed: float64(allowed) / float64(len(reqs))})
				if len(allowedDs) > 0 {
					slices.Sort(allowedDs)
					b.ReportMetric(float64(allowedDs[len(allowedDs)/2].Nanoseconds()), "allowed-p50-ns")
					b.ReportMetric(float64(allowedDs[len(allowedDs)*99/100].Nanoseconds()), "allowed-p99-ns")
				}
			})
		}
	}
}

// BenchmarkDecideIndexBuild measures building the index in memory (no
// store) over the same worlds: the part of a rebuild that is not reading.
func BenchmarkDecideIndexBuild(b *testing.B) {
	for _, live := range []int{1, 1_000, 15_000} {
		b.Run(fmt.Sprintf("live=%d/ended=%d", live, benchScaleEnded), func(b *testing.B) {
			s, _ := scaleWorld(b, live, benchScaleEnded)
			b.ReportAllocs()
			for b.Loop() {
				NewIndex(s, t0)
			}
		})
	}
}

// BenchmarkDecideIndexUpdate measures Index.Update after a change to one
// task (its grants replaced, as after decoding a new document), over the
// same worlds as BenchmarkDecideIndexBuild: what a rebuild after a task
// change costs once the snapshot is read.
func BenchmarkDecideIndexUpdate(b *testing.B) {
	for _, live := range []int{1, 1_000, 15_000} {
		b.Run(fmt.Sprintf("live=%d/ended=%d", live, benchScaleEnded), func(b *testing.B) {
			s, _ := scaleWorld(b, live, benchScaleEnded)
			ix := NewIndex(s, t0)
			next := Snapshot{Tasks: slices.Clone(s.Tasks)}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				k := i % live
				i++
				next.Tasks[k].Grants = slices.Clone(next.Tasks[k].Grants)
				ix = ix.Update(next, t0)
			}
		})
	}
}
