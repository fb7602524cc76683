package sqlstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"writ.dev/writ/store"
)

const (
	insertRequestSQL = `INSERT INTO requests (id, state, task, pending_until, doc, revision, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)`
	// The revision in the WHERE clause is the compare-and-set.
	updateRequestSQL  = `UPDATE requests SET state = $2, task = $3, pending_until = $4, doc = $5, revision = $6, updated_at = $7 WHERE id = $1 AND revision = $8`
	requestColumns    = `id, state, task, pending_until, doc, revision, updated_at`
	getRequestSQL     = `SELECT ` + requestColumns + ` FROM requests WHERE id = $1`
	listRequestsSQL   = `SELECT ` + requestColumns + ` FROM requests ORDER BY id`
	requestExistsSQL  = `SELECT id FROM requests WHERE id = $1`
	lastReviewSQL     = `SELECT COALESCE(MAX(seq), 0) FROM request_reviews WHERE request_id = $1`
	insertReviewSQL   = `INSERT INTO request_reviews (request_id, seq, doc, revision) VALUES ($1, $2, $3, $4)`
	listReviewsSQL    = `SELECT request_id, seq, doc, revision FROM request_reviews WHERE request_id = $1 ORDER BY seq`
	getRulesSQL       = `SELECT text, revision, updated_at FROM review_rules WHERE id = 1`
	insertRulesSQL    = `INSERT INTO review_rules (id, text, revision, updated_at) VALUES (1, $1, $2, $3)`
	updateRulesSQL    = `UPDATE review_rules SET text = $1, revision = $2, updated_at = $3 WHERE id = 1 AND revision = $4`
	reviewRulesAbsent = "no review rules are applied: apply a rules file with writ review rules apply FILE"
)

func requestNotFound(id string) error { return fmt.Errorf("request %q: %w", id, store.ErrNotFound) }

// PutRequest implements store.Store.
func (s *Store) PutRequest(ctx context.Context, r store.RequestRecord, prevRevision int64, rv *store.ReviewRecord, evs ...store.AuditEvent) (store.RequestRecord, error) {
	if !validID(r.ID) {
		return store.RequestRecord{}, fmt.Errorf("request id %q: use 1 to %d letters, digits, '.', '_' or '-'", r.ID, maxIDLen)
	}
	if r.State == "" || !validID(r.Task) || len(r.Doc) == 0 {
		return store.RequestRecord{}, fmt.Errorf("request %q: state, task and document are required", r.ID)
	}
	if rv != nil && len(rv.Doc) == 0 {
		return store.RequestRecord{}, fmt.Errorf("request %q: a review needs its document", r.ID)
	}
	r.UpdatedAt = time.Unix(time.Now().Unix(), 0).UTC()
	err := s.write(ctx, evs, func(tx WriteTx, rev int64) error {
		r.Revision = rev
		if err := s.putRequest(ctx, tx, r, prevRevision); err != nil {
			return err
		}
		if rv == nil {
			return nil
		}
		last, err := queryInt(ctx, tx, lastReviewSQL, r.ID)
		if err != nil {
			return fmt.Errorf("reviews: %w", err)
		}
		rv.RequestID, rv.Seq, rv.Revision = r.ID, last+1, rev
		_, err = tx.Exec(ctx, insertReviewSQL, rv.RequestID, rv.Seq, string(rv.Doc), rev)
		return s.mapErr(err)
	})
	if err != nil {
		return store.RequestRecord{}, err
	}
	return r, nil
}

func (s *Store) putRequest(ctx context.Context, tx WriteTx, r store.RequestRecord, prevRevision int64) error {
	if prevRevision == 0 {
		taken, err := queryString(ctx, tx, requestExistsSQL, r.ID)
		if err != nil {
			return err
		}
		if taken != "" {
			return fmt.Errorf("request id %q is taken: %w", r.ID, store.ErrAlreadyExists)
		}
		_, err = tx.Exec(ctx, insertRequestSQL, r.ID, r.State, r.Task, r.PendingUntil.Unix(), string(r.Doc), r.Revision, r.UpdatedAt.Unix())
		return s.mapErr(err)
	}
	n, err := tx.Exec(ctx, updateRequestSQL, r.ID, r.State, r.Task, r.PendingUntil.Unix(), string(r.Doc), r.Revision, r.UpdatedAt.Unix(), prevRevision)
	if err != nil {
		return err
	}
	if n == 1 {
		return nil
	}
	exists, err := queryString(ctx, tx, requestExistsSQL, r.ID)
	if err != nil {
		return err
	}
	if exists == "" {
		return requestNotFound(r.ID)
	}
	return fmt.Errorf("request %q changed since revision %d: read it again and retry: %w", r.ID, prevRevision, store.ErrConflict)
}

// GetRequest implements store.Store.
func (s *Store) GetRequest(ctx context.Context, id string) (store.RequestRecord, error) {
	if !validID(id) {
		return store.RequestRecord{}, requestNotFound(id)
	}
	rs, err := queryRequests(ctx, s.engine.Reader(), getRequestSQL, id)
	if err != nil {
		return store.RequestRecord{}, err
	}
	if len(rs) == 0 {
		return store.RequestRecord{}, requestNotFound(id)
	}
	return rs[0], nil
}

// ListRequests implements store.Store. The state filter is in the query,
// so listing pending requests does not read every request ever made.
func (s *Store) ListRequests(ctx context.Context, states ...string) ([]store.RequestRecord, error) {
	if len(states) == 0 {
		return queryRequests(ctx, s.engine.Reader(), listRequestsSQL)
	}
	ps := make([]string, len(states))
	args := make([]any, len(states))
	for i, st := range states {
		ps[i], args[i] = "$"+strconv.Itoa(i+1), st
	}
	return queryRequests(ctx, s.engine.Reader(), `SELECT `+requestColumns+` FROM requests WHERE state IN (`+strings.Join(ps, ", ")+`) ORDER BY id`, args...)
}

func queryRequests(ctx context.Context, q Querier, query string, args ...any) ([]store.RequestRecord, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("requests: %w", err)
	}
	defer rows.Close()
	var out []store.RequestRecord
	for rows.Next() {
		var r store.RequestRecord
		var until, updated int64
		var doc string
		if err := rows.Scan(&r.ID, &r.State, &r.Task, &until, &doc, &r.Revision, &updated); err != nil {
			return nil, fmt.Errorf("requests: %w", err)
		}
		r.Doc, r.PendingUntil, r.UpdatedAt = []byte(doc), time.Unix(until, 0).UTC(), time.Unix(updated, 0).UTC()
		out = append(out, r)
	}
	return out, rows.Err()
}

// ListReviews implements store.Store.
func (s *Store) ListReviews(ctx context.Context, requestID string) ([]store.ReviewRecord, error) {
	if !validID(requestID) {
		return nil, nil
	}
	rows, err := s.engine.Reader().Query(ctx, listReviewsSQL, requestID)
	if err != nil {
		return nil, fmt.Errorf("reviews: %w", err)
	}
	defer rows.Close()
	var out []store.ReviewRecord
	for rows.Next() {
		var rv store.ReviewRecord
		var doc string
		if err := rows.Scan(&rv.RequestID, &rv.Seq, &doc, &rv.Revision); err != nil {
			return nil, fmt.Errorf("reviews: %w", err)
		}
		rv.Doc = []byte(doc)
		out = append(out, rv)
	}
	return out, rows.Err()
}

// PutReviewRules implements store.Store.
func (s *Store) PutReviewRules(ctx context.Context, text string, prevRevision int64, evs ...store.AuditEvent) (store.ReviewRules, error) {
	if len(text) > store.MaxReviewRulesSize {
		return store.ReviewRules{}, fmt.Errorf("review rules: %d bytes; at most %d are stored", len(text), store.MaxReviewRulesSize)
	}
	out := store.ReviewRules{Text: text, UpdatedAt: time.Unix(time.Now().Unix(), 0).UTC()}
	err := s.write(ctx, evs, func(tx WriteTx, rev int64) error {
		out.Revision = rev
		if prevRevision == 0 {
			_, err := tx.Exec(ctx, insertRulesSQL, text, rev, out.UpdatedAt.Unix())
			if s.engine.IsUniqueViolation(err) {
				return fmt.Errorf("review rules were applied meanwhile: read them again and retry: %w", store.ErrConflict)
			}
			return err
		}
		n, err := tx.Exec(ctx, updateRulesSQL, text, rev, out.UpdatedAt.Unix(), prevRevision)
		if err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("review rules changed since revision %d: read them again and retry: %w", prevRevision, store.ErrConflict)
		}
		return nil
	})
	if err != nil {
		return store.ReviewRules{}, err
	}
	return out, nil
}

// GetReviewRules implements store.Store.
func (s *Store) GetReviewRules(ctx context.Context) (store.ReviewRules, error) {
	rows, err := s.engine.Reader().Query(ctx, getRulesSQL)
	if err != nil {
		return store.ReviewRules{}, fmt.Errorf("review rules: %w", err)
	}
	var r store.ReviewRules
	var updated int64
	found, err := scanOne(rows, &r.Text, &r.Revision, &updated)
	if err != nil {
		return store.ReviewRules{}, fmt.Errorf("review rules: %w", err)
	}
	if !found {
		return store.ReviewRules{}, fmt.Errorf("%s: %w", reviewRulesAbsent, store.ErrNotFound)
	}
	r.UpdatedAt = time.Unix(updated, 0).UTC()
	return r, nil
}
