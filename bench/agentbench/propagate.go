package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
)

// countWatcher records when each X509Context update reached the workload
// and how many SVIDs it held. Watching sees an update the moment the agent
// pushes it, where polling would add up to a poll interval to every delay.
type countWatcher struct {
	mu     sync.Mutex
	events []countEvent
	last   error
	notify chan struct{}
}

type countEvent struct {
	at    time.Time
	count int
}

func newCountWatcher() *countWatcher { return &countWatcher{notify: make(chan struct{}, 1)} }

// OnX509ContextUpdate runs after go-spiffe has parsed the whole response,
// so the time includes what the workload itself pays to read it.
func (w *countWatcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	now := time.Now()
	w.mu.Lock()
	w.events = append(w.events, countEvent{at: now, count: len(c.SVIDs)})
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func (w *countWatcher) OnX509ContextWatchError(err error) {
	w.mu.Lock()
	w.last = err
	w.mu.Unlock()
}

// reached returns when the workload first held at least n SVIDs.
func (w *countWatcher) reached(n int) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.events {
		if e.count >= n {
			return e.at, true
		}
	}
	return time.Time{}, false
}

func (w *countWatcher) waitFor(ctx context.Context, n int, timeout time.Duration) (time.Time, error) {
	deadline := time.After(timeout)
	for {
		if at, ok := w.reached(n); ok {
			return at, nil
		}
		select {
		case <-w.notify:
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-deadline:
			w.mu.Lock()
			defer w.mu.Unlock()
			got := 0
			if len(w.events) > 0 {
				got = w.events[len(w.events)-1].count
			}
			return time.Time{}, fmt.Errorf("workload held %d SVIDs after %v, want %d (last watch error: %v)", got, timeout, n, w.last)
		}
	}
}

// largeMessages lets the client read a response carrying 10,000 SVIDs,
// which is far beyond gRPC's default 4 MiB limit.
func largeMessages() workloadapi.ClientOption {
	return workloadapi.WithDialOptions(grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1 << 30)))
}

// rules creates identity rules for the benchmark's own workload through
// the CLI, as an operator would, and counts them.
type rules struct {
	bin, socket, dir, parent, selector, td string
	total                                  int
}

type batchEntry struct {
	SpiffeID  string   `json:"spiffe_id"`
	ParentID  string   `json:"parent_id"`
	Selectors []string `json:"selectors"`
}

func (r *rules) nextID() string {
	r.total++
	return "spiffe://" + r.td + "/w/" + strconv.Itoa(r.total)
}

// batch creates n rules in one `writ entry create --file` call and returns
// the time that call returned.
func (r *rules) batch(ctx context.Context, n int) (time.Time, error) {
	var doc struct {
		Entries []batchEntry `json:"entries"`
	}
	for range n {
		doc.Entries = append(doc.Entries, batchEntry{SpiffeID: r.nextID(), ParentID: r.parent, Selectors: []string{r.selector}})
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return time.Time{}, err
	}
	path := filepath.Join(r.dir, "batch.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return time.Time{}, err
	}
	if _, err := cli(ctx, r.bin, "entry", "create", "--socket", r.socket, "--file", path); err != nil {
		return time.Time{}, err
	}
	return time.Now(), nil
}

// one creates a single rule from flags, the everyday operator action.
func (r *rules) one(ctx context.Context) (time.Time, error) {
	_, err := cli(ctx, r.bin, "entry", "create", "--socket", r.socket,
		"--spiffe-id", r.nextID(), "--parent-id", r.parent, "--selector", r.selector)
	return time.Now(), err
}

// delay is how long after created the workload held want SVIDs. An update
// can land before the CLI has even exited; that counts as no delay.
func delay(ctx context.Context, w *countWatcher, want int, created time.Time) (time.Duration, error) {
	at, err := w.waitFor(ctx, want, 3*time.Minute)
	if err != nil {
		return 0, err
	}
	return max(0, at.Sub(created)), nil
}

// summary is the median and max of a few delays.
type summary struct {
	SamplesMs []float64 `json:"samples_ms"`
	MedianMs  float64   `json:"median_ms"`
	MaxMs     float64   `json:"max_ms"`
}

func summarize(ds []time.Duration) summary {
	s := summary{}
	for _, d := range ds {
		s.SamplesMs = append(s.SamplesMs, ms(d))
	}
	sorted := append([]time.Duration(nil), ds...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	if n := len(sorted); n > 0 {
		mid := sorted[n/2]
		if n%2 == 0 {
			mid = (sorted[n/2-1] + sorted[n/2]) / 2
		}
		s.MedianMs, s.MaxMs = ms(mid), ms(sorted[n-1])
	}
	return s
}
