package sqlstore

import (
	"context"
	"fmt"
	"time"

	"writ.dev/writ/store"
)

const (
	insertLockSQL = `INSERT INTO locks (id, target_kind, target_value, reason, created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)`
	lockColumns   = `id, target_kind, target_value, reason, created_by, created_at, expires_at`
	getLockSQL    = `SELECT ` + lockColumns + ` FROM locks WHERE id = $1`
	deleteLockSQL = `DELETE FROM locks WHERE id = $1`
	// expires_at = 0 holds until deleted; id breaks ties in creation time.
	listLocksSQL = `SELECT ` + lockColumns + ` FROM locks WHERE expires_at = 0 OR expires_at > $1 ORDER BY created_at, id`
)

func lockNotFound(id string) error {
	return fmt.Errorf("lock %q: %w", id, store.ErrNotFound)
}

// CreateLock implements store.Store.
func (s *Store) CreateLock(ctx context.Context, l store.Lock, evs ...store.AuditEvent) (store.Lock, error) {
	if l.ID == "" {
		l.ID = newID()
	} else if !validID(l.ID) {
		return store.Lock{}, fmt.Errorf("lock id %q: use 1 to %d letters, digits, '.', '_' or '-'", l.ID, maxIDLen)
	}
	if l.Target.Kind == "" || l.Target.Value == "" {
		return store.Lock{}, fmt.Errorf("lock %q: target kind and value are required", l.ID)
	}
	if l.CreatedAt.IsZero() {
		l.CreatedAt = time.Now()
	}
	l.CreatedAt = time.Unix(l.CreatedAt.Unix(), 0).UTC()
	var expires int64
	if !l.ExpiresAt.IsZero() {
		expires = l.ExpiresAt.Unix()
		l.ExpiresAt = time.Unix(expires, 0).UTC()
	}
	err := s.write(ctx, evs, func(tx WriteTx, _ int64) error {
		// Writers are serialized by the revision lock, so checking first is
		// race-free and keeps the transaction usable on PostgreSQL.
		taken, err := queryString(ctx, tx, `SELECT id FROM locks WHERE id = $1`, l.ID)
		if err != nil {
			return fmt.Errorf("lock %q: %w", l.ID, err)
		}
		if taken != "" {
			return fmt.Errorf("lock id %q is taken: %w", l.ID, store.ErrAlreadyExists)
		}
		if _, err := tx.Exec(ctx, insertLockSQL, l.ID, l.Target.Kind, l.Target.Value, l.Reason, l.CreatedBy, l.CreatedAt.Unix(), expires); err != nil {
			return fmt.Errorf("lock %q: %w", l.ID, s.mapErr(err))
		}
		return nil
	})
	if err != nil {
		return store.Lock{}, err
	}
	return l, nil
}

// DeleteLock implements store.Store.
func (s *Store) DeleteLock(ctx context.Context, id string, evs ...store.AuditEvent) (store.Lock, error) {
	if !validID(id) {
		return store.Lock{}, lockNotFound(id)
	}
	var old store.Lock
	err := s.write(ctx, evs, func(tx WriteTx, _ int64) error {
		locks, err := queryLocks(ctx, tx, getLockSQL, id)
		if err != nil {
			return err
		}
		if len(locks) == 0 {
			return lockNotFound(id)
		}
		old = locks[0]
		if _, err := tx.Exec(ctx, deleteLockSQL, id); err != nil {
			return fmt.Errorf("lock %q: %w", id, err)
		}
		return nil
	})
	if err != nil {
		return store.Lock{}, err
	}
	return old, nil
}

// ListLocks implements store.Store.
func (s *Store) ListLocks(ctx context.Context, now time.Time) ([]store.Lock, error) {
	return queryLocks(ctx, s.engine.Reader(), listLocksSQL, now.Unix())
}

func queryLocks(ctx context.Context, q Querier, query string, args ...any) ([]store.Lock, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("locks: %w", err)
	}
	defer rows.Close()
	var out []store.Lock
	for rows.Next() {
		var l store.Lock
		var created, expires int64
		if err := rows.Scan(&l.ID, &l.Target.Kind, &l.Target.Value, &l.Reason, &l.CreatedBy, &created, &expires); err != nil {
			return nil, fmt.Errorf("locks: %w", err)
		}
		l.CreatedAt = time.Unix(created, 0).UTC()
		if expires != 0 {
			l.ExpiresAt = time.Unix(expires, 0).UTC()
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("locks: %w", err)
	}
	return out, nil
}
