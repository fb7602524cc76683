package server

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
	"writ.dev/writ/identity"
	"writ.dev/writ/store"
	"writ.dev/writ/task"
	"writ.dev/writ/task/review"
)

const (
	// requestSweepInterval is how often pending requests past their
	// pending_ttl are marked expired. A request is also reported expired
	// whenever it is read, so the sweep only makes the store (and the
	// audit log) say so without anyone looking.
	requestSweepInterval = 30 * time.Second
	// requestUpdateAttempts bounds retries of a review that lost a race
	// with another reviewer; each retry judges the newer request.
	requestUpdateAttempts = 5
)

// requestService lets any identity ask for access through a task, and
// reviewService lets reviewers decide. The request is judged under the
// review rules applied to the store (package task/review); approval makes
// its effect real through the task operations, so guardrails still bound
// what is granted.
//
// A request names its rule by name; it is judged by the rule of that name
// in the rules applied now, so an operator tightening a rule tightens the
// pending requests under it. A request whose rule was removed can no
// longer be reviewed: ask again.
type requestService struct {
	writv1.UnimplementedRequestServiceServer
	s *Server
}

type reviewService struct {
	writv1.UnimplementedReviewServiceServer
	s *Server
}

// requestDoc is how a request is stored.
type requestDoc struct {
	ID           string       `json:"id"`
	Kind         review.Kind  `json:"kind"`
	Task         string       `json:"task"`
	Asks         []string     `json:"asks,omitempty"`
	Chain        []string     `json:"chain"`
	Reason       string       `json:"reason"`
	TTLSeconds   int64        `json:"ttl_seconds"`
	State        review.State `json:"state"`
	Rule         string       `json:"rule"`
	CreatedAt    time.Time    `json:"created_at"`
	PendingUntil time.Time    `json:"pending_until"`
	DecidedAt    time.Time    `json:"decided_at,omitzero"`
	Outcome      string       `json:"outcome,omitempty"`
	// Effect is what approval made real, or why it could not.
	Effect string `json:"effect,omitempty"`
}

// reviewDoc is how a review is stored.
type reviewDoc struct {
	Chain   []string       `json:"chain"`
	Verdict review.Verdict `json:"verdict"`
	Reason  string         `json:"reason,omitempty"`
	At      time.Time      `json:"at"`
}

// storedRequest is a request read from the store with what it needs to be
// written back.
type storedRequest struct {
	r        *review.Request
	effect   string
	revision int64
}

func requestToDoc(r *review.Request, effect string) requestDoc {
	d := requestDoc{ID: r.ID, Kind: r.Kind, Task: r.Task, Reason: r.Reason, TTLSeconds: int64(r.TTL / time.Second),
		State: r.State, Rule: r.Rule, CreatedAt: r.CreatedAt, PendingUntil: r.PendingUntil, DecidedAt: r.DecidedAt,
		Outcome: r.Outcome, Effect: effect}
	for _, a := range r.Asks {
		d.Asks = append(d.Asks, a.String())
	}
	d.Chain = chainStrings(r.Chain)
	return d
}

func requestRecord(r *review.Request, effect string) (store.RequestRecord, error) {
	doc, err := json.Marshal(requestToDoc(r, effect))
	if err != nil {
		return store.RequestRecord{}, status.Errorf(codes.Internal, "encode request: %v", err)
	}
	return store.RequestRecord{ID: r.ID, State: string(r.State), Task: r.Task, PendingUntil: r.PendingUntil, Doc: doc}, nil
}

func (s *Server) requestFromRecord(rec store.RequestRecord) (storedRequest, error) {
	var d requestDoc
	if err := json.Unmarshal(rec.Doc, &d); err != nil {
		return storedRequest{}, status.Errorf(codes.Internal, "stored request %s: %v", rec.ID, err)
	}
	r := &review.Request{ID: d.ID, Kind: d.Kind, Task: d.Task, Reason: d.Reason, TTL: time.Duration(d.TTLSeconds) * time.Second,
		State: d.State, Rule: d.Rule, CreatedAt: d.CreatedAt, PendingUntil: d.PendingUntil, DecidedAt: d.DecidedAt, Outcome: d.Outcome}
	for i, a := range d.Asks {
		ask, err := review.ParseAsk(fmt.Sprintf("asks[%d]", i), a)
		if err != nil {
			return storedRequest{}, status.Errorf(codes.Internal, "stored request %s: %v", rec.ID, err)
		}
		r.Asks = append(r.Asks, ask)
	}
	chain, err := parseChain(d.Chain)
	if err != nil {
		return storedRequest{}, status.Errorf(codes.Internal, "stored request %s: %v", rec.ID, err)
	}
	r.Chain = chain
	return storedRequest{r: r, effect: d.Effect, revision: rec.Revision}, nil
}

func reviewFromRecord(rec store.ReviewRecord) (review.Review, error) {
	var d reviewDoc
	if err := json.Unmarshal(rec.Doc, &d); err != nil {
		return review.Review{}, status.Errorf(codes.Internal, "stored review of %s: %v", rec.RequestID, err)
	}
	chain, err := parseChain(d.Chain)
	if err != nil {
		return review.Review{}, status.Errorf(codes.Internal, "stored review of %s: %v", rec.RequestID, err)
	}
	return review.Review{Chain: chain, Verdict: d.Verdict, Reason: d.Reason, At: d.At}, nil
}

func parseChain(raw []string) ([]spiffeid.ID, error) {
	out := make([]spiffeid.ID, len(raw))
	for i, s := range raw {
		id, err := spiffeid.FromString(s)
		if err != nil {
			return nil, fmt.Errorf("chain[%d]: %v", i, err)
		}
		out[i] = id
	}
	return out, nil
}

func chainStrings(chain []spiffeid.ID) []string {
	out := make([]string, len(chain))
	for i, id := range chain {
		out[i] = id.String()
	}
	return out
}

// ruleCache keeps the review rules parsed at the stored revision, so a
// request does not parse the rules file again unless it changed.
type ruleCache struct {
	mu    sync.Mutex
	rev   int64
	rules []review.Rule
}

// reviewRules returns the applied rules and their revision;
// FailedPrecondition when none are applied.
func (s *Server) reviewRules(ctx context.Context) ([]review.Rule, int64, error) {
	stored, err := s.store.GetReviewRules(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return nil, 0, status.Error(codes.FailedPrecondition, "no review rules are applied, so no request can be judged: an administrator applies them with writ review rules apply FILE")
	}
	if err != nil {
		return nil, 0, storeStatus(err)
	}
	c := &s.ruleCache
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rev == stored.Revision && c.rules != nil {
		return c.rules, c.rev, nil
	}
	rules, err := review.ParseRules([]byte(stored.Text), s.td)
	if err != nil {
		return nil, 0, status.Errorf(codes.Internal, "the stored review rules (revision %d) do not parse here: %v; apply them again", stored.Revision, err)
	}
	c.rev, c.rules = stored.Revision, rules
	return rules, stored.Revision, nil
}

func ruleNamed(rules []review.Rule, name string) *review.Rule {
	for i := range rules {
		if rules[i].Name == name {
			return &rules[i]
		}
	}
	return nil
}

// callerChain is who asks or reviews: the caller's SVID, then whom a
// delegation token says it acts for. Local administrators have no identity
// to ask or review as.
func (s *Server) callerChain(ctx context.Context, token string) ([]spiffeid.ID, error) {
	c, _ := CallerFrom(ctx)
	if c.Local != nil {
		return nil, status.Error(codes.PermissionDenied, "a local administrator has no identity to ask or review as: sign in (writ login) or use a workload's SVID, or name a chain with a dry run")
	}
	if !isMember(s.td, c.ID) {
		return nil, status.Errorf(codes.PermissionDenied, "%s is not a member of trust domain %s", c, s.td)
	}
	if token == "" {
		return []spiffeid.ID{c.ID}, nil
	}
	leaf := peerLeaf(ctx)
	if leaf == nil || s.delegator == nil {
		return nil, status.Error(codes.InvalidArgument, "delegation_token: cannot be checked here: it is bound to the caller's certificate over mTLS, and needs the token endpoint configured")
	}
	chain, err := s.delegator.verify(token, s.cfg.TokenEndpoint.Issuer, leaf, c.ID)
	if err != nil {
		return nil, status.Errorf(codes.PermissionDenied, "delegation_token: %v", err)
	}
	return chain, nil
}

// limitRequests takes a request-path call from the caller's bucket: every
// one writes audit events.
func (s *Server) limitRequests(ctx context.Context) error {
	c, _ := CallerFrom(ctx)
	return s.requests.allow(c, requestAccess)
}

func (rs *requestService) CreateRequest(ctx context.Context, req *writv1.CreateAccessRequest) (*writv1.AccessRequestDetail, error) {
	s := rs.s
	var chain []spiffeid.ID
	if len(req.GetChain()) > 0 {
		c, _ := CallerFrom(ctx)
		if c.Local == nil || !req.GetDryRun() {
			return nil, status.Error(codes.PermissionDenied, "chain: naming the requester is for administrators' dry runs on the admin socket; a request is made as the caller itself")
		}
		for i, raw := range req.GetChain() {
			id, err := identity.ParseIDInTrustDomain(fmt.Sprintf("chain[%d]", i), raw, s.td)
			if err != nil {
				return nil, status.Error(codes.InvalidArgument, err.Error())
			}
			chain = append(chain, id)
		}
	} else {
		var err error
		if chain, err = s.callerChain(ctx, req.GetDelegationToken()); err != nil {
			return nil, err
		}
	}
	if !req.GetDryRun() {
		if err := s.limitRequests(ctx); err != nil {
			return nil, err
		}
	}
	if req.GetTtlSeconds() < 0 || req.GetTtlSeconds() > int64(365*24*time.Hour/time.Second) {
		return nil, status.Errorf(codes.InvalidArgument, "ttl_seconds: %d is out of range: give 0 (the rule's max_ttl) or a number of seconds", req.GetTtlSeconds())
	}
	r := &review.Request{ID: "R-" + rand.Text()[:generatedIDChars], Kind: review.Kind(req.GetKind()), Task: req.GetTask(),
		Chain: chain, Reason: req.GetReason(), TTL: time.Duration(req.GetTtlSeconds()) * time.Second}
	if len(req.GetAsks()) > review.MaxAsks {
		return nil, status.Errorf(codes.InvalidArgument, "asks: %d grants; at most %d are allowed", len(req.GetAsks()), review.MaxAsks)
	}
	for i, raw := range req.GetAsks() {
		a, err := review.ParseAsk(fmt.Sprintf("asks[%d]", i), raw)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		r.Asks = append(r.Asks, a)
	}
	if err := r.Validate(s.td); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	asks, err := s.requestAsks(ctx, r)
	if err != nil {
		return nil, err
	}
	rules, _, err := s.reviewRules(ctx)
	if err != nil {
		return nil, err
	}
	now := s.now()
	rule, err := review.Select(rules, r, asks, now)
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	if err := r.Submit(now, rule); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	out := review.Evaluate(rule, r, nil, now)
	var decided string
	switch out.State {
	case review.StateApproved:
		err, decided = r.Approve(now, out.Why), audit.EventRequestAutoApprove
	case review.StateDenied:
		err, decided = r.Deny(now, out.Why), audit.EventRequestDeny
	}
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if req.GetDryRun() {
		return s.requestDetail(storedRequest{r: r}, rule, nil), nil
	}
	created, err := s.event(ctx, audit.EventRequestCreate, r.ID, requestSummary(r))
	if err != nil {
		return nil, err
	}
	evs := []store.AuditEvent{created}
	if decided != "" {
		ev, err := s.event(ctx, decided, r.ID, map[string]any{"rule": r.Rule, "why": r.Outcome})
		if err != nil {
			return nil, err
		}
		evs = append(evs, ev)
	}
	rec, err := requestRecord(r, "")
	if err != nil {
		return nil, err
	}
	put, err := s.store.PutRequest(ctx, rec, 0, nil, evs...)
	if err != nil {
		return nil, storeStatus(err)
	}
	sr := storedRequest{r: r, revision: put.Revision}
	s.log.Info("access request", "id", r.ID, "kind", r.Kind, "task", r.Task, "requester", r.Requester().String(), "rule", r.Rule, "state", r.State)
	if r.State == review.StateApproved {
		sr = s.applyApproved(ctx, sr)
	}
	return s.requestDetail(sr, rule, nil), nil
}

// requestAsks reads the request's task and returns what the request asks
// for: a drafted task's grants for an open, the named grants for a join of
// an open task.
func (s *Server) requestAsks(ctx context.Context, r *review.Request) ([]review.Ask, error) {
	rec, err := s.store.GetTask(ctx, r.Task)
	if err != nil {
		return nil, storeStatus(err)
	}
	t, err := readTask(rec, s.now())
	if err != nil {
		return nil, err
	}
	switch r.Kind {
	case review.KindOpen:
		if t.State != task.StateDraft {
			return nil, status.Errorf(codes.FailedPrecondition, "task %s is %s: only a drafted task is opened by request; to take part in an open task, ask to join it", t.ID, t.State)
		}
		asks := review.AsksOfTask(t)
		if len(asks) == 0 {
			return nil, status.Errorf(codes.FailedPrecondition, "task %s has no grants yet: complete the draft before asking to open it", t.ID)
		}
		return asks, nil
	default:
		if t.State != task.StateOpen {
			return nil, status.Errorf(codes.FailedPrecondition, "task %s is %s: only an open task is joined; ask to open a drafted task instead", t.ID, t.State)
		}
		return r.Asks, nil
	}
}

func requestSummary(r *review.Request) map[string]any {
	d := requestToDoc(r, "")
	return map[string]any{"kind": d.Kind, "task": d.Task, "asks": d.Asks, "chain": d.Chain, "reason": d.Reason,
		"ttl_seconds": d.TTLSeconds, "rule": d.Rule, "pending_until": d.PendingUntil}
}

func (rs *requestService) GetRequest(ctx context.Context, req *writv1.GetAccessRequestRequest) (*writv1.AccessRequestDetail, error) {
	s := rs.s
	sr, err := s.readRequest(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	reviews, err := s.requestReviews(ctx, sr.r.ID)
	if err != nil {
		return nil, err
	}
	var rule *review.Rule
	if rules, _, err := s.reviewRules(ctx); err == nil {
		rule = ruleNamed(rules, sr.r.Rule)
	}
	return s.requestDetail(sr, rule, reviews), nil
}

// readRequest reads a request, writing its expiry first if its
// pending_ttl ran out.
func (s *Server) readRequest(ctx context.Context, id string) (storedRequest, error) {
	if id == "" {
		return storedRequest{}, status.Error(codes.InvalidArgument, "id: is required: give the request's ID (writ request list)")
	}
	rec, err := s.store.GetRequest(ctx, id)
	if err != nil {
		return storedRequest{}, storeStatus(err)
	}
	sr, err := s.requestFromRecord(rec)
	if err != nil {
		return storedRequest{}, err
	}
	if sr.r.State == review.StatePending && !s.now().Before(sr.r.PendingUntil) {
		return s.expireRequest(ctx, sr)
	}
	return sr, nil
}

// expireRequest records that a pending request ran out of time. Losing the
// race to another writer is fine: the request as stored then is returned.
func (s *Server) expireRequest(ctx context.Context, sr storedRequest) (storedRequest, error) {
	r := *sr.r
	if err := r.Expire(s.now()); err != nil {
		return sr, nil
	}
	ev, err := s.event(ctx, audit.EventRequestExpire, r.ID, map[string]any{"rule": r.Rule, "pending_until": r.PendingUntil})
	if err != nil {
		return storedRequest{}, err
	}
	rec, err := requestRecord(&r, sr.effect)
	if err != nil {
		return storedRequest{}, err
	}
	put, err := s.store.PutRequest(ctx, rec, sr.revision, nil, ev)
	if errors.Is(err, store.ErrConflict) {
		again, err := s.store.GetRequest(ctx, r.ID)
		if err != nil {
			return storedRequest{}, storeStatus(err)
		}
		return s.requestFromRecord(again)
	}
	if err != nil {
		return storedRequest{}, storeStatus(err)
	}
	s.log.Info("access request expired", "id", r.ID, "rule", r.Rule)
	return storedRequest{r: &r, effect: sr.effect, revision: put.Revision}, nil
}

// sweepRequests expires every pending request past its pending_ttl.
func (s *Server) sweepRequests(ctx context.Context) error {
	recs, err := s.store.ListRequests(ctx, string(review.StatePending))
	if err != nil {
		return err
	}
	now := s.now()
	for _, rec := range recs {
		if now.Before(rec.PendingUntil) {
			continue
		}
		sr, err := s.requestFromRecord(rec)
		if err != nil {
			s.log.Warn("unreadable request", "id", rec.ID, "err", err)
			continue
		}
		if _, err := s.expireRequest(ctx, sr); err != nil {
			return err
		}
	}
	return nil
}

// finishApproved applies the effect of approved requests that have none
// recorded: a server that stopped between committing an approval and
// making it real. Effects are idempotent (requestEffect), so a request
// another server is finishing at the same time is not granted twice.
func (s *Server) finishApproved(ctx context.Context) error {
	recs, err := s.store.ListRequests(ctx, string(review.StateApproved))
	if err != nil {
		return err
	}
	for _, rec := range recs {
		sr, err := s.requestFromRecord(rec)
		if err != nil {
			s.log.Warn("unreadable request", "id", rec.ID, "err", err)
			continue
		}
		if sr.effect == "" {
			s.applyApproved(ctx, sr)
		}
	}
	return nil
}

func (s *Server) runRequestSweep(ctx context.Context) {
	if err := s.finishApproved(ctx); err != nil && ctx.Err() == nil {
		s.log.Warn("finishing approved requests", "err", err)
	}
	tick := time.NewTicker(requestSweepInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := s.sweepRequests(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("expiring pending requests", "err", err)
			}
		}
	}
}

func (s *Server) requestReviews(ctx context.Context, id string) ([]review.Review, error) {
	recs, err := s.store.ListReviews(ctx, id)
	if err != nil {
		return nil, storeStatus(err)
	}
	out := make([]review.Review, 0, len(recs))
	for _, rec := range recs {
		rv, err := reviewFromRecord(rec)
		if err != nil {
			return nil, err
		}
		out = append(out, rv)
	}
	return out, nil
}

func (rs *requestService) ListRequests(ctx context.Context, req *writv1.ListAccessRequestsRequest) (*writv1.ListAccessRequestsResponse, error) {
	s := rs.s
	known := []string{string(review.StatePending), string(review.StateApproved), string(review.StateDenied), string(review.StateCancelled), string(review.StateExpired)}
	for i, st := range req.GetStates() {
		if !slices.Contains(known, st) {
			return nil, status.Errorf(codes.InvalidArgument, "states[%d]: %s is not a request state: use pending, approved, denied, cancelled or expired", i, identity.Quote(st))
		}
	}
	// A request past its pending_ttl is stored as pending until the sweep
	// or a read marks it; list it as what it is.
	states := req.GetStates()
	if slices.Contains(states, string(review.StateExpired)) && !slices.Contains(states, string(review.StatePending)) {
		states = append(slices.Clone(states), string(review.StatePending))
	}
	recs, err := s.store.ListRequests(ctx, states...)
	if err != nil {
		return nil, storeStatus(err)
	}
	now := s.now()
	out := &writv1.ListAccessRequestsResponse{}
	for _, rec := range recs {
		sr, err := s.requestFromRecord(rec)
		if err != nil {
			return nil, err
		}
		if sr.r.State == review.StatePending && !now.Before(sr.r.PendingUntil) {
			r := *sr.r
			_ = r.Expire(now)
			sr.r = &r
		}
		if len(req.GetStates()) > 0 && !slices.Contains(req.GetStates(), string(sr.r.State)) {
			continue
		}
		out.Requests = append(out.Requests, requestToProto(sr))
	}
	return out, nil
}

func (rs *requestService) CancelRequest(ctx context.Context, req *writv1.CancelAccessRequestRequest) (*writv1.AccessRequestDetail, error) {
	s := rs.s
	chain, err := s.callerChain(ctx, req.GetDelegationToken())
	if err != nil {
		return nil, err
	}
	if err := s.limitRequests(ctx); err != nil {
		return nil, err
	}
	sr, err := s.readRequest(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	r := *sr.r
	if err := r.Cancel(s.now(), chain); err != nil {
		if errors.Is(err, review.ErrNotRequester) {
			return nil, status.Error(codes.PermissionDenied, err.Error())
		}
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	ev, err := s.event(ctx, audit.EventRequestCancel, r.ID, map[string]any{"chain": chainStrings(chain)})
	if err != nil {
		return nil, err
	}
	rec, err := requestRecord(&r, sr.effect)
	if err != nil {
		return nil, err
	}
	put, err := s.store.PutRequest(ctx, rec, sr.revision, nil, ev)
	if err != nil {
		return nil, storeStatus(err)
	}
	s.log.Info("access request cancelled", "id", r.ID, "by", chain[0].String())
	return s.requestDetail(storedRequest{r: &r, effect: sr.effect, revision: put.Revision}, nil, nil), nil
}

func (rv *reviewService) Approve(ctx context.Context, req *writv1.ReviewAccessRequest) (*writv1.AccessRequestDetail, error) {
	return rv.s.reviewRequest(ctx, req, review.Approve)
}

func (rv *reviewService) Deny(ctx context.Context, req *writv1.ReviewAccessRequest) (*writv1.AccessRequestDetail, error) {
	return rv.s.reviewRequest(ctx, req, review.Deny)
}

// reviewRequest records one reviewer's verdict and the decision it leads
// to in one store transaction. A reviewer the rule does not count is
// refused and nothing is written: a review that can never count is noise
// in the request's history.
func (s *Server) reviewRequest(ctx context.Context, req *writv1.ReviewAccessRequest, verdict review.Verdict) (*writv1.AccessRequestDetail, error) {
	chain, err := s.callerChain(ctx, req.GetDelegationToken())
	if err != nil {
		return nil, err
	}
	if err := s.limitRequests(ctx); err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		sr, rule, reviews, err := s.reviewOnce(ctx, req, verdict, chain)
		if errors.Is(err, store.ErrConflict) && attempt < requestUpdateAttempts {
			continue
		}
		if errors.Is(err, store.ErrConflict) {
			return nil, status.Errorf(codes.Aborted, "%v; retry", err)
		}
		if err != nil {
			return nil, err
		}
		if sr.r.State == review.StateApproved {
			sr = s.applyApproved(ctx, sr)
		}
		return s.requestDetail(sr, rule, reviews), nil
	}
}

func (s *Server) reviewOnce(ctx context.Context, req *writv1.ReviewAccessRequest, verdict review.Verdict, chain []spiffeid.ID) (storedRequest, *review.Rule, []review.Review, error) {
	sr, err := s.readRequest(ctx, req.GetId())
	if err != nil {
		return storedRequest{}, nil, nil, err
	}
	r := *sr.r
	if r.State.Final() {
		return storedRequest{}, nil, nil, status.Errorf(codes.FailedPrecondition, "request %s is %s (%s); a request that ended never changes: ask again", r.ID, r.State, r.Outcome)
	}
	rules, _, err := s.reviewRules(ctx)
	if err != nil {
		return storedRequest{}, nil, nil, err
	}
	rule := ruleNamed(rules, r.Rule)
	if rule == nil {
		return storedRequest{}, nil, nil, status.Errorf(codes.FailedPrecondition, "request %s was made under rule %s, which the applied rules no longer have: the requester cancels it and asks again", r.ID, identity.Quote(r.Rule))
	}
	if _, err := review.Eligible(rule, &r, chain); err != nil {
		return storedRequest{}, nil, nil, status.Error(codes.PermissionDenied, err.Error())
	}
	now := s.now()
	rv := review.Review{Chain: chain, Verdict: verdict, Reason: req.GetReason(), At: now}
	if err := rv.Validate(s.td); err != nil {
		return storedRequest{}, nil, nil, status.Error(codes.InvalidArgument, err.Error())
	}
	reviews, err := s.requestReviews(ctx, r.ID)
	if err != nil {
		return storedRequest{}, nil, nil, err
	}
	reviews = append(reviews, rv)
	out := review.Evaluate(rule, &r, reviews, now)
	reviewed, err := s.event(ctx, audit.EventRequestReview, r.ID, map[string]any{"verdict": verdict, "chain": chainStrings(chain), "reason": rv.Reason, "rule": r.Rule})
	if err != nil {
		return storedRequest{}, nil, nil, err
	}
	evs := []store.AuditEvent{reviewed}
	var decided string
	switch out.State {
	case review.StateApproved:
		err, decided = r.Approve(now, out.Why), audit.EventRequestApprove
	case review.StateDenied:
		err, decided = r.Deny(now, out.Why), audit.EventRequestDeny
	}
	if err != nil {
		return storedRequest{}, nil, nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	if decided != "" {
		ev, err := s.event(ctx, decided, r.ID, map[string]any{"rule": r.Rule, "why": r.Outcome})
		if err != nil {
			return storedRequest{}, nil, nil, err
		}
		evs = append(evs, ev)
	}
	doc, err := json.Marshal(reviewDoc{Chain: chainStrings(chain), Verdict: verdict, Reason: rv.Reason, At: now})
	if err != nil {
		return storedRequest{}, nil, nil, status.Errorf(codes.Internal, "encode review: %v", err)
	}
	rec, err := requestRecord(&r, sr.effect)
	if err != nil {
		return storedRequest{}, nil, nil, err
	}
	put, err := s.store.PutRequest(ctx, rec, sr.revision, &store.ReviewRecord{Doc: doc}, evs...)
	if errors.Is(err, store.ErrConflict) {
		return storedRequest{}, nil, nil, err
	}
	if err != nil {
		return storedRequest{}, nil, nil, storeStatus(err)
	}
	s.log.Info("access request reviewed", "id", r.ID, "verdict", verdict, "reviewer", chain[0].String(), "state", r.State)
	return storedRequest{r: &r, effect: sr.effect, revision: put.Revision}, rule, reviews, nil
}

// applyApproved makes an approved request's effect real through the task
// operations, then records what happened on the request. The approval is
// committed first, so two reviewers racing to the last approval make the
// effect once: only one of them wins the request's compare-and-set. An
// effect the task refuses (a guardrail, a task that ended) leaves the
// request approved with the refusal as its effect, in the audit log too.
func (s *Server) applyApproved(ctx context.Context, sr storedRequest) storedRequest {
	r := sr.r
	effect, err := s.requestEffect(ctx, r)
	if err != nil {
		effect = "not applied: " + status.Convert(err).Message()
	}
	ev, evErr := s.event(ctx, audit.EventRequestEffect, r.ID, map[string]any{"task": r.Task, "kind": r.Kind, "effect": effect, "applied": err == nil})
	if evErr != nil {
		s.log.Error("recording a request's effect", "id", r.ID, "err", evErr)
		return sr
	}
	rec, recErr := requestRecord(r, effect)
	if recErr != nil {
		return sr
	}
	put, putErr := s.store.PutRequest(ctx, rec, sr.revision, nil, ev)
	if putErr != nil {
		s.log.Error("recording a request's effect", "id", r.ID, "effect", effect, "err", putErr)
		sr.effect = effect
		return sr
	}
	s.log.Info("access request applied", "id", r.ID, "task", r.Task, "effect", effect)
	return storedRequest{r: r, effect: effect, revision: put.Revision}
}

// errInEffect stops a task change that an approved request already made.
var errInEffect = errors.New("already in effect")

// requestEffect opens the task or adds the requester with the asked grants.
// An open task's deadline is brought in to the request's TTL from now, so
// the access lasts what the rule allows from approval on. It is
// idempotent: a task already open, or grants the requester already holds
// exactly, change nothing, so finishing a request twice grants once.
func (s *Server) requestEffect(ctx context.Context, r *review.Request) (string, error) {
	ts := &taskService{s: s}
	var change taskChange
	typ := audit.EventTaskOpen
	switch r.Kind {
	case review.KindOpen:
		change = func(t *task.Task, now time.Time) (any, error) {
			if t.State == task.StateOpen {
				return nil, errInEffect
			}
			if until := now.Add(r.TTL); t.Deadline.After(until) {
				t.Deadline = until
			}
			details, err := ts.openTask(t, now)
			if err != nil {
				return nil, err
			}
			return map[string]any{"deadline": t.Deadline, "request": r.ID, "details": details}, nil
		}
	case review.KindJoin:
		typ = audit.EventTaskGrantAdd
		change = func(t *task.Task, _ time.Time) (any, error) {
			if t.State != task.StateOpen {
				return nil, status.Errorf(codes.FailedPrecondition, "task %s is %s: grants are added by request only to an open task", t.ID, t.State)
			}
			member, err := task.ParsePattern(r.Requester().String())
			if err != nil {
				return nil, status.Error(codes.Internal, err.Error())
			}
			first := len(t.Grants)
			var added []grantDoc
			for _, a := range r.Asks {
				g := task.Grant{Actions: []string{a.Action}, Resources: []task.ResourcePattern{a.Resource}, To: []task.Pattern{member}}
				if slices.ContainsFunc(t.Grants[:first], func(have task.Grant) bool { return sameGrant(have, g) }) {
					continue
				}
				t.Grants = append(t.Grants, g)
				added = append(added, grantToDoc(g))
			}
			if len(added) == 0 {
				return nil, errInEffect
			}
			if !isMemberOf(*t, r.Requester()) {
				t.Members = append(t.Members, task.Member{Pattern: member})
			}
			if err := s.validateTask(t); err != nil {
				return nil, status.Errorf(codes.FailedPrecondition, "the grants asked for do not fit task %s: %v", t.ID, err)
			}
			if err := s.guardGrants(t, t.Grants[first:]); err != nil {
				return nil, err
			}
			return map[string]any{"member": member.String(), "grants": added, "request": r.ID}, nil
		}
	default:
		return "", status.Errorf(codes.Internal, "request %s has kind %q", r.ID, r.Kind)
	}
	t, err := ts.update(ctx, r.Task, 0, typ, change)
	if errors.Is(err, errInEffect) {
		return fmt.Sprintf("already in effect on task %s", r.Task), nil
	}
	if err != nil {
		return "", err
	}
	if r.Kind == review.KindOpen {
		return fmt.Sprintf("task %s opened until %s", t.GetId(), time.Unix(t.GetDeadline(), 0).UTC().Format(time.RFC3339)), nil
	}
	asks := make([]string, len(r.Asks))
	for i, a := range r.Asks {
		asks[i] = a.String()
	}
	return fmt.Sprintf("%s joined task %s with %v", r.Requester(), t.GetId(), asks), nil
}

// sameGrant reports whether two grants name the same actions, resources
// and recipients, in order.
func sameGrant(a, b task.Grant) bool {
	return slices.Equal(a.Actions, b.Actions) &&
		slices.EqualFunc(a.Resources, b.Resources, func(x, y task.ResourcePattern) bool { return x.String() == y.String() }) &&
		slices.EqualFunc(a.To, b.To, func(x, y task.Pattern) bool { return x.String() == y.String() })
}

func requestToProto(sr storedRequest) *writv1.AccessRequest {
	d := requestToDoc(sr.r, sr.effect)
	return &writv1.AccessRequest{Id: d.ID, Kind: string(d.Kind), Task: d.Task, Asks: d.Asks, Chain: d.Chain, Reason: d.Reason,
		TtlSeconds: d.TTLSeconds, State: string(d.State), Rule: d.Rule, CreatedAt: unixOrZero(d.CreatedAt),
		PendingUntil: unixOrZero(d.PendingUntil), DecidedAt: unixOrZero(d.DecidedAt), Outcome: d.Outcome,
		Revision: sr.revision, Effect: d.Effect}
}

// requestDetail shows a request with its rule's groups (who may approve,
// and who has), and its reviews with why any counted for nothing. The
// tallies are those up to the decision, so a decided request still shows
// who approved it.
func (s *Server) requestDetail(sr storedRequest, rule *review.Rule, reviews []review.Review) *writv1.AccessRequestDetail {
	out := &writv1.AccessRequestDetail{Request: requestToProto(sr), Why: sr.r.Outcome}
	if rule == nil {
		return out
	}
	out.AutoApprove = rule.AutoApprove != nil
	pending := *sr.r
	pending.State = review.StatePending
	ev := review.Evaluate(rule, &pending, reviews, pending.CreatedAt)
	if sr.r.State == review.StatePending {
		out.Why = ev.Why
	}
	for i, g := range rule.Require {
		pg := &writv1.ReviewGroup{Name: ev.Groups[i].Name, Need: int32(g.Count), ApprovedBy: chainStrings(ev.Groups[i].Have)}
		for _, p := range g.From {
			pg.From = append(pg.From, p.String())
		}
		out.Groups = append(out.Groups, pg)
	}
	for _, rv := range reviews {
		pr := &writv1.AccessReview{Chain: chainStrings(rv.Chain), Verdict: string(rv.Verdict), Reason: rv.Reason, At: unixOrZero(rv.At)}
		if !rv.At.Before(sr.r.PendingUntil) {
			pr.Ignored = "made after the request expired"
		} else if _, err := review.Eligible(rule, sr.r, rv.Chain); err != nil {
			pr.Ignored = err.Error()
		}
		out.Reviews = append(out.Reviews, pr)
	}
	return out
}

func (rv *reviewService) GetRules(ctx context.Context, _ *writv1.GetReviewRulesRequest) (*writv1.ReviewRules, error) {
	s := rv.s
	stored, err := s.store.GetReviewRules(ctx)
	if err != nil {
		return nil, storeStatus(err)
	}
	rules, _, err := s.reviewRules(ctx)
	if err != nil {
		return nil, err
	}
	return rulesToProto(stored, rules), nil
}

func rulesToProto(stored store.ReviewRules, rules []review.Rule) *writv1.ReviewRules {
	out := &writv1.ReviewRules{Text: stored.Text, Revision: stored.Revision, UpdatedAt: unixOrZero(stored.UpdatedAt)}
	for _, r := range rules {
		out.Rules = append(out.Rules, r.Name)
	}
	return out
}

func (rv *reviewService) ApplyRules(ctx context.Context, req *writv1.ApplyReviewRulesRequest) (*writv1.ApplyReviewRulesResponse, error) {
	s := rv.s
	if len(req.GetText()) > store.MaxReviewRulesSize {
		return nil, status.Errorf(codes.InvalidArgument, "text: %d bytes; a rules file is at most %d", len(req.GetText()), store.MaxReviewRulesSize)
	}
	next, err := review.ParseRules([]byte(req.GetText()), s.td)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "the rules file is refused and nothing changed: %v", err)
	}
	current, err := s.store.GetReviewRules(ctx)
	var prev []review.Rule
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return nil, storeStatus(err)
	default:
		if prev, _, err = s.reviewRules(ctx); err != nil {
			return nil, err
		}
	}
	if req.GetRevision() != 0 && req.GetRevision() != current.Revision {
		return nil, status.Errorf(codes.Aborted, "the review rules are at revision %d, not %d: read them again (writ review rules show)", current.Revision, req.GetRevision())
	}
	changes := ruleChanges(prev, next)
	resp := &writv1.ApplyReviewRulesResponse{Changes: changes,
		Rules: rulesToProto(store.ReviewRules{Text: req.GetText(), Revision: current.Revision, UpdatedAt: current.UpdatedAt}, next)}
	if req.GetDryRun() || (current.Revision != 0 && current.Text == req.GetText()) {
		return resp, nil
	}
	ev, err := s.event(ctx, audit.EventReviewRulesApply, "review-rules", map[string]any{"rules": resp.Rules.Rules, "changes": changes})
	if err != nil {
		return nil, err
	}
	put, err := s.store.PutReviewRules(ctx, req.GetText(), current.Revision, ev)
	if err != nil {
		return nil, storeStatus(err)
	}
	s.log.Info("review rules applied", "revision", put.Revision, "rules", len(next), "caller", callerString(ctx))
	resp.Rules.Revision, resp.Rules.UpdatedAt, resp.Applied = put.Revision, unixOrZero(put.UpdatedAt), true
	return resp, nil
}

// ruleChanges names what applying next over prev changes, rule by name:
// added, removed, changed, and whether the order (which decides) changed.
func ruleChanges(prev, next []review.Rule) []string {
	var out []string
	var prevNames, nextNames []string
	for i := range prev {
		prevNames = append(prevNames, prev[i].Name)
	}
	for i := range next {
		nextNames = append(nextNames, next[i].Name)
		old := ruleNamed(prev, next[i].Name)
		switch {
		case old == nil:
			out = append(out, "add "+next[i].Name)
		case !sameRule(*old, next[i]):
			out = append(out, "change "+next[i].Name)
		}
	}
	for _, n := range prevNames {
		if !slices.Contains(nextNames, n) {
			out = append(out, "remove "+n)
		}
	}
	var keptPrev, keptNext []string
	for _, n := range prevNames {
		if slices.Contains(nextNames, n) {
			keptPrev = append(keptPrev, n)
		}
	}
	for _, n := range nextNames {
		if slices.Contains(prevNames, n) {
			keptNext = append(keptNext, n)
		}
	}
	if !slices.Equal(keptPrev, keptNext) {
		out = append(out, "reorder: rules are tried in the order "+fmt.Sprint(nextNames))
	}
	if len(out) == 0 {
		out = append(out, "no change")
	}
	return out
}

func sameRule(a, b review.Rule) bool {
	a.Line, b.Line = 0, 0
	return reflect.DeepEqual(a, b)
}
