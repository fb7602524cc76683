package sqlstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"writ.dev/writ/store"
)

// Store implements store.Store over an Engine.
type Store struct {
	engine Engine
	group  groupCommit

	sealerMu sync.Mutex
	sealer   store.AuditSealer
}

var _ store.Store = (*Store)(nil)

// New returns a Store over a migrated database.
func New(e Engine) *Store {
	return &Store{engine: e}
}

// write runs fn in a write transaction under a new revision and appends
// evs to the audit log in the same transaction. The revision is bumped
// first, so the row lock that orders revisions is held for the whole change
// and released by the commit; if anything fails the rollback undoes the
// bump and the events too.
func (s *Store) write(ctx context.Context, evs []store.AuditEvent, fn func(tx WriteTx, rev int64) error) error {
	if err := checkEvents(evs); err != nil {
		return err
	}
	tx, err := s.engine.BeginWrite(ctx)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer tx.Rollback()
	rev, err := queryInt(ctx, tx, bumpRevisionSQL)
	if err != nil {
		return fmt.Errorf("bump revision: %w", err)
	}
	if err := fn(tx, rev); err != nil {
		return err
	}
	sealed, err := s.appendEvents(ctx, tx, evs)
	if err != nil {
		return err
	}
	if err := s.commit(ctx, tx, sealed); err != nil {
		return fmt.Errorf("commit: %w", s.mapErr(err))
	}
	return nil
}

// mapErr turns a unique violation the checks before it did not foresee into
// ErrAlreadyExists.
func (s *Store) mapErr(err error) error {
	if err != nil && s.engine.IsUniqueViolation(err) {
		return fmt.Errorf("%w: %w", store.ErrAlreadyExists, err)
	}
	return err
}

// CreateEntries implements store.Store.
func (s *Store) CreateEntries(ctx context.Context, entries []store.Entry, evs ...store.AuditEvent) ([]store.Entry, error) {
	if len(entries) == 0 {
		// Nothing changes, so no revision is spent and no event is due.
		return nil, nil
	}
	rows, err := prepareBatch(entries, time.Now().Unix())
	if err != nil {
		return nil, err
	}
	err = s.write(ctx, evs, func(tx WriteTx, rev int64) error {
		for i := range rows {
			rows[i].Revision = rev
		}
		i, err := tx.InsertEntries(ctx, rows)
		if err != nil {
			return s.mapErr(err)
		}
		if i >= 0 {
			return explainTaken(ctx, tx, fmt.Sprintf("entries[%d]", i), &rows[i])
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]store.Entry, len(rows))
	for i := range rows {
		if out[i], err = rows[i].Entry(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// explainTaken says which stored entry r collided with.
func explainTaken(ctx context.Context, q Querier, subject string, r *Row) error {
	other, err := queryString(ctx, q, takenSQL, r.ID, r.Fingerprint)
	switch {
	case err != nil:
		return fmt.Errorf("%s: %w", subject, err)
	case other == r.ID:
		return fmt.Errorf("%s: id %q is taken: %w", subject, r.ID, store.ErrAlreadyExists)
	default:
		return sameRule(subject, other)
	}
}

func sameRule(subject, other string) error {
	return fmt.Errorf("%s: entry %q has the same SPIFFE ID, parent and selectors: %w", subject, other, store.ErrAlreadyExists)
}

func notFound(id string) error {
	return fmt.Errorf("entry %q: %w", id, store.ErrNotFound)
}

// UpdateEntry implements store.Store.
func (s *Store) UpdateEntry(ctx context.Context, e store.Entry, evs ...store.AuditEvent) (store.Entry, error) {
	if !validID(e.ID) {
		return store.Entry{}, notFound(e.ID)
	}
	r := newRow(e)
	r.UpdatedAt = time.Now().Unix()
	err := s.write(ctx, evs, func(tx WriteTx, rev int64) error {
		r.Revision = rev
		if err := checkUpdate(ctx, tx, &r, e.Revision); err != nil {
			return err
		}
		return s.replace(ctx, tx, &r)
	})
	if err != nil {
		return store.Entry{}, err
	}
	return r.Entry()
}

// checkUpdate verifies that the update may go ahead and fills in the
// creation time it keeps. Checking before writing is race-free because
// writers are serialized by the revision lock already held.
func checkUpdate(ctx context.Context, tx WriteTx, r *Row, wantRevision int64) error {
	rows, err := tx.Query(ctx, entryRevisionSQL, r.ID)
	if err != nil {
		return err
	}
	var current int64
	found, err := scanOne(rows, &current, &r.CreatedAt)
	switch {
	case err != nil:
		return err
	case !found:
		return notFound(r.ID)
	case wantRevision != 0 && wantRevision != current:
		return fmt.Errorf("entry %q is at revision %d, not %d: read it again and retry: %w", r.ID, current, wantRevision, store.ErrConflict)
	}
	other, err := queryString(ctx, tx, sameRuleSQL, r.Fingerprint, r.ID)
	if err != nil {
		return err
	}
	if other != "" {
		return sameRule(fmt.Sprintf("entry %q", r.ID), other)
	}
	return nil
}

// replace writes r over the stored entry, its selectors included.
func (s *Store) replace(ctx context.Context, tx WriteTx, r *Row) error {
	if _, err := tx.Exec(ctx, updateEntrySQL, r.ID, r.SPIFFEID, r.ParentID, r.X509TTL, r.JWTTTL, r.Hint, r.ExpiresAt, r.Revision, r.UpdatedAt, r.DNSNames, r.Fingerprint, r.ParentSelectors); err != nil {
		return fmt.Errorf("entry %q: %w", r.ID, s.mapErr(err))
	}
	if _, err := tx.Exec(ctx, deleteSelectorsSQL, r.ID); err != nil {
		return fmt.Errorf("entry %q: selectors: %w", r.ID, err)
	}
	for _, sel := range r.Selectors {
		if _, err := tx.Exec(ctx, InsertSelectorSQL, r.ID, sel.Type, sel.Value); err != nil {
			return fmt.Errorf("entry %q: selectors: %w", r.ID, err)
		}
	}
	if _, err := tx.Exec(ctx, InsertChangeSQL, r.Revision, r.ID, string(store.OpPut)); err != nil {
		return fmt.Errorf("entry %q: change: %w", r.ID, err)
	}
	return nil
}

// DeleteEntry implements store.Store.
func (s *Store) DeleteEntry(ctx context.Context, id string, evs ...store.AuditEvent) (store.Entry, error) {
	if !validID(id) {
		return store.Entry{}, notFound(id)
	}
	var old store.Entry
	err := s.write(ctx, evs, func(tx WriteTx, rev int64) error {
		var err error
		if old, err = getEntry(ctx, tx, id); err != nil {
			return err
		}
		// Selectors go with the entry (ON DELETE CASCADE).
		if _, err := tx.Exec(ctx, deleteEntrySQL, id); err != nil {
			return fmt.Errorf("entry %q: %w", id, err)
		}
		if _, err := tx.Exec(ctx, InsertChangeSQL, rev, id, string(store.OpDelete)); err != nil {
			return fmt.Errorf("entry %q: change: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return store.Entry{}, err
	}
	return old, nil
}

// GetEntry implements store.Store.
func (s *Store) GetEntry(ctx context.Context, id string) (store.Entry, error) {
	if !validID(id) {
		return store.Entry{}, notFound(id)
	}
	return getEntry(ctx, s.engine.Reader(), id)
}

func getEntry(ctx context.Context, q Querier, id string) (store.Entry, error) {
	entries, err := listEntries(ctx, q, entryQuery{id: id})
	if err != nil {
		return store.Entry{}, err
	}
	if len(entries) == 0 {
		return store.Entry{}, notFound(id)
	}
	return entries[0], nil
}

// ListEntries implements store.Store.
func (s *Store) ListEntries(ctx context.Context, f store.EntryFilter) ([]store.Entry, error) {
	return listEntries(ctx, s.engine.Reader(), entryQuery{EntryFilter: f})
}

func listEntries(ctx context.Context, q Querier, eq entryQuery) ([]store.Entry, error) {
	query, args := eq.sql()
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list entries: %w", err)
	}
	entries, err := scanEntries(rows)
	if err != nil {
		return nil, fmt.Errorf("list entries: %w", err)
	}
	return entries, nil
}

// Revision implements store.Store.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	return queryInt(ctx, s.engine.Reader(), revisionSQL)
}

// ChangesSince implements store.Store. A limit never splits a revision: a
// caller resumes from the last revision it received, so a partly delivered
// revision would lose the rest of its changes. The result therefore ends at
// the last whole revision that fits, and holds one whole revision even when
// that alone is longer than limit.
func (s *Store) ChangesSince(ctx context.Context, rev int64, limit int) ([]store.Change, error) {
	q := s.engine.Reader()
	if limit <= 0 || limit >= math.MaxInt32 {
		return queryChanges(ctx, q, changesSQL, rev)
	}
	changes, err := queryChanges(ctx, q, changesLimitSQL, rev, int64(limit)+1)
	if err != nil || len(changes) <= limit {
		return changes, err
	}
	cut := changes[limit].Revision
	for len(changes) > 0 && changes[len(changes)-1].Revision == cut {
		changes = changes[:len(changes)-1]
	}
	if len(changes) > 0 {
		return changes, nil
	}
	return queryChanges(ctx, q, revisionChangeSQL, cut)
}

func queryChanges(ctx context.Context, q Querier, query string, args ...any) ([]store.Change, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("changes: %w", err)
	}
	defer rows.Close()
	var out []store.Change
	for rows.Next() {
		var c store.Change
		var op string
		if err := rows.Scan(&c.Revision, &c.EntryID, &op); err != nil {
			return nil, fmt.Errorf("changes: %w", err)
		}
		c.Op = store.ChangeOp(op)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("changes: %w", err)
	}
	return out, nil
}

// PutCACert implements store.Store. It does not touch the entry revision:
// the bundle is read whole, not followed change by change.
func (s *Store) PutCACert(ctx context.Context, c store.CACert, evs ...store.AuditEvent) error {
	if len(c.CertDER) == 0 {
		return fmt.Errorf("CA certificate of server %q: no DER bytes", c.ServerID)
	}
	if err := checkEvents(evs); err != nil {
		return err
	}
	sum := sha256.Sum256(c.CertDER)
	tx, err := s.engine.BeginWrite(ctx)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(ctx, putCACertSQL, hex.EncodeToString(sum[:]), c.ServerID, c.CertDER, c.NotBefore.Unix(), c.NotAfter.Unix(), flag(c.Tainted), flag(c.Revoked)); err != nil {
		return fmt.Errorf("put CA certificate: %w", err)
	}
	sealed, err := s.appendEvents(ctx, tx, evs)
	if err != nil {
		return err
	}
	return s.commit(ctx, tx, sealed)
}

// ListCACerts implements store.Store.
func (s *Store) ListCACerts(ctx context.Context, now time.Time) ([]store.CACert, error) {
	rows, err := s.engine.Reader().Query(ctx, listCACertsSQL, now.Unix())
	if err != nil {
		return nil, fmt.Errorf("list CA certificates: %w", err)
	}
	defer rows.Close()
	var out []store.CACert
	for rows.Next() {
		var c store.CACert
		var notBefore, notAfter, tainted int64
		if err := rows.Scan(&c.ServerID, &c.CertDER, &notBefore, &notAfter, &tainted); err != nil {
			return nil, fmt.Errorf("list CA certificates: %w", err)
		}
		c.Tainted = tainted != 0
		c.NotBefore, c.NotAfter = time.Unix(notBefore, 0).UTC(), time.Unix(notAfter, 0).UTC()
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list CA certificates: %w", err)
	}
	return out, nil
}

// PutJWTKey implements store.Store. Like PutCACert it does not touch the
// entry revision.
func (s *Store) PutJWTKey(ctx context.Context, k store.JWTKey, evs ...store.AuditEvent) error {
	if k.KeyID == "" {
		return fmt.Errorf("JWT key of server %q: no key ID", k.ServerID)
	}
	if err := checkEvents(evs); err != nil {
		return err
	}
	if len(k.PublicKeyDER) == 0 {
		return fmt.Errorf("JWT key %q of server %q: no public key", k.KeyID, k.ServerID)
	}
	tx, err := s.engine.BeginWrite(ctx)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(ctx, putJWTKeySQL, k.KeyID, k.ServerID, k.PublicKeyDER, k.NotAfter.Unix(), flag(k.Tainted), flag(k.Revoked)); err != nil {
		return fmt.Errorf("put JWT key: %w", err)
	}
	sealed, err := s.appendEvents(ctx, tx, evs)
	if err != nil {
		return err
	}
	return s.commit(ctx, tx, sealed)
}

// ListJWTKeys implements store.Store.
func (s *Store) ListJWTKeys(ctx context.Context, now time.Time) ([]store.JWTKey, error) {
	rows, err := s.engine.Reader().Query(ctx, listJWTKeysSQL, now.Unix())
	if err != nil {
		return nil, fmt.Errorf("list JWT keys: %w", err)
	}
	defer rows.Close()
	var out []store.JWTKey
	for rows.Next() {
		var k store.JWTKey
		var notAfter, tainted int64
		if err := rows.Scan(&k.ServerID, &k.KeyID, &k.PublicKeyDER, &notAfter, &tainted); err != nil {
			return nil, fmt.Errorf("list JWT keys: %w", err)
		}
		k.Tainted = tainted != 0
		k.NotAfter = time.Unix(notAfter, 0).UTC()
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list JWT keys: %w", err)
	}
	return out, nil
}

// flag stores a boolean as the integer both engines' schemas use.
func flag(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// Ping implements store.Store. Reading the revision proves more than a bare
// connection: the database is there, migrated and readable.
func (s *Store) Ping(ctx context.Context) error {
	_, err := s.Revision(ctx)
	return err
}

// Close implements store.Store.
func (s *Store) Close() error { return s.engine.Close() }

// Analyze refreshes the statistics the query planner relies on. PostgreSQL's
// autovacuum does so within a minute or so of large changes, and SQLite's
// PRAGMA optimize at Close; until then a freshly imported database may be
// read with poor plans. Call it after a bulk import to get good plans at once.
func (s *Store) Analyze(ctx context.Context) error {
	tx, err := s.engine.BeginWrite(ctx)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(ctx, "ANALYZE"); err != nil {
		return fmt.Errorf("analyze: %w", err)
	}
	return tx.Commit(ctx)
}

// SchemaVersion is the version of the newest migration applied.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	v, err := queryInt(ctx, s.engine.Reader(), schemaVersionSQL)
	return int(v), err
}

// scanOne scans the first row, if any, and closes rows.
func scanOne(rows Rows, dest ...any) (found bool, err error) {
	defer rows.Close()
	if rows.Next() {
		found, err = true, rows.Scan(dest...)
	}
	// Closing first makes pgx report errors that arrive after the row.
	rows.Close()
	if err == nil {
		err = rows.Err()
	}
	return found && err == nil, err
}

func queryInt(ctx context.Context, q Querier, query string, args ...any) (int64, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	var v int64
	found, err := scanOne(rows, &v)
	if err == nil && !found {
		err = errors.New("query returned no row")
	}
	return v, err
}

// queryString returns the first column of the first row, or "" when there
// is no row.
func queryString(ctx context.Context, q Querier, query string, args ...any) (string, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return "", err
	}
	var v string
	_, err = scanOne(rows, &v)
	return v, err
}
