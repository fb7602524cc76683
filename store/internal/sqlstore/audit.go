package sqlstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"writ.dev/writ/store"
)

// Statements an engine may prepare for its audit insert.
const (
	InsertAuditEventSQL = `INSERT INTO audit_events (idx, event) VALUES ($1, $2)`
	InsertAuditHashSQL  = `INSERT INTO audit_hashes (idx, hash) VALUES ($1, $2)`
)

const (
	// The head row's lock orders appenders; writers that also change state
	// took the revision lock before this one, so the order is always
	// revision, then audit head.
	bumpAuditHeadSQL = `UPDATE audit_head SET size = size + $1 RETURNING size`
	auditSizeSQL     = `SELECT size FROM audit_head`
	readAuditSQL     = `SELECT idx, event FROM audit_events WHERE idx >= $1 ORDER BY idx LIMIT $2`

	putCheckpointSQL = `INSERT INTO audit_checkpoints (server_id, size, note, created_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (size, server_id) DO UPDATE SET note = excluded.note, created_at = excluded.created_at`
	dropCheckpointSQL       = `DELETE FROM audit_checkpoints WHERE server_id = $1 AND size = $2`
	listCheckpointsSQL      = `SELECT server_id, size, note, created_at FROM audit_checkpoints WHERE size >= $1 ORDER BY size, server_id`
	listCheckpointsLimitSQL = listCheckpointsSQL + ` LIMIT $2`

	putAuditKeySQL = `INSERT INTO audit_keys (name, server_id, public_key, created_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (name) DO NOTHING`
	getAuditKeySQL   = `SELECT public_key FROM audit_keys WHERE name = $1`
	listAuditKeysSQL = `SELECT name, server_id, public_key, created_at FROM audit_keys ORDER BY created_at, name`
)

// maxAuditBatch bounds how many events one group commit writes, so a burst
// is split into transactions of a bounded size.
const maxAuditBatch = 4096

// checkEvents refuses a change without evidence before anything is written.
func checkEvents(evs []store.AuditEvent) error {
	if len(evs) == 0 {
		return fmt.Errorf("audit: %w", store.ErrNoAuditEvent)
	}
	for i, ev := range evs {
		switch {
		case len(ev) == 0:
			return fmt.Errorf("audit event %d is empty: %w", i, store.ErrNoAuditEvent)
		case len(ev) > store.MaxAuditEventSize:
			return fmt.Errorf("audit event %d is %d bytes, over the %d-byte limit: %w", i, len(ev), store.MaxAuditEventSize, store.ErrNoAuditEvent)
		}
	}
	return nil
}

// appended is what appendEvents did inside a transaction: where the events
// went and, with a sealer, the checkpoint stored beside them.
type appended struct {
	first int64
	seal  *store.AuditSeal
}

// appendEvents appends evs to the log inside tx. It computes the tree's new
// stored hashes from the ones already stored, so the tree grows with the log
// and never needs rebuilding; with a sealer it then signs the new tree head
// and stores that checkpoint in the same transaction, so the events never
// commit without a signature over them.
func (s *Store) appendEvents(ctx context.Context, tx WriteTx, evs []store.AuditEvent) (appended, error) {
	size, err := queryInt(ctx, tx, bumpAuditHeadSQL, int64(len(evs)))
	if err != nil {
		return appended{}, fmt.Errorf("audit: bump head: %w", err)
	}
	first := size - int64(len(evs))
	firstHash := tlog.StoredHashIndex(0, first)
	r := &txHashReader{ctx: ctx, tx: tx, base: firstHash}
	for i, ev := range evs {
		hs, err := tlog.StoredHashes(first+int64(i), ev, r)
		if err != nil {
			return appended{}, fmt.Errorf("audit: hash event %d: %w", first+int64(i), err)
		}
		r.fresh = append(r.fresh, hs...)
	}
	events := make([][]byte, len(evs))
	for i, ev := range evs {
		events[i] = ev
	}
	hashes := make([][]byte, len(r.fresh))
	for i := range r.fresh {
		hashes[i] = r.fresh[i][:]
	}
	if err := tx.InsertAudit(ctx, first, events, firstHash, hashes); err != nil {
		return appended{}, fmt.Errorf("audit: insert: %w", err)
	}
	a := appended{first: first}
	sealer := s.auditSealer()
	if sealer == nil {
		return a, nil
	}
	root, err := tlog.TreeHash(size, r)
	if err != nil {
		return appended{}, fmt.Errorf("audit: tree hash of size %d: %w", size, err)
	}
	read := func(indexes []int64) ([]store.AuditHash, error) {
		hs, err := r.ReadHashes(indexes)
		if err != nil {
			return nil, err
		}
		out := make([]store.AuditHash, len(hs))
		for i := range hs {
			out[i] = store.AuditHash(hs[i])
		}
		return out, nil
	}
	seal, err := sealer.SealAudit(ctx, size, store.AuditHash(root), read)
	if err != nil {
		return appended{}, fmt.Errorf("audit: sealing the log at size %d: %w", size, err)
	}
	c := seal.Checkpoint
	if c.ServerID == "" || len(c.Note) == 0 || c.Size != size {
		return appended{}, fmt.Errorf("audit: the sealer returned an unusable checkpoint (size %d for a log of %d)", c.Size, size)
	}
	if c.CreatedAt.IsZero() {
		c.CreatedAt = time.Now()
	}
	for _, drop := range seal.Drop {
		if drop >= size {
			continue
		}
		if _, err := tx.Exec(ctx, dropCheckpointSQL, c.ServerID, drop); err != nil {
			return appended{}, fmt.Errorf("audit: drop superseded checkpoint: %w", err)
		}
	}
	if _, err := tx.Exec(ctx, putCheckpointSQL, c.ServerID, c.Size, c.Note, c.CreatedAt.Unix()); err != nil {
		return appended{}, fmt.Errorf("audit: store checkpoint: %w", err)
	}
	a.seal = &seal
	return a, nil
}

// commit commits tx and then tells the sealer its checkpoint is durable.
func (s *Store) commit(ctx context.Context, tx WriteTx, a appended) error {
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	if a.seal != nil {
		if sealer := s.auditSealer(); sealer != nil {
			sealer.AuditCommitted(*a.seal)
		}
	}
	return nil
}

// SetAuditSealer implements store.Store.
func (s *Store) SetAuditSealer(sealer store.AuditSealer) {
	s.sealerMu.Lock()
	defer s.sealerMu.Unlock()
	s.sealer = sealer
}

func (s *Store) auditSealer() store.AuditSealer {
	s.sealerMu.Lock()
	defer s.sealerMu.Unlock()
	return s.sealer
}

// txHashReader reads stored hashes inside a write transaction: those this
// transaction computed (from base on) from memory, older ones from the table.
type txHashReader struct {
	ctx   context.Context
	tx    Querier
	base  int64
	fresh []tlog.Hash
}

func (r *txHashReader) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	var missing []int64
	for i, idx := range indexes {
		if idx >= r.base && idx < r.base+int64(len(r.fresh)) {
			out[i] = r.fresh[idx-r.base]
		} else {
			missing = append(missing, idx)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	found, err := readHashes(r.ctx, r.tx, missing)
	if err != nil {
		return nil, err
	}
	for i, idx := range indexes {
		if idx >= r.base && idx < r.base+int64(len(r.fresh)) {
			continue
		}
		h, ok := found[idx]
		if !ok {
			return nil, fmt.Errorf("stored hash %d is missing", idx)
		}
		out[i] = h
	}
	return out, nil
}

// readHashes reads the stored hashes at indexes in one statement. The
// indexes are integers formatted here, never caller text.
func readHashes(ctx context.Context, q Querier, indexes []int64) (map[int64]tlog.Hash, error) {
	var b strings.Builder
	b.WriteString(`SELECT idx, hash FROM audit_hashes WHERE idx IN (`)
	for i, idx := range indexes {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(idx, 10))
	}
	b.WriteByte(')')
	rows, err := q.Query(ctx, b.String())
	if err != nil {
		return nil, fmt.Errorf("read audit hashes: %w", err)
	}
	defer rows.Close()
	out := make(map[int64]tlog.Hash, len(indexes))
	for rows.Next() {
		var idx int64
		var h []byte
		if err := rows.Scan(&idx, &h); err != nil {
			return nil, fmt.Errorf("read audit hashes: %w", err)
		}
		if len(h) != len(tlog.Hash{}) {
			return nil, fmt.Errorf("stored hash %d is %d bytes, not %d", idx, len(h), len(tlog.Hash{}))
		}
		out[idx] = tlog.Hash(h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read audit hashes: %w", err)
	}
	return out, nil
}

// groupCommit batches AppendAudit calls: the first caller to find no
// commit running becomes the leader and writes everything queued, in
// transactions of at most maxAuditBatch events, until the queue is empty;
// the others wait for their batch. One sync then serves many callers.
type groupCommit struct {
	mu      sync.Mutex
	queue   []*auditAppend
	leading bool
}

type auditAppend struct {
	evs   []store.AuditEvent
	first int64
	err   error
	done  chan struct{}
}

// AppendAudit implements store.Store.
func (s *Store) AppendAudit(ctx context.Context, evs ...store.AuditEvent) (int64, error) {
	if err := checkEvents(evs); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	req := &auditAppend{evs: evs, done: make(chan struct{})}
	g := &s.group
	g.mu.Lock()
	g.queue = append(g.queue, req)
	if g.leading {
		g.mu.Unlock()
		// Once queued the events will be written whatever ctx does, so
		// wait for the outcome rather than report a false failure.
		<-req.done
		return req.first, req.err
	}
	g.leading = true
	for len(g.queue) > 0 {
		batch, n := g.queue, 0
		for i, r := range batch {
			if n += len(r.evs); n > maxAuditBatch && i > 0 {
				batch = batch[:i]
				break
			}
		}
		g.queue = g.queue[len(batch):]
		g.mu.Unlock()
		s.commitAudit(batch)
		g.mu.Lock()
	}
	g.leading = false
	g.mu.Unlock()
	return req.first, req.err
}

// commitAudit writes one batch in one transaction and wakes its callers.
// It does not use any caller's context: the batch belongs to all of them.
func (s *Store) commitAudit(batch []*auditAppend) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var all []store.AuditEvent
	for _, r := range batch {
		all = append(all, r.evs...)
	}
	first, err := func() (int64, error) {
		tx, err := s.engine.BeginWrite(ctx)
		if err != nil {
			return 0, fmt.Errorf("begin transaction: %w", err)
		}
		defer tx.Rollback()
		sealed, err := s.appendEvents(ctx, tx, all)
		if err != nil {
			return 0, err
		}
		if err := s.commit(ctx, tx, sealed); err != nil {
			return 0, fmt.Errorf("commit: %w", err)
		}
		return sealed.first, nil
	}()
	for _, r := range batch {
		r.first, r.err = first, err
		first += int64(len(r.evs))
		close(r.done)
	}
}

// AuditSize implements store.Store.
func (s *Store) AuditSize(ctx context.Context) (int64, error) {
	n, err := queryInt(ctx, s.engine.Reader(), auditSizeSQL)
	if err != nil {
		return 0, fmt.Errorf("audit size: %w", err)
	}
	return n, nil
}

// ReadAudit implements store.Store.
func (s *Store) ReadAudit(ctx context.Context, start int64, limit int) ([]store.AuditRecord, error) {
	if limit <= 0 {
		return nil, nil
	}
	rows, err := s.engine.Reader().Query(ctx, readAuditSQL, start, int64(limit))
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	defer rows.Close()
	out := make([]store.AuditRecord, 0, min(limit, 1024))
	for rows.Next() {
		var r store.AuditRecord
		if err := rows.Scan(&r.Index, &r.Event); err != nil {
			return nil, fmt.Errorf("read audit log: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	return out, nil
}

// maxHashRead bounds one ReadAuditHashes call; a verifier needs a few
// dozen at a time.
const maxHashRead = 4096

// ReadAuditHashes implements store.Store.
func (s *Store) ReadAuditHashes(ctx context.Context, indexes []int64) ([]store.AuditHash, error) {
	if len(indexes) > maxHashRead {
		return nil, fmt.Errorf("read audit hashes: %d indexes asked, at most %d at a time", len(indexes), maxHashRead)
	}
	if len(indexes) == 0 {
		return nil, nil
	}
	found, err := readHashes(ctx, s.engine.Reader(), indexes)
	if err != nil {
		return nil, err
	}
	out := make([]store.AuditHash, len(indexes))
	for i, idx := range indexes {
		h, ok := found[idx]
		if !ok {
			return nil, fmt.Errorf("read audit hashes: stored hash %d: %w", idx, store.ErrNotFound)
		}
		out[i] = store.AuditHash(h)
	}
	return out, nil
}

// PutAuditCheckpoint implements store.Store. Checkpoints are about the log,
// not changes to writ's state, so they are not themselves audit events.
func (s *Store) PutAuditCheckpoint(ctx context.Context, c store.AuditCheckpoint) error {
	if c.ServerID == "" || len(c.Note) == 0 || c.Size < 0 {
		return fmt.Errorf("audit checkpoint: server id, a note and a size of at least 0 are required")
	}
	if c.CreatedAt.IsZero() {
		c.CreatedAt = time.Now()
	}
	tx, err := s.engine.BeginWrite(ctx)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(ctx, putCheckpointSQL, c.ServerID, c.Size, c.Note, c.CreatedAt.Unix()); err != nil {
		return fmt.Errorf("put audit checkpoint: %w", err)
	}
	return tx.Commit(ctx)
}

// ListAuditCheckpoints implements store.Store.
func (s *Store) ListAuditCheckpoints(ctx context.Context, minSize int64, limit int) ([]store.AuditCheckpoint, error) {
	query, args := listCheckpointsSQL, []any{minSize}
	if limit > 0 {
		query, args = listCheckpointsLimitSQL, append(args, int64(limit))
	}
	rows, err := s.engine.Reader().Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit checkpoints: %w", err)
	}
	defer rows.Close()
	var out []store.AuditCheckpoint
	for rows.Next() {
		var c store.AuditCheckpoint
		var created int64
		if err := rows.Scan(&c.ServerID, &c.Size, &c.Note, &created); err != nil {
			return nil, fmt.Errorf("list audit checkpoints: %w", err)
		}
		c.CreatedAt = time.Unix(created, 0).UTC()
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit checkpoints: %w", err)
	}
	return out, nil
}

// PutAuditKey implements store.Store. A key name is recorded once: a
// different key under a recorded name is refused, since checkpoints signed
// under that name must keep verifying.
func (s *Store) PutAuditKey(ctx context.Context, k store.AuditKey, evs ...store.AuditEvent) error {
	if k.Name == "" || k.ServerID == "" || len(k.PublicKey) == 0 {
		return fmt.Errorf("audit key: name, server id and public key are required")
	}
	if err := checkEvents(evs); err != nil {
		return err
	}
	if k.CreatedAt.IsZero() {
		k.CreatedAt = time.Now()
	}
	tx, err := s.engine.BeginWrite(ctx)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.Query(ctx, getAuditKeySQL, k.Name)
	if err != nil {
		return fmt.Errorf("audit key %q: %w", k.Name, err)
	}
	var have []byte
	found, err := scanOne(rows, &have)
	if err != nil {
		return fmt.Errorf("audit key %q: %w", k.Name, err)
	}
	if found {
		if string(have) != string(k.PublicKey) {
			return fmt.Errorf("audit key %q is recorded with a different public key: %w", k.Name, store.ErrAlreadyExists)
		}
		// Already recorded: nothing changes, so no event either.
		return nil
	}
	if _, err := tx.Exec(ctx, putAuditKeySQL, k.Name, k.ServerID, k.PublicKey, k.CreatedAt.Unix()); err != nil {
		return fmt.Errorf("put audit key: %w", err)
	}
	sealed, err := s.appendEvents(ctx, tx, evs)
	if err != nil {
		return err
	}
	return s.commit(ctx, tx, sealed)
}

// ListAuditKeys implements store.Store.
func (s *Store) ListAuditKeys(ctx context.Context) ([]store.AuditKey, error) {
	rows, err := s.engine.Reader().Query(ctx, listAuditKeysSQL)
	if err != nil {
		return nil, fmt.Errorf("list audit keys: %w", err)
	}
	defer rows.Close()
	var out []store.AuditKey
	for rows.Next() {
		var k store.AuditKey
		var created int64
		if err := rows.Scan(&k.Name, &k.ServerID, &k.PublicKey, &created); err != nil {
			return nil, fmt.Errorf("list audit keys: %w", err)
		}
		k.CreatedAt = time.Unix(created, 0).UTC()
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit keys: %w", err)
	}
	return out, nil
}

// Now implements store.Store.
func (s *Store) Now(ctx context.Context) (time.Time, error) {
	ms, err := queryInt(ctx, s.engine.Reader(), s.engine.ClockSQL())
	if err != nil {
		return time.Time{}, fmt.Errorf("database clock: %w", err)
	}
	return time.UnixMilli(ms), nil
}
