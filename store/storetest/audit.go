package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"writ.dev/writ/store"
)

// auditTests are the conformance tests of the audit log and the incident
// flags; Run includes them.
var auditTests = []struct {
	name string
	fn   func(t *testing.T, s store.Store)
}{
	{"AuditWithChange", testAuditWithChange},
	{"AuditChangeWithoutEventRefused", testChangeWithoutEvent},
	{"AuditFailedChangeLeavesNoEvent", testFailedChangeLeavesNoEvent},
	{"AuditConcurrentAppends", testConcurrentAppends},
	{"AuditCheckpointsAndKeys", testCheckpointsAndKeys},
	{"AuditSealEveryCommit", testSealEveryCommit},
	{"AuthorityFlagsSticky", testAuthorityFlags},
	{"DatabaseClock", testDatabaseClock},
}

func event(format string, args ...any) store.AuditEvent {
	return store.AuditEvent(fmt.Sprintf(`{"time":"2026-01-01T00:00:00Z","type":"test","subject":%q}`, fmt.Sprintf(format, args...)))
}

func auditSize(t testing.TB, s store.Store) int64 {
	t.Helper()
	n, err := s.AuditSize(t.Context())
	if err != nil {
		t.Fatalf("AuditSize: %v", err)
	}
	return n
}

// storeHashes reads the store's tree hashes through tlog's interface.
type storeHashes struct {
	ctx context.Context
	s   store.Store
}

func (r storeHashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	hs, err := r.s.ReadAuditHashes(r.ctx, indexes)
	if err != nil {
		return nil, err
	}
	out := make([]tlog.Hash, len(hs))
	for i := range hs {
		out[i] = tlog.Hash(hs[i])
	}
	return out, nil
}

// checkLog reads the whole log, checks indexes are 0…n-1 with want's bytes
// where want names them, and that the stored tree's root is the root of
// the events as read.
func checkLog(t *testing.T, s store.Store, want map[int64][]byte) {
	t.Helper()
	ctx := t.Context()
	n := auditSize(t, s)
	recs, err := s.ReadAudit(ctx, 0, int(n)+10)
	if err != nil {
		t.Fatalf("ReadAudit: %v", err)
	}
	if int64(len(recs)) != n {
		t.Fatalf("ReadAudit returned %d events; AuditSize says %d", len(recs), n)
	}
	var mem []tlog.Hash
	memReader := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = mem[x]
		}
		return out, nil
	})
	for i, r := range recs {
		if r.Index != int64(i) {
			t.Fatalf("event %d has index %d", i, r.Index)
		}
		if w, ok := want[r.Index]; ok && !bytes.Equal(w, r.Event) {
			t.Fatalf("event %d = %s, want %s", r.Index, r.Event, w)
		}
		hs, err := tlog.StoredHashes(r.Index, r.Event, memReader)
		if err != nil {
			t.Fatal(err)
		}
		mem = append(mem, hs...)
	}
	if n == 0 {
		return
	}
	wantRoot, err := tlog.TreeHash(n, memReader)
	if err != nil {
		t.Fatal(err)
	}
	gotRoot, err := tlog.TreeHash(n, storeHashes{ctx, s})
	if err != nil {
		t.Fatalf("tree hash from the store's hashes: %v", err)
	}
	if gotRoot != wantRoot {
		t.Fatalf("stored tree root %v, want %v (recomputed from the events)", gotRoot, wantRoot)
	}
	// A few reads: single records in the middle and past the end.
	if n > 2 {
		mid, err := s.ReadAudit(ctx, n/2, 1)
		if err != nil || len(mid) != 1 || mid[0].Index != n/2 {
			t.Fatalf("ReadAudit(%d, 1) = %v, %v", n/2, mid, err)
		}
	}
	if past, err := s.ReadAudit(ctx, n, 5); err != nil || len(past) != 0 {
		t.Fatalf("ReadAudit past the end = %v, %v; want nothing", past, err)
	}
}

func testAuditWithChange(t *testing.T, s store.Store) {
	ctx := t.Context()
	want := map[int64][]byte{}
	e0, e1 := event("create a"), event("create b")
	created, err := s.CreateEntries(ctx, []store.Entry{rule(1), rule(2)}, e0, e1)
	if err != nil {
		t.Fatal(err)
	}
	want[0], want[1] = e0, e1
	up := created[0]
	up.Hint = "changed"
	if _, err := s.UpdateEntry(ctx, up, event("update")); err != nil {
		t.Fatal(err)
	}
	want[2] = event("update")
	if _, err := s.DeleteEntry(ctx, created[1].ID, event("delete")); err != nil {
		t.Fatal(err)
	}
	want[3] = event("delete")
	l, err := s.CreateLock(ctx, store.Lock{Target: store.LockTarget{Kind: store.LockSPIFFEID, Value: "spiffe://example.org/x"}, Reason: "r"}, event("lock"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteLock(ctx, l.ID, event("unlock")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutCACert(ctx, store.CACert{ServerID: "a", CertDER: []byte{1}, NotAfter: time.Now().Add(time.Hour)}, event("ca")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutJWTKey(ctx, store.JWTKey{ServerID: "a", KeyID: "k", PublicKeyDER: []byte{1}, NotAfter: time.Now().Add(time.Hour)}, event("jwt")); err != nil {
		t.Fatal(err)
	}
	first, err := s.AppendAudit(ctx, event("mint 1"), event("mint 2"))
	if err != nil {
		t.Fatal(err)
	}
	if first != 8 {
		t.Fatalf("AppendAudit returned index %d, want 8", first)
	}
	want[8], want[9] = event("mint 1"), event("mint 2")
	if n := auditSize(t, s); n != 10 {
		t.Fatalf("AuditSize = %d, want 10", n)
	}
	checkLog(t, s, want)
}

func testChangeWithoutEvent(t *testing.T, s store.Store) {
	ctx := t.Context()
	created := create(t, s, rule(1))
	rev := mustRevision(t, s)
	size := auditSize(t, s)
	for name, try := range map[string]func() error{
		"CreateEntries": func() error { _, err := s.CreateEntries(ctx, []store.Entry{rule(2)}); return err },
		"UpdateEntry":   func() error { _, err := s.UpdateEntry(ctx, created[0]); return err },
		"DeleteEntry":   func() error { _, err := s.DeleteEntry(ctx, created[0].ID, store.AuditEvent{}); return err },
		"CreateLock": func() error {
			_, err := s.CreateLock(ctx, store.Lock{Target: store.LockTarget{Kind: store.LockSPIFFEID, Value: "spiffe://example.org/x"}})
			return err
		},
		"PutCACert": func() error {
			return s.PutCACert(ctx, store.CACert{ServerID: "a", CertDER: []byte{1}, NotAfter: time.Now().Add(time.Hour)})
		},
		"PutJWTKey": func() error {
			return s.PutJWTKey(ctx, store.JWTKey{ServerID: "a", KeyID: "k", PublicKeyDER: []byte{1}, NotAfter: time.Now().Add(time.Hour)})
		},
		"AppendAudit": func() error { _, err := s.AppendAudit(ctx); return err },
		"OversizeEvent": func() error {
			_, err := s.AppendAudit(ctx, make(store.AuditEvent, store.MaxAuditEventSize+1))
			return err
		},
	} {
		if err := try(); !errors.Is(err, store.ErrNoAuditEvent) {
			t.Errorf("%s without an event: err = %v, want ErrNoAuditEvent", name, err)
		}
	}
	if got := mustRevision(t, s); got != rev {
		t.Errorf("revision moved from %d to %d", rev, got)
	}
	if got := auditSize(t, s); got != size {
		t.Errorf("audit log grew from %d to %d", size, got)
	}
	if n := len(list(t, s, store.EntryFilter{})); n != 1 {
		t.Errorf("%d entries stored, want 1", n)
	}
	if cas, _ := s.ListCACerts(ctx, time.Now()); len(cas) != 0 {
		t.Errorf("a CA certificate was stored without its event")
	}
}

// A change that fails leaves no event: the event is written in the
// change's transaction, so the rollback takes it too.
func testFailedChangeLeavesNoEvent(t *testing.T, s store.Store) {
	ctx := t.Context()
	created := create(t, s, rule(1))
	size := auditSize(t, s)
	if _, err := s.CreateEntries(ctx, []store.Entry{rule(2), rule(1)}, event("dup")); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("duplicate create: %v", err)
	}
	stale := created[0]
	stale.Revision = 999
	if _, err := s.UpdateEntry(ctx, stale, event("stale")); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale update: %v", err)
	}
	if _, err := s.DeleteLock(ctx, "absent", event("unlock")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete of an absent lock: %v", err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.CreateEntries(canceled, []store.Entry{rule(3)}, event("canceled")); err == nil {
		t.Fatal("create with a canceled context succeeded")
	}
	if got := auditSize(t, s); got != size {
		t.Fatalf("audit log grew from %d to %d after failed changes", size, got)
	}
	checkLog(t, s, nil)
}

// Many concurrent appenders: every event lands exactly once at the index
// returned to its caller, indexes are gap-free and the tree matches.
func testConcurrentAppends(t *testing.T, s store.Store) {
	ctx := t.Context()
	const writers, each = 8, 40
	var mu sync.Mutex
	want := map[int64][]byte{}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				ev := event("writer %d event %d", w, i)
				if i%10 == 0 {
					// Some changes interleave with the appends.
					if _, err := s.CreateEntries(ctx, []store.Entry{rule(1000*w + i)}, ev); err != nil {
						errs <- err
						return
					}
					continue
				}
				idx, err := s.AppendAudit(ctx, ev)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				if _, dup := want[idx]; dup {
					mu.Unlock()
					errs <- fmt.Errorf("index %d returned twice", idx)
					return
				}
				want[idx] = ev
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := auditSize(t, s); n != writers*each {
		t.Fatalf("AuditSize = %d, want %d", n, writers*each)
	}
	checkLog(t, s, want)
}

func testCheckpointsAndKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, c := range []store.AuditCheckpoint{
		{ServerID: "b", Size: 10, Note: []byte("b10")},
		{ServerID: "a", Size: 10, Note: []byte("a10")},
		{ServerID: "a", Size: 3, Note: []byte("a3")},
		{ServerID: "a", Size: 20, Note: []byte("a20")},
		{ServerID: "a", Size: 20, Note: []byte("a20 again")},
	} {
		if err := s.PutAuditCheckpoint(ctx, c); err != nil {
			t.Fatalf("PutAuditCheckpoint: %v", err)
		}
	}
	got, err := s.ListAuditCheckpoints(ctx, 5, 0)
	if err != nil {
		t.Fatal(err)
	}
	var notes []string
	for _, c := range got {
		notes = append(notes, string(c.Note))
	}
	equal(t, "checkpoints of size >= 5", notes, []string{"a10", "b10", "a20 again"})
	got, err = s.ListAuditCheckpoints(ctx, 0, 2)
	if err != nil || len(got) != 2 || string(got[0].Note) != "a3" {
		t.Fatalf("ListAuditCheckpoints(0, 2) = %v, %v", got, err)
	}
	if err := s.PutAuditCheckpoint(ctx, store.AuditCheckpoint{ServerID: "a", Size: 1}); err == nil {
		t.Fatal("a checkpoint without a note was stored")
	}

	k := store.AuditKey{ServerID: "a", Name: "writ-audit-a", PublicKey: bytes.Repeat([]byte{1}, 32)}
	size := auditSize(t, s)
	if err := s.PutAuditKey(ctx, k, event("key")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutAuditKey(ctx, k, event("key again")); err != nil {
		t.Fatalf("re-recording the same key: %v", err)
	}
	if got := auditSize(t, s); got != size+1 {
		t.Fatalf("recording a key (twice) added %d events, want 1", got-size)
	}
	other := k
	other.PublicKey = bytes.Repeat([]byte{2}, 32)
	if err := s.PutAuditKey(ctx, other, event("swap")); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("another key under a recorded name: err = %v, want ErrAlreadyExists", err)
	}
	keys, err := s.ListAuditKeys(ctx)
	if err != nil || len(keys) != 1 || !bytes.Equal(keys[0].PublicKey, k.PublicKey) || keys[0].ServerID != "a" {
		t.Fatalf("ListAuditKeys = %+v, %v", keys, err)
	}
}

func testAuthorityFlags(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := time.Now().Truncate(time.Second)
	c := store.CACert{ServerID: "a", CertDER: []byte{0x30, 1}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	tainted := c
	tainted.Tainted = true
	for _, put := range []store.CACert{c, tainted, c} {
		if err := s.PutCACert(ctx, put, testEvent); err != nil {
			t.Fatal(err)
		}
	}
	cas, err := s.ListCACerts(ctx, now)
	if err != nil || len(cas) != 1 || !cas[0].Tainted {
		t.Fatalf("after tainting and re-recording untainted: %+v, %v; want one tainted certificate", cas, err)
	}
	revoked := c
	revoked.Revoked = true
	for _, put := range []store.CACert{revoked, c} {
		if err := s.PutCACert(ctx, put, testEvent); err != nil {
			t.Fatal(err)
		}
	}
	if cas, err := s.ListCACerts(ctx, now); err != nil || len(cas) != 0 {
		t.Fatalf("a revoked certificate is still listed: %+v, %v", cas, err)
	}

	k := store.JWTKey{ServerID: "a", KeyID: "k1", PublicKeyDER: []byte{1}, NotAfter: now.Add(time.Hour)}
	tk := k
	tk.Tainted = true
	for _, put := range []store.JWTKey{k, tk, k} {
		if err := s.PutJWTKey(ctx, put, testEvent); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := s.ListJWTKeys(ctx, now)
	if err != nil || len(keys) != 1 || !keys[0].Tainted {
		t.Fatalf("JWT key after tainting: %+v, %v", keys, err)
	}
	rk := k
	rk.Revoked = true
	for _, put := range []store.JWTKey{rk, k} {
		if err := s.PutJWTKey(ctx, put, testEvent); err != nil {
			t.Fatal(err)
		}
	}
	if keys, err := s.ListJWTKeys(ctx, now); err != nil || len(keys) != 0 {
		t.Fatalf("a revoked JWT key is still listed: %+v, %v", keys, err)
	}
}

// The database clock is the same clock as this host's for a local database
// and a loopback server; a minute leaves room for any scheduling delay.
func testDatabaseClock(t *testing.T, s store.Store) {
	got, err := s.Now(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(got); d > time.Minute || d < -time.Minute {
		t.Fatalf("database clock %s is %s away from this host's", got, d)
	}
}

// testSealer signs nothing: its "note" is the size and root in text, which
// is enough to check the store handed it the right tree in each commit.
type testSealer struct {
	mu        sync.Mutex
	fail      error
	drop      []int64
	committed []int64
}

func (ts *testSealer) SealAudit(ctx context.Context, size int64, root store.AuditHash, hashes store.AuditHashReader) (store.AuditSeal, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.fail != nil {
		return store.AuditSeal{}, ts.fail
	}
	// The reader must see this transaction's own hashes.
	if _, err := hashes([]int64{tlog.StoredHashIndex(0, size-1)}); err != nil {
		return store.AuditSeal{}, err
	}
	return store.AuditSeal{
		Checkpoint: store.AuditCheckpoint{ServerID: "sealer", Size: size, Note: fmt.Appendf(nil, "%d %x", size, root[:])},
		Drop:       ts.drop,
	}, nil
}

func (ts *testSealer) AuditCommitted(seal store.AuditSeal) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.committed = append(ts.committed, seal.Checkpoint.Size)
}

// testSealEveryCommit checks that with a sealer every transaction that
// appends events stores a checkpoint of exactly the tree it leaves, that a
// sealer's refusal undoes the change, and that superseded checkpoints go.
func testSealEveryCommit(t *testing.T, s store.Store) {
	ctx := t.Context()
	ts := &testSealer{}
	s.SetAuditSealer(ts)
	defer s.SetAuditSealer(nil)
	if _, err := s.CreateEntries(ctx, []store.Entry{rule(1)}, event("create")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendAudit(ctx, event("mint 1"), event("mint 2")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutAuditKey(ctx, store.AuditKey{ServerID: "a", Name: "k", PublicKey: []byte{1}}, event("key")); err != nil {
		t.Fatal(err)
	}
	want := func(sizes ...int64) {
		t.Helper()
		cps, err := s.ListAuditCheckpoints(ctx, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		for _, c := range cps {
			root, err := tlog.TreeHash(c.Size, storeHashes{ctx, s})
			if err != nil {
				t.Fatal(err)
			}
			if string(c.Note) != fmt.Sprintf("%d %x", c.Size, root[:]) {
				t.Fatalf("checkpoint of size %d holds %q, not that size's root %x", c.Size, c.Note, root[:])
			}
			got = append(got, c.Size)
		}
		if fmt.Sprint(got) != fmt.Sprint(sizes) {
			t.Fatalf("checkpoints at sizes %v, want %v", got, sizes)
		}
	}
	want(1, 3, 4)
	ts.mu.Lock()
	if fmt.Sprint(ts.committed) != "[1 3 4]" {
		t.Errorf("AuditCommitted saw %v, want [1 3 4]", ts.committed)
	}
	ts.fail = errors.New("refused")
	ts.mu.Unlock()
	if _, err := s.AppendAudit(ctx, event("mint 3")); err == nil {
		t.Fatal("AppendAudit succeeded though the sealer refused")
	}
	if _, err := s.CreateLock(ctx, store.Lock{Target: store.LockTarget{Kind: store.LockSPIFFEID, Value: "spiffe://example.org/x"}, Reason: "r"}, event("lock")); err == nil {
		t.Fatal("CreateLock succeeded though the sealer refused")
	}
	if n := auditSize(t, s); n != 4 {
		t.Fatalf("after refused seals the log has %d events, want 4", n)
	}
	if locks, err := s.ListLocks(ctx, time.Now()); err != nil || len(locks) != 0 {
		t.Fatalf("a refused seal left locks %v (%v)", locks, err)
	}
	ts.mu.Lock()
	ts.fail, ts.drop = nil, []int64{3, 4}
	ts.mu.Unlock()
	if _, err := s.AppendAudit(ctx, event("mint 4")); err != nil {
		t.Fatal(err)
	}
	want(1, 5)
}
