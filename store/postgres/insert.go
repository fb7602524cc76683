package postgres

import (
	"context"
	"fmt"

	"writ.dev/writ/store"
	"writ.dev/writ/store/internal/sqlstore"
)

// A batch goes to the server as one array per column, so inserting 1,000
// entries costs three statements rather than thousands of round trips.
const (
	insertEntriesSQL = `INSERT INTO entries (id, spiffe_id, parent_id, x509_ttl_seconds, jwt_ttl_seconds, hint, expires_at, revision, created_at, updated_at, dns_names, fingerprint, parent_selectors)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[], $12::text[], $13::text[])
ON CONFLICT DO NOTHING
RETURNING id`
	insertSelectorsSQL = `INSERT INTO entry_selectors (entry_id, type, value) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])`
	insertChangesSQL   = `INSERT INTO entry_changes (revision, entry_id, op) SELECT revision, entry_id, $3 FROM unnest($1::bigint[], $2::text[]) AS c (revision, entry_id)`
)

// InsertEntries skips rows that collide with stored entries (ON CONFLICT DO
// NOTHING) instead of failing, which would abort the transaction before the
// collision could be explained; the first skipped row is the conflict.
func (t *writeTx) InsertEntries(ctx context.Context, rows []sqlstore.Row) (int, error) {
	inserted, err := t.insertEntries(ctx, rows)
	if err != nil {
		return -1, err
	}
	if len(inserted) < len(rows) {
		for i := range rows {
			if !inserted[rows[i].ID] {
				return i, nil
			}
		}
	}
	var entryIDs, types, values []string
	for i := range rows {
		for _, s := range rows[i].Selectors {
			entryIDs = append(entryIDs, rows[i].ID)
			types = append(types, s.Type)
			values = append(values, s.Value)
		}
	}
	if _, err := t.tx.Exec(ctx, insertSelectorsSQL, entryIDs, types, values); err != nil {
		return -1, fmt.Errorf("insert selectors: %w", err)
	}
	revisions, ids := make([]int64, len(rows)), make([]string, len(rows))
	for i := range rows {
		revisions[i], ids[i] = rows[i].Revision, rows[i].ID
	}
	if _, err := t.tx.Exec(ctx, insertChangesSQL, revisions, ids, string(store.OpPut)); err != nil {
		return -1, fmt.Errorf("insert changes: %w", err)
	}
	return -1, nil
}

// insertEntries returns the IDs it inserted.
func (t *writeTx) insertEntries(ctx context.Context, rows []sqlstore.Row) (map[string]bool, error) {
	var cols entryColumns
	for i := range rows {
		cols.add(&rows[i])
	}
	result, err := t.tx.Query(ctx, insertEntriesSQL, cols.args()...)
	if err != nil {
		return nil, fmt.Errorf("insert entries: %w", err)
	}
	defer result.Close()
	inserted := make(map[string]bool, len(rows))
	for result.Next() {
		var id string
		if err := result.Scan(&id); err != nil {
			return nil, fmt.Errorf("insert entries: %w", err)
		}
		inserted[id] = true
	}
	if err := result.Err(); err != nil {
		return nil, fmt.Errorf("insert entries: %w", err)
	}
	return inserted, nil
}

// entryColumns is a batch of entries column by column, as unnest takes it.
type entryColumns struct {
	ids, spiffeIDs, parentIDs                  []string
	x509TTLs, jwtTTLs                          []int64
	hints                                      []string
	expiresAt, revisions, createdAt, updatedAt []int64
	dnsNames, fingerprints, parentSelectors    []string
}

func (c *entryColumns) add(r *sqlstore.Row) {
	c.ids = append(c.ids, r.ID)
	c.spiffeIDs = append(c.spiffeIDs, r.SPIFFEID)
	c.parentIDs = append(c.parentIDs, r.ParentID)
	c.x509TTLs = append(c.x509TTLs, r.X509TTL)
	c.jwtTTLs = append(c.jwtTTLs, r.JWTTTL)
	c.hints = append(c.hints, r.Hint)
	c.expiresAt = append(c.expiresAt, r.ExpiresAt)
	c.revisions = append(c.revisions, r.Revision)
	c.createdAt = append(c.createdAt, r.CreatedAt)
	c.updatedAt = append(c.updatedAt, r.UpdatedAt)
	c.dnsNames = append(c.dnsNames, r.DNSNames)
	c.fingerprints = append(c.fingerprints, r.Fingerprint)
	c.parentSelectors = append(c.parentSelectors, r.ParentSelectors)
}

// args are in the column order of insertEntriesSQL.
func (c *entryColumns) args() []any {
	return []any{c.ids, c.spiffeIDs, c.parentIDs, c.x509TTLs, c.jwtTTLs, c.hints, c.expiresAt, c.revisions, c.createdAt, c.updatedAt, c.dnsNames, c.fingerprints, c.parentSelectors}
}

// Audit rows go as one array per column too: a group commit of thousands
// of events is two statements.
const (
	insertAuditEventsSQL = `INSERT INTO audit_events (idx, event) SELECT $1::bigint + n - 1, e FROM unnest($2::bytea[]) WITH ORDINALITY AS t (e, n)`
	insertAuditHashesSQL = `INSERT INTO audit_hashes (idx, hash) SELECT $1::bigint + n - 1, h FROM unnest($2::bytea[]) WITH ORDINALITY AS t (h, n)`
)

// InsertAudit implements sqlstore.WriteTx.
func (t *writeTx) InsertAudit(ctx context.Context, firstEvent int64, events [][]byte, firstHash int64, hashes [][]byte) error {
	if _, err := t.tx.Exec(ctx, insertAuditEventsSQL, firstEvent, events); err != nil {
		return fmt.Errorf("insert audit events: %w", err)
	}
	if len(hashes) == 0 {
		return nil
	}
	if _, err := t.tx.Exec(ctx, insertAuditHashesSQL, firstHash, hashes); err != nil {
		return fmt.Errorf("insert audit hashes: %w", err)
	}
	return nil
}
