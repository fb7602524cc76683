package postgres

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"writ.dev/writ/store"
	"writ.dev/writ/store/migrate"
	"writ.dev/writ/store/storetest"
)

// testDSN returns the DSN of the test cluster, skipping without one.
func testDSN(tb testing.TB) string {
	dsn := os.Getenv("WRIT_TEST_POSTGRES_DSN")
	if dsn == "" {
		tb.Skip("WRIT_TEST_POSTGRES_DSN not set: start a throwaway cluster with scripts/pg-test-cluster.sh")
	}
	return dsn
}

// newSchema creates a schema of its own for a test, dropped when the test
// ends, and returns a DSN whose search_path is that schema: tests then share
// one cluster without seeing each other.
func newSchema(tb testing.TB) string {
	tb.Helper()
	dsn := testDSN(tb)
	schema := "writ_test_" + strings.ToLower(rand.Text())
	admin(tb, dsn, "CREATE SCHEMA "+schema)
	tb.Cleanup(func() { admin(tb, dsn, "DROP SCHEMA "+schema+" CASCADE") })
	return withSearchPath(tb, dsn, schema)
}

func admin(tb testing.TB, dsn, sql string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}

func withSearchPath(tb testing.TB, dsn, schema string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		// key=value form
		return dsn + " search_path=" + schema
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

func openDSN(tb testing.TB, dsn string) *Store {
	tb.Helper()
	s, err := Open(tb.Context(), dsn)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	testDSN(t)
	storetest.Run(t, func(t *testing.T) store.Store { return openDSN(t, newSchema(t)) })
}

// Two servers sharing a database get one gap-free order of revisions.
func TestTwoServers(t *testing.T) {
	dsn := newSchema(t)
	storetest.ConcurrentWrites(t, openDSN(t, dsn), openDSN(t, dsn))
}

// Servers starting at the same time on a new database migrate it once.
func TestConcurrentOpen(t *testing.T) {
	dsn := newSchema(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			s, err := Open(t.Context(), dsn)
			if err != nil {
				t.Errorf("Open: %v", err)
				return
			}
			s.Close()
		})
	}
	wg.Wait()
	s := openDSN(t, dsn)
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s.SchemaVersion(t.Context()); v != len(ms) || err != nil {
		t.Errorf("SchemaVersion = %d, %v; want %d", v, err, len(ms))
	}
}

func TestNewerSchemaFailsOpen(t *testing.T) {
	dsn := newSchema(t)
	s := openDSN(t, dsn)
	s.Close()
	admin(t, dsn, `INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 0)`)
	_, err := Open(t.Context(), dsn)
	if !errors.Is(err, migrate.ErrSchemaTooNew) {
		t.Fatalf("Open of a newer schema: %v, want ErrSchemaTooNew", err)
	}
	t.Log(err)
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(t.Context(), "postgres://user:secret@[::1"); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("Open of a bad DSN: %v; want an error that does not show the password", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := Open(ctx, fmt.Sprintf("postgres://writ:secret@127.0.0.1:%d/writ?sslmode=disable&connect_timeout=2", 1)); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("Open of an unreachable server: %v; want an error that does not show the password", err)
	}
}

func BenchmarkCreateEntries(b *testing.B) {
	storetest.BenchCreateEntries(b, func(b *testing.B) store.Store { return openDSN(b, newSchema(b)) })
}

func BenchmarkReads(b *testing.B) {
	storetest.BenchReads(b, func(b *testing.B) store.Store { return openDSN(b, newSchema(b)) })
}

func BenchmarkAppendAudit(b *testing.B) {
	for _, writers := range []int{1, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			storetest.BenchAppendAudit(b, openDSN(b, newSchema(b)), writers)
		})
		b.Run(fmt.Sprintf("sealed/writers=%d", writers), func(b *testing.B) {
			storetest.BenchAppendAuditSealed(b, openDSN(b, newSchema(b)), writers)
		})
	}
}
