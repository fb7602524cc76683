package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"writ.dev/writ/store/internal/sqlstore"
	"writ.dev/writ/store/migrate"
)

// uniqueViolation is PostgreSQL's SQLSTATE for unique_violation.
const uniqueViolation = "23505"

// migrationLockKey is the advisory lock that keeps servers starting at the
// same time from migrating the same database at once.
const migrationLockKey int64 = 0x77726974_6d696772 // "writmigr"

type engine struct {
	pool *pgxpool.Pool
}

func (e *engine) Reader() sqlstore.Querier { return querier{e.pool} }

// BeginWrite asks for READ COMMITTED whatever the database's default: each
// statement after the revision lock must see what the previous holder of
// the lock committed, where a stricter level would fail with a
// serialization error instead.
func (e *engine) BeginWrite(ctx context.Context) (sqlstore.WriteTx, error) {
	tx, err := e.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return nil, err
	}
	return &writeTx{querier: querier{tx}, tx: tx}, nil
}

func (e *engine) IsUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == uniqueViolation
}

// ClockSQL implements sqlstore.Engine. clock_timestamp, unlike now, is not
// frozen at the start of a transaction.
func (e *engine) ClockSQL() string {
	return `SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint`
}

func (e *engine) Close() error {
	e.pool.Close()
	return nil
}

func (e *engine) migrate(ctx context.Context, ms []migrate.Migration) error {
	tx, err := e.BeginWrite(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockKey); err != nil {
		return err
	}
	if err := sqlstore.Migrate(ctx, tx, ms); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// querier adapts pgx to sqlstore.Querier; pgx.Rows already is a
// sqlstore.Rows.
type querier struct {
	q interface {
		Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
		Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	}
}

func (q querier) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := q.q.Exec(ctx, query, args...)
	return tag.RowsAffected(), err
}

func (q querier) Query(ctx context.Context, query string, args ...any) (sqlstore.Rows, error) {
	rows, err := q.q.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return rows, nil
}

type writeTx struct {
	querier
	tx pgx.Tx
}

func (t *writeTx) Commit(ctx context.Context) error { return t.tx.Commit(ctx) }

// rollbackTimeout bounds a rollback whose caller has given up: pgx closes
// the connection if it cannot finish, which ends the transaction too.
const rollbackTimeout = 5 * time.Second

func (t *writeTx) Rollback() {
	ctx, cancel := context.WithTimeout(context.Background(), rollbackTimeout)
	defer cancel()
	_ = t.tx.Rollback(ctx) // pgx.ErrTxClosed after Commit
}
