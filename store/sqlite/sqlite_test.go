package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"writ.dev/writ/store"
	"writ.dev/writ/store/internal/sqlstore"
	"writ.dev/writ/store/migrate"
	"writ.dev/writ/store/storetest"
)

func openTest(tb testing.TB, path string) *Store {
	tb.Helper()
	s, err := Open(tb.Context(), path)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// The conformance suite checks what the store keeps and returns, not what
// survives a crash (TestCrashLeavesChangeAndEventTogether does, on stores
// opened by Open), so it runs without waiting for the disk. Nor is it about
// migration (the tests below are): each store starts from a copy of one
// migrated database, as migrating costs more than most of its tests.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		path := filepath.Join(t.TempDir(), "writ.db")
		placeMigrated(t, path)
		return openUnsynced(t, path)
	})
}

var (
	migratedOnce sync.Once
	migratedDB   []byte
	migratedErr  error
)

// placeMigrated creates path holding an empty database at the current
// schema, copied from one migrated once per test binary.
func placeMigrated(tb testing.TB, path string) {
	tb.Helper()
	migratedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "writ-migrated")
		if err != nil {
			migratedErr = err
			return
		}
		defer os.RemoveAll(dir)
		src := filepath.Join(dir, "writ.db")
		s, err := Open(context.Background(), src)
		if err != nil {
			migratedErr = err
			return
		}
		if migratedErr = s.Close(); migratedErr != nil {
			return
		}
		if fi, err := os.Stat(src + "-wal"); err == nil && fi.Size() > 0 {
			migratedErr = fmt.Errorf("the log holds %d bytes after Close", fi.Size())
			return
		}
		migratedDB, migratedErr = os.ReadFile(src)
	})
	if migratedErr != nil {
		tb.Fatalf("migrated database: %v", migratedErr)
	}
	if err := os.WriteFile(path, migratedDB, 0o600); err != nil {
		tb.Fatal(err)
	}
}

func TestReopenKeepsDataAndSchema(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "writ.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	created, err := s.CreateEntries(ctx, []store.Entry{{SPIFFEID: "spiffe://example.org/a", ParentID: "spiffe://example.org/b"}}, store.AuditEvent(`{"type":"test"}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, path)
	got, err := s.GetEntry(ctx, created[0].ID)
	if err != nil || got.SPIFFEID != "spiffe://example.org/a" {
		t.Errorf("GetEntry after reopening = %+v, %v", got, err)
	}
	if rev, err := s.Revision(ctx); rev != 1 || err != nil {
		t.Errorf("Revision after reopening = %d, %v; want 1", rev, err)
	}
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s.SchemaVersion(ctx); v != len(ms) || err != nil {
		t.Errorf("SchemaVersion = %d, %v; want %d", v, err, len(ms))
	}
}

func TestFileModes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "writ.db")
	s := openTest(t, path)
	if _, err := s.CreateEntries(t.Context(), []store.Entry{{SPIFFEID: "spiffe://example.org/a"}}, store.AuditEvent(`{"type":"test"}`)); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"writ.db", "writ.db-wal", "writ.db-shm"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if mode := fi.Mode().Perm(); mode != 0o600 {
			t.Errorf("%s has mode %v, want 0600", name, mode)
		}
	}
}

// A path holding URI syntax is a file name, not parameters.
func TestPathWithURICharacters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a?b#c%20 d.db")
	openTest(t, path)
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
}

func TestNewerSchemaFailsOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "writ.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec(`INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 0)`)
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	_, err = Open(t.Context(), path)
	if !errors.Is(err, migrate.ErrSchemaTooNew) {
		t.Fatalf("Open of a newer schema: %v, want ErrSchemaTooNew", err)
	}
	t.Log(err)
}

// openUnsynced opens a store that does not wait for the disk at commit:
// for tests of how concurrent writers interleave, which crash nothing and
// would otherwise spend their time in fsync.
func openUnsynced(tb testing.TB, path string) *Store {
	tb.Helper()
	s, err := open(tb.Context(), path, options{ticks: nil, stop: func() {}, synchronous: "NORMAL"})
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestTwoProcessesShareAFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "writ.db")
	a, b := openUnsynced(t, path), openUnsynced(t, path)
	storetest.ConcurrentWrites(t, a, b)
}

func BenchmarkCreateEntries(b *testing.B) {
	storetest.BenchCreateEntries(b, func(b *testing.B) store.Store {
		return openTest(b, filepath.Join(b.TempDir(), "writ.db"))
	})
}

func BenchmarkReads(b *testing.B) {
	storetest.BenchReads(b, func(b *testing.B) store.Store {
		return openTest(b, filepath.Join(b.TempDir(), "writ.db"))
	})
}

func BenchmarkAppendAudit(b *testing.B) {
	for _, writers := range []int{1, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			storetest.BenchAppendAudit(b, openTest(b, filepath.Join(b.TempDir(), "writ.db")), writers)
		})
		b.Run(fmt.Sprintf("sealed/writers=%d", writers), func(b *testing.B) {
			storetest.BenchAppendAuditSealed(b, openTest(b, filepath.Join(b.TempDir(), "writ.db")), writers)
		})
	}
}

// fillAndClose writes enough entries that the database spans many pages,
// and closes the store so that they end up in the database file itself.
func fillAndClose(t *testing.T, path string) {
	t.Helper()
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		var es []store.Entry
		for j := range 50 {
			es = append(es, store.Entry{SPIFFEID: fmt.Sprintf("spiffe://example.org/w/%d/%d", i, j), ParentID: "spiffe://example.org/node"})
		}
		if _, err := s.CreateEntries(t.Context(), es, store.AuditEvent(`{"type":"test"}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestTruncatedFileFailsOpenWithReason(t *testing.T) {
	path := filepath.Join(t.TempDir(), "writ.db")
	fillAndClose(t, path)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.Context(), path)
	if err == nil {
		s.Close()
		t.Fatal("Open of a database truncated to half its size succeeded")
	}
	if s != nil {
		t.Fatalf("Open failed (%v) but returned a store", err)
	}
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "restore") {
		t.Fatalf("Open of a truncated database: %v; want ErrDamaged saying to restore a backup", err)
	}
}

// copyAlone copies the database file without its log, as a file backup
// that knows nothing of SQLite would.
func copyAlone(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(dst, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return dst
}

func entryCount(t *testing.T, path string) int {
	t.Helper()
	s := openTest(t, path)
	list, err := s.ListEntries(t.Context(), store.EntryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}

// A running store's changes reach the database file at the next timed
// checkpoint, not only after SQLite's automatic one many megabytes later.
func TestTimedCheckpointFillsDatabaseFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "writ.db")
	ticks := make(chan time.Time)
	s, err := open(t.Context(), path, options{ticks: ticks, stop: func() {}, synchronous: "FULL"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CreateEntries(t.Context(), []store.Entry{{SPIFFEID: "spiffe://example.org/a"}, {SPIFFEID: "spiffe://example.org/b"}}, store.AuditEvent(`{"type":"test"}`)); err != nil {
		t.Fatal(err)
	}
	// The loop takes one tick at a time, so the second send returns only
	// once the first checkpoint has run.
	ticks <- time.Now()
	ticks <- time.Now()
	if n := entryCount(t, copyAlone(t, path)); n != 2 {
		t.Fatalf("a copy of the database file after a timed checkpoint holds %d entries, want 2", n)
	}
}

// Close leaves everything in the database file even while another process
// (here a second store) keeps the file open, when SQLite would leave it in
// the log.
func TestCloseCheckpointsWhileFileIsShared(t *testing.T) {
	path := filepath.Join(t.TempDir(), "writ.db")
	other := openTest(t, path)
	if _, err := other.Revision(t.Context()); err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateEntries(t.Context(), []store.Entry{{SPIFFEID: "spiffe://example.org/a"}}, store.AuditEvent(`{"type":"test"}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := entryCount(t, copyAlone(t, path)); n != 1 {
		t.Fatalf("a copy of the database file after Close holds %d entries, want 1", n)
	}
}

// A backup taken while the store is open holds every committed change and
// opens as a store of its own.
func TestBackupRestores(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, filepath.Join(dir, "writ.db"))
	if _, err := s.CreateEntries(t.Context(), []store.Entry{{SPIFFEID: "spiffe://example.org/a"}, {SPIFFEID: "spiffe://example.org/b"}}, store.AuditEvent(`{"type":"test"}`)); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(dir, "backup.db")
	if err := s.Backup(t.Context(), backup); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(backup)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("backup has mode %v, want 0600", mode)
	}
	restored := openTest(t, backup)
	if n := entryCount(t, backup); n != 2 {
		t.Fatalf("restored backup holds %d entries, want 2", n)
	}
	if size, err := restored.AuditSize(t.Context()); err != nil || size != 1 {
		t.Fatalf("restored backup's audit log has %d events (%v), want 1", size, err)
	}
	// A second backup to the same file would mix two copies: refused.
	if err := s.Backup(t.Context(), backup); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("Backup over an existing copy: %v, want a refusal", err)
	}
}

// Tasks stored before migration 0010 get an end: their deadline while they
// have not ended, and the earlier of their last write and their deadline
// once closed or expired.
func TestTaskEndsAtBackfill(t *testing.T) {
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "writ.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var backfill string
	for _, m := range ms {
		if m.Version == 10 {
			backfill = m.SQL
			break
		}
		if _, err := db.Exec(m.SQL); err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
	}
	for _, row := range []struct {
		id, state         string
		deadline, updated int64
	}{
		{"open", "open", 5000, 100},
		{"closed", "closed", 5000, 200},
		{"expired", "expired", 5000, 6000},
	} {
		if _, err := db.Exec(`INSERT INTO tasks (id, state, deadline, doc, revision, updated_at) VALUES (?, ?, ?, '{}', 1, ?)`, row.id, row.state, row.deadline, row.updated); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(backfill); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"open": 5000, "closed": 200, "expired": 5000}
	for id, w := range want {
		var got int64
		if err := db.QueryRow(`SELECT ends_at FROM tasks WHERE id = ?`, id).Scan(&got); err != nil || got != w {
			t.Errorf("task %s: ends_at %d, %v; want %d", id, got, err, w)
		}
	}
}

// The decision index is rebuilt from ListTasksEndingSince on every store
// change: it must search the range on ends_at, not walk every task ever
// stored.
func TestTasksEndingSinceUsesIndex(t *testing.T) {
	path := filepath.Join(t.TempDir(), "writ.db")
	openTest(t, path)
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for n, want := range map[int]string{3: "USING INDEX tasks_state_ends_at", 0: "USING INDEX tasks_ends_at"} {
		args := []any{int64(0)}
		for range n {
			args = append(args, "open")
		}
		q := strings.NewReplacer("$1", "?1", "$2", "?2", "$3", "?3", "$4", "?4").Replace(sqlstore.TasksEndingSinceSQL(n))
		rows, err := db.Query("EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		if got := strings.Join(plan, "; "); !strings.Contains(got, want) || strings.Contains(got, "SCAN") {
			t.Errorf("%d states: plan %q, want a search %s", n, got, want)
		}
	}
}
