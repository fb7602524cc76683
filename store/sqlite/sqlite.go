// Package sqlite is writ's embedded store: one SQLite database file, nothing
// to install or run. Several processes may open the same file; writes
// serialize on SQLite's write lock.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"modernc.org/sqlite" // also registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"

	"writ.dev/writ/store/internal/sqlstore"
	"writ.dev/writ/store/migrate"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrations returns the schema migrations this build applies.
func migrations() ([]migrate.Migration, error) {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	return migrate.Load(sub)
}

// ErrDamaged is returned by Open for a file SQLite cannot read as a
// database: truncated, partly overwritten, or not a database at all.
var ErrDamaged = errors.New("the database file is damaged (truncated, overwritten or not a SQLite database): " +
	"stop every process using it, move it and its -wal and -shm files aside, and restore the latest backup (see 'writ backup')")

// damaged reports whether err is SQLite finding the file unreadable.
func damaged(err error) bool {
	var serr *sqlite.Error
	if !errors.As(err, &serr) {
		return false
	}
	switch serr.Code() & 0xff {
	case sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB:
		return true
	}
	return false
}

// Store is writ's state in a SQLite database file.
type Store struct {
	*sqlstore.Store
	engine *engine
}

// checkpointInterval is how often an open store copies committed
// transactions from its write-ahead log into the database file. Between
// automatic checkpoints a quiet server's changes would otherwise sit only in
// the log, and a copy of writ.db alone would miss them.
const checkpointInterval = 30 * time.Second

// busyTimeoutMillis bounds how long a statement waits for another process's
// lock before failing with SQLITE_BUSY.
const busyTimeoutMillis = "10000"

// Open opens the database at path, creating it (mode 0600: it holds the
// trust domain's rules) when missing, and migrates it.
func Open(ctx context.Context, path string) (*Store, error) {
	ticker := time.NewTicker(checkpointInterval)
	s, err := open(ctx, path, options{ticks: ticker.C, stop: ticker.Stop, synchronous: "FULL"})
	if err != nil {
		ticker.Stop()
	}
	return s, err
}

// options are what tests may change about a store.
type options struct {
	// Every value received from ticks runs a checkpoint; stop is called
	// once the store is closed.
	ticks <-chan time.Time
	stop  func()
	// synchronous is SQLite's synchronous setting. Open uses FULL; tests of
	// concurrency, which crash nothing, may skip the syncs with NORMAL.
	synchronous string
}

func open(ctx context.Context, path string, o options) (*Store, error) {
	ms, err := migrations()
	if err != nil {
		return nil, err
	}
	e, err := openEngine(path, o.synchronous)
	if err != nil {
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	}
	if err := e.migrate(ctx, ms); err != nil {
		e.Close()
		if damaged(err) {
			return nil, fmt.Errorf("sqlite %s: %w: %w", path, ErrDamaged, err)
		}
		return nil, fmt.Errorf("sqlite %s: migrate: %w", path, err)
	}
	e.startCheckpoints(o.ticks, o.stop)
	return &Store{Store: sqlstore.New(e), engine: e}, nil
}

func openEngine(path, synchronous string) (*engine, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if err := createPrivate(abs); err != nil {
		return nil, err
	}
	// One writer connection: writes of this process queue in Go rather than
	// racing for SQLite's lock, and BEGIN IMMEDIATE takes the lock up front
	// so a transaction never fails half-way when another process writes.
	writer, err := openDB(abs, 1, url.Values{
		"_pragma": {
			// Random IDs and fingerprints spread inserts over the whole of
			// their indexes: a 64 MiB page cache keeps them in memory, and
			// checkpointing every 16 MiB of log rather than every 4 MiB
			// writes a page changed by many batches once instead of often.
			// The log is kept no larger than that once checkpointed, and a
			// timed checkpoint (checkpointInterval) moves quiet periods'
			// changes into the database file, which is what backups and the
			// disk usage an operator sees are made of.
			"cache_size(-65536)",
			"wal_autocheckpoint(4096)",
			"journal_size_limit(16777216)",
		},
		"_foreign_keys": {"1"},
		"_journal_mode": {"WAL"},
		// FULL syncs the log at every commit: a change or issuance is
		// acknowledged only once its audit event would survive power loss.
		// Group commit of audit events keeps that to one sync per batch.
		"_synchronous": {synchronous},
		"_txlock":      {"immediate"},
	})
	if err != nil {
		return nil, err
	}
	// WAL readers never block the writer nor each other.
	readers, err := openDB(abs, max(4, runtime.GOMAXPROCS(0)), url.Values{
		"_pragma": {"query_only(1)"},
	})
	if err != nil {
		writer.Close()
		return nil, err
	}
	return &engine{path: abs, writer: writer, readers: readers}, nil
}

// createPrivate creates the database file with mode 0600 before SQLite
// would create it with its default mode. SQLite gives its -wal and -shm
// files the mode of the database.
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return f.Close()
}

func openDB(path string, conns int, params url.Values) (*sql.DB, error) {
	params.Set("_busy_timeout", busyTimeoutMillis)
	// A file: URI keeps a '?' or '#' in the path from being read as the
	// start of the parameters.
	dsn := (&url.URL{Scheme: "file", Path: path, RawQuery: params.Encode()}).String()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	db.SetConnMaxIdleTime(0)
	db.SetConnMaxLifetime(0)
	return db, nil
}

// Backup writes a consistent copy of the database to path, which must not
// exist or be empty, while the store stays in use: VACUUM INTO reads one
// snapshot, so writers carry on and the copy holds whole transactions only.
// The copy is compact, has no log beside it, and is created with mode 0600.
func (s *Store) Backup(ctx context.Context, path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if err := createPrivate(abs); err != nil {
		return fmt.Errorf("backup %s: %w", path, err)
	}
	if fi, err := os.Stat(abs); err != nil {
		return fmt.Errorf("backup %s: %w", path, err)
	} else if fi.Size() != 0 {
		return fmt.Errorf("backup %s: the file exists and is not empty: name a new file", path)
	}
	// A connection of its own: the readers are query_only, which VACUUM
	// INTO is refused under, and the writer would hold up every change for
	// as long as the copy takes. In WAL mode this one only reads a snapshot.
	db, err := openDB(s.engine.path, 1, url.Values{})
	if err != nil {
		return fmt.Errorf("backup %s: %w", path, err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", abs); err != nil {
		os.Remove(abs)
		return fmt.Errorf("backup %s: %w", path, err)
	}
	return nil
}
