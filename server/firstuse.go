package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"writ.dev/writ/audit"
	"writ.dev/writ/authz"
	"writ.dev/writ/task"
)

// firstUseRetry is how often first uses the store could not take are
// tried again.
const firstUseRetry = time.Second

// firstUses holds the access clocks (task.Grant.Clock) this server saw
// start, until the store records them. A decision must not wait on a
// write, so Check only notes the first use here, and the decision index
// consults these at once (authz.WithFirstUse): from the first allowed
// decision on, this server counts the access time from it. A writer then
// records it in the task by a compare-and-set that sets only a first use
// not yet recorded, so when two servers each saw a first use, the store
// keeps one, and every server sharing it agrees from its next refresh.
type firstUses struct {
	s    *Server
	mu   sync.Mutex
	byID map[string]firstUse
	wake chan struct{}
}

type firstUse struct {
	task string
	at   time.Time
}

func newFirstUses(s *Server) *firstUses {
	return &firstUses{s: s, byID: map[string]firstUse{}, wake: make(chan struct{}, 1)}
}

// started says when clock started, if this server saw it start and the
// store may not have it yet.
func (f *firstUses) started(clock string) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u, ok := f.byID[clock]
	return u.at, ok
}

// note starts the clocks of the grants that allowed a decision made at at,
// unless this server already saw them start. It never waits on the store.
func (f *firstUses) note(covered []authz.Coverage, at time.Time) {
	for _, c := range covered {
		if c.Clock == "" {
			continue
		}
		f.mu.Lock()
		if _, ok := f.byID[c.Clock]; !ok {
			f.byID[c.Clock] = firstUse{task: c.TaskID, at: at}
			select {
			case f.wake <- struct{}{}:
			default:
			}
		}
		f.mu.Unlock()
	}
}

func (f *firstUses) run(ctx context.Context) {
	tick := time.NewTicker(firstUseRetry)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.wake:
		case <-tick.C:
		}
		f.writeAll(ctx)
	}
}

// writeAll records every first use noted and forgets those the store now
// has (recorded here or, earlier, by another server).
func (f *firstUses) writeAll(ctx context.Context) {
	f.mu.Lock()
	pending := make(map[string]firstUse, len(f.byID))
	for id, u := range f.byID {
		pending[id] = u
	}
	f.mu.Unlock()
	for clock, u := range pending {
		err := f.s.recordFirstUse(ctx, clock, u)
		if err != nil && ctx.Err() == nil {
			switch status.Code(err) {
			case codes.NotFound, codes.FailedPrecondition, codes.InvalidArgument:
				f.s.log.Warn("dropping a first use the task cannot take", "clock", clock, "task_id", u.task, "err", err)
			default:
				f.s.log.Warn("recording a first use; retrying", "clock", clock, "task_id", u.task, "err", err)
				continue
			}
		}
		if ctx.Err() != nil {
			return
		}
		f.mu.Lock()
		delete(f.byID, clock)
		f.mu.Unlock()
	}
}

// recordFirstUse sets the first use of every grant of u's task on clock
// that has none, and its expiry to that first use plus its access time;
// a clock another server started first is left as it is. Either way the
// decision index is rebuilt before this returns, so the in-memory first
// use can be forgotten.
func (s *Server) recordFirstUse(ctx context.Context, clock string, u firstUse) error {
	ts := &taskService{s: s}
	_, err := ts.update(ctx, u.task, 0, audit.EventRequestFirstUse, func(t *task.Task, now time.Time) (any, error) {
		var grants []int
		var expires time.Time
		for i := range t.Grants {
			g := &t.Grants[i]
			if g.Clock != clock || !g.FirstUsedAt.IsZero() {
				continue
			}
			g.FirstUsedAt, g.ExpiresAt = u.at, u.at.Add(g.AccessTTL)
			grants, expires = append(grants, i), g.ExpiresAt
		}
		if len(grants) == 0 {
			return nil, errInEffect
		}
		return map[string]any{"request": clock, "first_used_at": u.at.UTC(), "expires_at": expires.UTC(), "grants": grants}, nil
	})
	if errors.Is(err, errInEffect) {
		s.refreshDecisions(ctx)
		return nil
	}
	if err == nil {
		s.log.Info("access clock started", "request", clock, "task_id", u.task, "first_used_at", u.at)
	}
	return err
}
