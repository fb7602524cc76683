// Package storetest is the conformance suite of store engines: every engine
// runs Run and passes the same tests, and runs the same benchmarks.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"writ.dev/writ/store"
)

// Run runs the conformance suite. open must return a new, empty store that
// no other test uses, and close it when the test ends.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"EmptyStore", testEmptyStore},
		{"CreateGetRoundTrip", testRoundTrip},
		{"CreateMinimalEntry", testMinimalEntry},
		{"CallerIDs", testCallerIDs},
		{"DuplicateID", testDuplicateID},
		{"Uniqueness", testUniqueness},
		{"BatchAllOrNothing", testBatchAllOrNothing},
		{"DuplicateWithinBatch", testDuplicateWithinBatch},
		{"CanceledWriteWritesNothing", testCanceledWrite},
		{"Update", testUpdate},
		{"UpdateStaleRevision", testUpdateStaleRevision},
		{"UpdateUnknown", testUpdateUnknown},
		{"UpdateIntoDuplicate", testUpdateIntoDuplicate},
		{"Delete", testDelete},
		{"GetUnknown", testGetUnknown},
		{"ListFilters", testListFilters},
		{"ParentSelectors", testParentSelectors},
		{"ListPaging", testListPaging},
		{"Changes", testChanges},
		{"ChangesSinceLimit", testChangesSinceLimit},
		{"ConcurrentWriters", func(t *testing.T, s store.Store) { ConcurrentWrites(t, s) }},
		{"CACerts", testCACerts},
		{"JWTKeys", testJWTKeys},
		{"Locks", testLocks},
		{"LockErrors", testLockErrors},
	}
	tests = append(tests, auditTests...)
	tests = append(tests, agentTests...)
	tests = append(tests, taskTests...)
	tests = append(tests, watchTests...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
}

func testEmptyStore(t *testing.T, s store.Store) {
	ctx := t.Context()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	wantRevision(t, s, 0)
	if got := list(t, s, store.EntryFilter{}); len(got) != 0 {
		t.Errorf("ListEntries = %v, want none", got)
	}
	if got := changes(t, s, 0, 0); len(got) != 0 {
		t.Errorf("ChangesSince(0) = %v, want none", got)
	}
	got, err := s.CreateEntries(ctx, nil, testEvent)
	if err != nil || len(got) != 0 {
		t.Errorf("CreateEntries(nil) = %v, %v; want nothing, nil", got, err)
	}
	wantRevision(t, s, 0)
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func testRoundTrip(t *testing.T, s store.Store) {
	in := store.Entry{
		SPIFFEID: "spiffe://example.org/web",
		ParentID: "spiffe://example.org/node/1",
		// Out of order and repeated: the store keeps a sorted set.
		Selectors: []store.Selector{sel("unix", "uid:1000"), sel("k8s", "ns:prod"), sel("unix", "uid:1000"), sel("k8s", "ns:Prod")},
		X509TTL:   time.Hour,
		JWTTTL:    5 * time.Minute,
		DNSNames:  []string{"web.example.org", "web"},
		Hint:      "frontend",
		ExpiresAt: time.Date(2031, 1, 2, 3, 4, 5, 999, time.FixedZone("CET", 3600)),
		// Set by the store; what the caller passes is ignored.
		Revision:  42,
		CreatedAt: time.Unix(1, 0),
	}
	before := time.Now().Truncate(time.Second)
	created := create(t, s, in)[0]
	after := time.Now()

	if !uuidV4.MatchString(created.ID) {
		t.Errorf("assigned ID %q is not a random UUID", created.ID)
	}
	want := in
	want.ID = created.ID
	want.Selectors = []store.Selector{sel("k8s", "ns:Prod"), sel("k8s", "ns:prod"), sel("unix", "uid:1000")}
	want.ExpiresAt = time.Date(2031, 1, 2, 2, 4, 5, 0, time.UTC)
	want.Revision = 1
	want.CreatedAt, want.UpdatedAt = created.CreatedAt, created.CreatedAt
	equal(t, "created", created, want)
	if created.CreatedAt.Before(before) || created.CreatedAt.After(after) || created.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt = %v, want a UTC time between %v and %v", created.CreatedAt, before, after)
	}
	if created.CreatedAt.Nanosecond() != 0 {
		t.Errorf("CreatedAt = %v, want whole seconds", created.CreatedAt)
	}
	equal(t, "GetEntry", get(t, s, created.ID), want)
	equal(t, "ListEntries", list(t, s, store.EntryFilter{}), []store.Entry{want})
	wantRevision(t, s, 1)
	equal(t, "changes", changes(t, s, 0, 0), []store.Change{put(1, created.ID)})
}

func testMinimalEntry(t *testing.T, s store.Store) {
	in := store.Entry{SPIFFEID: "spiffe://example.org/a", ParentID: "spiffe://example.org/b"}
	created := create(t, s, in)[0]
	want := in
	want.ID, want.Revision = created.ID, 1
	want.CreatedAt, want.UpdatedAt = created.CreatedAt, created.UpdatedAt
	equal(t, "created", created, want)
	equal(t, "GetEntry", get(t, s, created.ID), want)
}

func testCallerIDs(t *testing.T, s store.Store) {
	ctx := t.Context()
	long := strings.Repeat("x", 128)
	var valid []store.Entry
	for i, id := range []string{"a", "A.b_c-9", long} {
		e := rule(i)
		e.ID = id
		valid = append(valid, e)
	}
	for i, got := range create(t, s, valid...) {
		if got.ID != valid[i].ID {
			t.Errorf("entries[%d].ID = %q, want %q", i, got.ID, valid[i].ID)
		}
	}
	for _, id := range []string{long + "x", "has space", "a/b", "ü", "a\x00"} {
		e := rule(100)
		e.ID = id
		_, err := s.CreateEntries(ctx, []store.Entry{rule(101), e}, testEvent)
		if err == nil || !strings.Contains(err.Error(), "entries[1]") {
			t.Errorf("CreateEntries with ID %q: error %v, want one naming entries[1]", id, err)
		}
	}
	wantRevision(t, s, 1)
	if n := len(list(t, s, store.EntryFilter{})); n != len(valid) {
		t.Errorf("%d entries stored, want %d", n, len(valid))
	}
}

func testDuplicateID(t *testing.T, s store.Store) {
	ctx := t.Context()
	e := rule(0)
	e.ID = "taken"
	create(t, s, e)
	other, again := rule(1), rule(2)
	other.ID, again.ID = "other", "taken"
	_, err := s.CreateEntries(ctx, []store.Entry{other, again}, testEvent)
	wantErr(t, "CreateEntries", err, store.ErrAlreadyExists, "entries[1]")
	wantRevision(t, s, 1)
	if _, err := s.GetEntry(ctx, "other"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetEntry of entry in failed batch: %v, want ErrNotFound", err)
	}
}

func testUniqueness(t *testing.T, s store.Store) {
	ctx := t.Context()
	base := rule(0)
	create(t, s, base)

	same := base
	same.Hint, same.X509TTL, same.DNSNames = "other hint", time.Minute, []string{"x"}
	same.Selectors = append(slices.Clone(base.Selectors), base.Selectors[0])
	slices.Reverse(same.Selectors)
	_, err := s.CreateEntries(ctx, []store.Entry{same}, testEvent)
	wantErr(t, "CreateEntries of a rule differing only in hint, TTL, DNS names and selector order", err, store.ErrAlreadyExists, "entries[0]")

	otherParent := base
	otherParent.ParentID += "-2"
	moreSelectors := base
	moreSelectors.Selectors = append(append([]store.Selector{}, base.Selectors...), sel("extra", "1"))
	fewerSelectors := base
	fewerSelectors.Selectors = base.Selectors[:1]
	noSelectors := base
	noSelectors.Selectors = nil
	otherSPIFFEID := base
	otherSPIFFEID.SPIFFEID += "-2"
	create(t, s, otherParent, moreSelectors, fewerSelectors, noSelectors, otherSPIFFEID)
	wantRevision(t, s, 2)
}

func testBatchAllOrNothing(t *testing.T, s store.Store) {
	ctx := t.Context()
	existing := create(t, s, rule(0))[0]
	batch := make([]store.Entry, 10)
	for i := range batch {
		batch[i] = rule(i + 1)
	}
	batch[5] = rule(0)
	slices.Reverse(batch[5].Selectors)
	_, err := s.CreateEntries(ctx, batch, testEvent)
	wantErr(t, "CreateEntries", err, store.ErrAlreadyExists, "entries[5]")
	if !strings.Contains(err.Error(), existing.ID) {
		t.Errorf("error %q does not name the existing entry %s", err, existing.ID)
	}
	wantRevision(t, s, 1)
	equal(t, "entries after failed batch", list(t, s, store.EntryFilter{}), []store.Entry{existing})
	if got := changes(t, s, 0, 0); len(got) != 1 {
		t.Errorf("changes after failed batch = %v, want only the first create", got)
	}
	// The batch goes through once the duplicate is gone.
	batch[5] = rule(6)
	create(t, s, batch...)
	wantRevision(t, s, 2)
}

func testDuplicateWithinBatch(t *testing.T, s store.Store) {
	ctx := t.Context()
	batch := make([]store.Entry, 10)
	for i := range batch {
		batch[i] = rule(i)
	}
	batch[7] = rule(2)
	batch[7].Selectors = append([]store.Selector{batch[7].Selectors[1]}, batch[7].Selectors...)
	_, err := s.CreateEntries(ctx, batch, testEvent)
	wantErr(t, "CreateEntries with the same rule twice", err, store.ErrAlreadyExists, "entries[7]")

	batch[7] = rule(7)
	batch[3].ID, batch[6].ID = "same", "same"
	_, err = s.CreateEntries(ctx, batch, testEvent)
	wantErr(t, "CreateEntries with the same ID twice", err, store.ErrAlreadyExists, "entries[6]")

	wantRevision(t, s, 0)
	if got := list(t, s, store.EntryFilter{}); len(got) != 0 {
		t.Errorf("entries after failed batches = %v, want none", got)
	}
}

func testCanceledWrite(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.CreateEntries(ctx, []store.Entry{rule(0)}, testEvent); err == nil {
		t.Fatal("CreateEntries with a canceled context succeeded")
	}
	wantRevision(t, s, 0)
	create(t, s, rule(0))
	wantRevision(t, s, 1)
}

func testUpdate(t *testing.T, s store.Store) {
	ctx := t.Context()
	old := create(t, s, rule(0))[0]
	create(t, s, rule(1))

	in := old
	in.SPIFFEID = "spiffe://example.org/updated"
	in.ParentID = "spiffe://example.org/updated-parent"
	in.Selectors = []store.Selector{sel("new", "b"), sel("new", "a")}
	in.X509TTL, in.JWTTTL = 2*time.Hour, time.Minute
	in.DNSNames = []string{"updated.example.org"}
	in.Hint = "updated"
	in.ExpiresAt = time.Date(2040, 5, 6, 7, 8, 9, 0, time.UTC)
	in.CreatedAt = time.Unix(1, 0) // ignored
	got, err := s.UpdateEntry(ctx, in, testEvent)
	if err != nil {
		t.Fatalf("UpdateEntry: %v", err)
	}
	want := in
	want.Selectors = []store.Selector{sel("new", "a"), sel("new", "b")}
	want.Revision = 3
	want.CreatedAt, want.UpdatedAt = old.CreatedAt, got.UpdatedAt
	equal(t, "updated", got, want)
	if got.UpdatedAt.Before(old.UpdatedAt) {
		t.Errorf("UpdatedAt %v before the creation %v", got.UpdatedAt, old.UpdatedAt)
	}
	equal(t, "GetEntry", get(t, s, old.ID), want)
	if got := list(t, s, store.EntryFilter{Selectors: old.Selectors[:1]}); len(got) != 0 {
		t.Errorf("entries still found by a removed selector: %v", got)
	}
	equal(t, "by new selector", list(t, s, store.EntryFilter{Selectors: []store.Selector{sel("new", "a")}}), []store.Entry{want})

	// Clearing optional fields clears them.
	in = want
	in.Selectors, in.DNSNames, in.ExpiresAt, in.Hint, in.X509TTL = nil, nil, time.Time{}, "", 0
	got, err = s.UpdateEntry(ctx, in, testEvent)
	if err != nil {
		t.Fatalf("UpdateEntry clearing fields: %v", err)
	}
	want = in
	want.Revision, want.UpdatedAt = 4, got.UpdatedAt
	equal(t, "cleared", get(t, s, old.ID), want)
	equal(t, "changes", changes(t, s, 2, 0), []store.Change{put(3, old.ID), put(4, old.ID)})
}

func testUpdateStaleRevision(t *testing.T, s store.Store) {
	ctx := t.Context()
	e := create(t, s, rule(0))[0]
	e.Hint = "first"
	first, err := s.UpdateEntry(ctx, e, testEvent) // e.Revision is current
	if err != nil {
		t.Fatalf("UpdateEntry at the current revision: %v", err)
	}
	e.Hint = "stale"
	_, err = s.UpdateEntry(ctx, e, testEvent)
	wantErr(t, "UpdateEntry at a stale revision", err, store.ErrConflict, e.ID)
	wantRevision(t, s, 2)
	equal(t, "after conflict", get(t, s, e.ID), first)

	e.Revision = 0 // unconditional
	if _, err := s.UpdateEntry(ctx, e, testEvent); err != nil {
		t.Fatalf("UpdateEntry without a revision: %v", err)
	}
	wantRevision(t, s, 3)
}

func testUpdateUnknown(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, id := range []string{"missing", "", "bad id"} {
		e := rule(0)
		e.ID = id
		_, err := s.UpdateEntry(ctx, e, testEvent)
		wantErr(t, fmt.Sprintf("UpdateEntry(%q)", id), err, store.ErrNotFound, "")
	}
	wantRevision(t, s, 0)
	if got := list(t, s, store.EntryFilter{}); len(got) != 0 {
		t.Errorf("UpdateEntry of unknown IDs stored %v", got)
	}
}

func testUpdateIntoDuplicate(t *testing.T, s store.Store) {
	ctx := t.Context()
	created := create(t, s, rule(0), rule(1))
	a, b := created[0], created[1]
	dup := b
	dup.SPIFFEID, dup.ParentID, dup.Selectors = a.SPIFFEID, a.ParentID, a.Selectors
	_, err := s.UpdateEntry(ctx, dup, testEvent)
	wantErr(t, "UpdateEntry into another entry's rule", err, store.ErrAlreadyExists, a.ID)
	wantRevision(t, s, 1)
	equal(t, "after failed update", get(t, s, b.ID), b)

	// An entry does not collide with itself.
	a.Hint = "changed"
	if _, err := s.UpdateEntry(ctx, a, testEvent); err != nil {
		t.Fatalf("UpdateEntry keeping the rule: %v", err)
	}
}

func testDelete(t *testing.T, s store.Store) {
	ctx := t.Context()
	created := create(t, s, rule(0), rule(1))
	gone, kept := created[0], created[1]
	got, err := s.DeleteEntry(ctx, gone.ID, testEvent)
	if err != nil {
		t.Fatalf("DeleteEntry: %v", err)
	}
	equal(t, "deleted entry", got, gone)
	if _, err := s.GetEntry(ctx, gone.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetEntry after delete: %v, want ErrNotFound", err)
	}
	if got := list(t, s, store.EntryFilter{Selectors: gone.Selectors}); len(got) != 0 {
		t.Errorf("deleted entry still found by its selectors: %v", got)
	}
	equal(t, "remaining", list(t, s, store.EntryFilter{}), []store.Entry{kept})
	wantRevision(t, s, 2)

	_, err = s.DeleteEntry(ctx, gone.ID, testEvent)
	wantErr(t, "DeleteEntry again", err, store.ErrNotFound, gone.ID)
	_, err = s.DeleteEntry(ctx, "bad id", testEvent)
	wantErr(t, "DeleteEntry of an invalid ID", err, store.ErrNotFound, "")
	wantRevision(t, s, 2)
	equal(t, "changes", changes(t, s, 1, 0), []store.Change{del(2, gone.ID)})

	// The rule and the ID are free again.
	again := rule(0)
	again.ID = gone.ID
	create(t, s, again)
}

func testGetUnknown(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, rule(0))
	for _, id := range []string{"missing", "", "bad id!", strings.Repeat("x", 129)} {
		_, err := s.GetEntry(ctx, id)
		wantErr(t, fmt.Sprintf("GetEntry(%q)", id), err, store.ErrNotFound, "")
	}
}

func testListFilters(t *testing.T, s store.Store) {
	sels := func(ss ...string) []store.Selector {
		var out []store.Selector
		for _, x := range ss {
			typ, value, _ := strings.Cut(x, "=")
			out = append(out, store.Selector{Type: typ, Value: value})
		}
		return out
	}
	entries := []store.Entry{
		{ID: "e1", SPIFFEID: "spiffe://td/a", ParentID: "spiffe://td/p1", Selectors: sels("a=1", "b=2"), Hint: "h1"},
		{ID: "e2", SPIFFEID: "spiffe://td/a", ParentID: "spiffe://td/p2", Selectors: sels("a=1"), Hint: "h2"},
		{ID: "e3", SPIFFEID: "spiffe://td/b", ParentID: "spiffe://td/p1", Selectors: sels("a=1", "b=2", "c=3")},
		{ID: "e4", SPIFFEID: "spiffe://td/c", ParentID: "spiffe://td/p1"},
		// Type and value must match together.
		{ID: "e5", SPIFFEID: "spiffe://td/d", ParentID: "spiffe://td/p3", Selectors: sels("a=2", "b=1")},
	}
	create(t, s, entries...)
	for _, tc := range []struct {
		name string
		f    store.EntryFilter
		want []string
	}{
		{"none", store.EntryFilter{}, []string{"e1", "e2", "e3", "e4", "e5"}},
		{"SPIFFE ID", store.EntryFilter{SPIFFEID: "spiffe://td/a"}, []string{"e1", "e2"}},
		{"parent ID", store.EntryFilter{ParentID: "spiffe://td/p1"}, []string{"e1", "e3", "e4"}},
		{"hint", store.EntryFilter{Hint: "h1"}, []string{"e1"}},
		{"one selector", store.EntryFilter{Selectors: sels("a=1")}, []string{"e1", "e2", "e3"}},
		{"all selectors", store.EntryFilter{Selectors: sels("a=1", "b=2")}, []string{"e1", "e3"}},
		{"repeated selectors", store.EntryFilter{Selectors: sels("b=2", "a=1", "a=1")}, []string{"e1", "e3"}},
		{"selectors not all held", store.EntryFilter{Selectors: sels("a=1", "c=3", "d=4")}, nil},
		{"type and value together", store.EntryFilter{Selectors: sels("a=2")}, []string{"e5"}},
		{"no such selector", store.EntryFilter{Selectors: sels("a=3")}, nil},
		{"combined", store.EntryFilter{ParentID: "spiffe://td/p1", Selectors: sels("b=2"), SPIFFEID: "spiffe://td/b"}, []string{"e3"}},
		{"no match", store.EntryFilter{SPIFFEID: "spiffe://td/a", ParentID: "spiffe://td/p3"}, nil},
	} {
		equal(t, "ListEntries "+tc.name, ids(list(t, s, tc.f)), tc.want)
	}
	// Listed entries carry all their selectors, not only the filtered ones.
	got := list(t, s, store.EntryFilter{Selectors: sels("c=3")})
	equal(t, "selectors of a listed entry", got[0].Selectors, sels("a=1", "b=2", "c=3"))
}

// testParentSelectors: a rule whose parents are named by node selectors
// keeps them as a sorted set through create, update and list; they take
// part in what makes a rule unique; and the feed can list exactly the
// rules that have them.
func testParentSelectors(t *testing.T, s store.Store) {
	ctx := t.Context()
	repo, ref := sel("github", "repository:acme/api"), sel("github", "ref:refs/heads/main")
	in := store.Entry{
		SPIFFEID:        "spiffe://example.org/ci/api",
		ParentSelectors: []store.Selector{repo, ref, repo},
		Selectors:       []store.Selector{sel("unix", "uid:1001")},
	}
	created := create(t, s, in)[0]
	want := in
	want.ID, want.Revision = created.ID, 1
	want.CreatedAt, want.UpdatedAt = created.CreatedAt, created.UpdatedAt
	want.ParentSelectors = []store.Selector{ref, repo}
	equal(t, "created", created, want)
	equal(t, "GetEntry", get(t, s, created.ID), want)

	// The same rule with its parent selectors in another order is a
	// duplicate; with other parent selectors, or with none and a parent
	// ID, or a workload selector moved into them, it is another rule.
	same := in
	same.ParentSelectors = []store.Selector{ref, repo}
	_, err := s.CreateEntries(ctx, []store.Entry{same}, testEvent)
	wantErr(t, "CreateEntries of the same parent selectors reordered", err, store.ErrAlreadyExists, "entries[0]")
	other := in
	other.ParentSelectors = []store.Selector{repo}
	byID := in
	byID.ParentID, byID.ParentSelectors = "spiffe://example.org/node/1", nil
	moved := in
	moved.ParentSelectors = []store.Selector{repo, ref, sel("unix", "uid:1001")}
	moved.Selectors = nil
	created2 := create(t, s, other, byID, moved)

	got := list(t, s, store.EntryFilter{WithParentSelectors: true})
	equal(t, "ListEntries with parent selectors", ids(got), sortedIDs(created.ID, created2[0].ID, created2[2].ID))

	// An update replaces them, and can clear them.
	upd := get(t, s, created.ID)
	upd.ParentSelectors = []store.Selector{sel("github", "repository:acme/web")}
	updated, err := s.UpdateEntry(ctx, upd, testEvent)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "updated parent selectors", get(t, s, created.ID).ParentSelectors, updated.ParentSelectors)
	equal(t, "updated parent selectors", updated.ParentSelectors, []store.Selector{sel("github", "repository:acme/web")})
	upd = updated
	upd.ParentSelectors, upd.ParentID = nil, "spiffe://example.org/node/2"
	if _, err := s.UpdateEntry(ctx, upd, testEvent); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s, created.ID); got.ParentSelectors != nil {
		t.Errorf("cleared parent selectors read back as %v, want nil", got.ParentSelectors)
	}
	equal(t, "ListEntries with parent selectors after clearing one", ids(list(t, s, store.EntryFilter{WithParentSelectors: true})), sortedIDs(created2[0].ID, created2[2].ID))
}

func sortedIDs(ids ...string) []string {
	slices.Sort(ids)
	return ids
}

func testListPaging(t *testing.T, s store.Store) {
	// Byte order, whatever the database's collation would say.
	want := []string{"-x", ".x", "0", "9", "A", "Z", "_", "a", "a-b", "a.b", "aB", "ab", "z"}
	var entries []store.Entry
	for i, j := range []int{7, 0, 12, 3, 9, 1, 5, 11, 2, 8, 4, 10, 6} {
		e := rule(i)
		e.ID = want[j]
		if j%2 == 0 {
			e.Hint = "even"
		}
		entries = append(entries, e)
	}
	create(t, s, entries...)
	equal(t, "all", ids(list(t, s, store.EntryFilter{})), want)

	var paged []string
	after := ""
	for range len(want) {
		page := list(t, s, store.EntryFilter{AfterID: after, Limit: 4})
		if len(page) == 0 {
			break
		}
		if len(page) > 4 {
			t.Fatalf("page of %d entries, limit 4", len(page))
		}
		paged = append(paged, ids(page)...)
		after = page[len(page)-1].ID
	}
	equal(t, "paged", paged, want)
	equal(t, "after a missing ID", ids(list(t, s, store.EntryFilter{AfterID: "a0", Limit: 2})), []string{"aB", "ab"})
	equal(t, "paged with filter", ids(list(t, s, store.EntryFilter{Hint: "even", AfterID: "9", Limit: 3})), []string{"A", "_", "a-b"})
}

func testChanges(t *testing.T, s store.Store) {
	ctx := t.Context()
	batch := make([]store.Entry, 3)
	for i, id := range []string{"c", "a", "b"} {
		batch[i] = rule(i)
		batch[i].ID = id
	}
	create(t, s, batch...) // 1
	e := get(t, s, "b")
	e.Hint = "x"
	if _, err := s.UpdateEntry(ctx, e, testEvent); err != nil { // 2
		t.Fatal(err)
	}
	if _, err := s.DeleteEntry(ctx, "a", testEvent); err != nil { // 3
		t.Fatal(err)
	}
	d := rule(3)
	d.ID = "d"
	create(t, s, d) // 4

	all := []store.Change{
		put(1, "a"), put(1, "b"), put(1, "c"),
		put(2, "b"),
		del(3, "a"),
		put(4, "d"),
	}
	equal(t, "ChangesSince(0)", changes(t, s, 0, 0), all)
	equal(t, "ChangesSince(2)", changes(t, s, 2, 0), all[4:])
	equal(t, "ChangesSince(4)", changes(t, s, 4, 0), []store.Change(nil))
	equal(t, "ChangesSince(-1)", changes(t, s, -1, -1), all)
	wantRevision(t, s, 4)
}

// A limit ends the result at a whole revision: a caller resumes after the
// last revision it saw, so half a revision would lose the other half.
func testChangesSinceLimit(t *testing.T, s store.Store) {
	for i := range 3 {
		create(t, s, rule(i)) // 1, 2, 3
	}
	create(t, s, rule(3), rule(4), rule(5), rule(6)) // 4
	create(t, s, rule(7))                            // 5

	revisions := func(since int64, limit int) []int64 {
		var out []int64
		for _, c := range changes(t, s, since, limit) {
			out = append(out, c.Revision)
		}
		return out
	}
	for _, tc := range []struct {
		since int64
		limit int
		want  []int64
	}{
		{0, 2, []int64{1, 2}},
		{0, 3, []int64{1, 2, 3}},
		{2, 3, []int64{3}},                  // revision 4 does not fit
		{3, 2, []int64{4, 4, 4, 4}},         // one revision, even longer than the limit
		{3, 4, []int64{4, 4, 4, 4}},         // exactly fits
		{3, 5, []int64{4, 4, 4, 4, 5}},      // exactly fits with the next
		{2, 100, []int64{3, 4, 4, 4, 4, 5}}, // all there is
		{0, 0, []int64{1, 2, 3, 4, 4, 4, 4, 5}},
		{5, 1, nil},
	} {
		equal(t, fmt.Sprintf("revisions of ChangesSince(%d, %d)", tc.since, tc.limit), revisions(tc.since, tc.limit), tc.want)
	}
}

func testCACerts(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	cert := func(server string, der byte, notBefore, notAfter time.Duration) store.CACert {
		return store.CACert{ServerID: server, CertDER: []byte{0x30, der, 1, 2, 3}, NotBefore: now.Add(notBefore), NotAfter: now.Add(notAfter)}
	}
	a1 := cert("a", 1, -2*time.Hour, time.Hour)
	a2 := cert("a", 2, -time.Hour, 2*time.Hour)
	bExpired := cert("b", 3, -3*time.Hour, -time.Minute)
	bEndsNow := cert("b", 4, -4*time.Hour, 0)
	b1 := cert("b", 5, -30*time.Minute, 24*time.Hour)
	for _, c := range []store.CACert{b1, a2, bExpired, a1, bEndsNow, a1, b1} {
		if err := s.PutCACert(ctx, c, testEvent); err != nil {
			t.Fatalf("PutCACert: %v", err)
		}
	}
	listCerts := func(at time.Time) []store.CACert {
		got, err := s.ListCACerts(ctx, at)
		if err != nil {
			t.Fatalf("ListCACerts: %v", err)
		}
		return got
	}
	equal(t, "ListCACerts(now)", listCerts(now), []store.CACert{a1, a2, b1})
	equal(t, "ListCACerts(now+90m)", listCerts(now.Add(90*time.Minute)), []store.CACert{a2, b1})
	equal(t, "ListCACerts(now+1d)", listCerts(now.Add(24*time.Hour)), []store.CACert(nil))
	wantRevision(t, s, 0)

	// Re-recording refreshes the record rather than adding one.
	renewed := a1
	renewed.NotAfter = now.Add(3 * time.Hour)
	if err := s.PutCACert(ctx, renewed, testEvent); err != nil {
		t.Fatalf("PutCACert: %v", err)
	}
	equal(t, "after re-recording", listCerts(now.Add(90*time.Minute)), []store.CACert{renewed, a2, b1})
}

func testJWTKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	key := func(server, kid string, notAfter time.Duration) store.JWTKey {
		return store.JWTKey{ServerID: server, KeyID: kid, PublicKeyDER: []byte{0x30, byte(len(kid)), 1, 2, 3}, NotAfter: now.Add(notAfter)}
	}
	a1 := key("a", "a1", time.Hour)
	a2 := key("a", "a2-key", 2*time.Hour)
	bExpired := key("b", "b-expired", -time.Minute)
	bEndsNow := key("b", "b-ends-now", 0)
	b1 := key("b", "b1", 24*time.Hour)
	bSameExpiry := key("b", "a0", time.Hour)
	for _, k := range []store.JWTKey{b1, a2, bExpired, a1, bEndsNow, bSameExpiry, a1, b1} {
		if err := s.PutJWTKey(ctx, k, testEvent); err != nil {
			t.Fatalf("PutJWTKey(%s): %v", k.KeyID, err)
		}
	}
	list := func(at time.Time) []store.JWTKey {
		got, err := s.ListJWTKeys(ctx, at)
		if err != nil {
			t.Fatalf("ListJWTKeys: %v", err)
		}
		return got
	}
	equal(t, "ListJWTKeys(now)", list(now), []store.JWTKey{bSameExpiry, a1, a2, b1})
	equal(t, "ListJWTKeys(now+90m)", list(now.Add(90*time.Minute)), []store.JWTKey{a2, b1})
	equal(t, "ListJWTKeys(now+1d)", list(now.Add(24*time.Hour)), []store.JWTKey(nil))
	wantRevision(t, s, 0)

	// Re-recording a key ID refreshes the record rather than adding one.
	renewed := a1
	renewed.NotAfter = now.Add(3 * time.Hour)
	if err := s.PutJWTKey(ctx, renewed, testEvent); err != nil {
		t.Fatalf("PutJWTKey: %v", err)
	}
	equal(t, "after re-recording", list(now.Add(90*time.Minute)), []store.JWTKey{a2, renewed, b1})

	// A record without a key ID or key is refused and changes nothing.
	for _, bad := range []store.JWTKey{
		{ServerID: "c", PublicKeyDER: []byte{0x30}, NotAfter: now.Add(time.Hour)},
		{ServerID: "c", KeyID: "c1", NotAfter: now.Add(time.Hour)},
	} {
		if err := s.PutJWTKey(ctx, bad, testEvent); err == nil {
			t.Errorf("PutJWTKey(%+v) succeeded; want an error", bad)
		}
	}
	equal(t, "after refused puts", list(now.Add(90*time.Minute)), []store.JWTKey{a2, renewed, b1})
}

func testLocks(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	mk := func(kind, value string, created, expires time.Duration) store.Lock {
		l := store.Lock{Target: store.LockTarget{Kind: kind, Value: value}, Reason: "incident " + value, CreatedBy: "local uid 0", CreatedAt: now.Add(created)}
		if expires != 0 {
			l.ExpiresAt = now.Add(expires)
		}
		return l
	}
	forever := mk(store.LockSPIFFEID, "spiffe://example.org/a", -time.Hour, 0)
	short := mk(store.LockIDPrefix, "spiffe://example.org/ci", -2*time.Hour, time.Minute)
	expired := mk(store.LockNode, "spiffe://example.org/node/1", -3*time.Hour, -time.Second)
	endsNow := mk(store.LockJoinMethod, "join_token", -4*time.Hour, 0)
	endsNow.ExpiresAt = now
	var created []store.Lock
	for i, l := range []store.Lock{forever, short, expired, endsNow} {
		got, err := s.CreateLock(ctx, l, testEvent)
		if err != nil {
			t.Fatalf("CreateLock(%s): %v", l.Target.Value, err)
		}
		if !uuidV4.MatchString(got.ID) {
			t.Errorf("CreateLock assigned ID %q, want a UUID", got.ID)
		}
		l.ID = got.ID
		equal(t, "CreateLock result", got, l)
		created = append(created, got)
		// A lock takes a revision, like an entry, but records no entry change.
		wantRevision(t, s, int64(i+1))
	}
	if got := changes(t, s, 0, 0); len(got) != 0 {
		t.Errorf("ChangesSince(0) = %v, want no entry changes", got)
	}
	listAt := func(at time.Time) []store.Lock {
		got, err := s.ListLocks(ctx, at)
		if err != nil {
			t.Fatalf("ListLocks: %v", err)
		}
		return got
	}
	equal(t, "ListLocks(now)", listAt(now), []store.Lock{created[1], created[0]})
	equal(t, "ListLocks(now+1m)", listAt(now.Add(time.Minute)), []store.Lock{created[0]})
	equal(t, "ListLocks(now-1h)", listAt(now.Add(-time.Hour)), []store.Lock{created[3], created[2], created[1], created[0]})

	// Caller-chosen IDs are kept; a taken one is refused and writes nothing.
	named := mk(store.LockAgent, "spiffe://example.org/agent/x", 0, 0)
	named.ID = "lock-1"
	if _, err := s.CreateLock(ctx, named, testEvent); err != nil {
		t.Fatalf("CreateLock(lock-1): %v", err)
	}
	wantRevision(t, s, 5)
	_, err := s.CreateLock(ctx, named, testEvent)
	wantErr(t, "CreateLock(taken id)", err, store.ErrAlreadyExists, "lock-1")
	wantRevision(t, s, 5)

	old, err := s.DeleteLock(ctx, created[0].ID, testEvent)
	if err != nil {
		t.Fatalf("DeleteLock: %v", err)
	}
	equal(t, "DeleteLock result", old, created[0])
	wantRevision(t, s, 6)
	equal(t, "ListLocks after delete", listAt(now), []store.Lock{created[1], named})
	_, err = s.DeleteLock(ctx, created[0].ID, testEvent)
	wantErr(t, "DeleteLock(again)", err, store.ErrNotFound, created[0].ID)
	wantRevision(t, s, 6)
}

func testLockErrors(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, bad := range []store.Lock{
		{Target: store.LockTarget{Kind: store.LockSPIFFEID}, Reason: "no value"},
		{Target: store.LockTarget{Value: "spiffe://example.org/a"}, Reason: "no kind"},
		{ID: "bad id", Target: store.LockTarget{Kind: store.LockSPIFFEID, Value: "spiffe://example.org/a"}, Reason: "bad id"},
	} {
		if _, err := s.CreateLock(ctx, bad, testEvent); err == nil {
			t.Errorf("CreateLock(%+v) succeeded; want an error", bad)
		}
	}
	_, err := s.DeleteLock(ctx, "no such lock", testEvent)
	wantErr(t, "DeleteLock(bad id)", err, store.ErrNotFound, "no such lock")
	_, err = s.DeleteLock(ctx, "absent", testEvent)
	wantErr(t, "DeleteLock(unknown)", err, store.ErrNotFound, "absent")

	// A canceled write leaves nothing behind.
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.CreateLock(canceled, store.Lock{Target: store.LockTarget{Kind: store.LockSPIFFEID, Value: "spiffe://example.org/a"}, Reason: "r"}, testEvent); err == nil {
		t.Error("CreateLock with a canceled context succeeded")
	}
	wantRevision(t, s, 0)
	got, err := s.ListLocks(ctx, time.Now())
	if err != nil || len(got) != 0 {
		t.Errorf("ListLocks = %v, %v; want none", got, err)
	}
}
