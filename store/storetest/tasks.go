package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"writ.dev/writ/audit"
	"writ.dev/writ/store"
)

var taskTests = []struct {
	name string
	fn   func(t *testing.T, s store.Store)
}{
	{"TaskCompareAndSet", testTaskCAS},
	{"TasksEndingSince", testTasksEndingSince},
	{"StandingGrants", testStandingGrants},
	{"DelegationKeys", testDelegationKeys},
	{"Requests", testRequests},
	{"ReviewRules", testReviewRules},
}

func testTaskCAS(t *testing.T, s store.Store) {
	ctx := t.Context()
	rev := mustRevision(t, s)
	rec := store.TaskRecord{ID: "T-1", State: "draft", Deadline: time.Now().Add(time.Hour), Doc: []byte(`{"id":"T-1"}`)}
	got, err := s.PutTask(ctx, rec, 0, event(audit.EventTaskCreate))
	if err != nil {
		t.Fatal(err)
	}
	if got.Revision != rev+1 {
		t.Fatalf("task revision %d, want %d: a task change takes a revision", got.Revision, rev+1)
	}
	if _, err := s.PutTask(ctx, rec, 0, event("again")); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("creating a taken id: %v", err)
	}
	open := got
	open.State, open.Doc = "open", []byte(`{"id":"T-1","state":"open"}`)
	opened, err := s.PutTask(ctx, open, got.Revision, event(audit.EventTaskOpen))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutTask(ctx, open, got.Revision, event("stale")); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale update: %v", err)
	}
	if _, err := s.PutTask(ctx, store.TaskRecord{ID: "T-9", State: "open", Doc: []byte("{}")}, 5, event("x")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update of a missing task: %v", err)
	}
	if _, err := s.PutTask(ctx, store.TaskRecord{ID: "T-2", State: "draft", Doc: []byte("{}")}, 0); !errors.Is(err, store.ErrNoAuditEvent) {
		t.Fatalf("a change without its event: %v", err)
	}
	back, err := s.GetTask(ctx, "T-1")
	if err != nil || back.State != "open" || string(back.Doc) != string(opened.Doc) || back.Revision != opened.Revision {
		t.Fatalf("GetTask = %+v, %v", back, err)
	}
	if _, err := s.PutTask(ctx, store.TaskRecord{ID: "T-2", State: "draft", Doc: []byte("{}")}, 0, event("t2")); err != nil {
		t.Fatal(err)
	}
	openOnly, err := s.ListTasks(ctx, "open")
	if err != nil || len(openOnly) != 1 || openOnly[0].ID != "T-1" {
		t.Fatalf("ListTasks(open) = %v, %v", openOnly, err)
	}
	all, err := s.ListTasks(ctx)
	if err != nil || len(all) != 2 {
		t.Fatalf("ListTasks() = %v, %v", all, err)
	}
	if _, err := s.GetTask(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetTask of a missing task: %v", err)
	}
}

func testStandingGrants(t *testing.T, s store.Store) {
	ctx := t.Context()
	g := store.StandingGrantRecord{ID: "billing-reads-db", Doc: []byte(`{"id":"billing-reads-db"}`)}
	if _, err := s.PutStandingGrant(ctx, g, event("grant")); err != nil {
		t.Fatal(err)
	}
	g.Doc = []byte(`{"id":"billing-reads-db","v":2}`)
	if _, err := s.PutStandingGrant(ctx, g, event("grant v2")); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListStandingGrants(ctx)
	if err != nil || len(list) != 1 || string(list[0].Doc) != string(g.Doc) {
		t.Fatalf("ListStandingGrants = %v, %v", list, err)
	}
	if err := s.DeleteStandingGrant(ctx, g.ID, event("revoke")); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteStandingGrant(ctx, g.ID, event("again")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleting twice: %v", err)
	}
}

func testDelegationKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	k := store.DelegationKey{KeyID: "k1", ServerID: "a", PublicKeyDER: []byte{1, 2}}
	if err := s.PutDelegationKey(ctx, k, event("key")); err != nil {
		t.Fatal(err)
	}
	size := auditSize(t, s)
	if err := s.PutDelegationKey(ctx, k, event("again")); err != nil {
		t.Fatalf("re-recording the same key: %v", err)
	}
	if auditSize(t, s) != size {
		t.Fatal("re-recording the same key wrote an event")
	}
	other := k
	other.PublicKeyDER = []byte{3}
	if err := s.PutDelegationKey(ctx, other, event("swap")); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("another key under a recorded kid: %v", err)
	}
	keys, err := s.ListDelegationKeys(ctx)
	if err != nil || len(keys) != 1 || keys[0].ServerID != "a" {
		t.Fatalf("ListDelegationKeys = %v, %v", keys, err)
	}
}

// testTasksEndingSince checks the listing the decision index is built from:
// tasks still to end plus those ended since a time, whatever ended before.
func testTasksEndingSince(t *testing.T, s store.Store) {
	ctx := t.Context()
	t0 := time.Unix(1_900_000_000, 0).UTC()
	put := func(id, state string, deadline, endsAt time.Time) store.TaskRecord {
		t.Helper()
		r, err := s.PutTask(ctx, store.TaskRecord{ID: id, State: state, Deadline: deadline, EndsAt: endsAt, Doc: []byte(`{"id":"` + id + `"}`)}, 0, event("task.create"))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	put("E-draft", "draft", t0.Add(time.Hour), time.Time{})
	put("E-open", "open", t0.Add(time.Hour), time.Time{})
	put("E-open-past", "open", t0.Add(-48*time.Hour), time.Time{})
	put("E-closed-old", "closed", t0.Add(time.Hour), t0.Add(-25*time.Hour))
	put("E-closed-new", "closed", t0.Add(time.Hour), t0.Add(-time.Hour))
	put("E-expired-old", "expired", t0.Add(-30*time.Hour), t0.Add(-30*time.Hour))
	put("E-expired-edge", "expired", t0.Add(-24*time.Hour), t0.Add(-24*time.Hour))

	back, err := s.GetTask(ctx, "E-open")
	if err != nil {
		t.Fatal(err)
	}
	if !back.EndsAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("a task not ended: EndsAt %v; want its deadline", back.EndsAt)
	}
	if back, err := s.GetTask(ctx, "E-closed-new"); err != nil || !back.EndsAt.Equal(t0.Add(-time.Hour)) {
		t.Fatalf("a closed task: EndsAt %v, %v; want when it closed", back.EndsAt, err)
	}
	ids := func(rs []store.TaskRecord) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return out
	}
	since := t0.Add(-24 * time.Hour)
	got, err := s.ListTasksEndingSince(ctx, since, "open", "closed", "expired")
	want := []string{"E-closed-new", "E-expired-edge", "E-open"}
	if err != nil || !slices.Equal(ids(got), want) {
		t.Fatalf("ListTasksEndingSince(t0-24h, open, closed, expired) = %v, %v; want %v", ids(got), err, want)
	}
	revs, err := s.ListTaskRevisionsEndingSince(ctx, since, "open", "closed", "expired")
	if err != nil || !slices.Equal(ids(revs), ids(got)) {
		t.Fatalf("ListTaskRevisionsEndingSince(t0-24h, open, closed, expired) = %v, %v; want %v", ids(revs), err, ids(got))
	}
	for i := range revs {
		if revs[i].Doc != nil || revs[i].Revision != got[i].Revision || revs[i].State != got[i].State || !revs[i].EndsAt.Equal(got[i].EndsAt) {
			t.Fatalf("ListTaskRevisionsEndingSince: %s = %+v; want %+v without its document", revs[i].ID, revs[i], got[i])
		}
	}
	all, err := s.ListTasksEndingSince(ctx, since)
	want = []string{"E-closed-new", "E-draft", "E-expired-edge", "E-open"}
	if err != nil || !slices.Equal(ids(all), want) {
		t.Fatalf("ListTasksEndingSince(t0-24h) = %v, %v; want %v", ids(all), err, want)
	}
	// Closing a task moves its end: it drops out once since passes it.
	closed := back
	closed.State, closed.EndsAt = "closed", t0.Add(-23*time.Hour)
	if _, err := s.PutTask(ctx, closed, back.Revision, event("task.close")); err != nil {
		t.Fatal(err)
	}
	got, err = s.ListTasksEndingSince(ctx, t0.Add(-22*time.Hour), "open", "closed")
	want = []string{"E-closed-new"}
	if err != nil || !slices.Equal(ids(got), want) {
		t.Fatalf("after closing E-open: ListTasksEndingSince(t0-22h, open, closed) = %v, %v; want %v", ids(got), err, want)
	}
}

func testRequests(t *testing.T, s store.Store) {
	ctx := t.Context()
	rev := mustRevision(t, s)
	until := time.Unix(time.Now().Add(time.Hour).Unix(), 0).UTC()
	rec := store.RequestRecord{ID: "R-1", State: "pending", Task: "T-1", PendingUntil: until, Doc: []byte(`{"id":"R-1"}`)}
	got, err := s.PutRequest(ctx, rec, 0, nil, event(audit.EventRequestCreate))
	if err != nil {
		t.Fatal(err)
	}
	if got.Revision != rev+1 {
		t.Fatalf("request revision %d, want %d: a request change takes a revision", got.Revision, rev+1)
	}
	if _, err := s.PutRequest(ctx, rec, 0, nil, event("again")); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("creating a taken id: %v", err)
	}
	if _, err := s.PutRequest(ctx, store.RequestRecord{ID: "R-2", State: "pending", Task: "T-1", Doc: []byte("{}")}, 0, nil); !errors.Is(err, store.ErrNoAuditEvent) {
		t.Fatalf("a change without its event: %v", err)
	}
	size := auditSize(t, s)

	// A review and the request's change commit together.
	rv := &store.ReviewRecord{Doc: []byte(`{"verdict":"approve","n":1}`)}
	second, err := s.PutRequest(ctx, got, got.Revision, rv, event(audit.EventRequestReview))
	if err != nil {
		t.Fatal(err)
	}
	if rv.Seq != 1 || rv.Revision != second.Revision || rv.RequestID != "R-1" {
		t.Fatalf("review numbered %+v, want seq 1 at revision %d", rv, second.Revision)
	}
	// A reviewer who read the request before that review loses the race
	// and nothing of its review is kept.
	if _, err := s.PutRequest(ctx, got, got.Revision, &store.ReviewRecord{Doc: []byte(`{"late":true}`)}, event("stale")); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale review: %v", err)
	}
	approved := second
	approved.State, approved.Doc = "approved", []byte(`{"id":"R-1","state":"approved"}`)
	final, err := s.PutRequest(ctx, approved, second.Revision, &store.ReviewRecord{Doc: []byte(`{"verdict":"approve","n":2}`)}, event(audit.EventRequestReview), event(audit.EventRequestApprove))
	if err != nil {
		t.Fatal(err)
	}
	if n := auditSize(t, s); n != size+3 {
		t.Fatalf("audit size %d, want %d: each change appends its own events and a refused one none", n, size+3)
	}
	reviews, err := s.ListReviews(ctx, "R-1")
	if err != nil || len(reviews) != 2 || reviews[0].Seq != 1 || reviews[1].Seq != 2 || string(reviews[1].Doc) != `{"verdict":"approve","n":2}` {
		t.Fatalf("ListReviews = %+v, %v", reviews, err)
	}
	back, err := s.GetRequest(ctx, "R-1")
	if err != nil || back.State != "approved" || back.Task != "T-1" || !back.PendingUntil.Equal(until) || back.Revision != final.Revision || string(back.Doc) != string(approved.Doc) {
		t.Fatalf("GetRequest = %+v, %v", back, err)
	}
	if _, err := s.PutRequest(ctx, store.RequestRecord{ID: "R-9", State: "pending", Task: "T-1", Doc: []byte("{}")}, 4, nil, event("x")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update of a missing request: %v", err)
	}
	if _, err := s.PutRequest(ctx, store.RequestRecord{ID: "R-2", State: "pending", Task: "T-2", PendingUntil: until, Doc: []byte("{}")}, 0, nil, event("r2")); err != nil {
		t.Fatal(err)
	}
	pending, err := s.ListRequests(ctx, "pending")
	if err != nil || len(pending) != 1 || pending[0].ID != "R-2" {
		t.Fatalf("ListRequests(pending) = %v, %v", pending, err)
	}
	all, err := s.ListRequests(ctx)
	if err != nil || len(all) != 2 {
		t.Fatalf("ListRequests() = %v, %v", all, err)
	}
	if _, err := s.GetRequest(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetRequest of a missing request: %v", err)
	}
	if rs, err := s.ListReviews(ctx, "R-2"); err != nil || len(rs) != 0 {
		t.Fatalf("ListReviews of a request without reviews = %v, %v", rs, err)
	}
}

func testReviewRules(t *testing.T, s store.Store) {
	ctx := t.Context()
	if _, err := s.GetReviewRules(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetReviewRules before any apply: %v", err)
	}
	first, err := s.PutReviewRules(ctx, "rules: []\n", 0, event(audit.EventReviewRulesApply))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutReviewRules(ctx, "rules: [x]\n", 0, event("second first")); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("a second first apply: %v", err)
	}
	next, err := s.PutReviewRules(ctx, "rules: [y]\n", first.Revision, event(audit.EventReviewRulesApply))
	if err != nil || next.Revision <= first.Revision {
		t.Fatalf("PutReviewRules = %+v, %v", next, err)
	}
	if _, err := s.PutReviewRules(ctx, "rules: [z]\n", first.Revision, event("stale")); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("a stale apply: %v", err)
	}
	if _, err := s.PutReviewRules(ctx, "rules: [z]\n", next.Revision); !errors.Is(err, store.ErrNoAuditEvent) {
		t.Fatalf("an apply without its event: %v", err)
	}
	got, err := s.GetReviewRules(ctx)
	if err != nil || got.Text != "rules: [y]\n" || got.Revision != next.Revision {
		t.Fatalf("GetReviewRules = %+v, %v", got, err)
	}
}
