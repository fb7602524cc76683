package server

import (
	"context"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/task"
	"writ.dev/writ/task/review"
)

// TestRequestViewer: a request is seen by its requester, the person at the
// root of its chain, whoever may review it under its rule, the owner and
// members of its task, and local administrators; by nobody else.
func TestRequestViewer(t *testing.T) {
	id := func(s string) spiffeid.ID { return spiffeid.RequireFromString(s) }
	rules, err := review.ParseRules([]byte(testReviewRules), spiffeid.RequireTrustDomainFromString(testTD))
	if err != nil {
		t.Fatal(err)
	}
	member, err := task.ParsePattern(engineer)
	if err != nil {
		t.Fatal(err)
	}
	work := &task.Task{ID: "T-1", Owner: id(ceo), Members: []task.Member{{Pattern: member}}}
	// stage-bot, acting for alice, asks for a prod write: people (2) and
	// sam (security) review it.
	prod := &review.Request{ID: "R-1", Task: "T-1", Rule: "prod-write", Chain: []spiffeid.ID{id(stageBot), id(alice)}}
	// stage-bot's own staging read is approved without reviewers.
	auto := &review.Request{ID: "R-2", Task: "T-1", Rule: "staging-read-by-agents", Chain: []spiffeid.ID{id(stageBot)}}
	viewer := func(chain ...string) *requestViewer {
		v := &requestViewer{read: true, rules: rules, tasks: map[string]*task.Task{"T-1": work}}
		for _, c := range chain {
			v.chain = append(v.chain, id(c))
		}
		return v
	}
	for _, tc := range []struct {
		name string
		v    *requestViewer
		r    *review.Request
		want bool
	}{
		{"the requester", viewer(stageBot), prod, true},
		{"the person the requester acts for", viewer(alice), prod, true},
		{"an eligible reviewer", viewer(bob), prod, true},
		{"security", viewer(sam), prod, true},
		{"the task's owner", viewer(ceo), auto, true},
		{"a member of the task", viewer(engineer), auto, true},
		{"a local administrator", &requestViewer{admin: true}, auto, true},
		{"a person with no part in it", viewer(bob), auto, false},
		{"an agent with no part in it", viewer(bot), prod, false},
		{"a reviewer acting for the requester's person", viewer(bob, alice), prod, false},
		{"the root of a chain, not a person", viewer(stageBot), &review.Request{ID: "R-3", Task: "T-1", Rule: "staging-read-by-agents", Chain: []spiffeid.ID{id(bot), id(stageBot)}}, false},
		{"anyone, on a task that is gone", viewer(engineer), &review.Request{ID: "R-4", Task: "T-gone", Rule: "staging-read-by-agents", Chain: []spiffeid.ID{id(stageBot)}}, false},
		{"nobody", viewer(), prod, false},
	} {
		if tc.name == "anyone, on a task that is gone" {
			tc.v.tasks["T-gone"] = nil
		}
		if got := tc.v.may(context.Background(), tc.r); got != tc.want {
			t.Errorf("%s: may = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestRequestsHiddenFromOutsiders: over the API, someone with no part in a
// request is told it does not exist, in the words used for an ID nobody
// made, whether they show, cancel or review it, and their list leaves it
// out; the requester and a member of the task still see it.
func TestRequestsHiddenFromOutsiders(t *testing.T) {
	srv, _ := startTokenEndpoint(t)
	admin := adminConn(t, srv)
	applyTestRules(t, admin)
	work := openTask(t, writv1.NewTaskServiceClient(admin), "reconcile payments", []string{ceo},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}})
	agent := actorConn(svidConn(t, srv, mintSVID(t, srv, stageBot)))
	outsider := actorConn(svidConn(t, srv, signIn(t, srv, bob)))
	ceoA := actorConn(svidConn(t, srv, signIn(t, srv, ceo)))
	auto, err := agent.join(t, work.GetId(), "nightly reads", "read:db/staging/orders")
	if err != nil {
		t.Fatal(err)
	}
	rid := auto.GetRequest().GetId()

	_, missing := outsider.requests.GetRequest(t.Context(), &writv1.GetAccessRequestRequest{Id: "R-NOSUCHREQUEST"})
	wantCode(t, missing, codes.NotFound, "not found")
	_, hidden := outsider.requests.GetRequest(t.Context(), &writv1.GetAccessRequestRequest{Id: rid})
	wantCode(t, hidden, codes.NotFound, rid)
	if want := strings.ReplaceAll(missing.Error(), "R-NOSUCHREQUEST", rid); hidden.Error() != want {
		t.Errorf("hidden = %q, want the words for a missing request: %q", hidden, want)
	}
	_, err = outsider.requests.CancelRequest(t.Context(), &writv1.CancelAccessRequestRequest{Id: rid})
	wantCode(t, err, codes.NotFound, rid)
	_, err = outsider.reviews.Approve(t.Context(), &writv1.ReviewAccessRequest{Id: rid, Reason: "x"})
	wantCode(t, err, codes.NotFound, rid)
	list, err := outsider.requests.ListRequests(t.Context(), &writv1.ListAccessRequestsRequest{})
	if err != nil || len(list.GetRequests()) != 0 {
		t.Fatalf("the outsider's list = %v, %v", list, err)
	}
	for name, a := range map[string]actor{"the requester": agent, "the task's owner": ceoA} {
		if _, err := a.requests.GetRequest(t.Context(), &writv1.GetAccessRequestRequest{Id: rid}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if list, err := a.requests.ListRequests(t.Context(), &writv1.ListAccessRequestsRequest{}); err != nil || len(list.GetRequests()) != 1 {
			t.Errorf("%s's list = %v, %v", name, list, err)
		}
	}
	if _, err := writv1.NewRequestServiceClient(admin).GetRequest(t.Context(), &writv1.GetAccessRequestRequest{Id: rid}); err != nil {
		t.Errorf("a local administrator: %v", err)
	}
}
