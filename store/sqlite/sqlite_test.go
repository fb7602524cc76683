package sqlite

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"writ.dev/writ/store"
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

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openTest(t, filepath.Join(t.TempDir(), "writ.db"))
	})
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

func TestTwoProcessesShareAFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "writ.db")
	a, b := openTest(t, path), openTest(t, path)
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
