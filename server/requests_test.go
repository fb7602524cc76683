package server

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	grpcstatus "google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
	"writ.dev/writ/delegation"
	"writ.dev/writ/task/review"
)

const (
	bob      = "spiffe://" + testTD + "/person/example.com/bob"
	sam      = "spiffe://" + testTD + "/person/example.com/sam"
	stageBot = "spiffe://" + testTD + "/agent/stage-bot"
)

// testReviewRules: agents read staging unasked; a prod write needs two
// people and one of security (sam).
const testReviewRules = `rules:
  - name: staging-read-by-agents
    match: {actions: [read], resources: [db/staging/**], requester_kind: [agent]}
    auto_approve: {}
    max_ttl: 1h
  - name: prod-write
    match: {actions: [write], resources: [db/prod/**]}
    require:
      - {name: people, from: ["spiffe://` + testTD + `/person/**"], count: 2}
      - {name: security, from: ["` + sam + `"], count: 1}
    max_ttl: 4h
    pending_ttl: 2h
`

// svidConn is a connection to the server's network listener as the holder
// of svid.
func svidConn(t testing.TB, srv *Server, svid *x509svid.SVID) *grpc.ClientConn {
	t.Helper()
	bundle := x509bundle.FromX509Authorities(srv.TrustDomain(), srv.x509.Bundle())
	cc, err := grpc.NewClient(srv.ListenAddr().String(), grpc.WithTransportCredentials(credentials.NewTLS(
		tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(srv.tlsID.ID())))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// actor is one identity calling the request and review APIs.
type actor struct {
	requests writv1.RequestServiceClient
	reviews  writv1.ReviewServiceClient
}

func actorConn(cc *grpc.ClientConn) actor {
	return actor{writv1.NewRequestServiceClient(cc), writv1.NewReviewServiceClient(cc)}
}

func (a actor) join(t *testing.T, taskID, reason string, asks ...string) (*writv1.AccessRequestDetail, error) {
	t.Helper()
	return a.requests.CreateRequest(t.Context(), &writv1.CreateAccessRequest{Kind: "join", Task: taskID, Asks: asks, Reason: reason})
}

func applyTestRules(t *testing.T, admin *grpc.ClientConn) {
	t.Helper()
	rc := writv1.NewReviewServiceClient(admin)
	_, err := rc.GetRules(t.Context(), &writv1.GetReviewRulesRequest{})
	wantCode(t, err, codes.NotFound, "no review rules")
	dry, err := rc.ApplyRules(t.Context(), &writv1.ApplyReviewRulesRequest{Text: testReviewRules, DryRun: true})
	if err != nil || dry.GetApplied() || !slices.Equal(dry.GetChanges(), []string{"add staging-read-by-agents", "add prod-write"}) {
		t.Fatalf("dry run = %v, %v", dry, err)
	}
	if _, err := rc.GetRules(t.Context(), &writv1.GetReviewRulesRequest{}); codeOf(err) != codes.NotFound {
		t.Fatalf("a dry run applied the rules: %v", err)
	}
	_, err = rc.ApplyRules(t.Context(), &writv1.ApplyReviewRulesRequest{Text: "rules:\n  - name: x\n    bogus: 1\n"})
	wantCode(t, err, codes.InvalidArgument, "nothing changed")
	applied, err := rc.ApplyRules(t.Context(), &writv1.ApplyReviewRulesRequest{Text: testReviewRules})
	if err != nil || !applied.GetApplied() || applied.GetRules().GetRevision() == 0 {
		t.Fatalf("apply = %v, %v", applied, err)
	}
	got, err := rc.GetRules(t.Context(), &writv1.GetReviewRulesRequest{})
	if err != nil || got.GetText() != testReviewRules || !slices.Equal(got.GetRules(), []string{"staging-read-by-agents", "prod-write"}) {
		t.Fatalf("GetRules = %v, %v", got, err)
	}
}

func codeOf(err error) codes.Code { return grpcstatus.Code(err) }

// TestRequestsAndReviews runs the first scenarios of access requests over
// the real API with real SVIDs: an agent asks to join a task and a rule
// approves its staging read at once; a prod write needs two people and one
// of security, so one approval is not enough, the requester and anyone in
// its chain are refused, a denial ends a request, and an approved request
// makes the grant live (Check denies before and allows after).
func TestRequestsAndReviews(t *testing.T) {
	srv, addr := startTokenEndpoint(t)
	admin := adminConn(t, srv)
	applyTestRules(t, admin)
	decide := writv1.NewDecisionServiceClient(admin)
	work := openTask(t, writv1.NewTaskServiceClient(admin), "reconcile payments", []string{ceo},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}})

	agentSVID := mintSVID(t, srv, stageBot)
	agent := actorConn(svidConn(t, srv, agentSVID))
	aliceA := actorConn(svidConn(t, srv, signIn(t, srv, alice)))
	bobA := actorConn(svidConn(t, srv, signIn(t, srv, bob)))
	samA := actorConn(svidConn(t, srv, signIn(t, srv, sam)))

	// An agent reads staging: the rule approves at creation.
	if r := check(t, decide, "read", "db/staging/orders", stageBot); r.GetAllow() {
		t.Fatalf("allowed before any request: %v", r)
	}
	auto, err := agent.join(t, work.GetId(), "nightly reconciliation reads staging orders", "read:db/staging/orders")
	if err != nil {
		t.Fatal(err)
	}
	if q := auto.GetRequest(); q.GetState() != "approved" || q.GetRule() != "staging-read-by-agents" || !auto.GetAutoApprove() ||
		!strings.Contains(q.GetEffect(), "joined task "+work.GetId()) || q.GetChain()[0] != stageBot {
		t.Fatalf("the staging read = %v", auto)
	}
	if r := check(t, decide, "read", "db/staging/orders", stageBot); !r.GetAllow() {
		t.Fatalf("the approved staging read is not live: %v", r)
	}

	// A prod write waits for two people and one of security.
	prod, err := agent.join(t, work.GetId(), "fix the failed payment batch", "write:db/prod/payments")
	if err != nil {
		t.Fatal(err)
	}
	id := prod.GetRequest().GetId()
	if prod.GetRequest().GetState() != "pending" || len(prod.GetGroups()) != 2 || !strings.Contains(prod.GetWhy(), "waiting") {
		t.Fatalf("the prod write = %v", prod)
	}
	_, err = agent.reviews.Approve(t.Context(), &writv1.ReviewAccessRequest{Id: id, Reason: "mine"})
	wantCode(t, err, codes.PermissionDenied, "made the request")
	one, err := bobA.reviews.Approve(t.Context(), &writv1.ReviewAccessRequest{Id: id, Reason: "the batch must run today"})
	if err != nil {
		t.Fatal(err)
	}
	if one.GetRequest().GetState() != "pending" || !strings.Contains(one.GetWhy(), "security needs 1 more") {
		t.Fatalf("after one approval = %v", one)
	}
	if r := check(t, decide, "write", "db/prod/payments", stageBot); r.GetAllow() {
		t.Fatalf("one approval made the grant live: %v", r)
	}
	// The same principal again counts once.
	again, err := bobA.reviews.Approve(t.Context(), &writv1.ReviewAccessRequest{Id: id})
	if err != nil || again.GetRequest().GetState() != "pending" {
		t.Fatalf("bob approving twice = %v, %v", again, err)
	}
	shown, err := aliceA.requests.GetRequest(t.Context(), &writv1.GetAccessRequestRequest{Id: id})
	if err != nil || len(shown.GetReviews()) != 2 || shown.GetGroups()[0].GetName() != "people" ||
		!slices.Equal(shown.GetGroups()[0].GetApprovedBy(), []string{bob}) || shown.GetGroups()[1].GetFrom()[0] != sam {
		t.Fatalf("show = %v, %v", shown, err)
	}
	done, err := samA.reviews.Approve(t.Context(), &writv1.ReviewAccessRequest{Id: id, Reason: "security ok"})
	if err != nil {
		t.Fatal(err)
	}
	if done.GetRequest().GetState() != "approved" || !strings.Contains(done.GetRequest().GetEffect(), "write:db/prod/payments") {
		t.Fatalf("after security approved = %v", done)
	}
	if r := check(t, decide, "write", "db/prod/payments", stageBot); !r.GetAllow() {
		t.Fatalf("the approved prod write is not live: %v", r)
	}
	_, err = bobA.reviews.Deny(t.Context(), &writv1.ReviewAccessRequest{Id: id, Reason: "too late"})
	wantCode(t, err, codes.FailedPrecondition, "approved")

	// Alice asks for herself; her agent acting for her cannot approve, and
	// a denial ends the request.
	mine, err := aliceA.join(t, work.GetId(), "patch the ledger", "write:db/prod/ledger")
	if err != nil {
		t.Fatal(err)
	}
	// Her agent acts for her only within a task they share.
	if _, err := writv1.NewTaskServiceClient(admin).AddMembers(t.Context(), &writv1.AddMembersRequest{Id: work.GetId(), Members: []string{alice}}); err != nil {
		t.Fatal(err)
	}
	issuer := srv.cfg.TokenEndpoint.Issuer
	actorJWT, err := mintJWT(t, srv, &writv1.MintJWTSVIDRequest{SpiffeId: stageBot, Audience: []string{issuer}})
	if err != nil {
		t.Fatal(err)
	}
	code, body := exchangeAt(t, srv, addr, agentSVID, exchangeForm(actorJWT.GetToken(), personJWT(t, srv, alice, issuer), delegation.TokenTypeJWT, issuer))
	if code != http.StatusOK {
		t.Fatalf("exchange: %d %v", code, body)
	}
	forAlice, _ := body["access_token"].(string)
	_, err = agent.reviews.Approve(t.Context(), &writv1.ReviewAccessRequest{Id: mine.GetRequest().GetId(), DelegationToken: forAlice})
	wantCode(t, err, codes.PermissionDenied, "requester's chain")
	_, err = agent.reviews.Approve(t.Context(), &writv1.ReviewAccessRequest{Id: mine.GetRequest().GetId(), DelegationToken: "not-a-token"})
	wantCode(t, err, codes.PermissionDenied, "delegation_token")
	_, err = bobA.reviews.Deny(t.Context(), &writv1.ReviewAccessRequest{Id: mine.GetRequest().GetId()})
	wantCode(t, err, codes.InvalidArgument, "reason")
	denied, err := bobA.reviews.Deny(t.Context(), &writv1.ReviewAccessRequest{Id: mine.GetRequest().GetId(), Reason: "not during the freeze"})
	if err != nil || denied.GetRequest().GetState() != "denied" || !strings.Contains(denied.GetWhy(), "not during the freeze") {
		t.Fatalf("deny = %v, %v", denied, err)
	}
	_, err = samA.reviews.Approve(t.Context(), &writv1.ReviewAccessRequest{Id: mine.GetRequest().GetId()})
	wantCode(t, err, codes.FailedPrecondition, "denied")
	if r := check(t, decide, "write", "db/prod/ledger", alice); r.GetAllow() {
		t.Fatalf("a denied request granted: %v", r)
	}

	// Only the requester cancels; a local administrator asks only in dry runs.
	third, err := agent.join(t, work.GetId(), "one more", "write:db/prod/refunds")
	if err != nil {
		t.Fatal(err)
	}
	_, err = bobA.requests.CancelRequest(t.Context(), &writv1.CancelAccessRequestRequest{Id: third.GetRequest().GetId()})
	wantCode(t, err, codes.PermissionDenied, "requester")
	cancelled, err := agent.requests.CancelRequest(t.Context(), &writv1.CancelAccessRequestRequest{Id: third.GetRequest().GetId()})
	if err != nil || cancelled.GetRequest().GetState() != "cancelled" {
		t.Fatalf("cancel = %v, %v", cancelled, err)
	}
	adminReq := writv1.NewRequestServiceClient(admin)
	_, err = adminReq.CreateRequest(t.Context(), &writv1.CreateAccessRequest{Kind: "join", Task: work.GetId(), Asks: []string{"write:db/prod/x"}, Reason: "r"})
	wantCode(t, err, codes.PermissionDenied, "dry run")
	_, err = adminReq.CreateRequest(t.Context(), &writv1.CreateAccessRequest{Kind: "join", Task: work.GetId(), Asks: []string{"write:db/prod/x"}, Reason: "r", Chain: []string{stageBot}})
	wantCode(t, err, codes.PermissionDenied, "dry run")
	dry, err := adminReq.CreateRequest(t.Context(), &writv1.CreateAccessRequest{Kind: "join", Task: work.GetId(), Asks: []string{"read:db/staging/x"}, Reason: "r", Chain: []string{stageBot}, DryRun: true})
	if err != nil || dry.GetRequest().GetState() != "approved" || dry.GetRequest().GetEffect() != "" {
		t.Fatalf("dry run = %v, %v", dry, err)
	}
	_, err = agent.join(t, work.GetId(), "no rule covers it", "delete:db/prod/payments")
	wantCode(t, err, codes.FailedPrecondition, "no review rule applies")
	list, err := aliceA.requests.ListRequests(t.Context(), &writv1.ListAccessRequestsRequest{States: []string{"approved"}})
	if err != nil || len(list.GetRequests()) != 2 {
		t.Fatalf("ListRequests(approved) = %v, %v", list, err)
	}

	var types []string
	for _, e := range readEvents(t, writv1.NewAuditServiceClient(admin)) {
		types = append(types, e.Type)
	}
	for _, want := range []string{audit.EventReviewRulesApply, audit.EventRequestCreate, audit.EventRequestAutoApprove, audit.EventRequestReview,
		audit.EventRequestApprove, audit.EventRequestEffect, audit.EventRequestDeny, audit.EventRequestCancel} {
		if !slices.Contains(types, want) {
			t.Errorf("no %s event in the audit log", want)
		}
	}
}

// TestRequestExpiry: a pending request past its pending_ttl reads as
// expired (and is recorded so), cannot be approved, and the sweep expires
// the ones nobody reads.
func TestRequestExpiry(t *testing.T) {
	var skip atomic.Int64
	cfg := testConfig(t)
	ctx := context.Background()
	srv, err := New(ctx, cfg, Options{Logger: quietLogger(), Version: "test", Now: func() time.Time {
		return time.Now().Add(time.Duration(skip.Load()))
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	admin := adminConn(t, srv)
	applyTestRules(t, admin)
	tasks := writv1.NewTaskServiceClient(admin)
	work, err := tasks.CreateTask(ctx, &writv1.CreateTaskRequest{Task: &writv1.Task{Title: "reconcile payments", Reason: "scenario", Owner: ceo,
		Members: []string{ceo}, Grants: []*writv1.Grant{{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}}},
		Deadline: time.Now().Add(24 * time.Hour).Unix()}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tasks.OpenTask(ctx, &writv1.TaskTransitionRequest{Id: work.GetId()}); err != nil {
		t.Fatal(err)
	}
	agent := actorConn(svidConn(t, srv, mintSVID(t, srv, stageBot)))
	first, err := agent.join(t, work.GetId(), "fix the batch", "write:db/prod/payments")
	if err != nil {
		t.Fatal(err)
	}
	second, err := agent.join(t, work.GetId(), "fix the other batch", "write:db/prod/refunds")
	if err != nil {
		t.Fatal(err)
	}
	bobSVID := signIn(t, srv, bob)
	// Removing the rule would strand them: a dry run says so.
	dry, err := writv1.NewReviewServiceClient(admin).ApplyRules(ctx, &writv1.ApplyReviewRulesRequest{
		Text: strings.Replace(testReviewRules, "name: prod-write", "name: prod-write-v2", 1), DryRun: true})
	if err != nil || !slices.Contains(dry.GetChanges(), "remove prod-write (2 pending requests under it can no longer be reviewed; their requesters cancel and ask again)") {
		t.Fatalf("dry run removing a rule with pending requests = %v, %v", dry.GetChanges(), err)
	}
	skip.Store(int64(3 * time.Hour)) // past the rule's pending_ttl of 2h

	got, err := agent.requests.GetRequest(ctx, &writv1.GetAccessRequestRequest{Id: first.GetRequest().GetId()})
	if err != nil || got.GetRequest().GetState() != "expired" {
		t.Fatalf("GetRequest after pending_ttl = %v, %v", got, err)
	}
	_, err = actorConn(svidConn(t, srv, bobSVID)).reviews.Approve(ctx, &writv1.ReviewAccessRequest{Id: second.GetRequest().GetId()})
	wantCode(t, err, codes.FailedPrecondition, "expired")
	third, err := agent.join(t, work.GetId(), "later", "write:db/prod/x")
	if err != nil {
		t.Fatal(err)
	}
	skip.Store(int64(6 * time.Hour))
	if err := srv.sweepRequests(ctx); err != nil {
		t.Fatal(err)
	}
	recs, err := srv.store.ListRequests(ctx, "pending")
	if err != nil || len(recs) != 0 {
		t.Fatalf("pending after the sweep: %v, %v (request %s)", recs, err, third.GetRequest().GetId())
	}
	n := 0
	for _, e := range readEvents(t, writv1.NewAuditServiceClient(admin)) {
		if e.Type == audit.EventRequestExpire {
			n++
		}
	}
	if n != 3 {
		t.Fatalf("%d request.expire events, want 3: one per request, never twice", n)
	}
}

// TestRequestBoundedByGuardrailsAndLimits: an approved request makes its
// grant real only through the task operations, so a guardrail forbidding
// the grant still wins (the request says why, and Check denies); and
// requests count against limits.requests_per_identity.
func TestRequestBoundedByGuardrailsAndLimits(t *testing.T) {
	cfg := testConfig(t)
	policy := filepath.Join(cfg.DataDir, "prod.cedar")
	if err := os.WriteFile(policy, []byte(`@id("no-prod-deploys-granted-to-workloads")
forbid(principal, action == writ::Action::"deploy", resource in writ::Resource::"k8s/prod")
when { principal.kind == "workload" && context.granting };
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Guardrails.Files = []string{policy}
	cfg.Limits.RequestsPerIdentity = RateLimit{Rate: 0.001, Burst: 2}
	srv := startServer(t, cfg)
	admin := adminConn(t, srv)
	rules := "rules:\n  - name: deploys-by-workloads\n    match: {actions: [deploy], resources: [k8s/**], requester_kind: [workload]}\n    auto_approve: {}\n"
	if _, err := writv1.NewReviewServiceClient(admin).ApplyRules(t.Context(), &writv1.ApplyReviewRulesRequest{Text: rules}); err != nil {
		t.Fatal(err)
	}
	work := openTask(t, writv1.NewTaskServiceClient(admin), "deploy 4.2", []string{ceo},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}})
	ci := actorConn(svidConn(t, srv, mintSVID(t, srv, runner)))

	d, err := ci.join(t, work.GetId(), "ship 4.2", "deploy:k8s/prod/ns/web")
	if err != nil {
		t.Fatal(err)
	}
	if q := d.GetRequest(); q.GetState() != "approved" || !strings.Contains(q.GetEffect(), "not applied") || !strings.Contains(q.GetEffect(), "no-prod-deploys-granted-to-workloads") {
		t.Fatalf("a request for what a guardrail forbids granting = %v", d)
	}
	if r := check(t, writv1.NewDecisionServiceClient(admin), "deploy", "k8s/prod/ns/web", runner); r.GetAllow() {
		t.Fatalf("the forbidden grant is live: %v", r)
	}
	staging, err := ci.join(t, work.GetId(), "ship 4.2 to staging", "deploy:k8s/staging/ns/web")
	if err != nil || !strings.Contains(staging.GetRequest().GetEffect(), "joined task") {
		t.Fatalf("an allowed grant = %v, %v", staging, err)
	}
	_, err = ci.join(t, work.GetId(), "one too many", "deploy:k8s/dev/ns/web")
	wantCode(t, err, codes.ResourceExhausted, "requests_per_identity")
}

// TestApprovedRequestFinished: a server that stopped between committing an
// approval and making it real finishes it at the next start, and making it
// real twice grants once.
func TestApprovedRequestFinished(t *testing.T) {
	srv := startServer(t, testConfig(t))
	admin := adminConn(t, srv)
	applyTestRules(t, admin)
	work := openTask(t, writv1.NewTaskServiceClient(admin), "reconcile payments", []string{ceo},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}})
	decide := writv1.NewDecisionServiceClient(admin)
	ctx := t.Context()

	// An approval committed with no effect recorded, as a crash leaves it.
	now := srv.now()
	r := &review.Request{ID: "R-crashed", Kind: review.KindJoin, Task: work.GetId(), Chain: []spiffeid.ID{spiffeid.RequireFromString(stageBot)},
		Reason: "nightly", TTL: time.Hour, State: review.StateApproved, Rule: "staging-read-by-agents",
		CreatedAt: now, PendingUntil: now.Add(time.Hour), DecidedAt: now, Outcome: "approved"}
	ask, err := review.ParseAsk("asks[0]", "read:db/staging/orders")
	if err != nil {
		t.Fatal(err)
	}
	r.Asks = []review.Ask{ask}
	rec, err := requestRecord(r, "")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := srv.event(ctx, audit.EventRequestApprove, r.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.store.PutRequest(ctx, rec, 0, nil, ev); err != nil {
		t.Fatal(err)
	}
	if c := check(t, decide, "read", "db/staging/orders", stageBot); c.GetAllow() {
		t.Fatalf("allowed before the approval was made real: %v", c)
	}
	if err := srv.finishApproved(ctx); err != nil {
		t.Fatal(err)
	}
	if c := check(t, decide, "read", "db/staging/orders", stageBot); !c.GetAllow() {
		t.Fatalf("the finished approval is not live: %v", c)
	}
	got, err := srv.store.GetRequest(ctx, r.ID)
	if err != nil || !strings.Contains(string(got.Doc), "joined task") {
		t.Fatalf("the effect is not recorded: %s, %v", got.Doc, err)
	}
	effect, err := srv.requestEffect(ctx, r)
	if err != nil || !strings.Contains(effect, "already in effect") {
		t.Fatalf("making it real again = %q, %v", effect, err)
	}
	task, err := writv1.NewTaskServiceClient(admin).GetTask(ctx, &writv1.GetTaskRequest{Id: work.GetId()})
	if err != nil || len(task.GetGrants()) != 2 || len(task.GetMembers()) != 2 {
		t.Fatalf("the task after two finishes = %v, %v: want the grant and member once", task, err)
	}
}

// TestRuleChanges: a dry run names the rules added, removed and changed,
// and a new order, since the first rule that applies decides.
func TestRuleChanges(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString(testTD)
	parse := func(text string) []review.Rule {
		t.Helper()
		rules, err := review.ParseRules([]byte(text), td)
		if err != nil {
			t.Fatal(err)
		}
		return rules
	}
	rule := func(name, action string) string {
		return "  - name: " + name + "\n    match: {actions: [" + action + "], resources: [db/**]}\n    auto_approve: {}\n"
	}
	prev := parse("rules:\n" + rule("a", "read") + rule("b", "read") + rule("c", "read"))
	if got := ruleChanges(prev, prev); !slices.Equal(got, []string{"no change"}) {
		t.Errorf("the same rules: %v", got)
	}
	// Moving a rule down a line changes only where it is in the file.
	moved := parse("rules:\n\n" + rule("a", "read") + rule("b", "read") + rule("c", "read"))
	if got := ruleChanges(prev, moved); !slices.Equal(got, []string{"no change"}) {
		t.Errorf("the same rules on other lines: %v", got)
	}
	next := parse("rules:\n" + rule("b", "write") + rule("a", "read") + rule("d", "read"))
	want := []string{"change b", "add d", "remove c", "reorder: rules are tried in the order [b a d]"}
	if got := ruleChanges(prev, next); !slices.Equal(got, want) {
		t.Errorf("ruleChanges = %q, want %q", got, want)
	}
}

// TestJoinGrantExpires: a join approved under a rule with max_ttl 1h gives
// a grant that expires an hour after approval, whatever the task's
// deadline: Check allows before and denies after, naming the expiry,
// without waiting for the decision index to be rebuilt. Asking again after
// it expired extends the same grant rather than finding it "in effect".
func TestJoinGrantExpires(t *testing.T) {
	var skip atomic.Int64
	cfg := testConfig(t)
	ctx := context.Background()
	srv, err := New(ctx, cfg, Options{Logger: quietLogger(), Version: "test", Now: func() time.Time {
		return time.Now().Add(time.Duration(skip.Load()))
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	admin := adminConn(t, srv)
	applyTestRules(t, admin)
	tasks := writv1.NewTaskServiceClient(admin)
	decide := writv1.NewDecisionServiceClient(admin)
	work, err := tasks.CreateTask(ctx, &writv1.CreateTaskRequest{Task: &writv1.Task{Title: "reconcile payments", Reason: "scenario", Owner: ceo,
		Members: []string{ceo}, Grants: []*writv1.Grant{{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}}},
		Deadline: time.Now().Add(24 * time.Hour).Unix()}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tasks.OpenTask(ctx, &writv1.TaskTransitionRequest{Id: work.GetId()}); err != nil {
		t.Fatal(err)
	}
	agent := actorConn(svidConn(t, srv, mintSVID(t, srv, stageBot)))
	joined, err := agent.join(t, work.GetId(), "nightly reconciliation reads staging orders", "read:db/staging/orders")
	if err != nil {
		t.Fatal(err)
	}
	q := joined.GetRequest()
	approvedAt := time.Unix(q.GetDecidedAt(), 0)
	wantExpiry := approvedAt.Add(time.Hour)
	if q.GetState() != "approved" || !strings.Contains(q.GetEffect(), "until "+wantExpiry.UTC().Format(time.RFC3339)) {
		t.Fatalf("the join = %v", joined)
	}
	shown, err := tasks.GetTask(ctx, &writv1.GetTaskRequest{Id: work.GetId()})
	if err != nil || len(shown.GetGrants()) != 2 {
		t.Fatalf("GetTask = %v, %v", shown, err)
	}
	if g := shown.GetGrants(); g[0].GetExpiresAt() != 0 || g[1].GetExpiresAt() != wantExpiry.Unix() {
		t.Fatalf("grant expiries = %d, %d; want 0 (until the task ends) and %d", g[0].GetExpiresAt(), g[1].GetExpiresAt(), wantExpiry.Unix())
	}
	if r := check(t, decide, "read", "db/staging/orders", stageBot); !r.GetAllow() {
		t.Fatalf("the approved join is not live: %v", r)
	}
	skip.Store(int64(time.Hour + time.Second))
	r := check(t, decide, "read", "db/staging/orders", stageBot)
	if r.GetAllow() || !strings.Contains(r.GetReason(), "grant 1 (read on db/staging/orders) on task "+work.GetId()+" expired at "+wantExpiry.UTC().Format(time.RFC3339)) {
		t.Fatalf("an hour and a second after approval: %v", r)
	}
	if r := check(t, decide, "read", "hr/salaries", ceo); !r.GetAllow() {
		t.Fatalf("the task's own grant stopped with the joined one: %v", r)
	}

	// The same grant asked for again after it expired is extended, once.
	now := srv.now()
	again := &review.Request{ID: "R-again", Kind: review.KindJoin, Task: work.GetId(), Chain: []spiffeid.ID{spiffeid.RequireFromString(stageBot)},
		Asks: []review.Ask{mustAsk(t, "read:db/staging/orders")}, TTL: 30 * time.Minute, State: review.StateApproved, Rule: "staging-read-by-agents", DecidedAt: now}
	for _, want := range []string{"joined task", "already in effect"} {
		if effect, err := srv.requestEffect(ctx, again); err != nil || !strings.Contains(effect, want) {
			t.Fatalf("effect = %q, %v; want …%s…", effect, err, want)
		}
	}
	shown, err = tasks.GetTask(ctx, &writv1.GetTaskRequest{Id: work.GetId()})
	if err != nil || len(shown.GetGrants()) != 2 || shown.GetGrants()[1].GetExpiresAt() != now.Add(30*time.Minute).Unix() {
		t.Fatalf("after asking again: %v, %v", shown.GetGrants(), err)
	}
	if r := check(t, decide, "read", "db/staging/orders", stageBot); !r.GetAllow() {
		t.Fatalf("the grant asked for again is not live: %v", r)
	}
	// An approval whose access time ended before it was applied adds nothing.
	late := *again
	late.ID, late.DecidedAt = "R-late", now.Add(-time.Hour)
	if _, err := srv.requestEffect(ctx, &late); codeOf(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "before it could be applied") {
		t.Fatalf("a late effect = %v", err)
	}
}

func mustAsk(t *testing.T, s string) review.Ask {
	t.Helper()
	a, err := review.ParseAsk("asks[0]", s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
