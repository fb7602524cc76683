// Package postgres is writ's store for several servers sharing one trust
// domain: they share one PostgreSQL database, and every invariant of the
// store holds across them (revisions are ordered by a row lock, uniqueness
// by constraints, migrations by an advisory lock).
package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5/pgxpool"

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

// Store is writ's state in a PostgreSQL database.
type Store struct {
	*sqlstore.Store
}

// Open connects to the database named by dsn (a libpq URL or key=value
// string, including pgxpool's pool_* settings) and migrates it. Tables live
// in the first schema of the search_path.
func Open(ctx context.Context, dsn string) (*Store, error) {
	ms, err := migrations()
	if err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The DSN may hold a password: the parse error says what is wrong
		// without repeating it.
		return nil, fmt.Errorf("postgres: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	e := &engine{pool: pool}
	if err := e.migrate(ctx, ms); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres %s@%s:%d/%s: migrate: %w", cfg.ConnConfig.User, cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database, err)
	}
	return &Store{sqlstore.New(e)}, nil
}
