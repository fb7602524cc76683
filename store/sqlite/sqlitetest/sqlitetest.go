// Package sqlitetest gives tests of packages above the store an SQLite
// database that is already migrated. Migrating parses every statement of
// every migration, which under the race detector costs a tenth of a second
// or more per store; a test that starts many servers and is not about
// migration can start each one from a copy instead. store/sqlite's own
// tests are what check migrating a new file.
package sqlitetest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"writ.dev/writ/store/sqlite"
)

var (
	once     sync.Once
	template []byte
	err      error
)

// PlaceMigrated creates path (mode 0600, as the store creates it) holding
// an empty database migrated to the current schema. path must not exist.
func PlaceMigrated(tb testing.TB, path string) {
	tb.Helper()
	once.Do(func() { template, err = migrated() })
	if err != nil {
		tb.Fatalf("migrated template: %v", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := f.Write(template); err != nil {
		f.Close()
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
}

func migrated() ([]byte, error) {
	dir, err := os.MkdirTemp("", "writ-sqlitetest")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "writ.db")
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		return nil, err
	}
	if err := s.Close(); err != nil {
		return nil, err
	}
	// Close checkpoints the log into the file: a copy of the file alone
	// must hold the whole schema.
	if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() > 0 {
		return nil, fmt.Errorf("%s-wal holds %d bytes after Close", path, fi.Size())
	}
	return os.ReadFile(path)
}
