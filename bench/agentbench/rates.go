package main

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// rate is one load run: how many calls completed and how long they took.
type rate struct {
	Name       string  `json:"name"`
	Goroutines int     `json:"goroutines"`
	Calls      int     `json:"calls"`
	PerSecond  float64 `json:"calls_per_second"`
	P50ms      float64 `json:"p50_ms"`
	P99ms      float64 `json:"p99_ms"`
	MaxMs      float64 `json:"max_ms"`
}

// measure runs call from n goroutines for warm then d, keeping only the
// latencies after the warm-up so connection setup and first-use costs do
// not count. Every latency is kept and sorted: exact percentiles, no
// histogram library needed at these call counts.
func measure(ctx context.Context, name string, n int, warm, d time.Duration, call func(context.Context) error) (rate, error) {
	r := rate{Name: name, Goroutines: n}
	begin := time.Now().Add(warm)
	end := begin.Add(d)
	lat := make([][]time.Duration, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				t0 := time.Now()
				if t0.After(end) {
					return
				}
				if err := call(ctx); err != nil {
					errs <- fmt.Errorf("%s: %w", name, err)
					return
				}
				if t0.After(begin) {
					lat[i] = append(lat[i], time.Since(t0))
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return r, err
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	r.Calls = len(all)
	r.PerSecond = float64(r.Calls) / d.Seconds()
	r.P50ms, r.P99ms, r.MaxMs = ms(percentile(all, 50)), ms(percentile(all, 99)), ms(percentile(all, 100))
	return r, nil
}

// percentile sorts ds in place and returns the value below which p% of
// the calls fall (nearest rank).
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	rank := int(p/100*float64(len(ds))+0.5) - 1
	return ds[max(0, min(rank, len(ds)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// measureRates runs the four fetch-rate figures the SPIRE numbers were
// taken with, while the workload holds exactly one SVID.
func measureRates(ctx context.Context, addr string, warm, d time.Duration) ([]rate, error) {
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		return nil, err
	}
	defer client.Close()
	x509 := func(ctx context.Context) error { _, err := client.FetchX509SVID(ctx); return err }
	perCall := func(ctx context.Context) error {
		_, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr(addr))
		return err
	}
	jwt := func(ctx context.Context) error {
		_, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "bench"})
		return err
	}
	runs := []struct {
		name string
		n    int
		call func(context.Context) error
	}{
		{"FetchX509SVID, shared client", 1, x509},
		{"FetchX509SVID, shared client", 8, x509},
		{"FetchX509SVID, new connection per call", 1, perCall},
		{"FetchJWTSVID, shared client", 8, jwt},
	}
	var out []rate
	for _, run := range runs {
		r, err := measure(ctx, run.name, run.n, warm, d, run.call)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}
