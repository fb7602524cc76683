package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
	"writ.dev/writ/authz"
	"writ.dev/writ/authz/guardrail"
	"writ.dev/writ/identity"
	"writ.dev/writ/store"
	"writ.dev/writ/task"
)

// decisionRefreshInterval is how often the decision index looks for a new
// store revision; changes made through this server refresh it at once.
const decisionRefreshInterval = 200 * time.Millisecond

// decisions keeps the index decisions are made over: the tasks, standing
// grants and locks as of a store revision. It is rebuilt when the revision
// moves, and at once after a change through this server, so closing a task
// denies the next request.
type decisions struct {
	s   *Server
	ix  atomic.Pointer[authz.Index]
	rev atomic.Int64
	// agentFacts are the attested facts (selectors) of the agents, for
	// guardrails on them; replaced with the index.
	agentFacts atomic.Pointer[map[spiffeid.ID][]string]
	// due is when (unix nanoseconds, 0: never) the decisions change by
	// the clock alone: a watch session the index counts lapses (a
	// heartbeat takes no revision), a task starts or reaches its
	// deadline, a grant or a lock expires. The index is rebuilt then even
	// if the revision did not move. Its decisions judge the time per
	// request anyway; the rebuild tells WatchDecisions streams, so a
	// gateway cuts the sessions of a task whose time ran out.
	due atomic.Int64
	// firstUse holds access clocks started here that the store may not
	// have yet.
	firstUse *firstUses

	refreshMu sync.Mutex
	// decoded holds the tasks of the last snapshot by ID with the stored
	// documents they were decoded from: decoding is most of a rebuild's
	// time, and between two rebuilds few tasks change. Guarded by
	// refreshMu.
	decoded map[string]decodedTask
	// rebuildWhole reads every task's document and builds each index
	// from scratch instead of updating the last one: for benchmarks
	// comparing the two.
	rebuildWhole atomic.Bool
}

type decodedTask struct {
	doc      []byte
	revision int64
	task     task.Task
}

// changedTasksFetched is how many changed tasks a refresh fetches one by
// one; beyond it, it reads them all in one list.
const changedTasksFetched = 64

// taskRecords returns the tasks the index keeps (those still to end or
// ended since), with their documents. It lists their revisions first and
// reads only the documents of the tasks whose revision moved since the
// last snapshot: reading every document made each refresh linear in the
// tasks kept, however few changed. Guarded by refreshMu.
func (d *decisions) taskRecords(ctx context.Context, since time.Time) ([]store.TaskRecord, error) {
	states := []string{string(task.StateOpen), string(task.StateClosed), string(task.StateExpired)}
	if d.rebuildWhole.Load() {
		return d.s.store.ListTasksEndingSince(ctx, since, states...)
	}
	recs, err := d.s.store.ListTaskRevisionsEndingSince(ctx, since, states...)
	if err != nil {
		return nil, err
	}
	var changed []int
	for i, r := range recs {
		if dt, ok := d.decoded[r.ID]; ok && dt.revision == r.Revision {
			recs[i].Doc = dt.doc
		} else if changed = append(changed, i); len(changed) > changedTasksFetched {
			return d.s.store.ListTasksEndingSince(ctx, since, states...)
		}
	}
	for _, i := range changed {
		// It may have changed again since it was listed: the newer
		// document, with its revision, is as good.
		r, err := d.s.store.GetTask(ctx, recs[i].ID)
		if err != nil {
			return nil, err
		}
		recs[i] = r
	}
	return recs, nil
}

func newDecisions(s *Server) *decisions { return &decisions{s: s, firstUse: newFirstUses(s)} }

// refresh rebuilds the index if the store revision moved (or force).
func (d *decisions) refresh(ctx context.Context, force bool) error {
	d.refreshMu.Lock()
	defer d.refreshMu.Unlock()
	rev, err := d.s.store.Revision(ctx)
	if err != nil {
		return err
	}
	due := d.due.Load()
	if !force && d.ix.Load() != nil && rev == d.rev.Load() && (due == 0 || d.s.now().UnixNano() < due) {
		return nil
	}
	snap, err := d.snapshot(ctx)
	if err != nil {
		return err
	}
	agents, err := d.s.store.ListAgents(ctx)
	if err != nil {
		return err
	}
	facts := make(map[spiffeid.ID][]string, len(agents))
	for _, a := range agents {
		id, err := spiffeid.FromString(a.SPIFFEID)
		if err != nil {
			continue
		}
		for _, sel := range a.Selectors {
			facts[id] = append(facts[id], sel.Type+":"+sel.Value)
		}
	}
	d.agentFacts.Store(&facts)
	// Update reuses what the last index holds for the tasks that did not
	// change (kept decoded above with the same grants), so a change to
	// one task does not rebuild the index for all of them.
	if d.rebuildWhole.Load() {
		d.ix.Store(authz.NewIndex(snap, d.s.now(), authz.WithFirstUse(d.firstUse.started)))
	} else {
		d.ix.Store(d.ix.Load().Update(snap, d.s.now(), authz.WithFirstUse(d.firstUse.started)))
	}
	d.rev.Store(rev)
	d.s.decisionFeed.publish(rev)
	if d.s.delegator != nil {
		return d.s.delegator.refreshKeys(ctx)
	}
	return nil
}

// endedTaskMemory is how long a closed or expired task (or one left open
// past its deadline) stays in the decision index after it ended. It grants nothing there; it lets a denial
// say "task T-1 is closed" to whoever still tries to use it, instead of
// only that no open task allows the request.
const endedTaskMemory = 24 * time.Hour

func (d *decisions) snapshot(ctx context.Context) (authz.Snapshot, error) {
	var snap authz.Snapshot
	// Only the tasks still to end and those ended within the memory are
	// read: the history of ended tasks grows forever, and rebuilding the
	// index must not read it.
	since := d.s.now().Add(-endedTaskMemory)
	recs, err := d.taskRecords(ctx, since)
	if err != nil {
		return snap, err
	}
	decoded := make(map[string]decodedTask, len(recs))
	for _, r := range recs {
		dt, ok := d.decoded[r.ID]
		if !ok || dt.revision != r.Revision || !bytes.Equal(dt.doc, r.Doc) {
			t, err := taskFromRecord(r)
			if err != nil {
				d.s.log.Warn("skipping an unreadable task in the decision index", "task_id", r.ID, "err", err)
				continue
			}
			dt = decodedTask{doc: r.Doc, revision: r.Revision, task: t}
		}
		decoded[r.ID] = dt
		t := dt.task
		// The store compares whole seconds; keep the window exact.
		if t.State != task.StateOpen && t.ClosedAt.Before(since) {
			continue
		}
		snap.Tasks = append(snap.Tasks, t)
	}
	d.decoded = decoded
	grants, err := d.s.store.ListStandingGrants(ctx)
	if err != nil {
		return snap, err
	}
	for _, r := range grants {
		g, err := standingFromRecord(r)
		if err != nil {
			d.s.log.Warn("skipping an unreadable standing grant", "id", r.ID, "err", err)
			continue
		}
		snap.Standing = append(snap.Standing, g)
	}
	locks, err := d.s.store.ListLocks(ctx, d.s.now())
	if err != nil {
		return snap, err
	}
	now := d.s.now()
	var due time.Time
	soonest := func(t time.Time) {
		if t.After(now) && (due.IsZero() || t.Before(due)) {
			due = t
		}
	}
	for _, l := range locks {
		snap.Locks = append(snap.Locks, authz.Lock{Kind: identity.LockKind(l.Target.Kind), Value: l.Target.Value, ID: l.ID, Reason: l.Reason})
		soonest(l.ExpiresAt)
	}
	for i := range snap.Tasks {
		t := &snap.Tasks[i]
		if t.State != task.StateOpen {
			continue
		}
		soonest(t.NotBefore)
		soonest(t.Deadline)
		for _, g := range t.Grants {
			soonest(g.ExpiresAt)
		}
	}
	dual, dualDue, err := d.s.dualLocks(ctx, snap.Tasks, now)
	if err != nil {
		return snap, err
	}
	snap.Locks = append(snap.Locks, dual...)
	soonest(dualDue)
	if due.IsZero() {
		d.due.Store(0)
	} else {
		d.due.Store(due.UnixNano())
	}
	return snap, nil
}

// facts returns the attested facts known for the chain's identities.
func (d *decisions) facts(chain []spiffeid.ID) map[spiffeid.ID][]string {
	all := d.agentFacts.Load()
	if all == nil {
		return nil
	}
	var out map[spiffeid.ID][]string
	for _, id := range chain {
		if f, ok := (*all)[id]; ok {
			if out == nil {
				out = map[spiffeid.ID][]string{}
			}
			out[id] = f
		}
	}
	return out
}

func (d *decisions) run(ctx context.Context) {
	t := time.NewTicker(decisionRefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := d.refresh(ctx, false); err != nil && ctx.Err() == nil {
				d.s.log.Warn("refreshing the decision index; decisions use the last one", "err", err)
			}
		}
	}
}

// refreshDecisions puts a change made through this server in force at once.
func (s *Server) refreshDecisions(ctx context.Context) {
	if err := s.decisions.refresh(ctx, true); err != nil {
		s.log.Error("refreshing the decision index after a change; the refresher retries", "err", err)
	}
}

type decisionService struct {
	writv1.UnimplementedDecisionServiceServer
	s *Server
}

// Check decides a request from the evidence a resource server received:
// the requester's X.509-SVID chain or JWT-SVID. Administrators may name a
// chain instead, for dry runs. Every decision is an audit event, recorded
// in the background so the audit log does not set the latency; so a
// caller past limits.requests_per_identity is refused before anything is
// decided, and only counted.
func (ds *decisionService) Check(ctx context.Context, req *writv1.CheckRequest) (*writv1.CheckResponse, error) {
	s := ds.s
	c, _ := CallerFrom(ctx)
	if err := s.requests.allow(c, requestCheck); err != nil {
		return nil, err
	}
	chain, err := s.requestChain(ctx, req)
	if err != nil {
		return nil, err
	}
	if err := task.CheckAction(req.GetAction()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "action: %v", err)
	}
	if err := task.CheckResourceName(req.GetResource()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "resource: %v", err)
	}
	var args guardrail.Arguments
	if raw := req.GetArgumentsJson(); raw != "" {
		if args, err = guardrail.ParseArguments([]byte(raw)); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "arguments_json: %v", err)
		}
	}
	ix := s.decisions.ix.Load()
	if ix == nil {
		return nil, status.Error(codes.Unavailable, "the decision index is not loaded yet: retry shortly")
	}
	now := s.now()
	d := ix.Decide(authz.Request{Chain: chain, Action: req.GetAction(), Resource: req.GetResource(), Time: now,
		SourceAddress: req.GetSourceAddress(), Facts: s.decisions.facts(chain), Arguments: args}, s.guardrail)
	s.decisions.firstUse.note(d.Covered, now)
	resp := &writv1.CheckResponse{Allow: d.Allow, Reason: d.Reason, DeniedAt: int32(d.DeniedAt)}
	for _, id := range chain {
		resp.Chain = append(resp.Chain, id.String())
	}
	for _, c := range d.Covered {
		resp.Covered = append(resp.Covered, &writv1.Coverage{SpiffeId: c.Link.ID.String(), Kind: string(c.Link.Kind()),
			TaskId: c.TaskID, Grant: int32(c.Grant), StandingGrantId: c.StandingID})
	}
	s.recordDecision(ctx, req, resp)
	return resp, nil
}

// requestChain turns the request's evidence into the chain to decide for.
func (s *Server) requestChain(ctx context.Context, req *writv1.CheckRequest) ([]spiffeid.ID, error) {
	c, _ := CallerFrom(ctx)
	given := 0
	for _, set := range []bool{len(req.GetChain()) > 0, len(req.GetX509Svid()) > 0, req.GetJwtSvid() != ""} {
		if set {
			given++
		}
	}
	if given != 1 {
		return nil, status.Error(codes.InvalidArgument, "give exactly one of x509_svid, jwt_svid (the requester's evidence) or chain (administrators' dry runs)")
	}
	switch {
	case len(req.GetChain()) > 0:
		if c.Local == nil {
			return nil, status.Error(codes.PermissionDenied, "chain: naming identities is for administrators' dry runs; resource servers give the requester's SVID")
		}
		var chain []spiffeid.ID
		for i, raw := range req.GetChain() {
			id, err := identity.ParseIDInTrustDomain(fmt.Sprintf("chain[%d]", i), raw, s.td)
			if err != nil {
				return nil, status.Error(codes.InvalidArgument, err.Error())
			}
			chain = append(chain, id)
		}
		return chain, nil
	case len(req.GetX509Svid()) > 0:
		var certs []*x509.Certificate
		for i, der := range req.GetX509Svid() {
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "x509_svid[%d]: %v", i, err)
			}
			certs = append(certs, cert)
		}
		id, _, err := x509svid.Verify(certs, x509bundle.FromX509Authorities(s.td, s.x509.Bundle()), x509svid.WithTime(s.now()))
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "x509_svid does not verify against the trust bundle: %s", identity.Quote(err.Error()))
		}
		if req.GetDelegationToken() == "" {
			return []spiffeid.ID{id}, nil
		}
		// The token must be for the resource server asking.
		if c.ID.IsZero() {
			return nil, status.Error(codes.InvalidArgument, "delegation_token: only a resource server with its own SVID can check a delegation token made for it")
		}
		chain, err := s.delegator.verify(req.GetDelegationToken(), c.ID.String(), certs[0], id)
		if err != nil {
			return nil, status.Errorf(codes.PermissionDenied, "delegation_token: %v", err)
		}
		return chain, nil
	default:
		if req.GetDelegationToken() != "" {
			return nil, status.Error(codes.InvalidArgument, "delegation_token: give it with x509_svid: it is bound to the requester's certificate")
		}
		if req.GetJwtAudience() == "" {
			return nil, status.Error(codes.InvalidArgument, "jwt_audience: is required with jwt_svid: the audience the resource server accepts")
		}
		svid, err := s.validateJWTSVID(req.GetJwtSvid(), req.GetJwtAudience())
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "jwt_svid: %v", err)
		}
		return []spiffeid.ID{svid.ID}, nil
	}
}

// validateJWTSVID validates a JWT-SVID for audience at the server's time.
//
// go-spiffe verifies the signature, the audience and the form, but checks
// "exp" with a minute's leeway, so a token would still be taken for up to a
// minute after it expired. writ takes none on expiry: a token is refused
// from its "exp" on, by this server's clock. Servers sharing a trust domain
// keep their clocks within max_clock_skew of each other, so the most a
// token can lose is that much of a life of minutes, and nobody gains time.
//
// Errors quote what go-spiffe said of the token only bounded and escaped:
// it may repeat claims (the audience) a workload chose.
func (s *Server) validateJWTSVID(token, audience string) (*jwtsvid.SVID, error) {
	svid, err := jwtsvid.ParseAndValidate(token, s.jwtBundle(), []string{audience})
	if err != nil {
		return nil, fmt.Errorf("does not validate: %s", identity.Quote(strings.TrimPrefix(err.Error(), "jwtsvid: ")))
	}
	if now := s.now(); !now.Before(svid.Expiry) {
		return nil, fmt.Errorf("expired at %s: fetch a new JWT-SVID", svid.Expiry.UTC().Format(time.RFC3339))
	}
	return svid, nil
}

// decisionQueue bounds the decisions waiting for the audit log.
const decisionQueue = 4096

// decisionLog records decision events in batches in the background. A
// decision is answered without waiting for its event; if the queue is full
// the caller writes its event itself, so none is ever dropped.
type decisionLog struct {
	s  *Server
	ch chan store.AuditEvent
}

func newDecisionLog(s *Server) *decisionLog {
	return &decisionLog{s: s, ch: make(chan store.AuditEvent, decisionQueue)}
}

func (s *Server) recordDecision(ctx context.Context, req *writv1.CheckRequest, resp *writv1.CheckResponse) {
	details := map[string]any{
		"action": req.GetAction(), "chain": resp.GetChain(), "allow": resp.GetAllow(), "reason": resp.GetReason(),
	}
	if args := req.GetArgumentsJson(); args != "" {
		// The arguments may be large and hold what the log should not
		// keep; their hash ties the decision to the call the gateway saw.
		sum := sha256.Sum256([]byte(args))
		details["arguments_sha256"] = hex.EncodeToString(sum[:])
	}
	ev, err := s.event(ctx, audit.EventDecision, req.GetResource(), details)
	if err != nil {
		s.log.Error("encoding a decision event", "err", err)
		return
	}
	select {
	case s.decisionLog.ch <- ev:
	default:
		if _, err := s.store.AppendAudit(ctx, ev); err != nil {
			s.log.Error("recording a decision event", "err", err)
		}
	}
}

// run writes queued decision events in batches until ctx ends, then
// writes what is left.
func (l *decisionLog) run(ctx context.Context) {
	for {
		select {
		case ev := <-l.ch:
			l.write(ctx, l.drain([]store.AuditEvent{ev}, decisionBatch))
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			for batch := l.drain(nil, decisionBatch); len(batch) > 0; batch = l.drain(nil, decisionBatch) {
				l.write(final, batch)
			}
			cancel()
			return
		}
	}
}

// decisionBatch bounds the events one append writes.
const decisionBatch = 512

// drain adds the queued events to batch, up to max, without waiting.
func (l *decisionLog) drain(batch []store.AuditEvent, max int) []store.AuditEvent {
	for len(batch) < max {
		select {
		case ev := <-l.ch:
			batch = append(batch, ev)
		default:
			return batch
		}
	}
	return batch
}

func (l *decisionLog) write(ctx context.Context, batch []store.AuditEvent) {
	if _, err := l.s.store.AppendAudit(ctx, batch...); err != nil {
		l.s.log.Error("recording decision events", "err", err, "count", len(batch))
	}
}
