package sqlstore

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"writ.dev/writ/store"
)

const (
	insertTokenSQL = `INSERT INTO join_tokens (id, secret_sha256, created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)`
	getTokenSQL    = `SELECT secret_sha256, expires_at, used_at FROM join_tokens WHERE id = $1`
	burnTokenSQL   = `UPDATE join_tokens SET used_at = $2, used_by = $3 WHERE id = $1 AND used_at = 0`

	agentColumns   = `id, spiffe_id, join_method, selectors, serial, pending_serial, generation, cert_not_after, created_at, last_seen`
	insertAgentSQL = `INSERT INTO agents (` + agentColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`
	getAgentSQL    = `SELECT ` + agentColumns + ` FROM agents WHERE spiffe_id = $1`
	listAgentsSQL  = `SELECT ` + agentColumns + ` FROM agents ORDER BY spiffe_id`
	// The WHERE clause is the compare-and-set: another server that moved
	// the agent first leaves no row to update.
	updateAgentSQL = `UPDATE agents SET serial = $4, pending_serial = $5, generation = $6, cert_not_after = $7, last_seen = $8, selectors = $9
WHERE id = $1 AND serial = $2 AND pending_serial = $3`
)

// maxGetEntries bounds GetEntries, which binds one parameter per id.
const maxGetEntries = 10_000

// CreateJoinToken implements store.Store.
func (s *Store) CreateJoinToken(ctx context.Context, t store.JoinToken, evs ...store.AuditEvent) error {
	if !validID(t.ID) || len(t.SecretSHA256) == 0 || t.ExpiresAt.IsZero() {
		return fmt.Errorf("join token: id, secret digest and expiry are required")
	}
	if err := checkEvents(evs); err != nil {
		return err
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = time.Now()
	}
	return s.tx(ctx, evs, func(tx WriteTx) error {
		if _, err := tx.Exec(ctx, insertTokenSQL, t.ID, t.SecretSHA256, t.CreatedBy, t.CreatedAt.Unix(), t.ExpiresAt.Unix()); err != nil {
			return fmt.Errorf("join token %q: %w", t.ID, s.mapErr(err))
		}
		return nil
	})
}

// RedeemJoinToken implements store.Store. The token is burned with a
// conditional update inside the transaction, so of two servers redeeming
// the same token at once exactly one succeeds.
func (s *Store) RedeemJoinToken(ctx context.Context, id string, secretSHA256 []byte, now time.Time, a store.Agent, evs ...store.AuditEvent) (store.Agent, error) {
	unknown := fmt.Errorf("join token %q: %w", id, store.ErrNotFound)
	if !validID(id) {
		return store.Agent{}, unknown
	}
	if err := checkEvents(evs); err != nil {
		return store.Agent{}, err
	}
	if a.CreatedAt.IsZero() {
		a.CreatedAt = now
	}
	a.LastSeen = a.CreatedAt
	err := s.tx(ctx, evs, func(tx WriteTx) error {
		if err := checkToken(ctx, tx, id, secretSHA256, now); err != nil {
			return err
		}
		n, err := tx.Exec(ctx, burnTokenSQL, id, now.Unix(), a.SPIFFEID)
		if err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("join token %q: %w", id, store.ErrTokenUsed)
		}
		return insertAgent(ctx, tx, &a, s)
	})
	if err != nil {
		return store.Agent{}, err
	}
	return a, nil
}

// CheckJoinToken implements store.Store.
func (s *Store) CheckJoinToken(ctx context.Context, id string, secretSHA256 []byte, now time.Time) error {
	if !validID(id) {
		return fmt.Errorf("join token %q: %w", id, store.ErrNotFound)
	}
	return checkToken(ctx, s.engine.Reader(), id, secretSHA256, now)
}

// checkToken is the test RedeemJoinToken makes before burning a token.
func checkToken(ctx context.Context, q Querier, id string, secretSHA256 []byte, now time.Time) error {
	rows, err := q.Query(ctx, getTokenSQL, id)
	if err != nil {
		return err
	}
	var digest []byte
	var expires, used int64
	found, err := scanOne(rows, &digest, &expires, &used)
	switch {
	case err != nil:
		return err
	case !found || subtle.ConstantTimeCompare(digest, secretSHA256) != 1:
		return fmt.Errorf("join token %q: %w", id, store.ErrNotFound)
	case used != 0:
		return fmt.Errorf("join token %q was used at %s: %w", id, time.Unix(used, 0).UTC().Format(time.RFC3339), store.ErrTokenUsed)
	case now.Unix() >= expires:
		return fmt.Errorf("join token %q expired at %s: %w", id, time.Unix(expires, 0).UTC().Format(time.RFC3339), store.ErrTokenExpired)
	}
	return nil
}

func insertAgent(ctx context.Context, tx WriteTx, a *store.Agent, s *Store) error {
	if a.ID == "" {
		a.ID = newID()
	}
	sels, err := encodeSelectors(a.Selectors)
	if err != nil {
		return err
	}
	a.CreatedAt = time.Unix(a.CreatedAt.Unix(), 0).UTC()
	a.LastSeen = time.Unix(a.LastSeen.Unix(), 0).UTC()
	a.CertNotAfter = time.Unix(a.CertNotAfter.Unix(), 0).UTC()
	if _, err := tx.Exec(ctx, insertAgentSQL, a.ID, a.SPIFFEID, a.JoinMethod, sels, a.Serial, a.PendingSerial, a.Generation,
		a.CertNotAfter.Unix(), a.CreatedAt.Unix(), a.LastSeen.Unix()); err != nil {
		return fmt.Errorf("agent %q: %w", a.SPIFFEID, s.mapErr(err))
	}
	return nil
}

func encodeSelectors(sels []store.Selector) (string, error) {
	out := make([]string, len(sels))
	for i, sel := range sels {
		out[i] = sel.Type + ":" + sel.Value
	}
	b, err := json.Marshal(out)
	return string(b), err
}

func decodeSelectors(s string) ([]store.Selector, error) {
	var raw []string
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		return nil, err
	}
	out := make([]store.Selector, 0, len(raw))
	for _, r := range raw {
		typ, value, ok := strings.Cut(r, ":")
		if !ok {
			return nil, fmt.Errorf("selector %q has no type", r)
		}
		out = append(out, store.Selector{Type: typ, Value: value})
	}
	return out, nil
}

const rejoinAgentSQL = `UPDATE agents SET join_method = $2, selectors = $3, serial = $4, pending_serial = '', generation = generation + 1,
cert_not_after = $5, last_seen = $6 WHERE spiffe_id = $1`

// replayTable holds the statements of one table of tokens accepted once:
// join_replay for joins and sign-ins, exchange_replay for the subject
// tokens of token exchanges.
type replayTable struct {
	insert, prune, get string
}

func newReplayTable(name string) replayTable {
	return replayTable{
		insert: `INSERT INTO ` + name + ` (issuer, jti, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
		prune:  `DELETE FROM ` + name + ` WHERE expires_at < $1`,
		get:    `SELECT expires_at FROM ` + name + ` WHERE issuer = $1 AND jti = $2`,
	}
}

var (
	joinReplay     = newReplayTable("join_replay")
	exchangeReplay = newReplayTable("exchange_replay")
)

// UseToken implements store.Store.
func (s *Store) UseToken(ctx context.Context, issuer, jti string, expires time.Time, evs ...store.AuditEvent) error {
	return s.useToken(ctx, joinReplay, issuer, jti, expires, evs)
}

// CheckToken implements store.Store.
func (s *Store) CheckToken(ctx context.Context, issuer, jti string, now time.Time) error {
	return s.checkToken(ctx, joinReplay, issuer, jti, now)
}

// UseSubjectToken implements store.Store.
func (s *Store) UseSubjectToken(ctx context.Context, issuer, jti string, expires time.Time, evs ...store.AuditEvent) error {
	return s.useToken(ctx, exchangeReplay, issuer, jti, expires, evs)
}

// CheckSubjectToken implements store.Store.
func (s *Store) CheckSubjectToken(ctx context.Context, issuer, jti string, now time.Time) error {
	return s.checkToken(ctx, exchangeReplay, issuer, jti, now)
}

func (s *Store) useToken(ctx context.Context, table replayTable, issuer, jti string, expires time.Time, evs []store.AuditEvent) error {
	if issuer == "" || jti == "" {
		return fmt.Errorf("token: issuer and id are required")
	}
	if err := checkEvents(evs); err != nil {
		return err
	}
	return s.tx(ctx, evs, func(tx WriteTx) error {
		return recordReplay(ctx, tx, table, &store.JoinReplay{Issuer: issuer, JTI: jti, ExpiresAt: expires})
	})
}

func (s *Store) checkToken(ctx context.Context, table replayTable, issuer, jti string, now time.Time) error {
	if issuer == "" || jti == "" {
		return fmt.Errorf("token: issuer and id are required")
	}
	rows, err := s.engine.Reader().Query(ctx, table.get, issuer, jti)
	if err != nil {
		return err
	}
	var expires int64
	found, err := scanOne(rows, &expires)
	switch {
	case err != nil:
		return err
	case found && now.Unix() <= expires:
		return fmt.Errorf("token %q of %s was already used: %w", jti, issuer, store.ErrTokenUsed)
	}
	return nil
}

// recordReplay remembers a token until it expires, refusing one already
// remembered; expired records are pruned on the way, so the table holds
// only tokens that could still be presented.
func recordReplay(ctx context.Context, tx WriteTx, table replayTable, r *store.JoinReplay) error {
	if _, err := tx.Exec(ctx, table.prune, time.Now().Unix()); err != nil {
		return err
	}
	n, err := tx.Exec(ctx, table.insert, r.Issuer, r.JTI, r.ExpiresAt.Unix())
	if err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("token %q of %s was already used: %w", r.JTI, r.Issuer, store.ErrTokenUsed)
	}
	return nil
}

// JoinAgent implements store.Store.
func (s *Store) JoinAgent(ctx context.Context, a store.Agent, replay *store.JoinReplay, evs ...store.AuditEvent) (store.Agent, error) {
	if a.SPIFFEID == "" || a.Serial == "" {
		return store.Agent{}, fmt.Errorf("agent: SPIFFE ID and serial are required")
	}
	if err := checkEvents(evs); err != nil {
		return store.Agent{}, err
	}
	now := time.Now()
	if a.CreatedAt.IsZero() {
		a.CreatedAt = now
	}
	a.LastSeen = a.CreatedAt
	sels, err := encodeSelectors(a.Selectors)
	if err != nil {
		return store.Agent{}, err
	}
	err = s.tx(ctx, evs, func(tx WriteTx) error {
		if replay != nil {
			if err := recordReplay(ctx, tx, joinReplay, replay); err != nil {
				return err
			}
		}
		n, err := tx.Exec(ctx, rejoinAgentSQL, a.SPIFFEID, a.JoinMethod, sels, a.Serial, a.CertNotAfter.Unix(), a.LastSeen.Unix())
		if err != nil {
			return fmt.Errorf("agent %q: %w", a.SPIFFEID, err)
		}
		if n == 1 {
			return nil
		}
		a.Generation = 1
		return insertAgent(ctx, tx, &a, s)
	})
	if err != nil {
		return store.Agent{}, err
	}
	return s.GetAgent(ctx, a.SPIFFEID)
}

// GetAgent implements store.Store.
func (s *Store) GetAgent(ctx context.Context, spiffeID string) (store.Agent, error) {
	agents, err := queryAgents(ctx, s.engine.Reader(), getAgentSQL, spiffeID)
	if err != nil {
		return store.Agent{}, err
	}
	if len(agents) == 0 {
		return store.Agent{}, fmt.Errorf("agent %q: %w", spiffeID, store.ErrNotFound)
	}
	return agents[0], nil
}

// ListAgents implements store.Store.
func (s *Store) ListAgents(ctx context.Context) ([]store.Agent, error) {
	return queryAgents(ctx, s.engine.Reader(), listAgentsSQL)
}

// UpdateAgent implements store.Store.
func (s *Store) UpdateAgent(ctx context.Context, prev, next store.Agent, evs ...store.AuditEvent) error {
	if err := checkEvents(evs); err != nil {
		return err
	}
	sels, err := encodeSelectors(next.Selectors)
	if err != nil {
		return err
	}
	return s.tx(ctx, evs, func(tx WriteTx) error {
		n, err := tx.Exec(ctx, updateAgentSQL, next.ID, prev.Serial, prev.PendingSerial, next.Serial, next.PendingSerial,
			next.Generation, next.CertNotAfter.Unix(), next.LastSeen.Unix(), sels)
		if err != nil {
			return fmt.Errorf("agent %q: %w", next.SPIFFEID, err)
		}
		if n != 1 {
			return fmt.Errorf("agent %q changed since it was read: %w", next.SPIFFEID, store.ErrConflict)
		}
		return nil
	})
}

func queryAgents(ctx context.Context, q Querier, query string, args ...any) ([]store.Agent, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("agents: %w", err)
	}
	defer rows.Close()
	var out []store.Agent
	for rows.Next() {
		var a store.Agent
		var sels string
		var notAfter, created, seen int64
		if err := rows.Scan(&a.ID, &a.SPIFFEID, &a.JoinMethod, &sels, &a.Serial, &a.PendingSerial, &a.Generation, &notAfter, &created, &seen); err != nil {
			return nil, fmt.Errorf("agents: %w", err)
		}
		if a.Selectors, err = decodeSelectors(sels); err != nil {
			return nil, fmt.Errorf("agent %q: selectors: %w", a.SPIFFEID, err)
		}
		a.CertNotAfter = time.Unix(notAfter, 0).UTC()
		a.CreatedAt = time.Unix(created, 0).UTC()
		a.LastSeen = time.Unix(seen, 0).UTC()
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("agents: %w", err)
	}
	return out, nil
}

// GetEntries implements store.Store.
func (s *Store) GetEntries(ctx context.Context, ids []string) ([]store.Entry, error) {
	if len(ids) > maxGetEntries {
		return nil, fmt.Errorf("get entries: %d ids, at most %d per call", len(ids), maxGetEntries)
	}
	valid := make([]string, 0, len(ids))
	for _, id := range ids {
		if validID(id) {
			valid = append(valid, id)
		}
	}
	if len(valid) == 0 {
		return nil, nil
	}
	return listEntries(ctx, s.engine.Reader(), entryQuery{ids: valid})
}

// tx runs fn in a write transaction that takes no revision (the change is
// not one agents follow) and appends evs in it.
func (s *Store) tx(ctx context.Context, evs []store.AuditEvent, fn func(tx WriteTx) error) error {
	tx, err := s.engine.BeginWrite(ctx)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
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
