package rotation

import (
	"writ.dev/writ/audit"
	"writ.dev/writ/ca"

	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/keystore"
	"writ.dev/writ/store"
)

// JWTManagerConfig configures a JWTManager.
type JWTManagerConfig struct {
	TrustDomain spiffeid.TrustDomain
	// ServerID is this server's id, recorded with its JWT keys in the store.
	ServerID string
	KeyStore keystore.KeyStore
	// Store is where the public keys are published; the JWKS is the union
	// of all servers' unexpired keys.
	Store store.Store
	// TTL is how long a key signs; default 24h (DefaultCATTL), at least MinCATTL.
	TTL time.Duration
	// StatePath is a file (mode 0600) holding the rotation journal: each
	// key's ID, public half, state and key name; the keys stay in the keystore.
	StatePath string
	// Now defaults to time.Now.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// jwtKeyType is the type of every JWT signing key: ES256 is what the SPIFFE
// libraries and every cloud IAM accept.
const jwtKeyType = keystore.ECP256

func (c JWTManagerConfig) withDefaults() (JWTManagerConfig, error) {
	switch {
	case c.TrustDomain.IsZero():
		return c, errors.New("ca: JWT authority: trust domain is empty")
	case c.ServerID == "":
		return c, errors.New("ca: JWT authority: server id is empty: each server records its JWT keys under its own id")
	case c.KeyStore == nil:
		return c, errors.New("ca: JWT authority: no keystore")
	case c.Store == nil:
		return c, errors.New("ca: JWT authority: no store to publish JWT keys in")
	case c.StatePath == "":
		return c, errors.New("ca: JWT authority: state path is empty: name a file to record the active key in")
	}
	if c.TTL == 0 {
		c.TTL = ca.DefaultCATTL
	}
	if c.TTL < ca.MinCATTL {
		return c, fmt.Errorf("ca: JWT authority: TTL %s is too short: use at least %s (default %s)", c.TTL, ca.MinCATTL, ca.DefaultCATTL)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// JWTManager keeps a server's JWT signing keys across restarts in a
// rotation journal, as X509Manager does its CAs: past half its life the
// active key gets a prepared successor, published at once, which takes over
// with a sixth of the active key's life left. It also caches the trust
// domain's JWT keys (this server's and its peers') for the bundle and the JWKS.
type JWTManager struct {
	cfg JWTManagerConfig
	log *slog.Logger
	j   journal

	active atomic.Pointer[ca.JWTAuthority]
	keys   atomic.Pointer[[]ca.JWTKey]
	// peerTainted holds the key IDs the store marked tainted at the last refresh.
	peerTainted atomic.Pointer[map[string]bool]

	// keysMu serialises updates of keys; parsed caches public keys by kid so
	// a refresh parses only what is new.
	keysMu sync.Mutex
	parsed map[string]ca.JWTKey
}

// NewJWTManager loads the journal recorded at cfg.StatePath and resumes it
// as NewX509Manager does: a usable active key keeps signing, a usable
// prepared one is activated if the active one cannot be used, and a new key
// is made when neither can. Recorded keys are published again, so a store
// that lost them heals on restart.
func NewJWTManager(ctx context.Context, cfg JWTManagerConfig) (*JWTManager, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m := &JWTManager{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "jwt-ca", "trust_domain", cfg.TrustDomain.Name()),
		parsed: make(map[string]ca.JWTKey),
	}
	m.j = journal{kind: m, ks: cfg.KeyStore, store: cfg.Store, serverID: cfg.ServerID,
		self: ServerActor(cfg.TrustDomain, cfg.ServerID), now: cfg.Now, log: m.log}
	empty := []ca.JWTKey{}
	m.keys.Store(&empty)
	m.peerTainted.Store(&map[string]bool{})

	m.j.mu.Lock()
	defer m.j.mu.Unlock()
	if err := m.j.load(ctx); err != nil {
		return nil, err
	}
	if err := m.republish(ctx); err != nil {
		return nil, err
	}
	m.show(m.j.snapshot())
	if _, err := m.j.step(ctx, m.j.self); err != nil {
		return nil, err
	}
	if err := m.RefreshKeys(ctx); err != nil {
		return nil, err
	}
	m.log.Info("JWT key ready", "kid", m.Active().KeyID, "not_after", m.Active().NotAfter)
	return m, nil
}

// Active is the key that signs now. It never returns nil once NewJWTManager
// has succeeded, and it takes no lock.
func (m *JWTManager) Active() *ca.JWTAuthority {
	return m.active.Load()
}

// Keys is the cached union of the unexpired, unrevoked JWT keys of every
// server in the trust domain, this one's always included, oldest first.
// The slice is shared: callers must not modify it.
func (m *JWTManager) Keys() []ca.JWTKey {
	return *m.keys.Load()
}

// Authorities lists this server's journal, newest first.
func (m *JWTManager) Authorities() []AuthorityStatus {
	return m.j.statuses()
}

// MaxSVIDTTL is the longest JWT-SVID the server issues: a sixth of the key
// TTL, the life the active key has left when it hands over.
func (m *JWTManager) MaxSVIDTTL() time.Duration {
	return m.cfg.TTL / 6
}

// KeyTainted reports whether key kid is tainted, this server's or, as of
// the last refresh, a peer's: holders of tokens it signed should get new ones.
func (m *JWTManager) KeyTainted(kid string) bool {
	return m.j.tainted(kid) || (*m.peerTainted.Load())[kid]
}

// Rotate advances the journal one step when due, as X509Manager.Rotate
// does, and reports whether the journal changed. A retired key stays
// published until it expires, so tokens it signed keep verifying, but its
// private half is deleted from the keystore.
func (m *JWTManager) Rotate(ctx context.Context) (bool, error) {
	m.j.mu.Lock()
	defer m.j.mu.Unlock()
	return m.j.step(ctx, m.j.self)
}

// Prepare makes and publishes a successor key now, even if none is due yet.
// It fails with ErrAuthorityState if one is already prepared.
func (m *JWTManager) Prepare(ctx context.Context, actor string) (AuthorityStatus, error) {
	return m.j.prepareVerb(ctx, actor)
}

// Activate makes the prepared key id ("" for whichever is prepared) the
// active one now; the previous active key is deleted from the keystore.
func (m *JWTManager) Activate(ctx context.Context, actor, id string) (AuthorityStatus, error) {
	return m.j.activateVerb(ctx, actor, id)
}

// Taint marks key id as suspect for every server. A tainted active key is
// replaced at once.
func (m *JWTManager) Taint(ctx context.Context, actor, id string) (AuthorityStatus, error) {
	return m.j.taintVerb(ctx, actor, id)
}

// Revoke takes key id out of every server's JWKS at once and deletes its
// private half. The active key cannot be revoked: taint it first.
func (m *JWTManager) Revoke(ctx context.Context, actor, id string) (AuthorityStatus, error) {
	return m.j.revokeVerb(ctx, actor, id)
}

// Run rotates the key when due and refreshes the key set from the store
// until ctx ends. Failures are logged and retried on the next tick: the
// active key keeps signing meanwhile.
func (m *JWTManager) Run(ctx context.Context) {
	runLifecycle(ctx, m.cfg.TTL,
		func(ctx context.Context) {
			if _, err := m.Rotate(ctx); err != nil && ctx.Err() == nil {
				m.log.Error("JWT key rotation failed; the current key keeps signing", "err", err,
					"not_after", m.Active().NotAfter)
			}
		},
		func(ctx context.Context) {
			if err := m.RefreshKeys(ctx); err != nil && ctx.Err() == nil {
				m.log.Warn("JWT key refresh failed; keeping the cached keys", "err", err)
			}
		})
}

// RefreshKeys reloads the JWT keys of all servers from the store. On error
// the cached set is kept. A record whose key does not parse, cannot sign
// JWTs or does not match its key ID is skipped with a warning.
func (m *JWTManager) RefreshKeys(ctx context.Context) error {
	now := m.cfg.Now()
	records, err := m.cfg.Store.ListJWTKeys(ctx, now)
	if err != nil {
		return fmt.Errorf("ca: refresh JWT keys: %w", err)
	}
	m.keysMu.Lock()
	defer m.keysMu.Unlock()
	parsed := make(map[string]ca.JWTKey, len(records)+1)
	keys := make([]ca.JWTKey, 0, len(records)+1)
	tainted := make(map[string]bool)
	// A revocation that lands between the listing and here is already in
	// the journal; its key must not come back with the stale list.
	entries := m.j.snapshot()
	for _, r := range records {
		if _, dup := parsed[r.KeyID]; dup || revoked(entries, r.KeyID) {
			continue
		}
		k, ok := m.parsed[r.KeyID]
		if !ok || !k.NotAfter.Equal(r.NotAfter) {
			k, err = parseStoredJWTKey(r)
			if err != nil {
				m.log.Warn("skipping an unusable JWT key from the store", "server_id", r.ServerID, "kid", r.KeyID, "err", err)
				continue
			}
		}
		parsed[r.KeyID] = k
		keys = append(keys, k)
		if r.Tainted {
			tainted[r.KeyID] = true
		}
	}
	// Read under keysMu: a journal change is recorded before it is added
	// to the set under the same lock, so it cannot be lost here.
	for _, k := range ownJWTKeys(entries, now) {
		if _, ok := parsed[k.KeyID]; !ok {
			parsed[k.KeyID] = k
			keys = append(keys, k)
		}
	}
	m.parsed = parsed
	m.keys.Store(&keys)
	m.peerTainted.Store(&tainted)
	return nil
}

func parseStoredJWTKey(r store.JWTKey) (ca.JWTKey, error) {
	pub, err := x509.ParsePKIXPublicKey(r.PublicKeyDER)
	if err != nil {
		return ca.JWTKey{}, err
	}
	kid, err := ca.KeyIDFor(pub)
	if err != nil {
		return ca.JWTKey{}, err
	}
	if kid != r.KeyID {
		return ca.JWTKey{}, fmt.Errorf("key ID %q does not match the key's thumbprint %q", r.KeyID, kid)
	}
	return ca.JWTKey{KeyID: r.KeyID, PublicKey: pub, NotAfter: r.NotAfter.UTC()}, nil
}

// ownJWTKeys are the keys this server's journal puts in the set at now,
// whatever the store holds, oldest first as the set is.
func ownJWTKeys(entries []authority, now time.Time) []ca.JWTKey {
	var out []ca.JWTKey
	for _, a := range slices.Backward(entries) {
		if !a.Revoked && a.Public != nil && now.Before(a.NotAfter) {
			out = append(out, ca.JWTKey{KeyID: a.ID, PublicKey: a.Public, NotAfter: a.NotAfter})
		}
	}
	return out
}

func (m *JWTManager) addKeys(add []ca.JWTKey) {
	m.keysMu.Lock()
	defer m.keysMu.Unlock()
	old := *m.keys.Load()
	keys := slices.Clip(old)
	for _, k := range add {
		if _, ok := m.parsed[k.KeyID]; ok {
			continue
		}
		m.parsed[k.KeyID] = k
		keys = append(keys, k)
	}
	if len(keys) != len(old) {
		m.keys.Store(&keys)
	}
}

// republish records the loaded journal's keys in the store again, flags
// included; revoked ones are left out, as X509Manager.republish explains.
// Called with the journal's mu held.
func (m *JWTManager) republish(ctx context.Context) error {
	for _, a := range m.j.snapshot() {
		if a.Revoked || a.Public == nil || !m.cfg.Now().Before(a.NotAfter) {
			continue
		}
		ev, err := authorityEvent(m.cfg.Now(), audit.EventCAJWTPublish, m.j.self, a.ID, map[string]any{
			"server_id": m.cfg.ServerID, "not_after": a.NotAfter,
		})
		if err == nil {
			err = m.publish(ctx, a, ev)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (m *JWTManager) kindName() string          { return "JWT" }
func (m *JWTManager) eventKind() string         { return audit.KindJWT }
func (m *JWTManager) keyPrefix() string         { return "jwt" }
func (m *JWTManager) keyType() keystore.KeyType { return jwtKeyType }
func (m *JWTManager) revocable() error          { return nil }
func (m *JWTManager) clamped(authority) bool    { return false }

func (m *JWTManager) mint(signer crypto.Signer, now time.Time) (authority, error) {
	kid, err := ca.KeyIDFor(signer.Public())
	if err != nil {
		return authority{}, err
	}
	// Whole seconds, as the store and the tokens' exp keep them, so a
	// restart reads back exactly what is published.
	notBefore := now.Truncate(time.Second).UTC()
	return authority{ID: kid, NotBefore: notBefore, NotAfter: notBefore.Add(m.cfg.TTL), Public: signer.Public()}, nil
}

func (m *JWTManager) publish(ctx context.Context, a authority, ev store.AuditEvent) error {
	der, err := x509.MarshalPKIXPublicKey(a.Public)
	if err != nil {
		return fmt.Errorf("ca: publish JWT key %s: %w", a.ID, err)
	}
	err = m.cfg.Store.PutJWTKey(ctx, store.JWTKey{
		ServerID:     m.cfg.ServerID,
		KeyID:        a.ID,
		PublicKeyDER: der,
		NotAfter:     a.NotAfter,
		Tainted:      a.Tainted,
		Revoked:      a.Revoked,
	}, ev)
	if err != nil {
		return fmt.Errorf("ca: publish JWT key %s: %w", a.ID, err)
	}
	return nil
}

// check decides whether a recorded key can be used: an old one needs only
// to be of this trust domain; a prepared or active one also needs its
// private half, matching its key ID, and time left.
func (m *JWTManager) check(ctx context.Context, a *authority, now time.Time) (entryCheck, string, error) {
	if a.trustDomain != m.cfg.TrustDomain.Name() {
		return entryForeign, fmt.Sprintf("recorded JWT key is not for trust domain %s", m.cfg.TrustDomain), nil
	}
	if a.State == StateOld {
		return entryUsable, "", nil
	}
	signer, err := m.cfg.KeyStore.Get(ctx, a.KeyName)
	if errors.Is(err, keystore.ErrNotFound) {
		return entryAbandon, "recorded JWT key missing from the keystore", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("ca: load JWT key %q: %w", a.KeyName, err)
	}
	if kid, err := ca.KeyIDFor(signer.Public()); err != nil || kid != a.ID {
		return entryAbandon, "recorded JWT key does not match its key ID", nil
	}
	if !now.Before(a.NotAfter) {
		return entryRetire, "recorded JWT key expired", nil
	}
	a.Signer, a.Public = signer, signer.Public()
	return entryUsable, "", nil
}

func (m *JWTManager) readJournal() ([]authority, error) { return readJWTState(m.cfg.StatePath) }

func (m *JWTManager) writeJournal(entries []authority) error {
	return writeJWTState(m.cfg.StatePath, m.cfg.TrustDomain.Name(), entries)
}

// show makes the journal's active key the one that signs and puts every
// key it trusts in the set, before the active one can sign.
func (m *JWTManager) show(entries []authority) {
	m.addKeys(ownJWTKeys(entries, m.cfg.Now()))
	i := slices.IndexFunc(entries, func(a authority) bool { return a.State == StateActive })
	if i < 0 {
		return
	}
	a := entries[i]
	if cur := m.active.Load(); cur == nil || cur.KeyID != a.ID {
		m.active.Store(&ca.JWTAuthority{Signer: a.Signer, KeyID: a.ID, NotAfter: a.NotAfter, TrustDomain: m.cfg.TrustDomain})
	}
}

// hide drops a revoked key from the cached set at once.
func (m *JWTManager) hide(a authority) {
	m.keysMu.Lock()
	defer m.keysMu.Unlock()
	keys := slices.DeleteFunc(slices.Clone(*m.keys.Load()), func(k ca.JWTKey) bool { return k.KeyID == a.ID })
	delete(m.parsed, a.ID)
	m.keys.Store(&keys)
}

func pastHalf(notBefore, notAfter, now time.Time) bool {
	return !now.Before(notBefore.Add(notAfter.Sub(notBefore) / 2))
}

// jwtStateFile is the JSON layout of JWTManagerConfig.StatePath. Version 1
// held the active key alone (Active); version 2 holds the rotation journal
// (Authorities).
type jwtStateFile struct {
	Version     int             `json:"version"`
	Active      *jwtStateEntry  `json:"active,omitempty"`
	Authorities []jwtStateEntry `json:"authorities,omitempty"`
}

type jwtStateEntry struct {
	KeyName     string    `json:"key_name"`
	KeyID       string    `json:"kid"`
	TrustDomain string    `json:"trust_domain"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	// PublicKey (PKIX DER) keeps an old key in the set once its private
	// half is gone; version 1 files, whose key is active, lack it.
	PublicKey []byte         `json:"public_key,omitempty"`
	State     AuthorityState `json:"state,omitempty"`
	Tainted   bool           `json:"tainted,omitempty"`
	Revoked   bool           `json:"revoked,omitempty"`
}

func readJWTState(path string) ([]authority, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var st jwtStateFile
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%w %s: %v", errBadState, path, err)
	}
	recorded, err := journalEntries(path, st.Version, st.Active, st.Authorities, func(e *jwtStateEntry) { e.State = StateActive })
	if err != nil {
		return nil, err
	}
	states, names := make([]AuthorityState, len(recorded)), make([]string, len(recorded))
	for i, e := range recorded {
		states[i], names[i] = e.State, e.KeyName
	}
	if err := checkJournal(path, states, names); err != nil {
		return nil, err
	}
	out := make([]authority, 0, len(recorded))
	for i, e := range recorded {
		if e.KeyID == "" || e.NotBefore.IsZero() || !e.NotAfter.After(e.NotBefore) {
			return nil, fmt.Errorf("%w %s: entry %d needs a kid and a validity with not_after after not_before", errBadState, path, i+1)
		}
		a := authority{ID: e.KeyID, KeyName: e.KeyName, State: e.State, NotBefore: e.NotBefore, NotAfter: e.NotAfter,
			Tainted: e.Tainted, Revoked: e.Revoked, trustDomain: e.TrustDomain}
		if len(e.PublicKey) > 0 {
			pub, err := x509.ParsePKIXPublicKey(e.PublicKey)
			if err != nil {
				return nil, fmt.Errorf("%w %s: entry %d: %v", errBadState, path, i+1, err)
			}
			a.Public = pub
		}
		out = append(out, a)
	}
	return out, nil
}

func writeJWTState(path, td string, entries []authority) error {
	st := jwtStateFile{Version: stateVersion, Authorities: make([]jwtStateEntry, len(entries))}
	for i, a := range entries {
		der, err := x509.MarshalPKIXPublicKey(a.Public)
		if err != nil {
			return fmt.Errorf("ca: encode JWT key state: key %s: %w", a.ID, err)
		}
		st.Authorities[i] = jwtStateEntry{KeyName: a.KeyName, KeyID: a.ID, TrustDomain: td, NotBefore: a.NotBefore, NotAfter: a.NotAfter,
			PublicKey: der, State: a.State, Tainted: a.Tainted, Revoked: a.Revoked}
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("ca: encode JWT key state: %w", err)
	}
	return writeStateFile(path, data)
}
