package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
	"writ.dev/writ/authz"
	"writ.dev/writ/identity"
	"writ.dev/writ/store"
	"writ.dev/writ/task"
	"writ.dev/writ/task/review"
)

const (
	// watchSweepInterval is how often a server removes lapsed watch
	// sessions: those of a server that died holding the stream. Decisions
	// do not wait for it; they judge expiry themselves.
	watchSweepInterval = time.Second
	// watchMissedBeats is how many heartbeat intervals a session outlives
	// its last heartbeat.
	watchMissedBeats = 2
	// dualLockID names the stand-in lock a missing watcher puts on a task
	// in the decision index, so a denial says why.
	dualLockID = "dual-control"
	// watchEndTimeout bounds removing a session after its stream ended;
	// past it the session lapses by its expiry instead.
	watchEndTimeout = 10 * time.Second
	// maxWatchTaskID bounds the task ID a watcher names, so no error
	// repeats an arbitrarily long one.
	maxWatchTaskID = 128
	// watchEndCheck is how often a session looks whether its task ended:
	// it reads the task only when the store's revision moved, or tests
	// the deadline it has.
	watchEndCheck = decisionRefreshInterval
)

// dualDoc is a task's dual control as stored with the task.
type dualDoc struct {
	Watchers  []task.Pattern `json:"watchers"`
	Count     int            `json:"count"`
	OnLeave   string         `json:"on_leave"`
	Heartbeat time.Duration  `json:"heartbeat"`
	Requester []string       `json:"requester"`
	Request   string         `json:"request,omitempty"`
	// PerGrant is set on documents that mark each watched grant; without
	// it, dual control governs every grant of the task.
	PerGrant bool `json:"per_grant,omitempty"`
}

func dualToDoc(dc *task.DualControl) *dualDoc {
	if dc == nil {
		return nil
	}
	return &dualDoc{Watchers: dc.Watchers, Count: dc.Count, OnLeave: dc.OnLeave, Heartbeat: dc.Heartbeat,
		Requester: chainStrings(dc.Requester), Request: dc.Request, PerGrant: true}
}

func dualFromDoc(d *dualDoc) (*task.DualControl, error) {
	if d == nil {
		return nil, nil
	}
	chain, err := parseChain(d.Requester)
	if err != nil {
		return nil, fmt.Errorf("dual control: %w", err)
	}
	if d.Count < 1 || len(d.Watchers) == 0 || d.Heartbeat < review.MinHeartbeat ||
		(d.OnLeave != task.OnLeavePause && d.OnLeave != task.OnLeaveTerminate) {
		return nil, errors.New("dual control: watchers, count, on_leave or heartbeat are invalid")
	}
	return &task.DualControl{Watchers: d.Watchers, Count: d.Count, OnLeave: d.OnLeave, Heartbeat: d.Heartbeat, Requester: chain, Request: d.Request}, nil
}

// dualControlFor returns the dual control the rule that approved r puts on
// the task, or nil when the rule has none.
func (s *Server) dualControlFor(ctx context.Context, r *review.Request) (*task.DualControl, error) {
	rules, _, err := s.reviewRules(ctx)
	if err != nil {
		return nil, err
	}
	rule := ruleNamed(rules, r.Rule)
	if rule == nil {
		// The rule was removed after the approval; the safe reading of
		// a vanished rule is that it still required watchers, but with
		// no patterns nobody could watch, so the effect is refused.
		return nil, status.Errorf(codes.FailedPrecondition, "review rule %q that approved request %s is no longer applied: its effect is not made", r.Rule, r.ID)
	}
	dc := rule.DualControl
	if dc == nil {
		return nil, nil
	}
	return &task.DualControl{Watchers: dc.Watchers, Count: dc.Count, OnLeave: string(dc.OnLeave), Heartbeat: dc.Heartbeat,
		Requester: append([]spiffeid.ID(nil), r.Chain...), Request: r.ID}, nil
}

// withDualControl makes change also put dc on the task: the grants it makes
// live are live only under dual control from the same write on. Those are
// the grants it adds or lengthens, or, when all is set (a task opened by
// request), every grant; the task's other grants are not held up.
func withDualControl(change taskChange, dc *task.DualControl, all bool) taskChange {
	return func(t *task.Task, now time.Time) (any, error) {
		before := slices.Clone(t.Grants)
		details, err := change(t, now)
		if err != nil {
			return nil, err
		}
		merged, err := mergeDual(t.Dual, dc)
		if err != nil {
			return nil, err
		}
		for i := range t.Grants {
			g := &t.Grants[i]
			if all || i >= len(before) || !g.ExpiresAt.Equal(before[i].ExpiresAt) || g.Clock != before[i].Clock {
				g.Watched = true
			}
		}
		t.Dual = merged
		if m, ok := details.(map[string]any); ok {
			m["dual_control"] = dualToDoc(dc)
		}
		return details, nil
	}
}

// mergeDual puts a second approval's dual control on a task already under
// one: the task stays live only when both would be, so every requester's
// chain is kept out of watching, the larger count and the shorter heartbeat
// hold, and terminate wins over pause. Two different sets of watcher
// patterns cannot be met by one count, so that join is refused.
func mergeDual(have, add *task.DualControl) (*task.DualControl, error) {
	if have == nil {
		return add, nil
	}
	if !slices.Equal(patternStrings(have.Watchers), patternStrings(add.Watchers)) {
		return nil, status.Errorf(codes.FailedPrecondition, "the task is already under dual control watched by %s; access watched by %s needs a task of its own",
			patternList(have.Watchers), patternList(add.Watchers))
	}
	out := *have
	out.Requester = slices.Clone(have.Requester)
	for _, id := range add.Requester {
		if !slices.Contains(out.Requester, id) {
			out.Requester = append(out.Requester, id)
		}
	}
	out.Count = max(have.Count, add.Count)
	out.Heartbeat = min(have.Heartbeat, add.Heartbeat)
	if add.OnLeave == task.OnLeaveTerminate {
		out.OnLeave = task.OnLeaveTerminate
	}
	out.Request = add.Request
	return &out, nil
}

// dualState is what the decision index knows of one task's watchers.
type dualState struct {
	present []spiffeid.ID
	live    bool
}

// watchersOf returns the chains of the sessions on taskID that have not
// lapsed at now.
func watchersOf(watches []store.Watch, taskID string, now time.Time) [][]spiffeid.ID {
	var out [][]spiffeid.ID
	for _, w := range watches {
		if w.Task != taskID || !now.Before(w.ExpiresAt) {
			continue
		}
		chain, err := parseChain(w.Chain)
		if err != nil {
			continue
		}
		out = append(out, chain)
	}
	return out
}

func dualStateOf(dc *task.DualControl, watches []store.Watch, taskID string, now time.Time) dualState {
	present := dc.Present(watchersOf(watches, taskID, now))
	return dualState{present: present, live: len(present) >= dc.Count}
}

// dualLocks returns a stand-in lock for each dual-controlled task with too
// few watchers at now, as the decision index treats a missing watcher like
// a lock, and when the index must be rebuilt at the latest: when the first
// counted session lapses without a heartbeat the index has seen.
func (s *Server) dualLocks(ctx context.Context, tasks []task.Task, now time.Time) ([]authz.Lock, time.Time, error) {
	var locks []authz.Lock
	var next time.Time
	var watches []store.Watch
	loaded := false
	for i := range tasks {
		t := &tasks[i]
		if t.Dual == nil || t.State != task.StateOpen || !t.WatchedLive(now) {
			continue
		}
		if !loaded {
			var err error
			if watches, err = s.store.ListWatches(ctx); err != nil {
				return nil, time.Time{}, err
			}
			loaded = true
		}
		st := dualStateOf(t.Dual, watches, t.ID, now)
		if !st.live {
			locks = append(locks, authz.Lock{Kind: identity.LockTask, Value: t.ID, ID: dualLockID, Watched: true,
				Reason: fmt.Sprintf("%d of %d watchers present (%s)", len(st.present), t.Dual.Count, patternList(t.Dual.Watchers))})
		}
		for _, w := range watches {
			if w.Task == t.ID && now.Before(w.ExpiresAt) && (next.IsZero() || w.ExpiresAt.Before(next)) {
				next = w.ExpiresAt
			}
		}
	}
	return locks, next, nil
}

func patternList(ps []task.Pattern) string {
	return strings.Join(patternStrings(ps), ", ")
}

type watchService struct {
	writv1.UnimplementedWatchServiceServer
	s *Server
}

// WatchTask holds one watcher's session; see the proto.
func (ws *watchService) WatchTask(stream writv1.WatchService_WatchTaskServer) error {
	s := ws.s
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	chain, err := s.callerChain(ctx, first.GetDelegationToken())
	if err != nil {
		return err
	}
	// Joining writes audit events, as a request does.
	if err := s.limitRequests(ctx); err != nil {
		return err
	}
	taskID := first.GetTaskId()
	switch {
	case taskID == "":
		return status.Error(codes.InvalidArgument, "task_id: name the task to watch in the first message")
	case len(taskID) > maxWatchTaskID:
		return status.Errorf(codes.InvalidArgument, "task_id: %d bytes is longer than any task ID (at most %d)", len(taskID), maxWatchTaskID)
	}
	rec, err := s.store.GetTask(ctx, taskID)
	if err != nil {
		return storeStatus(err)
	}
	t, err := readTask(rec, s.now())
	if err != nil {
		return err
	}
	dc := t.Dual
	switch {
	case dc == nil:
		return status.Errorf(codes.FailedPrecondition, "task %s is not under dual control: there is nothing to watch", t.ID)
	case t.State != task.StateOpen:
		return status.Errorf(codes.FailedPrecondition, "task %s is %s: only an open task is watched", t.ID, t.State)
	case !t.WatchedLive(s.now()):
		return status.Errorf(codes.FailedPrecondition, "the access under dual control on task %s has ended: there is nothing to watch", t.ID)
	case !dc.Eligible(chain):
		return status.Errorf(codes.PermissionDenied, "%s may not watch task %s: a watcher's root principal must match %s and its chain must share no identity with the requester's (%s)",
			chain[0], t.ID, patternList(dc.Watchers), strings.Join(chainStrings(dc.Requester), " for "))
	}
	lapse := time.Duration(watchMissedBeats) * dc.Heartbeat
	id := "W-" + rand.Text()[:generatedIDChars]
	details := map[string]any{"task": t.ID, "chain": chainStrings(chain), "heartbeat": dc.Heartbeat.String()}
	ev, err := s.event(ctx, audit.EventWatchJoin, id, details)
	if err != nil {
		return err
	}
	if err := s.store.JoinWatch(ctx, store.Watch{ID: id, Task: t.ID, Chain: chainStrings(chain), ExpiresAt: s.now().Add(lapse)}, ev); err != nil {
		return storeStatus(err)
	}
	s.log.Info("watcher joined", "watch", id, "task", t.ID, "watcher", chain[0].String())
	s.refreshDecisions(ctx)

	// Whatever ends the session, it is removed at once: a decision
	// waits for no expiry when this server saw the stream break.
	lost := false
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), watchEndTimeout)
		defer cancel()
		s.endWatch(ctx, id, t.ID, details, lost)
	}()

	if err := ws.sendStatus(ctx, stream, t.ID, dc); err != nil {
		return err
	}
	beats := make(chan error, 1)
	go func() {
		for {
			_, err := stream.Recv()
			select {
			case beats <- err:
			case <-ctx.Done(): // the handler returned
				return
			}
			if err != nil {
				return
			}
		}
	}()
	lastWrite := time.Now()
	timer := time.NewTimer(lapse)
	defer timer.Stop()
	endCheck := time.NewTicker(watchEndCheck)
	defer endCheck.Stop()
	seen := rec.Revision
	for {
		select {
		case <-endCheck.C:
			why, err := s.watchEnded(ctx, &t, &seen)
			if err != nil {
				return err
			}
			if why == "" {
				continue
			}
			s.log.Info("watch ended: nothing left to watch", "watch", id, "task", t.ID, "why", why)
			return stream.Send(&writv1.WatchTaskStatus{TaskId: t.ID, Count: int32(dc.Count), HeartbeatSeconds: int32(dc.Heartbeat / time.Second),
				OnLeave: dc.OnLeave, Ended: true, EndedWhy: why})
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stopping:
			return status.Error(codes.Unavailable, "the server is shutting down: watch again on another server")
		case <-timer.C:
			lost = true
			return status.Errorf(codes.DeadlineExceeded, "no heartbeat for %s: the watch session lapsed", lapse)
		case err := <-beats:
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			timer.Reset(lapse)
			// A caller beating much faster than asked (writ watch beats
			// twice per heartbeat) costs no more writes: the stored
			// expiry is moved at most four times per heartbeat.
			if time.Since(lastWrite) < dc.Heartbeat/4 {
				continue
			}
			lastWrite = time.Now()
			if err := s.store.HeartbeatWatch(ctx, id, s.now().Add(lapse)); err != nil {
				if errors.Is(err, store.ErrNotFound) {
					lost = true
					return status.Errorf(codes.Aborted, "the watch session lapsed before this heartbeat: watch again")
				}
				return storeStatus(err)
			}
			if err := ws.sendStatus(ctx, stream, t.ID, dc); err != nil {
				return err
			}
		}
	}
}

// watchEnded says why a session on *t has nothing left to watch, or "".
// It reads the task again only when the store's revision moved past *seen
// (the decision index's revision, which it follows anyway); a deadline
// passing needs no read.
func (s *Server) watchEnded(ctx context.Context, t **task.Task, seen *int64) (string, error) {
	if rev := s.decisions.rev.Load(); rev > *seen {
		rec, err := s.store.GetTask(ctx, (*t).ID)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Sprintf("task %s no longer exists", (*t).ID), nil
		}
		if err != nil {
			return "", storeStatus(err)
		}
		next, err := readTask(rec, s.now())
		if err != nil {
			return "", err
		}
		*t, *seen = next, rev
	}
	now := s.now()
	switch {
	case (*t).State != task.StateOpen || !now.Before((*t).Deadline):
		return (*t).NotLiveReason(now), nil
	case (*t).Dual == nil:
		return fmt.Sprintf("task %s is no longer under dual control", (*t).ID), nil
	case !(*t).WatchedLive(now):
		return fmt.Sprintf("the access under dual control on task %s ended", (*t).ID), nil
	}
	return "", nil
}

func (ws *watchService) sendStatus(ctx context.Context, stream writv1.WatchService_WatchTaskServer, taskID string, dc *task.DualControl) error {
	watches, err := ws.s.store.ListWatches(ctx)
	if err != nil {
		return storeStatus(err)
	}
	st := dualStateOf(dc, watches, taskID, ws.s.now())
	return stream.Send(&writv1.WatchTaskStatus{TaskId: taskID, Present: chainStrings(st.present), Count: int32(dc.Count),
		Live: st.live, HeartbeatSeconds: int32(dc.Heartbeat / time.Second), OnLeave: dc.OnLeave})
}

// endWatch removes a session (with watch.leave, or watch.lost when its
// heartbeats stopped), puts the change in force here at once, and applies
// the task's on_leave.
func (s *Server) endWatch(ctx context.Context, id, taskID string, details map[string]any, lost bool) {
	typ := audit.EventWatchLeave
	if lost {
		typ = audit.EventWatchLost
	}
	ev, err := s.event(ctx, typ, id, details)
	if err == nil {
		err = s.store.LeaveWatch(ctx, id, ev)
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		// The session lapses by its expiry anyway; the sweep removes it.
		s.log.Error("removing a watch session", "watch", id, "task", taskID, "err", err)
	}
	s.log.Info("watcher left", "watch", id, "task", taskID, "lost", lost)
	s.refreshDecisions(ctx)
	s.applyOnLeave(ctx, taskID)
}

// applyOnLeave closes a task whose dual control says terminate once too
// few watchers remain. Pause needs nothing: the decision index denies
// until enough watchers return.
func (s *Server) applyOnLeave(ctx context.Context, taskID string) {
	rec, err := s.store.GetTask(ctx, taskID)
	if err != nil {
		s.log.Error("reading a watched task", "task", taskID, "err", err)
		return
	}
	t, err := readTask(rec, s.now())
	if err != nil || t.Dual == nil || t.Dual.OnLeave != task.OnLeaveTerminate || t.State != task.StateOpen {
		return
	}
	watches, err := s.store.ListWatches(ctx)
	if err != nil {
		s.log.Error("reading watch sessions", "task", taskID, "err", err)
		return
	}
	if dualStateOf(t.Dual, watches, taskID, s.now()).live {
		return
	}
	ts := &taskService{s: s}
	if t.AllWatched() {
		_, err = ts.update(ctx, taskID, 0, audit.EventTaskClose, func(t *task.Task, now time.Time) (any, error) {
			if err := t.Close(now); err != nil {
				return nil, status.Error(codes.FailedPrecondition, err.Error())
			}
			return map[string]any{"why": "dual control: a watcher left and too few remain (on_leave: terminate)"}, nil
		})
		if err != nil {
			s.log.Error("closing a task whose watchers left", "task", taskID, "err", err)
			return
		}
		s.log.Info("task closed: its watchers left", "task", taskID)
		return
	}
	// Only some grants are watched: they end, and the dual control with
	// them; the task's other grants go on.
	_, err = ts.update(ctx, taskID, 0, audit.EventTaskDualEnd, func(t *task.Task, now time.Time) (any, error) {
		if t.Dual == nil || t.State != task.StateOpen {
			return nil, errInEffect
		}
		var ended []int
		for i := range t.Grants {
			if g := &t.Grants[i]; g.Watched && !g.Expired(now) {
				g.ExpiresAt, g.Clock, g.FirstUsedAt = now, "", time.Time{}
				ended = append(ended, i)
			}
		}
		t.Dual = nil
		return map[string]any{"why": "dual control: a watcher left and too few remain (on_leave: terminate)", "grants": ended}, nil
	})
	if err != nil && !errors.Is(err, errInEffect) {
		s.log.Error("ending the watched grants of a task whose watchers left", "task", taskID, "err", err)
		return
	}
	s.log.Info("watched grants ended: their watchers left", "task", taskID)
}

// sweepWatches removes the sessions that lapsed (their server died or
// lost the store) with watch.lost, and applies on_leave to their tasks.
// Servers race for each; the store lets one win.
func (s *Server) sweepWatches(ctx context.Context) error {
	watches, err := s.store.ListWatches(ctx)
	if err != nil {
		return err
	}
	now := s.now()
	for _, w := range watches {
		if now.Before(w.ExpiresAt) {
			continue
		}
		details := map[string]any{"task": w.Task, "chain": w.Chain, "swept": true}
		ev, err := s.event(ctx, audit.EventWatchLost, w.ID, details)
		if err != nil {
			return err
		}
		if err := s.store.LeaveWatch(ctx, w.ID, ev); errors.Is(err, store.ErrNotFound) {
			continue
		} else if err != nil {
			return err
		}
		s.log.Info("watch session lapsed", "watch", w.ID, "task", w.Task)
		s.refreshDecisions(ctx)
		s.applyOnLeave(ctx, w.Task)
	}
	return nil
}

func (s *Server) runWatchSweep(ctx context.Context) {
	tick := time.NewTicker(watchSweepInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := s.sweepWatches(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("sweeping lapsed watch sessions", "err", err)
			}
		}
	}
}
