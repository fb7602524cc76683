package sqlstore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"writ.dev/writ/store"
)

const (
	insertWatchSQL    = `INSERT INTO watches (id, task, chain, expires_at) VALUES ($1, $2, $3, $4)`
	heartbeatWatchSQL = `UPDATE watches SET expires_at = $2 WHERE id = $1`
	deleteWatchSQL    = `DELETE FROM watches WHERE id = $1`
	listWatchesSQL    = `SELECT id, task, chain, expires_at FROM watches ORDER BY task, id`
)

func watchNotFound(id string) error {
	return fmt.Errorf("watch %q: %w", id, store.ErrNotFound)
}

// JoinWatch implements store.Store.
func (s *Store) JoinWatch(ctx context.Context, w store.Watch, evs ...store.AuditEvent) error {
	if !validID(w.ID) || w.Task == "" || len(w.Chain) == 0 {
		return fmt.Errorf("watch %q: id, task and chain are required", w.ID)
	}
	chain, err := json.Marshal(w.Chain)
	if err != nil {
		return fmt.Errorf("watch %q: %w", w.ID, err)
	}
	return s.write(ctx, evs, func(tx WriteTx, _ int64) error {
		if _, err := tx.Exec(ctx, insertWatchSQL, w.ID, w.Task, string(chain), w.ExpiresAt.UnixMilli()); err != nil {
			return fmt.Errorf("watch %q: %w", w.ID, s.mapErr(err))
		}
		return nil
	})
}

// HeartbeatWatch implements store.Store.
func (s *Store) HeartbeatWatch(ctx context.Context, id string, expiresAt time.Time) error {
	if !validID(id) {
		return watchNotFound(id)
	}
	return s.tx(ctx, nil, func(tx WriteTx) error {
		n, err := tx.Exec(ctx, heartbeatWatchSQL, id, expiresAt.UnixMilli())
		if err != nil {
			return fmt.Errorf("watch %q: %w", id, err)
		}
		if n == 0 {
			return watchNotFound(id)
		}
		return nil
	})
}

// LeaveWatch implements store.Store.
func (s *Store) LeaveWatch(ctx context.Context, id string, evs ...store.AuditEvent) error {
	if !validID(id) {
		return watchNotFound(id)
	}
	return s.write(ctx, evs, func(tx WriteTx, _ int64) error {
		n, err := tx.Exec(ctx, deleteWatchSQL, id)
		if err != nil {
			return fmt.Errorf("watch %q: %w", id, err)
		}
		if n == 0 {
			return watchNotFound(id)
		}
		return nil
	})
}

// ListWatches implements store.Store.
func (s *Store) ListWatches(ctx context.Context) ([]store.Watch, error) {
	rows, err := s.engine.Reader().Query(ctx, listWatchesSQL)
	if err != nil {
		return nil, fmt.Errorf("watches: %w", err)
	}
	defer rows.Close()
	var out []store.Watch
	for rows.Next() {
		var w store.Watch
		var chain string
		var expires int64
		if err := rows.Scan(&w.ID, &w.Task, &chain, &expires); err != nil {
			return nil, fmt.Errorf("watches: %w", err)
		}
		if err := json.Unmarshal([]byte(chain), &w.Chain); err != nil {
			return nil, fmt.Errorf("watch %q: stored chain is unreadable: %w", w.ID, err)
		}
		w.ExpiresAt = time.UnixMilli(expires).UTC()
		out = append(out, w)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("watches: %w", err)
	}
	return out, nil
}
