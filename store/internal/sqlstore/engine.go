// Package sqlstore implements store.Store once for writ's SQL engines. The
// statements it runs are valid in both SQLite and PostgreSQL ($n parameters,
// RETURNING, ON CONFLICT); an engine supplies connections, transactions, the
// bulk insert its dialect does best, and the recognition of its errors.
package sqlstore

import "context"

// Engine is an SQL database as Store uses it.
type Engine interface {
	// Reader runs statements outside any write transaction.
	Reader() Querier
	// BeginWrite starts a transaction that may write. Engines make write
	// transactions of one database serialize (SQLite: one writer connection
	// and BEGIN IMMEDIATE; PostgreSQL: the revision row lock every write
	// takes first).
	BeginWrite(ctx context.Context) (WriteTx, error)
	// IsUniqueViolation reports whether err is a unique or primary key
	// constraint failure.
	IsUniqueViolation(err error) bool
	// ClockSQL is a statement returning the database's clock as integer
	// unix milliseconds.
	ClockSQL() string
	Close() error
}

// Querier runs statements.
type Querier interface {
	// Exec runs a statement and returns the number of rows it affected.
	Exec(ctx context.Context, query string, args ...any) (int64, error)
	Query(ctx context.Context, query string, args ...any) (Rows, error)
}

// Rows is a result set; its method set is the common part of database/sql's
// and pgx's.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// WriteTx is a write transaction.
type WriteTx interface {
	Querier
	// InsertEntries writes rows, their selectors and a put change for each at
	// the row's revision. When a row collides with a stored entry (same ID or
	// fingerprint) it returns the row's index and the transaction stays
	// usable; otherwise it returns -1.
	InsertEntries(ctx context.Context, rows []Row) (conflict int, err error)
	// InsertAudit writes audit events at indexes firstEvent, firstEvent+1, …
	// and tree hashes at firstHash, firstHash+1, ….
	InsertAudit(ctx context.Context, firstEvent int64, events [][]byte, firstHash int64, hashes [][]byte) error
	Commit(ctx context.Context) error
	// Rollback ends the transaction if it is still open; it must work after
	// ctx is done.
	Rollback()
}
