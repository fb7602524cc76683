package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"writ.dev/writ/store"
)

const (
	insertTaskSQL = `INSERT INTO tasks (id, state, deadline, doc, revision, updated_at, ends_at) VALUES ($1, $2, $3, $4, $5, $6, $7)`
	// The revision in the WHERE clause is the compare-and-set.
	updateTaskSQL     = `UPDATE tasks SET state = $2, deadline = $3, doc = $4, revision = $5, updated_at = $6, ends_at = $8 WHERE id = $1 AND revision = $7`
	taskColumns       = `id, state, deadline, doc, revision, updated_at, ends_at`
	getTaskSQL        = `SELECT ` + taskColumns + ` FROM tasks WHERE id = $1`
	listTasksSQL      = `SELECT ` + taskColumns + ` FROM tasks ORDER BY id`
	taskExistsSQL     = `SELECT id FROM tasks WHERE id = $1`
	putStandingSQL    = `INSERT INTO standing_grants (id, doc, revision, updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, revision = excluded.revision, updated_at = excluded.updated_at`
	deleteStandingSQL = `DELETE FROM standing_grants WHERE id = $1`
	listStandingSQL   = `SELECT id, doc, revision, updated_at FROM standing_grants ORDER BY id`
)

func taskNotFound(id string) error { return fmt.Errorf("task %q: %w", id, store.ErrNotFound) }

// PutTask implements store.Store.
func (s *Store) PutTask(ctx context.Context, t store.TaskRecord, prevRevision int64, evs ...store.AuditEvent) (store.TaskRecord, error) {
	if !validID(t.ID) {
		return store.TaskRecord{}, fmt.Errorf("task id %q: use 1 to %d letters, digits, '.', '_' or '-'", t.ID, maxIDLen)
	}
	if t.State == "" || len(t.Doc) == 0 {
		return store.TaskRecord{}, fmt.Errorf("task %q: state and document are required", t.ID)
	}
	now := time.Now()
	t.UpdatedAt = time.Unix(now.Unix(), 0).UTC()
	if t.EndsAt.IsZero() {
		t.EndsAt = t.Deadline
	}
	err := s.write(ctx, evs, func(tx WriteTx, rev int64) error {
		t.Revision = rev
		if prevRevision == 0 {
			taken, err := queryString(ctx, tx, taskExistsSQL, t.ID)
			if err != nil {
				return err
			}
			if taken != "" {
				return fmt.Errorf("task id %q is taken: %w", t.ID, store.ErrAlreadyExists)
			}
			_, err = tx.Exec(ctx, insertTaskSQL, t.ID, t.State, t.Deadline.Unix(), string(t.Doc), rev, t.UpdatedAt.Unix(), t.EndsAt.Unix())
			return s.mapErr(err)
		}
		n, err := tx.Exec(ctx, updateTaskSQL, t.ID, t.State, t.Deadline.Unix(), string(t.Doc), rev, t.UpdatedAt.Unix(), prevRevision, t.EndsAt.Unix())
		if err != nil {
			return err
		}
		if n == 1 {
			return nil
		}
		exists, err := queryString(ctx, tx, taskExistsSQL, t.ID)
		if err != nil {
			return err
		}
		if exists == "" {
			return taskNotFound(t.ID)
		}
		return fmt.Errorf("task %q changed since revision %d: read it again and retry: %w", t.ID, prevRevision, store.ErrConflict)
	})
	if err != nil {
		return store.TaskRecord{}, err
	}
	return t, nil
}

// GetTask implements store.Store.
func (s *Store) GetTask(ctx context.Context, id string) (store.TaskRecord, error) {
	if !validID(id) {
		return store.TaskRecord{}, taskNotFound(id)
	}
	ts, err := queryTasks(ctx, s.engine.Reader(), getTaskSQL, id)
	if err != nil {
		return store.TaskRecord{}, err
	}
	if len(ts) == 0 {
		return store.TaskRecord{}, taskNotFound(id)
	}
	return ts[0], nil
}

// ListTasks implements store.Store. The state filter is in the query, so
// listing the open tasks does not read every task that ever closed.
func (s *Store) ListTasks(ctx context.Context, states ...string) ([]store.TaskRecord, error) {
	if len(states) == 0 {
		return queryTasks(ctx, s.engine.Reader(), listTasksSQL)
	}
	in, args := stateFilter(states, 1)
	return queryTasks(ctx, s.engine.Reader(), `SELECT `+taskColumns+` FROM tasks WHERE state IN (`+in+`) ORDER BY id`, args...)
}

// ListTasksEndingSince implements store.Store. The range on ends_at is
// indexed, so the tasks that ended before since are not read. Times are
// stored in whole seconds, so a task ending within since's second is in.
func (s *Store) ListTasksEndingSince(ctx context.Context, since time.Time, states ...string) ([]store.TaskRecord, error) {
	_, stateArgs := stateFilter(states, 2)
	query := TasksEndingSinceSQL(len(states))
	args := append([]any{since.Unix()}, stateArgs...)
	// Sorted here, not by ORDER BY id: given that, planners walk the
	// primary key over every task instead of the range on ends_at.
	ts, err := queryTasks(ctx, s.engine.Reader(), query, args...)
	slices.SortFunc(ts, func(a, b store.TaskRecord) int { return strings.Compare(a.ID, b.ID) })
	return ts, err
}

// ListTaskRevisionsEndingSince implements store.Store: the query of
// ListTasksEndingSince, over the same index, without reading documents.
func (s *Store) ListTaskRevisionsEndingSince(ctx context.Context, since time.Time, states ...string) ([]store.TaskRecord, error) {
	_, stateArgs := stateFilter(states, 2)
	query := strings.Replace(TasksEndingSinceSQL(len(states)), taskColumns, taskRevisionColumns, 1)
	args := append([]any{since.Unix()}, stateArgs...)
	ts, err := queryTasks(ctx, s.engine.Reader(), query, args...)
	slices.SortFunc(ts, func(a, b store.TaskRecord) int { return strings.Compare(a.ID, b.ID) })
	for i := range ts {
		ts[i].Doc = nil
	}
	return ts, err
}

// taskRevisionColumns are taskColumns with an empty document.
const taskRevisionColumns = `id, state, deadline, '' AS doc, revision, updated_at, ends_at`

// TasksEndingSinceSQL is the query of ListTasksEndingSince with n states
// ($2 …), exported so that each engine's tests can check its plan.
func TasksEndingSinceSQL(n int) string {
	query := `SELECT ` + taskColumns + ` FROM tasks WHERE ends_at >= $1`
	if n > 0 {
		in, _ := stateFilter(make([]string, n), 2)
		query += ` AND state IN (` + in + `)`
	}
	return query
}

// stateFilter returns the placeholders, numbered from first, and arguments
// of a state IN (…) list.
func stateFilter(states []string, first int) (string, []any) {
	ps := make([]string, len(states))
	args := make([]any, len(states))
	for i, st := range states {
		ps[i], args[i] = "$"+strconv.Itoa(first+i), st
	}
	return strings.Join(ps, ", "), args
}

func queryTasks(ctx context.Context, q Querier, query string, args ...any) ([]store.TaskRecord, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("tasks: %w", err)
	}
	defer rows.Close()
	var out []store.TaskRecord
	for rows.Next() {
		var t store.TaskRecord
		var deadline, updated, ends int64
		var doc string
		if err := rows.Scan(&t.ID, &t.State, &deadline, &doc, &t.Revision, &updated, &ends); err != nil {
			return nil, fmt.Errorf("tasks: %w", err)
		}
		t.Doc, t.Deadline, t.UpdatedAt = []byte(doc), time.Unix(deadline, 0).UTC(), time.Unix(updated, 0).UTC()
		t.EndsAt = time.Unix(ends, 0).UTC()
		out = append(out, t)
	}
	return out, rows.Err()
}

// PutStandingGrant implements store.Store.
func (s *Store) PutStandingGrant(ctx context.Context, g store.StandingGrantRecord, evs ...store.AuditEvent) (store.StandingGrantRecord, error) {
	if !validID(g.ID) || len(g.Doc) == 0 {
		return store.StandingGrantRecord{}, fmt.Errorf("standing grant %q: a valid id and a document are required", g.ID)
	}
	g.UpdatedAt = time.Unix(time.Now().Unix(), 0).UTC()
	err := s.write(ctx, evs, func(tx WriteTx, rev int64) error {
		g.Revision = rev
		_, err := tx.Exec(ctx, putStandingSQL, g.ID, string(g.Doc), rev, g.UpdatedAt.Unix())
		return err
	})
	if err != nil {
		return store.StandingGrantRecord{}, err
	}
	return g, nil
}

// DeleteStandingGrant implements store.Store.
func (s *Store) DeleteStandingGrant(ctx context.Context, id string, evs ...store.AuditEvent) error {
	if !validID(id) {
		return fmt.Errorf("standing grant %q: %w", id, store.ErrNotFound)
	}
	return s.write(ctx, evs, func(tx WriteTx, _ int64) error {
		n, err := tx.Exec(ctx, deleteStandingSQL, id)
		if err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("standing grant %q: %w", id, store.ErrNotFound)
		}
		return nil
	})
}

// ListStandingGrants implements store.Store.
func (s *Store) ListStandingGrants(ctx context.Context) ([]store.StandingGrantRecord, error) {
	rows, err := s.engine.Reader().Query(ctx, listStandingSQL)
	if err != nil {
		return nil, fmt.Errorf("standing grants: %w", err)
	}
	defer rows.Close()
	var out []store.StandingGrantRecord
	for rows.Next() {
		var g store.StandingGrantRecord
		var doc string
		var updated int64
		if err := rows.Scan(&g.ID, &doc, &g.Revision, &updated); err != nil {
			return nil, fmt.Errorf("standing grants: %w", err)
		}
		g.Doc, g.UpdatedAt = []byte(doc), time.Unix(updated, 0).UTC()
		out = append(out, g)
	}
	return out, rows.Err()
}

const (
	getDelegationKeySQL   = `SELECT public_key_der FROM delegation_keys WHERE kid = $1`
	putDelegationKeySQL   = `INSERT INTO delegation_keys (kid, server_id, public_key_der, created_at) VALUES ($1, $2, $3, $4)`
	listDelegationKeysSQL = `SELECT kid, server_id, public_key_der, created_at FROM delegation_keys ORDER BY kid`
)

// PutDelegationKey implements store.Store.
func (s *Store) PutDelegationKey(ctx context.Context, k store.DelegationKey, evs ...store.AuditEvent) error {
	if k.KeyID == "" || k.ServerID == "" || len(k.PublicKeyDER) == 0 {
		return fmt.Errorf("delegation key: kid, server id and public key are required")
	}
	if err := checkEvents(evs); err != nil {
		return err
	}
	if k.CreatedAt.IsZero() {
		k.CreatedAt = time.Now()
	}
	err := s.tx(ctx, evs, func(tx WriteTx) error {
		rows, err := tx.Query(ctx, getDelegationKeySQL, k.KeyID)
		if err != nil {
			return err
		}
		var have []byte
		found, err := scanOne(rows, &have)
		if err != nil {
			return err
		}
		if found {
			if string(have) != string(k.PublicKeyDER) {
				return fmt.Errorf("delegation key %q is recorded with another key: %w", k.KeyID, store.ErrAlreadyExists)
			}
			return errUnchanged
		}
		_, err = tx.Exec(ctx, putDelegationKeySQL, k.KeyID, k.ServerID, k.PublicKeyDER, k.CreatedAt.Unix())
		return err
	})
	if errors.Is(err, errUnchanged) {
		// Already recorded: nothing changes, so no event either.
		return nil
	}
	return err
}

// errUnchanged rolls back a transaction that found nothing to change.
var errUnchanged = errors.New("unchanged")

// ListDelegationKeys implements store.Store.
func (s *Store) ListDelegationKeys(ctx context.Context) ([]store.DelegationKey, error) {
	rows, err := s.engine.Reader().Query(ctx, listDelegationKeysSQL)
	if err != nil {
		return nil, fmt.Errorf("delegation keys: %w", err)
	}
	defer rows.Close()
	var out []store.DelegationKey
	for rows.Next() {
		var k store.DelegationKey
		var created int64
		if err := rows.Scan(&k.KeyID, &k.ServerID, &k.PublicKeyDER, &created); err != nil {
			return nil, fmt.Errorf("delegation keys: %w", err)
		}
		k.CreatedAt = time.Unix(created, 0).UTC()
		out = append(out, k)
	}
	return out, rows.Err()
}
