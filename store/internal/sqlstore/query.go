package sqlstore

import (
	"database/sql"
	"strconv"
	"strings"

	"writ.dev/writ/store"
)

// Statements an engine may prepare for its bulk insert.
const (
	InsertEntrySQL    = `INSERT INTO entries (id, spiffe_id, parent_id, x509_ttl_seconds, jwt_ttl_seconds, hint, expires_at, revision, created_at, updated_at, dns_names, fingerprint, parent_selectors) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`
	InsertSelectorSQL = `INSERT INTO entry_selectors (entry_id, type, value) VALUES ($1, $2, $3)`
	InsertChangeSQL   = `INSERT INTO entry_changes (revision, entry_id, op) VALUES ($1, $2, $3)`
)

const (
	bumpRevisionSQL = `UPDATE revision SET value = value + 1 RETURNING value`
	revisionSQL     = `SELECT value FROM revision`

	entryRevisionSQL   = `SELECT revision, created_at FROM entries WHERE id = $1`
	takenSQL           = `SELECT id FROM entries WHERE id = $1 OR fingerprint = $2 ORDER BY id <> $1 LIMIT 1`
	sameRuleSQL        = `SELECT id FROM entries WHERE fingerprint = $1 AND id <> $2`
	updateEntrySQL     = `UPDATE entries SET spiffe_id = $2, parent_id = $3, x509_ttl_seconds = $4, jwt_ttl_seconds = $5, hint = $6, expires_at = $7, revision = $8, updated_at = $9, dns_names = $10, fingerprint = $11, parent_selectors = $12 WHERE id = $1`
	deleteEntrySQL     = `DELETE FROM entries WHERE id = $1`
	deleteSelectorsSQL = `DELETE FROM entry_selectors WHERE entry_id = $1`

	changesSQL        = `SELECT revision, entry_id, op FROM entry_changes WHERE revision > $1 ORDER BY revision, entry_id`
	changesLimitSQL   = changesSQL + ` LIMIT $2`
	revisionChangeSQL = `SELECT revision, entry_id, op FROM entry_changes WHERE revision = $1 ORDER BY entry_id`

	// Re-recording a certificate refreshes who owns it and its validity, so
	// the call is idempotent and never duplicates a certificate. The
	// incident flags only ever go from 0 to 1.
	putCACertSQL = `INSERT INTO ca_certs (sha256, server_id, cert_der, not_before, not_after, tainted, revoked) VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (sha256) DO UPDATE SET server_id = excluded.server_id, not_before = excluded.not_before, not_after = excluded.not_after,
tainted = CASE WHEN ca_certs.tainted <> 0 THEN ca_certs.tainted ELSE excluded.tainted END,
revoked = CASE WHEN ca_certs.revoked <> 0 THEN ca_certs.revoked ELSE excluded.revoked END`
	listCACertsSQL = `SELECT server_id, cert_der, not_before, not_after, tainted FROM ca_certs WHERE not_after > $1 AND revoked = 0 ORDER BY not_before, sha256`

	// A key ID is a thumbprint of the key, so re-recording one never changes
	// the key itself, only who published it and until when.
	putJWTKeySQL = `INSERT INTO jwt_keys (key_id, server_id, public_key_der, not_after, tainted, revoked) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (key_id) DO UPDATE SET server_id = excluded.server_id, public_key_der = excluded.public_key_der, not_after = excluded.not_after,
tainted = CASE WHEN jwt_keys.tainted <> 0 THEN jwt_keys.tainted ELSE excluded.tainted END,
revoked = CASE WHEN jwt_keys.revoked <> 0 THEN jwt_keys.revoked ELSE excluded.revoked END`
	listJWTKeysSQL = `SELECT server_id, key_id, public_key_der, not_after, tainted FROM jwt_keys WHERE not_after > $1 AND revoked = 0 ORDER BY not_after, key_id`
)

// entryQuery selects entries with their selectors.
type entryQuery struct {
	id  string   // exact ID, for reading one entry
	ids []string // any of these IDs, for reading a known set
	store.EntryFilter
}

// sql returns one statement that pages through matching entries and joins
// their selectors, so a page costs one round trip however many entries it
// holds. Each required selector is its own IN (…) so the planner can drive
// the query from the (type, value) index when the selector is rare and from
// the id order when it is common.
func (q entryQuery) sql() (string, []any) {
	var where []string
	var args []any
	param := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	equal := func(column, v string) {
		if v != "" {
			where = append(where, column+" = "+param(v))
		}
	}
	equal("id", q.id)
	if len(q.ids) > 0 {
		ps := make([]string, len(q.ids))
		for i, id := range q.ids {
			ps[i] = param(id)
		}
		where = append(where, "id IN ("+strings.Join(ps, ", ")+")")
	}
	equal("spiffe_id", q.SPIFFEID)
	equal("parent_id", q.ParentID)
	equal("hint", q.Hint)
	if q.WithParentSelectors {
		where = append(where, "parent_selectors <> '"+noParentSelectors+"'")
	}
	for _, s := range selectorSet(q.Selectors) {
		where = append(where, "id IN (SELECT entry_id FROM entry_selectors WHERE type = "+param(s.Type)+" AND value = "+param(s.Value)+")")
	}
	if q.AfterID != "" {
		where = append(where, "id > "+param(q.AfterID))
	}

	page := "SELECT " + strings.Join(entryColumns, ", ") + " FROM entries"
	if len(where) > 0 {
		page += " WHERE " + strings.Join(where, " AND ")
	}
	page += " ORDER BY id"
	if q.Limit > 0 {
		page += " LIMIT " + param(int64(q.Limit))
	}
	return "SELECT e." + strings.Join(entryColumns, ", e.") + ", s.type, s.value FROM (" + page + ") e" +
		" LEFT JOIN entry_selectors s ON s.entry_id = e.id ORDER BY e.id, s.type, s.value", args
}

// scanEntries reads the result of entryQuery.sql: one row per selector (or
// one with NULL selector for an entry without any), grouped by entry.
func scanEntries(rows Rows) ([]store.Entry, error) {
	defer rows.Close()
	var (
		out       []store.Entry
		cur, next Row
		typ, val  sql.NullString
		started   bool
	)
	dest := append(next.dest(), &typ, &val)
	flush := func() error {
		e, err := cur.Entry()
		out = append(out, e)
		return err
	}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		if !started || next.ID != cur.ID {
			if started {
				if err := flush(); err != nil {
					return nil, err
				}
			}
			cur, started = next, true
		}
		if typ.Valid {
			cur.Selectors = append(cur.Selectors, store.Selector{Type: typ.String, Value: val.String})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if started {
		if err := flush(); err != nil {
			return nil, err
		}
	}
	return out, nil
}
