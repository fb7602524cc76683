package ca

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/internal/atomicfile"
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
	// StatePath is a file (mode 0600) naming the active key; the key itself
	// stays in the keystore.
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
		c.TTL = DefaultCATTL
	}
	if c.TTL < MinCATTL {
		return c, fmt.Errorf("ca: JWT authority: TTL %s is too short: use at least %s (default %s)", c.TTL, MinCATTL, DefaultCATTL)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// JWTManager keeps a server's active JWT signing key across restarts,
// rotates it at half life and caches the trust domain's JWT keys (this
// server's and its peers') for the bundle and the JWKS.
type JWTManager struct {
	cfg JWTManagerConfig
	log *slog.Logger

	active atomic.Pointer[JWTAuthority]
	keys   atomic.Pointer[[]JWTKey]

	// rotateMu serialises rotations; activeKey is the keystore name of the
	// active key and activeSince when it started signing.
	rotateMu    sync.Mutex
	activeKey   string
	activeSince time.Time

	// keysMu serialises updates of keys; parsed caches public keys by kid so
	// a refresh parses only what is new.
	keysMu sync.Mutex
	parsed map[string]JWTKey
}

// NewJWTManager loads the active key recorded at cfg.StatePath, or makes a
// new one when there is none, its key is gone from the keystore or does not
// match, or it is past half its life. Either way the key is published in
// the store (again, for a loaded one), so a store that lost it heals on restart.
func NewJWTManager(ctx context.Context, cfg JWTManagerConfig) (*JWTManager, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m := &JWTManager{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "jwt-ca", "trust_domain", cfg.TrustDomain.Name()),
		parsed: make(map[string]JWTKey),
	}
	empty := []JWTKey{}
	m.keys.Store(&empty)

	m.rotateMu.Lock()
	defer m.rotateMu.Unlock()
	loaded, reason, retire, recorded, err := m.load(ctx)
	if err != nil {
		return nil, err
	}
	if loaded != nil {
		if err := m.publish(ctx, loaded.authority); err != nil {
			return nil, err
		}
		m.activeKey, m.activeSince = loaded.keyName, loaded.notBefore
		m.active.Store(loaded.authority)
		m.addKey(loaded.authority)
		m.log.Info("JWT key loaded", jwtKeyAttrs(loaded.keyName, loaded.authority)...)
	} else if err := m.activateNew(ctx, reason, retire, recorded); err != nil {
		return nil, err
	}
	if err := m.RefreshKeys(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// Active is the key that signs now. It never returns nil once NewJWTManager
// has succeeded, and it takes no lock.
func (m *JWTManager) Active() *JWTAuthority {
	return m.active.Load()
}

// Keys is the cached union of the unexpired JWT keys of every server in the
// trust domain, this one's active key always included, oldest first. The
// slice is shared: callers must not modify it.
func (m *JWTManager) Keys() []JWTKey {
	return *m.keys.Load()
}

// Rotate replaces the active key with a new one if it is past half its
// life, and reports whether it did. The new key is published before it
// signs; the old one stays published until it expires, so tokens it signed
// keep verifying, but its private half is deleted from the keystore.
func (m *JWTManager) Rotate(ctx context.Context) (bool, error) {
	m.rotateMu.Lock()
	defer m.rotateMu.Unlock()
	if !pastHalf(m.activeSince, m.active.Load().NotAfter, m.cfg.Now()) {
		return false, nil
	}
	if err := m.activateNew(ctx, "past half life", m.activeKey, ""); err != nil {
		return false, err
	}
	return true, nil
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
	parsed := make(map[string]JWTKey, len(records)+1)
	keys := make([]JWTKey, 0, len(records)+1)
	for _, r := range records {
		if _, dup := parsed[r.KeyID]; dup {
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
	}
	// Read under keysMu: a rotation stores the new key before adding it to
	// the set under the same lock, so it cannot be lost here.
	if a := m.active.Load(); a != nil {
		if _, ok := parsed[a.KeyID]; !ok {
			k := JWTKey{KeyID: a.KeyID, PublicKey: a.Signer.Public(), NotAfter: a.NotAfter}
			parsed[a.KeyID] = k
			keys = append(keys, k)
		}
	}
	m.parsed = parsed
	m.keys.Store(&keys)
	return nil
}

func parseStoredJWTKey(r store.JWTKey) (JWTKey, error) {
	pub, err := x509.ParsePKIXPublicKey(r.PublicKeyDER)
	if err != nil {
		return JWTKey{}, err
	}
	kid, err := KeyIDFor(pub)
	if err != nil {
		return JWTKey{}, err
	}
	if kid != r.KeyID {
		return JWTKey{}, fmt.Errorf("key ID %q does not match the key's thumbprint %q", r.KeyID, kid)
	}
	return JWTKey{KeyID: r.KeyID, PublicKey: pub, NotAfter: r.NotAfter.UTC()}, nil
}

func (m *JWTManager) addKey(a *JWTAuthority) {
	m.keysMu.Lock()
	defer m.keysMu.Unlock()
	if _, ok := m.parsed[a.KeyID]; ok {
		return
	}
	k := JWTKey{KeyID: a.KeyID, PublicKey: a.Signer.Public(), NotAfter: a.NotAfter}
	m.parsed[a.KeyID] = k
	old := *m.keys.Load()
	keys := make([]JWTKey, 0, len(old)+1)
	keys = append(keys, old...)
	keys = append(keys, k)
	m.keys.Store(&keys)
}

// activateNew makes a key, publishes it, records it as active and then
// deletes the key named retire, if any. The new key never takes the name
// avoid. It is called with rotateMu held. A failure before the switch
// leaves the current key active and removes the new one.
func (m *JWTManager) activateNew(ctx context.Context, reason, retire, avoid string) error {
	now := m.cfg.Now()
	name, err := m.newKeyName(ctx, now, retire, avoid)
	if err != nil {
		return err
	}
	signer, err := m.cfg.KeyStore.Generate(ctx, name, jwtKeyType)
	if err != nil {
		return fmt.Errorf("ca: new JWT key: %w", err)
	}
	abandon := func(err error) error {
		if derr := m.cfg.KeyStore.Delete(context.WithoutCancel(ctx), name); derr != nil {
			m.log.Warn("could not delete the abandoned JWT key", "key", name, "err", derr)
		}
		return err
	}
	kid, err := KeyIDFor(signer.Public())
	if err != nil {
		return abandon(err)
	}
	// Whole seconds, as the store and the tokens' exp keep them, so a
	// restart reads back exactly what is published.
	notBefore := now.Truncate(time.Second).UTC()
	a := &JWTAuthority{
		Signer:      signer,
		KeyID:       kid,
		NotAfter:    notBefore.Add(m.cfg.TTL),
		TrustDomain: m.cfg.TrustDomain,
	}
	// Published before it signs, so peers reading the store can already
	// verify what it signs.
	if err := m.publish(ctx, a); err != nil {
		return abandon(err)
	}
	if err := writeJWTState(m.cfg.StatePath, jwtStateEntry{KeyName: name, KeyID: kid, TrustDomain: m.cfg.TrustDomain.Name(), NotBefore: notBefore, NotAfter: a.NotAfter}); err != nil {
		return abandon(err)
	}
	m.active.Store(a)
	m.activeKey, m.activeSince = name, notBefore
	m.addKey(a)
	m.log.Info("JWT key activated", append(jwtKeyAttrs(name, a), "reason", reason)...)

	if retire != "" && retire != name {
		if err := m.cfg.KeyStore.Delete(ctx, retire); err != nil {
			m.log.Warn("could not delete the previous JWT key", "key", retire, "err", err)
		}
	}
	return nil
}

func (m *JWTManager) newKeyName(ctx context.Context, now time.Time, avoid ...string) (string, error) {
	return freeKeyName(ctx, m.cfg.KeyStore, "jwt", now, append(avoid, m.activeKey))
}

func (m *JWTManager) publish(ctx context.Context, a *JWTAuthority) error {
	der, err := x509.MarshalPKIXPublicKey(a.Signer.Public())
	if err != nil {
		return fmt.Errorf("ca: publish JWT key %s: %w", a.KeyID, err)
	}
	ev, err := authorityEvent(m.cfg.Now(), "ca.jwt.publish", ServerActor(m.cfg.TrustDomain, m.cfg.ServerID), a.KeyID, map[string]any{
		"server_id": m.cfg.ServerID, "not_after": a.NotAfter,
	})
	if err != nil {
		return fmt.Errorf("ca: publish JWT key %s: %w", a.KeyID, err)
	}
	err = m.cfg.Store.PutJWTKey(ctx, store.JWTKey{
		ServerID:     m.cfg.ServerID,
		KeyID:        a.KeyID,
		PublicKeyDER: der,
		NotAfter:     a.NotAfter,
	}, ev)
	if err != nil {
		return fmt.Errorf("ca: publish JWT key %s: %w", a.KeyID, err)
	}
	return nil
}

type loadedJWTKey struct {
	authority *JWTAuthority
	keyName   string
	notBefore time.Time
}

// load reads the recorded key, returning the same things as
// X509Manager.load: why it cannot be used, which key to delete once a new
// one is active, and the recorded name the new key must not take.
func (m *JWTManager) load(ctx context.Context) (loaded *loadedJWTKey, reason, retire, recorded string, err error) {
	st, err := readJWTState(m.cfg.StatePath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "no JWT key recorded yet", "", "", nil
	}
	if errors.Is(err, errBadState) {
		m.log.Warn("ignoring the unusable JWT key state file", "path", m.cfg.StatePath, "err", err)
		return nil, "state file unusable", "", "", nil
	}
	if err != nil {
		return nil, "", "", "", fmt.Errorf("ca: read JWT key state: %w", err)
	}
	if st.TrustDomain != m.cfg.TrustDomain.Name() {
		return nil, fmt.Sprintf("recorded JWT key is not for trust domain %s", m.cfg.TrustDomain), "", st.KeyName, nil
	}
	signer, err := m.cfg.KeyStore.Get(ctx, st.KeyName)
	if errors.Is(err, keystore.ErrNotFound) {
		m.log.Warn("the recorded JWT key is missing from the keystore", "key", st.KeyName)
		return nil, "recorded JWT key missing", "", st.KeyName, nil
	}
	if err != nil {
		return nil, "", "", "", fmt.Errorf("ca: load JWT key %q: %w", st.KeyName, err)
	}
	if kid, err := KeyIDFor(signer.Public()); err != nil || kid != st.KeyID {
		m.log.Warn("the recorded JWT key does not match its key ID", "key", st.KeyName, "kid", st.KeyID)
		return nil, "recorded JWT key does not match", "", st.KeyName, nil
	}
	if pastHalf(st.NotBefore, st.NotAfter, m.cfg.Now()) {
		return nil, "recorded JWT key past half life", st.KeyName, st.KeyName, nil
	}
	a := &JWTAuthority{Signer: signer, KeyID: st.KeyID, NotAfter: st.NotAfter, TrustDomain: m.cfg.TrustDomain}
	return &loadedJWTKey{authority: a, keyName: st.KeyName, notBefore: st.NotBefore}, "", "", "", nil
}

func pastHalf(notBefore, notAfter, now time.Time) bool {
	return !now.Before(notBefore.Add(notAfter.Sub(notBefore) / 2))
}

func jwtKeyAttrs(keyName string, a *JWTAuthority) []any {
	return []any{"key", keyName, "kid", a.KeyID, "not_after", a.NotAfter}
}

// jwtStateFile is the JSON layout of JWTManagerConfig.StatePath. Version
// leaves room for the rotation journal to extend it.
type jwtStateFile struct {
	Version int            `json:"version"`
	Active  *jwtStateEntry `json:"active"`
}

type jwtStateEntry struct {
	KeyName     string    `json:"key_name"`
	KeyID       string    `json:"kid"`
	TrustDomain string    `json:"trust_domain"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
}

func readJWTState(path string) (*jwtStateEntry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var st jwtStateFile
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%w %s: %v", errBadState, path, err)
	}
	if st.Version != stateVersion || st.Active == nil {
		return nil, fmt.Errorf("%w %s: version %d without an active key", errBadState, path, st.Version)
	}
	e := st.Active
	if err := keystore.ValidateName(e.KeyName); err != nil {
		return nil, fmt.Errorf("%w %s: %v", errBadState, path, err)
	}
	if e.KeyID == "" || e.NotBefore.IsZero() || !e.NotAfter.After(e.NotBefore) {
		return nil, fmt.Errorf("%w %s: the active key needs a kid and a validity with not_after after not_before", errBadState, path)
	}
	return e, nil
}

func writeJWTState(path string, e jwtStateEntry) error {
	data, err := json.MarshalIndent(jwtStateFile{Version: stateVersion, Active: &e}, "", "  ")
	if err != nil {
		return fmt.Errorf("ca: encode JWT key state: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("ca: write JWT key state: %w", err)
	}
	if err := atomicfile.Write(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("ca: write JWT key state %s: %w", path, err)
	}
	return nil
}
