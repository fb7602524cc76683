package server

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
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
	s.requestWritten(sr, changeCreated)
	if r.State != review.StatePending {
		s.requestWritten(sr, string(r.State))
	}
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
	if !s.viewerFor(ctx, nil).may(ctx, sr.r) {
		return nil, requestNotFound(req.GetId())
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
	expired := storedRequest{r: &r, effect: sr.effect, revision: put.Revision}
	s.requestWritten(expired, string(review.StateExpired))
	return expired, nil
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
	viewer := s.viewerFor(ctx, nil)
	for _, rec := range recs {
		sr, err := s.requestFromRecord(rec)
		if err != nil {
			return nil, err
		}
		if !viewer.may(ctx, sr.r) {
			continue
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
	if !s.viewerFor(ctx, chain).may(ctx, sr.r) {
		return nil, requestNotFound(req.GetId())
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
	cancelled := storedRequest{r: &r, effect: sr.effect, revision: put.Revision}
	s.requestWritten(cancelled, string(review.StateCancelled))
	return s.requestDetail(cancelled, nil, nil), nil
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
