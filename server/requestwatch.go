package server

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/identity"
	"writ.dev/writ/store"
	"writ.dev/writ/task/review"
)

const (
	// maxWatchStreamsPerIdentity bounds the WatchRequests streams one
	// SPIFFE ID holds at once: each costs the server a goroutine and a
	// buffer, and one reviewer needs one.
	maxWatchStreamsPerIdentity = 4
	// requestFeedBuffer is how many batches a watcher may fall behind
	// before its stream ends and it must resume from its last revision.
	requestFeedBuffer = 64
)

// Request change types, as RequestChange.type says them.
const (
	changeCreated  = "created"
	changeReviewed = "reviewed"
)

type requestWatchService struct {
	writv1.UnimplementedRequestWatchServiceServer
	s *Server
}

// requestFeed follows the store's revision for every WatchRequests stream
// at once: one reader of the requests per server and change, however many
// watchers. With no watcher it reads only the revision.
type requestFeed struct {
	s *Server

	mu    sync.Mutex
	rev   int64
	subs  map[*requestSub]struct{}
	perID map[string]int
}

type requestSub struct {
	ch     chan []requestChange
	lagged chan struct{}
	once   sync.Once
}

func newRequestFeed(s *Server) *requestFeed {
	return &requestFeed{s: s, subs: map[*requestSub]struct{}{}, perID: map[string]int{}}
}

func (f *requestFeed) start(ctx context.Context) error {
	rev, err := f.s.store.Revision(ctx)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.rev = rev
	f.mu.Unlock()
	return nil
}

func (f *requestFeed) run(ctx context.Context) {
	t := time.NewTicker(feedInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := f.poll(ctx); err != nil && ctx.Err() == nil {
				f.s.log.Warn("request feed: reading the store failed; retrying", "err", err)
			}
		}
	}
}

func (f *requestFeed) poll(ctx context.Context) error {
	rev, err := f.s.store.Revision(ctx)
	if err != nil {
		return err
	}
	f.mu.Lock()
	last, watched := f.rev, len(f.subs) > 0
	f.mu.Unlock()
	if rev == last {
		return nil
	}
	var changes []requestChange
	if watched {
		if changes, err = f.s.requestChangesBetween(ctx, last, rev); err != nil {
			return err
		}
	}
	f.publish(rev, changes)
	return nil
}

// publish moves the feed to rev and hands changes to every watcher; one
// whose buffer is full is marked lagged rather than waited for.
func (f *requestFeed) publish(rev int64, changes []requestChange) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev = rev
	if len(changes) == 0 {
		return
	}
	for sub := range f.subs {
		select {
		case sub.ch <- changes:
		default:
			sub.once.Do(func() { close(sub.lagged) })
		}
	}
}

// subscribe registers a watcher for key (its SPIFFE ID; "" is not
// limited) and returns the revision the feed has published up to: changes
// after it arrive on the subscription.
func (f *requestFeed) subscribe(key string) (*requestSub, int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if key != "" {
		if f.perID[key] >= maxWatchStreamsPerIdentity {
			return nil, 0, status.Errorf(codes.ResourceExhausted, "%s already holds %d request watches, the most one identity may: end one first", key, maxWatchStreamsPerIdentity)
		}
		f.perID[key]++
	}
	sub := &requestSub{ch: make(chan []requestChange, requestFeedBuffer), lagged: make(chan struct{})}
	f.subs[sub] = struct{}{}
	return sub, f.rev, nil
}

func (f *requestFeed) unsubscribe(key string, sub *requestSub) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.subs, sub)
	if key != "" {
		if f.perID[key]--; f.perID[key] <= 0 {
			delete(f.perID, key)
		}
	}
}

// requestChange is one change as sent, with the request it is about, for
// judging who may see it.
type requestChange struct {
	msg *writv1.RequestChange
	r   *review.Request
}

// requestChangesBetween returns the requests whose last change is after
// after and at most upto, as they are now, in revision order. A request
// changed again after upto is left for the next read, which sees it whole.
func (s *Server) requestChangesBetween(ctx context.Context, after, upto int64) ([]requestChange, error) {
	recs, err := s.store.ListRequests(ctx)
	if err != nil {
		return nil, err
	}
	recs = slices.DeleteFunc(recs, func(r store.RequestRecord) bool { return r.Revision <= after || r.Revision > upto })
	slices.SortFunc(recs, func(a, b store.RequestRecord) int { return cmp.Compare(a.Revision, b.Revision) })
	now := s.now()
	out := make([]requestChange, 0, len(recs))
	for _, rec := range recs {
		sr, err := s.requestFromRecord(rec)
		if err != nil {
			return nil, err
		}
		typ := string(sr.r.State)
		if sr.r.State == review.StatePending {
			if !now.Before(sr.r.PendingUntil) {
				r := *sr.r
				_ = r.Expire(now)
				sr.r, typ = &r, string(review.StateExpired)
			} else if typ, err = s.pendingChangeType(ctx, rec); err != nil {
				return nil, err
			}
		}
		out = append(out, requestChange{msg: &writv1.RequestChange{Type: typ, Request: requestToProto(sr), Revision: rec.Revision}, r: sr.r})
	}
	return out, nil
}

// pendingChangeType tells a new request from one a review left pending:
// a review is written at the revision of the request change it caused.
func (s *Server) pendingChangeType(ctx context.Context, rec store.RequestRecord) (string, error) {
	reviews, err := s.store.ListReviews(ctx, rec.ID)
	if err != nil {
		return "", err
	}
	for _, rv := range reviews {
		if rv.Revision == rec.Revision {
			return changeReviewed, nil
		}
	}
	return changeCreated, nil
}

// WatchRequests replays the requests changed after the caller's revision,
// then streams changes live. A watcher that falls behind is ended with the
// revision to resume from rather than sent a gap.
func (ws *requestWatchService) WatchRequests(req *writv1.WatchRequestsRequest, stream grpc.ServerStreamingServer[writv1.RequestChange]) error {
	s := ws.s
	ctx := stream.Context()
	c, _ := CallerFrom(ctx)
	key := ""
	if c.Local == nil {
		if !isMember(s.td, c.ID) {
			return status.Errorf(codes.PermissionDenied, "%s is not a member of trust domain %s", c, s.td)
		}
		key = c.ID.String()
	}
	if req.GetAfterRevision() < 0 {
		return status.Errorf(codes.InvalidArgument, "after_revision: %d is negative: give 0 for every request or the last revision received", req.GetAfterRevision())
	}
	known := []string{string(review.StatePending), string(review.StateApproved), string(review.StateDenied), string(review.StateCancelled), string(review.StateExpired)}
	for i, st := range req.GetStates() {
		if !slices.Contains(known, st) {
			return status.Errorf(codes.InvalidArgument, "states[%d]: %s is not a request state: use pending, approved, denied, cancelled or expired", i, identity.Quote(st))
		}
	}
	wanted := func(ch *writv1.RequestChange) bool {
		return len(req.GetStates()) == 0 || slices.Contains(req.GetStates(), ch.GetRequest().GetState())
	}
	sub, rev, err := s.requestFeed.subscribe(key)
	if err != nil {
		return err
	}
	defer s.requestFeed.unsubscribe(key, sub)

	// The replay reaches the store's revision now, not just the feed's:
	// a request made a moment ago is replayed, and the feed's copy of it
	// is skipped below.
	now, err := s.store.Revision(ctx)
	if err != nil {
		return storeStatus(err)
	}
	rev = max(rev, now)
	cursor := req.GetAfterRevision()
	send := func(changes []requestChange) error {
		// Who may see what is judged afresh for each batch: a member
		// added to a task since sees its requests from then on.
		viewer := s.viewerFor(ctx, nil)
		for _, c := range changes {
			ch := c.msg
			if ch.GetRevision() <= cursor {
				continue // the caller has it, or another server's feed is ahead of this one
			}
			cursor = ch.GetRevision()
			if !wanted(ch) || !viewer.may(ctx, c.r) {
				continue
			}
			if err := stream.Send(ch); err != nil {
				return err
			}
		}
		return nil
	}
	if cursor < rev {
		replay, err := s.requestChangesBetween(ctx, cursor, rev)
		if err != nil {
			return storeStatus(err)
		}
		if err := send(replay); err != nil {
			return err
		}
		cursor = rev
	}
	if err := stream.Send(&writv1.RequestChange{Revision: cursor, CaughtUp: true}); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopping:
			return status.Errorf(codes.Unavailable, "the server is shutting down; call again with after_revision %d", cursor)
		case <-sub.lagged:
			return status.Errorf(codes.Aborted, "this watch fell behind the changes; call again with after_revision %d", cursor)
		case changes := <-sub.ch:
			if err := send(changes); err != nil {
				return err
			}
		}
	}
}
