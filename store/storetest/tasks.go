package storetest

import (
	"errors"
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
	{"StandingGrants", testStandingGrants},
	{"DelegationKeys", testDelegationKeys},
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
