package agent_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"writ.dev/writ/agent"
	"writ.dev/writ/attest/workload"
	"writ.dev/writ/attest/workload/unix"
	"writ.dev/writ/server"
)

// settableClock is a server clock the test moves by hand.
type settableClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *settableClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *settableClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// waitClock is an agent clock whose waits are decided by the test: each
// After is reported on asked, and fires when wake says.
type waitClock struct {
	asked chan time.Duration
	wake  func(d time.Duration) <-chan time.Time
}

func (c *waitClock) Now() time.Time { return time.Now() }

func (c *waitClock) After(d time.Duration) <-chan time.Time {
	c.asked <- d
	return c.wake(d)
}

// TestJoinRetriesWhileTheServerIsBusy: a join the server turns away for
// now (this source is over its rate limit) is tried again after a
// jittered backoff, and succeeds once the server has room; a join still
// waiting gives up when its context ends.
func TestJoinRetriesWhileTheServerIsBusy(t *testing.T) {
	dir := shortDir(t)
	cfg := newServerConfig(t, dir)
	cfg.Limits.UnauthenticatedPerSource = server.RateLimit{Rate: 1, Burst: 1}
	srvClock := &settableClock{t: time.Now()}
	e := startServerWith(t, cfg, server.Options{Logger: quiet(), Now: srvClock.Now})
	join := func(ctx context.Context, name string, clock agent.Clock) error {
		_, err := agent.New(ctx, agent.Config{
			ServerAddress: e.listen, DataDir: filepath.Join(dir, name), JoinToken: e.token().GetToken(),
			Attestors: []workload.Attestor{unix.New(unix.Options{})}, Logger: quiet(), Clock: clock,
		})
		return err
	}
	// The first join spends this source's one attempt.
	if err := join(t.Context(), "first", nil); err != nil {
		t.Fatal(err)
	}

	// The second is turned away until the server's clock lets the bucket refill.
	clock := &waitClock{asked: make(chan time.Duration, maxWaits), wake: func(time.Duration) <-chan time.Time {
		srvClock.add(2 * time.Second)
		ch := make(chan time.Time, 1)
		ch <- time.Now()
		return ch
	}}
	if err := join(t.Context(), "second", clock); err != nil {
		t.Fatalf("a join retried once the server had room: %v", err)
	}
	close(clock.asked)
	var waits []time.Duration
	for d := range clock.asked {
		waits = append(waits, d)
	}
	// The first wait is a second, jittered down to no less than half.
	if len(waits) != 1 || waits[0] < 500*time.Millisecond || waits[0] > time.Second {
		t.Fatalf("waits before retrying %v: want one of half a second to a second", waits)
	}

	// A join waiting to retry stops when its context ends.
	ctx, cancel := context.WithCancel(t.Context())
	stuck := &waitClock{asked: make(chan time.Duration, maxWaits), wake: func(time.Duration) <-chan time.Time {
		cancel()
		return nil
	}}
	err := join(ctx, "third", stuck)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "limits.unauthenticated_per_source") {
		t.Fatalf("a join cancelled while waiting: %v, want context.Canceled and the server's last answer", err)
	}
}

// maxWaits is more waits than any join here asks for.
const maxWaits = 16
