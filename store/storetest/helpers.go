package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"writ.dev/writ/store"
)

// rule returns a distinct, complete rule for each i.
func rule(i int) store.Entry {
	return store.Entry{
		SPIFFEID: fmt.Sprintf("spiffe://example.org/workload/%d", i),
		ParentID: fmt.Sprintf("spiffe://example.org/agent/%d", i%100),
		Selectors: []store.Selector{
			{Type: "k8s", Value: fmt.Sprintf("ns:ns-%d", i%50)},
			{Type: "k8s", Value: fmt.Sprintf("sa:sa-%d", i)},
			{Type: "unix", Value: fmt.Sprintf("uid:%d", i%1000)},
		},
		X509TTL:  time.Hour,
		JWTTTL:   5 * time.Minute,
		DNSNames: []string{fmt.Sprintf("w%d.example.org", i)},
		Hint:     "workload",
	}
}

func create(t testing.TB, s store.Store, entries ...store.Entry) []store.Entry {
	t.Helper()
	got, err := s.CreateEntries(t.Context(), entries, testEvent)
	if err != nil {
		t.Fatalf("CreateEntries: %v", err)
	}
	if len(got) != len(entries) {
		t.Fatalf("CreateEntries returned %d entries for %d", len(got), len(entries))
	}
	return got
}

func get(t testing.TB, s store.Store, id string) store.Entry {
	t.Helper()
	e, err := s.GetEntry(t.Context(), id)
	if err != nil {
		t.Fatalf("GetEntry(%q): %v", id, err)
	}
	return e
}

func list(t testing.TB, s store.Store, f store.EntryFilter) []store.Entry {
	t.Helper()
	got, err := s.ListEntries(t.Context(), f)
	if err != nil {
		t.Fatalf("ListEntries(%+v): %v", f, err)
	}
	return got
}

func changes(t testing.TB, s store.Store, since int64, limit int) []store.Change {
	t.Helper()
	got, err := s.ChangesSince(t.Context(), since, limit)
	if err != nil {
		t.Fatalf("ChangesSince(%d, %d): %v", since, limit, err)
	}
	return got
}

func ids(entries []store.Entry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.ID)
	}
	return out
}

func wantRevision(t testing.TB, s store.Store, want int64) {
	t.Helper()
	got, err := s.Revision(t.Context())
	if err != nil {
		t.Fatalf("Revision: %v", err)
	}
	if got != want {
		t.Errorf("Revision = %d, want %d", got, want)
	}
}

func equal[T any](t testing.TB, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got  %+v\n want %+v", what, got, want)
	}
}

// wantErr checks that err is target and mentions substr.
func wantErr(t testing.TB, what string, err, target error, substr string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: error %v, want %v", what, err, target)
		return
	}
	if !strings.Contains(err.Error(), substr) {
		t.Errorf("%s: error %q does not mention %q", what, err, substr)
	}
}

func sel(typ, value string) store.Selector { return store.Selector{Type: typ, Value: value} }

func put(rev int64, id string) store.Change {
	return store.Change{Revision: rev, EntryID: id, Op: store.OpPut}
}

func del(rev int64, id string) store.Change {
	return store.Change{Revision: rev, EntryID: id, Op: store.OpDelete}
}

// testEvent is the audit event the suite gives every change: the store
// keeps whatever bytes it is given.
var testEvent = store.AuditEvent(`{"time":"2026-01-01T00:00:00Z","type":"test.change"}`)

func mustRevision(t testing.TB, s store.Store) int64 {
	t.Helper()
	rev, err := s.Revision(t.Context())
	if err != nil {
		t.Fatalf("Revision: %v", err)
	}
	return rev
}
