package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// clockCheckInterval is how often a server measures its clock against the
// store's.
const clockCheckInterval = 30 * time.Second

// clockWatch measures this server's offset from the store's clock, the
// reference every server sharing the store agrees on. Within
// max_clock_skew, what one server issues verifies on the others (validity
// is backdated); beyond it, the server refuses to issue and reports not
// ready until the clocks agree again.
type clockWatch struct {
	s   *Server
	max time.Duration

	mu     sync.RWMutex
	offset time.Duration // store clock minus this server's, less half the round trip
	err    error         // non-nil while the offset exceeds max
}

func newClockWatch(s *Server) *clockWatch {
	return &clockWatch{s: s, max: s.cfg.MaxClockSkew.Duration}
}

// check measures once. The store's reading is taken between two local
// readings and compared with their midpoint, so the round trip does not
// count as skew. A store that cannot be read leaves the last measurement.
func (c *clockWatch) check(ctx context.Context) error {
	before := c.s.now()
	ref, err := c.s.store.Now(ctx)
	after := c.s.now()
	if err != nil {
		return fmt.Errorf("reading the store's clock: %w", err)
	}
	mid := before.Add(after.Sub(before) / 2)
	offset := ref.Sub(mid)
	var skew error
	if offset > c.max || offset < -c.max {
		skew = fmt.Errorf("this server's clock is %s away from the store's (max_clock_skew %s): fix time synchronisation (NTP) on this host", offset.Round(time.Millisecond), c.max)
	}
	c.mu.Lock()
	was := c.err
	c.offset, c.err = offset, skew
	c.mu.Unlock()
	switch {
	case skew != nil && was == nil:
		c.s.log.Error("clock skew beyond the bound; issuance stops", "offset", offset, "max_clock_skew", c.max)
	case skew == nil && was != nil:
		c.s.log.Info("clock skew back within the bound; issuance resumes", "offset", offset)
	}
	return nil
}

func (c *clockWatch) run(ctx context.Context) {
	t := time.NewTicker(clockCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := c.check(ctx); err != nil && ctx.Err() == nil {
				c.s.log.Warn("clock check", "err", err)
			}
		}
	}
}

// skew returns the last measured offset and, when it is beyond the bound,
// why issuance is refused.
func (c *clockWatch) skew() (time.Duration, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.offset, c.err
}

// checkIssue refuses issuance while the clock is off.
func (c *clockWatch) checkIssue() error {
	if _, err := c.skew(); err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	return nil
}
