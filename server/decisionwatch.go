package server

import (
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
)

const (
	// maxDecisionWatches bounds the WatchDecisions streams a server holds
	// at once: each is a goroutine, and a deployment has a gateway or a
	// few per resource, not thousands.
	maxDecisionWatches = 1024
	// maxDecisionWatchesPerIdentity bounds one identity's streams: a
	// gateway needs one.
	maxDecisionWatchesPerIdentity = 8
	// decisionWatchHeartbeat is the longest a stream stays silent, so a
	// resource server can tell a quiet server from a lost one (the
	// proto promises at most 2 s).
	decisionWatchHeartbeat = time.Second
)

// decisionFeed tells WatchDecisions streams that the decision index was
// rebuilt. Rebuilds between two sends to a slow stream coalesce into one
// message carrying the latest revision: a watcher only needs to know that
// something may have changed.
type decisionFeed struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced at every rebuild
	rev     int64
	streams int
	perID   map[string]int
}

func newDecisionFeed() *decisionFeed {
	return &decisionFeed{changed: make(chan struct{}), perID: map[string]int{}}
}

// publish records a rebuild at rev and wakes every stream.
func (f *decisionFeed) publish(rev int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev = rev
	close(f.changed)
	f.changed = make(chan struct{})
}

// current returns the latest revision and a channel closed at the next rebuild.
func (f *decisionFeed) current() (int64, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rev, f.changed
}

func (f *decisionFeed) join(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.streams >= maxDecisionWatches:
		return status.Errorf(codes.ResourceExhausted, "the server holds %d decision watches, the most it takes: retry later or on another server", maxDecisionWatches)
	case f.perID[id] >= maxDecisionWatchesPerIdentity:
		return status.Errorf(codes.ResourceExhausted, "%s already holds %d decision watches, the most one identity may: end one first", id, maxDecisionWatchesPerIdentity)
	}
	f.streams++
	f.perID[id]++
	return nil
}

func (f *decisionFeed) leave(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.streams--
	if f.perID[id]--; f.perID[id] <= 0 {
		delete(f.perID, id)
	}
}

// WatchDecisions sends the decision index's revision at once and again
// after every rebuild, until the caller leaves or the server stops.
func (ds *decisionService) WatchDecisions(_ *writv1.WatchDecisionsRequest, stream writv1.DecisionService_WatchDecisionsServer) error {
	s := ds.s
	ctx := stream.Context()
	c, _ := CallerFrom(ctx)
	id := c.ID.String()
	if err := s.decisionFeed.join(id); err != nil {
		return err
	}
	defer s.decisionFeed.leave(id)
	beat := time.NewTicker(decisionWatchHeartbeat)
	defer beat.Stop()
	rev, changed := s.decisionFeed.current()
	msg := &writv1.DecisionsChanged{Revision: rev}
	for {
		if err := stream.Send(msg); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stopping:
			return status.Error(codes.Unavailable, "the server is shutting down: watch again on another server, and decide afresh meanwhile")
		case <-beat.C:
			msg = &writv1.DecisionsChanged{Revision: rev, Heartbeat: true}
		case <-changed:
			rev, changed = s.decisionFeed.current()
			msg = &writv1.DecisionsChanged{Revision: rev}
		}
		beat.Reset(decisionWatchHeartbeat)
	}
}
