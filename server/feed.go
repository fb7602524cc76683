package server

import (
	"context"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/store"
)

// feedInterval is how often the feed looks for a new store revision. Agents
// learn of a rule change within about this long.
const feedInterval = 200 * time.Millisecond

// feedBuffer is how many changes a subscriber may fall behind before it is
// sent a full snapshot instead.
const feedBuffer = 256

// maxChangesRead bounds one read of the change log.
const maxChangesRead = 10_000

// feedChange is one step of the store's history as agents see it: the
// entries put and deleted at revisions up to rev, and the locks and bundle
// when they changed.
type feedChange struct {
	rev     int64
	puts    []store.Entry
	deletes []string
	locks   []*writv1.Lock // nil when unchanged
	bundle  *writv1.Bundle // nil when unchanged
}

// entryFeed follows the store for every agent stream at once: one reader of
// the change log per server, however many agents, so 10,000 agents cost one
// query per change and not 10,000.
type entryFeed struct {
	s *Server

	mu     sync.Mutex
	rev    int64
	locks  []*writv1.Lock
	bundle *writv1.Bundle
	subs   map[*feedSub]struct{}
}

type feedSub struct {
	ch     chan feedChange
	lagged chan struct{} // closed when the subscriber fell behind
	once   sync.Once
}

func newEntryFeed(s *Server) *entryFeed {
	return &entryFeed{s: s, subs: make(map[*feedSub]struct{})}
}

// subscribe returns a subscription and the state it starts from: the
// revision, locks and bundle the feed has published so far. Changes after
// that revision arrive on the subscription.
func (f *entryFeed) subscribe() (*feedSub, int64, []*writv1.Lock, *writv1.Bundle) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sub := &feedSub{ch: make(chan feedChange, feedBuffer), lagged: make(chan struct{})}
	f.subs[sub] = struct{}{}
	return sub, f.rev, f.locks, f.bundle
}

func (f *entryFeed) unsubscribe(sub *feedSub) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.subs, sub)
}

// start reads the current state, so subscribers have a base before the
// first poll.
func (f *entryFeed) start(ctx context.Context) error {
	rev, err := f.s.store.Revision(ctx)
	if err != nil {
		return err
	}
	locks, err := f.readLocks(ctx)
	if err != nil {
		return err
	}
	bundle, err := f.s.bundleProto()
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.rev, f.locks, f.bundle = rev, locks, bundle
	f.mu.Unlock()
	return nil
}

func (f *entryFeed) run(ctx context.Context) {
	t := time.NewTicker(feedInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := f.poll(ctx); err != nil && ctx.Err() == nil {
				f.s.log.Warn("agent feed: reading the store failed; retrying", "err", err)
			}
		}
	}
}

// poll publishes what changed since the last poll.
func (f *entryFeed) poll(ctx context.Context) error {
	f.mu.Lock()
	last, lastLocks, lastBundle := f.rev, f.locks, f.bundle
	f.mu.Unlock()

	var change feedChange
	rev, err := f.s.store.Revision(ctx)
	if err != nil {
		return err
	}
	change.rev = last
	if rev != last {
		changes, err := f.s.store.ChangesSince(ctx, last, maxChangesRead)
		if err != nil {
			return err
		}
		if len(changes) == 0 {
			// Only locks moved the revision.
			change.rev = rev
		} else {
			change.rev = changes[len(changes)-1].Revision
		}
		if err := f.collect(ctx, changes, &change); err != nil {
			return err
		}
		locks, err := f.readLocks(ctx)
		if err != nil {
			return err
		}
		if !locksEqual(locks, lastLocks) {
			change.locks = locks
		}
	}
	bundle, err := f.s.bundleProto()
	if err != nil {
		return err
	}
	if !proto.Equal(bundle, lastBundle) {
		change.bundle = bundle
	}
	if change.rev == last && change.locks == nil && change.bundle == nil {
		return nil
	}
	f.publish(change)
	return nil
}

// collect turns change records into the entries as they are now; an entry
// put and then deleted within the batch counts as deleted.
func (f *entryFeed) collect(ctx context.Context, changes []store.Change, out *feedChange) error {
	last := map[string]store.ChangeOp{}
	for _, c := range changes {
		last[c.EntryID] = c.Op
	}
	var puts []string
	for id, op := range last {
		if op == store.OpDelete {
			out.deletes = append(out.deletes, id)
		} else {
			puts = append(puts, id)
		}
	}
	slices.Sort(puts)
	slices.Sort(out.deletes)
	for len(puts) > 0 {
		n := min(len(puts), maxChangesRead)
		entries, err := f.s.store.GetEntries(ctx, puts[:n])
		if err != nil {
			return err
		}
		out.puts = append(out.puts, entries...)
		puts = puts[n:]
	}
	return nil
}

func (f *entryFeed) readLocks(ctx context.Context) ([]*writv1.Lock, error) {
	locks, err := f.s.store.ListLocks(ctx, f.s.now())
	if err != nil {
		return nil, err
	}
	out := make([]*writv1.Lock, len(locks))
	for i, l := range locks {
		out[i] = lockToProto(l)
	}
	return out, nil
}

func locksEqual(a, b []*writv1.Lock) bool {
	return slices.EqualFunc(a, b, func(x, y *writv1.Lock) bool { return proto.Equal(x, y) })
}

func (f *entryFeed) publish(c feedChange) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev = c.rev
	if c.locks != nil {
		f.locks = c.locks
	}
	if c.bundle != nil {
		f.bundle = c.bundle
	}
	for sub := range f.subs {
		select {
		case sub.ch <- c:
		default:
			sub.once.Do(func() { close(sub.lagged) })
		}
	}
}

// Sync streams the calling agent's rules: a full snapshot, then every
// change, with the locks and the bundle whenever they change. A subscriber
// that falls behind gets a new snapshot rather than a gap.
func (as *agentService) Sync(_ *writv1.SyncRequest, stream grpc.ServerStreamingServer[writv1.SyncUpdate]) error {
	s := as.s
	ctx := stream.Context()
	agent, agentID, err := s.authenticateAgent(ctx)
	if err != nil {
		return err
	}
	parent := newParentOf(agent, agentID)
	for {
		sub, rev, locks, bundle := s.feed.subscribe()
		known, err := s.sendSnapshot(ctx, stream, parent, rev, locks, bundle)
		if err != nil {
			s.feed.unsubscribe(sub)
			return err
		}
		err = s.followFeed(ctx, stream, sub, parent, known)
		s.feed.unsubscribe(sub)
		if err != errLagged {
			return err
		}
		s.log.Info("agent fell behind the feed; sending a new snapshot", "agent_id", agentID.String())
	}
}

var errLagged = status.Error(codes.Aborted, "lagged")

// sendSnapshot sends every rule of parent as of (at least) rev, with locks
// and bundle, and returns the IDs it sent: the rules naming it by ID, then
// those naming their parents by node selectors that it holds all of.
func (s *Server) sendSnapshot(ctx context.Context, stream grpc.ServerStreamingServer[writv1.SyncUpdate], parent parentOf, rev int64, locks []*writv1.Lock, bundle *writv1.Bundle) (map[string]bool, error) {
	known := map[string]bool{}
	upd := &writv1.SyncUpdate{Revision: rev, Full: true, LocksChanged: true, Locks: locks, Bundle: bundle}
	for _, f := range []store.EntryFilter{{ParentID: parent.id.String()}, {WithParentSelectors: true}} {
		f.Limit = maxPageSize
		for {
			page, err := s.store.ListEntries(ctx, f)
			if err != nil {
				return nil, storeStatus(err)
			}
			for _, e := range page {
				if !known[e.ID] && parent.rule(e) {
					upd.Entries = append(upd.Entries, entryToProto(e))
					known[e.ID] = true
				}
			}
			if len(page) < maxPageSize {
				break
			}
			f.AfterID = page[len(page)-1].ID
		}
	}
	return known, stream.Send(upd)
}

// followFeed forwards changes that concern parent until the stream ends.
func (s *Server) followFeed(ctx context.Context, stream grpc.ServerStreamingServer[writv1.SyncUpdate], sub *feedSub, parent parentOf, known map[string]bool) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopping:
			return status.Error(codes.Unavailable, "the server is shutting down; reconnect")
		case <-sub.lagged:
			return errLagged
		case c := <-sub.ch:
			upd := &writv1.SyncUpdate{Revision: c.rev, Bundle: c.bundle}
			if c.locks != nil {
				upd.LocksChanged, upd.Locks = true, c.locks
			}
			for _, e := range c.puts {
				switch {
				case parent.rule(e):
					upd.Entries = append(upd.Entries, entryToProto(e))
					known[e.ID] = true
				case known[e.ID]: // no longer a rule of this agent
					upd.DeletedIds = append(upd.DeletedIds, e.ID)
					delete(known, e.ID)
				}
			}
			for _, id := range c.deletes {
				if known[id] {
					upd.DeletedIds = append(upd.DeletedIds, id)
					delete(known, id)
				}
			}
			if len(upd.Entries) == 0 && len(upd.DeletedIds) == 0 && !upd.LocksChanged && upd.Bundle == nil {
				continue // nothing for this agent; its revision catches up with the next
			}
			if err := stream.Send(upd); err != nil {
				return err
			}
		}
	}
}
