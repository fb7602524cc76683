// Package rotation keeps a server's signing authorities over time: it makes
// their keys, prepares, activates, taints and revokes them by a journal kept
// on disk, publishes them in the store with their audit events, and hands
// package ca the authority that signs now.
package rotation

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"writ.dev/writ/audit"
	"writ.dev/writ/keystore"
	"writ.dev/writ/store"
)

// AuthorityState is where an authority stands in a server's rotation
// journal: prepared (published, not yet signing), active (signing) or old
// (no longer signing, still trusted until it expires).
type AuthorityState string

const (
	StatePrepared AuthorityState = "prepared"
	StateActive   AuthorityState = "active"
	StateOld      AuthorityState = "old"
)

// AuthorityStatus describes one authority in a server's journal.
type AuthorityStatus struct {
	ID        string // X.509: lower-case hex of the CA certificate's SubjectKeyId; JWT: the key ID (kid)
	KeyName   string // keystore name of its key ("" once deleted)
	State     AuthorityState
	NotBefore time.Time
	NotAfter  time.Time
	Tainted   bool
	Revoked   bool
	Cert      *x509.Certificate // X.509 only
}

var (
	// ErrNoSuchAuthority is returned for an ID that is not in the journal.
	ErrNoSuchAuthority = errors.New("no such authority")
	// ErrAuthorityState is returned when an authority's state forbids a verb.
	ErrAuthorityState = errors.New("authority is not in a state that allows this")
)

// authority is one journal entry. Signer is set only while the entry holds
// its key (prepared or active); Cert is set for X.509 authorities and Public
// for JWT keys.
type authority struct {
	ID        string
	KeyName   string
	State     AuthorityState
	NotBefore time.Time
	NotAfter  time.Time
	Tainted   bool
	Revoked   bool
	Cert      *x509.Certificate
	Public    crypto.PublicKey
	Signer    crypto.Signer
	// trustDomain is what a JWT key's state entry records it for; an X.509
	// CA names its trust domain in its certificate.
	trustDomain string
}

func (a authority) status() AuthorityStatus {
	return AuthorityStatus{ID: a.ID, KeyName: a.KeyName, State: a.State, NotBefore: a.NotBefore, NotAfter: a.NotAfter,
		Tainted: a.Tainted, Revoked: a.Revoked, Cert: a.Cert}
}

// prepareDue: past half its life the active authority gets a successor, so
// the successor is in every bundle long before it signs.
func prepareDue(a authority, now time.Time) bool {
	return pastHalf(a.NotBefore, a.NotAfter, now)
}

// activateDue: with a sixth of its life left the active authority hands
// over. SVIDs live at most that long (MaxSVIDTTL), so none it signs
// outlives it, and its successor has been published for a third of a life.
func activateDue(a authority, now time.Time) bool {
	return a.Tainted || !now.Before(a.NotAfter.Add(-a.NotAfter.Sub(a.NotBefore)/6))
}

// entryCheck is what loading makes of a recorded prepared or active entry.
type entryCheck int

const (
	entryUsable  entryCheck = iota
	entryRetire             // unusable; its key is deleted once a successor is active
	entryAbandon            // unusable; its key is missing or not the one recorded, so it is left alone
	entryForeign            // another trust domain's: forgotten, its key left alone
)

// authorityKind is what differs between the X.509 CA and the JWT key; the
// journal's steps are the same for both.
type authorityKind interface {
	// kindName names the authority in logs and errors; eventKind is its
	// kind in audit event types (audit.KindX509, audit.KindJWT).
	kindName() string
	eventKind() string
	keyPrefix() string
	keyType() keystore.KeyType
	// mint makes the public part of a new authority for signer, valid from now.
	mint(signer crypto.Signer, now time.Time) (authority, error)
	// publish records a, with its Tainted and Revoked flags, in the store,
	// or only audits the change when a has no record of its own there (an
	// intermediate under an upstream CA).
	publish(ctx context.Context, a authority, ev store.AuditEvent) error
	// revocable explains why no authority can be revoked, if so.
	revocable() error
	// clamped reports whether a successor could not outlive the active one.
	clamped(active authority) bool
	// readJournal reads the state file; check validates a recorded entry
	// and, for a usable prepared or active one, loads its key.
	readJournal() ([]authority, error)
	check(ctx context.Context, a *authority, now time.Time) (entryCheck, string, error)
	writeJournal(entries []authority) error
	// show makes a journal change visible on the hot path (active signer,
	// bundle); hide drops a revoked authority from the bundle.
	show(entries []authority)
	hide(a authority)
}

// journal keeps a manager's authorities, newest first, and takes them
// through prepared, active and old.
type journal struct {
	kind     authorityKind
	ks       keystore.KeyStore
	store    store.Store
	serverID string
	self     string // ServerActor, the actor of automatic steps
	now      func() time.Time
	log      *slog.Logger

	// mu serialises changes; entries is replaced whole, so readers take no lock.
	mu      sync.Mutex
	entries atomic.Pointer[[]authority]
	// avoid holds recorded key names a new key must not take.
	avoid []string
}

func (j *journal) snapshot() []authority {
	if p := j.entries.Load(); p != nil {
		return *p
	}
	return nil
}

func (j *journal) index(state AuthorityState) int {
	return slices.IndexFunc(j.snapshot(), func(a authority) bool { return a.State == state })
}

func (j *journal) find(id string) (int, error) {
	i := slices.IndexFunc(j.snapshot(), func(a authority) bool { return a.ID == id })
	if i < 0 {
		return -1, fmt.Errorf("ca: %s authority %q: %w: list the server's authorities for the IDs it holds", j.kind.kindName(), id, ErrNoSuchAuthority)
	}
	return i, nil
}

// commit records entries in the state file and only then makes them current.
func (j *journal) commit(entries []authority) error {
	if err := j.kind.writeJournal(entries); err != nil {
		return err
	}
	j.entries.Store(&entries)
	j.kind.show(entries)
	return nil
}

func (j *journal) statuses() []AuthorityStatus {
	entries := j.snapshot()
	out := make([]AuthorityStatus, len(entries))
	for i, a := range entries {
		out[i] = a.status()
	}
	return out
}

func (j *journal) event(step audit.CAStep, actor string, a authority, reason string) (store.AuditEvent, error) {
	details := map[string]any{"id": a.ID, "server_id": j.serverID, "not_after": a.NotAfter}
	if reason != "" {
		details["reason"] = reason
	}
	ev, err := authorityEvent(j.now(), audit.CAEvent(j.kind.eventKind(), step), actor, a.ID, details)
	if err != nil {
		return nil, fmt.Errorf("ca: %s %s %s: %w", step, j.kind.kindName(), a.ID, err)
	}
	return ev, nil
}

// load reads the journal at start. Entries that cannot be used are demoted
// to old (or forgotten, for another trust domain's) and their key names
// kept from reuse. Only failures a new authority would not fix are errors.
func (j *journal) load(ctx context.Context) error {
	recorded, err := j.kind.readJournal()
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if errors.Is(err, errBadState) {
		j.log.Warn("ignoring the unusable state file", "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("ca: read %s state: %w", j.kind.kindName(), err)
	}
	now := j.now()
	entries := make([]authority, 0, len(recorded))
	for _, a := range recorded {
		verdict, reason, err := j.kind.check(ctx, &a, now)
		if err != nil {
			return err
		}
		if verdict != entryUsable {
			j.log.Warn("a recorded authority cannot be used", "id", a.ID, "key", a.KeyName, "state", a.State, "reason", reason)
			j.avoid = append(j.avoid, a.KeyName)
			a.State, a.Signer = StateOld, nil
			if verdict != entryRetire {
				a.KeyName = ""
			}
		}
		if verdict != entryForeign {
			entries = append(entries, a)
		}
	}
	j.entries.Store(&entries)
	return nil
}

// step advances the journal when due: drop old authorities that have
// expired, prepare a successor past half life, activate it with a sixth of
// the active's life left. It reports whether the journal changed. Called
// with mu held.
func (j *journal) step(ctx context.Context, actor string) (bool, error) {
	now := j.now()
	pruned, err := j.prune(now)
	if err != nil {
		return false, err
	}
	entries := j.snapshot()
	ai, pi := j.index(StateActive), j.index(StatePrepared)
	switch {
	case ai < 0:
		err := j.rotateNow(ctx, actor, "no usable active authority")
		return pruned || err == nil, err
	case activateDue(entries[ai], now):
		if pi < 0 && !entries[ai].Tainted && j.kind.clamped(entries[ai]) {
			return pruned, nil
		}
		err := j.rotateNow(ctx, actor, "five sixths of life")
		return pruned || err == nil, err
	case pi < 0 && prepareDue(entries[ai], now) && !j.kind.clamped(entries[ai]):
		_, err := j.prepare(ctx, actor, "half life")
		return pruned || err == nil, err
	}
	return pruned, nil
}

// rotateNow activates the prepared successor, preparing one first if there is none.
func (j *journal) rotateNow(ctx context.Context, actor, reason string) error {
	if j.index(StatePrepared) < 0 {
		if _, err := j.prepare(ctx, actor, reason); err != nil {
			return err
		}
	}
	_, err := j.activate(ctx, actor, reason, j.index(StatePrepared))
	return err
}

// prune forgets old authorities past their NotAfter: nothing they signed is
// still valid. Entries that still name a key wait for activation to delete it.
func (j *journal) prune(now time.Time) (bool, error) {
	entries := j.snapshot()
	kept := slices.DeleteFunc(slices.Clone(entries), func(a authority) bool {
		return a.State == StateOld && a.KeyName == "" && !now.Before(a.NotAfter)
	})
	if len(kept) == len(entries) {
		return false, nil
	}
	return true, j.commit(kept)
}

// prepare makes a new key and authority, publishes it at once so every
// server trusts it before it signs, and records it as prepared. A failure
// removes the new key.
func (j *journal) prepare(ctx context.Context, actor, reason string) (authority, error) {
	now := j.now()
	avoid := slices.Clone(j.avoid)
	for _, a := range j.snapshot() {
		avoid = append(avoid, a.KeyName)
	}
	name, err := freeKeyName(ctx, j.ks, j.kind.keyPrefix(), now, avoid)
	if err != nil {
		return authority{}, err
	}
	signer, err := j.ks.Generate(ctx, name, j.kind.keyType())
	if err != nil {
		return authority{}, fmt.Errorf("ca: new %s key: %w", j.kind.kindName(), err)
	}
	abandon := func(err error) (authority, error) {
		if derr := j.ks.Delete(context.WithoutCancel(ctx), name); derr != nil {
			j.log.Warn("could not delete the key of an abandoned authority", "key", name, "err", derr)
		}
		return authority{}, err
	}
	a, err := j.kind.mint(signer, now)
	if err != nil {
		return abandon(err)
	}
	a.KeyName, a.State, a.Signer = name, StatePrepared, signer
	ev, err := j.event(audit.CAPrepare, actor, a, reason)
	if err != nil {
		return abandon(err)
	}
	if err := j.kind.publish(ctx, a, ev); err != nil {
		return abandon(err)
	}
	if err := j.commit(append([]authority{a}, j.snapshot()...)); err != nil {
		return abandon(err)
	}
	j.log.Info("authority prepared", "id", a.ID, "key", name, "not_after", a.NotAfter, "reason", reason, "actor", actor)
	return a, nil
}

// activate makes entry i, which is prepared, the active authority. The
// previous active one becomes old, and the keys of all old entries are
// deleted: they never sign again.
func (j *journal) activate(ctx context.Context, actor, reason string, i int) (authority, error) {
	entries := slices.Clone(j.snapshot())
	ev, err := j.event(audit.CAActivate, actor, entries[i], reason)
	if err != nil {
		return authority{}, err
	}
	if _, err := j.store.AppendAudit(ctx, ev); err != nil {
		return authority{}, fmt.Errorf("ca: activate %s %s: record the audit event: %w", j.kind.kindName(), entries[i].ID, err)
	}
	var retired []string
	for k := range entries {
		if entries[k].State == StateActive {
			entries[k].State = StateOld
		}
		if entries[k].State == StateOld {
			if entries[k].KeyName != "" {
				retired = append(retired, entries[k].KeyName)
			}
			entries[k].KeyName, entries[k].Signer = "", nil
		}
	}
	entries[i].State = StateActive
	if err := j.commit(entries); err != nil {
		return authority{}, err
	}
	j.log.Info("authority activated", "id", entries[i].ID, "key", entries[i].KeyName, "not_after", entries[i].NotAfter, "reason", reason, "actor", actor)
	j.deleteKeys(ctx, retired)
	return entries[i], nil
}

func (j *journal) deleteKeys(ctx context.Context, names []string) {
	for _, name := range names {
		if err := j.ks.Delete(context.WithoutCancel(ctx), name); err != nil && !errors.Is(err, keystore.ErrNotFound) {
			j.log.Warn("could not delete the key of a retired authority; delete it from the keystore by hand", "key", name, "err", err)
		}
	}
}

func (j *journal) prepareVerb(ctx context.Context, actor string) (AuthorityStatus, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if i := j.index(StatePrepared); i >= 0 {
		return AuthorityStatus{}, fmt.Errorf("ca: prepare %s authority: %q is already prepared: %w; activate it or let it activate on schedule", j.kind.kindName(), j.snapshot()[i].ID, ErrAuthorityState)
	}
	a, err := j.prepare(ctx, actor, "requested")
	return a.status(), err
}

func (j *journal) activateVerb(ctx context.Context, actor, id string) (AuthorityStatus, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	i := j.index(StatePrepared)
	if id == "" && i < 0 {
		return AuthorityStatus{}, fmt.Errorf("ca: activate %s authority: none is prepared: %w; prepare one first", j.kind.kindName(), ErrAuthorityState)
	}
	if id != "" {
		var err error
		if i, err = j.find(id); err != nil {
			return AuthorityStatus{}, err
		}
		if st := j.snapshot()[i].State; st != StatePrepared {
			return AuthorityStatus{}, fmt.Errorf("ca: activate %s authority %q: it is %s, and only a prepared one can be activated: %w", j.kind.kindName(), id, st, ErrAuthorityState)
		}
	}
	a, err := j.activate(ctx, actor, "requested", i)
	return a.status(), err
}

// taintVerb marks an authority tainted for every server. A tainted prepared
// authority is retired unused; a tainted active one hands over at once, so
// its key signs nothing more.
func (j *journal) taintVerb(ctx context.Context, actor, id string) (AuthorityStatus, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	i, err := j.find(id)
	if err != nil {
		return AuthorityStatus{}, err
	}
	entries := slices.Clone(j.snapshot())
	a := entries[i]
	if a.Tainted || a.Revoked {
		return AuthorityStatus{}, fmt.Errorf("ca: taint %s authority %q: it is already %s: %w", j.kind.kindName(), id, taintWord(a), ErrAuthorityState)
	}
	a.Tainted = true
	ev, err := j.event(audit.CATaint, actor, a, "")
	if err != nil {
		return AuthorityStatus{}, err
	}
	if err := j.kind.publish(ctx, a, ev); err != nil {
		return AuthorityStatus{}, fmt.Errorf("ca: taint %s authority %q: %w", j.kind.kindName(), id, err)
	}
	var retired []string
	if a.State == StatePrepared {
		retired = append(retired, a.KeyName)
		a.State, a.KeyName, a.Signer = StateOld, "", nil
	}
	entries[i] = a
	if err := j.commit(entries); err != nil {
		return AuthorityStatus{}, err
	}
	j.deleteKeys(ctx, retired)
	j.log.Warn("authority tainted", "id", id, "state", a.State, "actor", actor)
	if a.State == StateActive {
		if err := j.rotateNow(ctx, actor, "the active authority was tainted"); err != nil {
			return a.status(), fmt.Errorf("ca: %s authority %q is tainted but no successor could be activated yet, so it still signs: %w; the server retries at its next rotation check", j.kind.kindName(), id, err)
		}
		i, _ = j.find(id)
		a = j.snapshot()[i]
	}
	return a.status(), nil
}

// revokeVerb takes an authority out of every server's bundle and deletes
// its key. The journal keeps it, revoked, until it expires.
func (j *journal) revokeVerb(ctx context.Context, actor, id string) (AuthorityStatus, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.kind.revocable(); err != nil {
		return AuthorityStatus{}, err
	}
	i, err := j.find(id)
	if err != nil {
		return AuthorityStatus{}, err
	}
	entries := slices.Clone(j.snapshot())
	a := entries[i]
	switch {
	case a.State == StateActive:
		return AuthorityStatus{}, fmt.Errorf("ca: revoke %s authority %q: it is the active one and still signs: %w; taint it first, which rotates it, then revoke it", j.kind.kindName(), id, ErrAuthorityState)
	case a.Revoked:
		return AuthorityStatus{}, fmt.Errorf("ca: revoke %s authority %q: it is already revoked: %w", j.kind.kindName(), id, ErrAuthorityState)
	}
	a.Revoked = true
	ev, err := j.event(audit.CARevoke, actor, a, "")
	if err != nil {
		return AuthorityStatus{}, err
	}
	if err := j.kind.publish(ctx, a, ev); err != nil {
		return AuthorityStatus{}, fmt.Errorf("ca: revoke %s authority %q: %w", j.kind.kindName(), id, err)
	}
	retired := a.KeyName
	a.State, a.KeyName, a.Signer = StateOld, "", nil
	entries[i] = a
	if err := j.commit(entries); err != nil {
		return AuthorityStatus{}, err
	}
	j.kind.hide(a)
	if retired != "" {
		j.deleteKeys(ctx, []string{retired})
	}
	j.log.Warn("authority revoked", "id", id, "actor", actor)
	return a.status(), nil
}

func taintWord(a authority) string {
	if a.Revoked {
		return "revoked"
	}
	return "tainted"
}

// tainted reports whether the journal holds id as a tainted authority.
func (j *journal) tainted(id string) bool {
	return slices.ContainsFunc(j.snapshot(), func(a authority) bool { return a.Tainted && a.ID == id })
}

// revoked reports whether entries hold id as a revoked authority.
func revoked(entries []authority, id string) bool {
	return slices.ContainsFunc(entries, func(a authority) bool { return a.Revoked && a.ID == id })
}
