package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
	"writ.dev/writ/identity"
	"writ.dev/writ/store"
	"writ.dev/writ/task/review"
)

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
	if !s.viewerFor(ctx, chain).may(ctx, sr.r) {
		return storedRequest{}, nil, nil, requestNotFound(req.GetId())
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
	written := storedRequest{r: &r, effect: sr.effect, revision: put.Revision}
	typ := changeReviewed
	if r.State != review.StatePending {
		typ = string(r.State)
	}
	s.requestWritten(written, typ)
	return written, rule, reviews, nil
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
	if changes, err = s.notePendingUnder(ctx, changes); err != nil {
		return nil, err
	}
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

// notePendingUnder adds to each removal how many pending requests were
// made under the rule: nobody can review them once it is gone.
func (s *Server) notePendingUnder(ctx context.Context, changes []string) ([]string, error) {
	var removed []string
	for _, c := range changes {
		if name, ok := strings.CutPrefix(c, "remove "); ok {
			removed = append(removed, name)
		}
	}
	if len(removed) == 0 {
		return changes, nil
	}
	recs, err := s.store.ListRequests(ctx, string(review.StatePending))
	if err != nil {
		return nil, storeStatus(err)
	}
	under := map[string]int{}
	for _, rec := range recs {
		sr, err := s.requestFromRecord(rec)
		if err != nil {
			return nil, err
		}
		under[sr.r.Rule]++
	}
	out := slices.Clone(changes)
	for i, c := range out {
		if name, ok := strings.CutPrefix(c, "remove "); ok && under[name] > 0 {
			out[i] = fmt.Sprintf("%s (%d pending requests under it can no longer be reviewed; their requesters cancel and ask again)", c, under[name])
		}
	}
	return out, nil
}

func sameRule(a, b review.Rule) bool {
	a.Line, b.Line = 0, 0
	return reflect.DeepEqual(a, b)
}
