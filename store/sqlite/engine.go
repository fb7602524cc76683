package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"writ.dev/writ/store"
	"writ.dev/writ/store/internal/sqlstore"
	"writ.dev/writ/store/migrate"
)

type engine struct {
	path    string
	writer  *sql.DB
	readers *sql.DB

	// quit ends the checkpoint loop; stopped is closed once it has.
	quit, stopped chan struct{}
}

// startCheckpoints runs a PASSIVE checkpoint on every tick until Close: it
// copies what the log holds into the database file without waiting for
// readers or blocking writers, so it never slows a request.
func (e *engine) startCheckpoints(ticks <-chan time.Time, stop func()) {
	e.quit, e.stopped = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(e.stopped)
		defer stop()
		for {
			select {
			case <-e.quit:
				return
			case <-ticks:
				// A busy or failing checkpoint is retried at the next tick;
				// SQLite's own automatic checkpoints go on meanwhile.
				_, _ = e.writer.Exec("PRAGMA wal_checkpoint(PASSIVE)")
			}
		}
	}()
}

func (e *engine) Reader() sqlstore.Querier { return querier{e.readers} }

func (e *engine) BeginWrite(ctx context.Context) (sqlstore.WriteTx, error) {
	tx, err := e.writer.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	return &writeTx{querier: querier{tx}, tx: tx}, nil
}

func (e *engine) IsUniqueViolation(err error) bool { return isUniqueViolation(err) }

// ClockSQL implements sqlstore.Engine. The Julian day keeps milliseconds on
// every SQLite version, where unixepoch('subsec') needs 3.42.
func (e *engine) ClockSQL() string {
	return `SELECT CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)`
}

func isUniqueViolation(err error) bool {
	var serr *sqlite.Error
	if !errors.As(err, &serr) {
		return false
	}
	code := serr.Code()
	return code == sqlite3.SQLITE_CONSTRAINT_UNIQUE || code == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

// migrate runs under BEGIN IMMEDIATE, which keeps another process opening
// the same file from migrating at the same time.
func (e *engine) migrate(ctx context.Context, ms []migrate.Migration) error {
	tx, err := e.BeginWrite(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := sqlstore.Migrate(ctx, tx, ms); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func (e *engine) Close() error {
	if e.quit != nil {
		close(e.quit)
		<-e.stopped
		e.quit = nil
	}
	// Lets SQLite refresh the statistics its planner uses, as it advises
	// doing before closing a connection; failure costs nothing.
	_, _ = e.writer.Exec("PRAGMA optimize")
	readErr := e.readers.Close()
	// With the readers gone, a TRUNCATE checkpoint leaves everything in the
	// database file and an empty log, even when another process still has
	// the file open (then SQLite would not checkpoint at close by itself).
	// It fails harmlessly if that process is reading.
	_, _ = e.writer.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
	return errors.Join(readErr, e.writer.Close())
}

// querier adapts database/sql to sqlstore.Querier.
type querier struct {
	db interface {
		ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
		QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	}
}

func (q querier) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := q.db.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (q querier) Query(ctx context.Context, query string, args ...any) (sqlstore.Rows, error) {
	rows, err := q.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{rows}, nil
}

type sqlRows struct{ *sql.Rows }

// Close drops the error: database/sql reports iteration errors through Err.
func (r sqlRows) Close() { r.Rows.Close() }

type writeTx struct {
	querier
	tx *sql.Tx
}

func (t *writeTx) Commit(context.Context) error { return t.tx.Commit() }

// Rollback after Commit is a harmless no-op (sql.ErrTxDone).
func (t *writeTx) Rollback() { _ = t.tx.Rollback() }

// InsertEntries runs prepared statements row by row: in-process SQLite has
// no round trips to save, and a failing row names itself.
func (t *writeTx) InsertEntries(ctx context.Context, rows []sqlstore.Row) (int, error) {
	var stmts [3]*sql.Stmt
	for i, query := range []string{sqlstore.InsertEntrySQL, sqlstore.InsertSelectorSQL, sqlstore.InsertChangeSQL} {
		stmt, err := t.tx.PrepareContext(ctx, query)
		if err != nil {
			return -1, err
		}
		defer stmt.Close()
		stmts[i] = stmt
	}
	insertEntry, insertSelector, insertChange := stmts[0], stmts[1], stmts[2]
	// The driver watches a cancelable context with a goroutine per
	// statement, which would cost more than the statement; cancellation is
	// checked once per row instead.
	stmtCtx := context.WithoutCancel(ctx)
	for i := range rows {
		if err := ctx.Err(); err != nil {
			return -1, err
		}
		r := &rows[i]
		if _, err := insertEntry.ExecContext(stmtCtx, r.Args()...); err != nil {
			if isUniqueViolation(err) {
				return i, nil
			}
			return -1, fmt.Errorf("entries[%d]: %w", i, err)
		}
		for _, s := range r.Selectors {
			if _, err := insertSelector.ExecContext(stmtCtx, r.ID, s.Type, s.Value); err != nil {
				return -1, fmt.Errorf("entries[%d]: selector: %w", i, err)
			}
		}
		if _, err := insertChange.ExecContext(stmtCtx, r.Revision, r.ID, string(store.OpPut)); err != nil {
			return -1, fmt.Errorf("entries[%d]: change: %w", i, err)
		}
	}
	return -1, nil
}

// InsertAudit implements sqlstore.WriteTx with two prepared statements.
func (t *writeTx) InsertAudit(ctx context.Context, firstEvent int64, events [][]byte, firstHash int64, hashes [][]byte) error {
	for _, part := range []struct {
		query string
		first int64
		rows  [][]byte
	}{
		{sqlstore.InsertAuditEventSQL, firstEvent, events},
		{sqlstore.InsertAuditHashSQL, firstHash, hashes},
	} {
		stmt, err := t.tx.PrepareContext(ctx, part.query)
		if err != nil {
			return err
		}
		stmtCtx := context.WithoutCancel(ctx)
		for i, row := range part.rows {
			if _, err := stmt.ExecContext(stmtCtx, part.first+int64(i), row); err != nil {
				stmt.Close()
				return err
			}
		}
		stmt.Close()
	}
	return nil
}
