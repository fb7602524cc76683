package sqlstore

import (
	"context"
	"fmt"
	"time"

	"writ.dev/writ/store/migrate"
)

const (
	createMigrationsSQL = `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`
	schemaVersionSQL    = `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`
	recordMigrationSQL  = `INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)`
)

// Migrate applies the migrations the database in tx lacks, in order. The
// caller commits, and holds whatever lock keeps two processes from migrating
// the same database at once.
func Migrate(ctx context.Context, tx Querier, ms []migrate.Migration) error {
	if _, err := tx.Exec(ctx, createMigrationsSQL); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	current, err := queryInt(ctx, tx, schemaVersionSQL)
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	pending, err := migrate.Plan(ms, int(current))
	if err != nil {
		return err
	}
	for _, m := range pending {
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			return fmt.Errorf("migration %s: %w", m.Name, err)
		}
		if _, err := tx.Exec(ctx, recordMigrationSQL, m.Version, time.Now().Unix()); err != nil {
			return fmt.Errorf("migration %s: record version: %w", m.Name, err)
		}
	}
	return nil
}
