package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/keystore"
	"writ.dev/writ/store"

	"writ.dev/writ/internal/atomicfile"
)

const (
	// DefaultCATTL is a CA's lifetime when the configuration names none.
	DefaultCATTL = 24 * time.Hour
	// MinCATTL keeps a CA's half life well above ClockSkew, which is counted
	// in its validity and would otherwise rotate it at once.
	MinCATTL = time.Minute
	// BundleRefreshInterval is how often Run picks up the CA certificates
	// other servers of the trust domain have published.
	BundleRefreshInterval = 5 * time.Second
	// maxRotateCheckInterval caps how long a due rotation can wait in Run.
	maxRotateCheckInterval = time.Minute
)

// X509ManagerConfig configures an X509Manager.
type X509ManagerConfig struct {
	TrustDomain spiffeid.TrustDomain
	// ServerID is this server's id, recorded with its CA certificates in the store.
	ServerID string
	KeyStore keystore.KeyStore
	// Store is where CA certificates are published; the bundle is the union
	// of all servers' unexpired CA certificates.
	Store store.Store
	// KeyType of new CA keys; default ec-p256.
	KeyType keystore.KeyType
	// TTL is a CA's lifetime; default 24h, at least MinCATTL.
	TTL time.Duration
	// Subject of new CA certificates; empty gives NewRootCert's default.
	Subject pkix.Name
	// Upstream, when set, signs the CA certificates instead of the CA
	// itself: each is an intermediate under it, SVID chains carry the
	// upstream chain, and the trust bundle is the upstream roots. The CA's
	// own key is still made and kept in KeyStore.
	Upstream *Upstream
	// StatePath is a file (mode 0600) naming the active CA's key and holding
	// its certificate; the key itself stays in the keystore.
	StatePath string
	// Now defaults to time.Now.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c X509ManagerConfig) withDefaults() (X509ManagerConfig, error) {
	switch {
	case c.TrustDomain.IsZero():
		return c, errors.New("ca: X.509 CA: trust domain is empty")
	case c.ServerID == "":
		return c, errors.New("ca: X.509 CA: server id is empty: each server records its CA certificates under its own id")
	case c.KeyStore == nil:
		return c, errors.New("ca: X.509 CA: no keystore")
	case c.Store == nil:
		return c, errors.New("ca: X.509 CA: no store to publish CA certificates in")
	case c.StatePath == "":
		return c, errors.New("ca: X.509 CA: state path is empty: name a file to record the active CA in")
	}
	if c.KeyType == "" {
		c.KeyType = keystore.ECP256
	} else if _, err := keystore.ParseKeyType(string(c.KeyType)); err != nil {
		return c, fmt.Errorf("ca: X.509 CA: %w", err)
	}
	if c.TTL == 0 {
		c.TTL = DefaultCATTL
	}
	if c.TTL < MinCATTL {
		return c, fmt.Errorf("ca: X.509 CA: TTL %s is too short: use at least %s (default %s)", c.TTL, MinCATTL, DefaultCATTL)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Upstream != nil {
		if err := c.Upstream.Validate(c.Now()); err != nil {
			return c, err
		}
	}
	return c, nil
}

// X509Manager keeps a server's active X.509 CA across restarts, rotates it
// at half life and caches the trust domain's bundle for the hot path.
type X509Manager struct {
	cfg X509ManagerConfig
	log *slog.Logger

	active atomic.Pointer[X509CA]
	bundle atomic.Pointer[[]*x509.Certificate]

	// rotateMu serialises rotations; activeKey is the keystore name of the
	// active CA's key.
	rotateMu  sync.Mutex
	activeKey string

	// bundleMu serialises bundle updates; parsed caches certificates by DER
	// so a refresh parses only what is new.
	bundleMu sync.Mutex
	parsed   map[string]*x509.Certificate

	// clampWarned keeps a CA held back by its upstream's expiry from
	// logging on every rotation check.
	clampWarned bool
}

// NewX509Manager loads the active CA recorded at cfg.StatePath, or makes a
// new one when there is none, its key is gone from the keystore, the key
// does not match, or the CA is past half its life. Either way the CA is
// published in the store (again, for a loaded one: it is idempotent), so a
// store that lost it heals on restart.
func NewX509Manager(ctx context.Context, cfg X509ManagerConfig) (*X509Manager, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m := &X509Manager{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "x509-ca", "trust_domain", cfg.TrustDomain.Name()),
		parsed: make(map[string]*x509.Certificate),
	}
	empty := []*x509.Certificate{}
	m.bundle.Store(&empty)

	m.rotateMu.Lock()
	defer m.rotateMu.Unlock()
	loaded, reason, retire, recorded, err := m.load(ctx)
	if err != nil {
		return nil, err
	}
	if loaded != nil {
		if err := m.publish(ctx, loaded.ca.Cert); err != nil {
			return nil, err
		}
		m.activeKey = loaded.keyName
		m.active.Store(loaded.ca)
		m.addToBundle(m.authorities(loaded.ca.Cert)...)
		m.log.Info("x509 CA loaded", caAttrs(loaded.keyName, loaded.ca.Cert)...)
	} else if err := m.activateNew(ctx, reason, retire, recorded); err != nil {
		return nil, err
	}
	if err := m.RefreshBundle(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// Active is the CA that signs now. It never returns nil once
// NewX509Manager has succeeded, and it takes no lock.
func (m *X509Manager) Active() *X509CA {
	return m.active.Load()
}

// Bundle is the cached union of the unexpired CA certificates of every
// server in the trust domain, this one's always included. Under an upstream
// CA this server's contribution is the upstream roots, not its
// intermediate. The slice is shared: callers must not modify it.
func (m *X509Manager) Bundle() []*x509.Certificate {
	return *m.bundle.Load()
}

// Rotate replaces the active CA with a new one if it is past half its life,
// and reports whether it did. The new CA is published before it signs
// anything; the previous key is deleted from the keystore once the new CA
// is active (its certificate stays in the bundle until it expires).
func (m *X509Manager) Rotate(ctx context.Context) (bool, error) {
	m.rotateMu.Lock()
	defer m.rotateMu.Unlock()
	cur := m.active.Load()
	now := m.cfg.Now()
	if !m.due(cur.Cert, now) {
		return false, nil
	}
	if err := m.activateNew(ctx, "past half life", m.activeKey, ""); err != nil {
		return false, err
	}
	return true, nil
}

// Run rotates the CA when due and refreshes the bundle from the store until
// ctx ends. Failures are logged and retried on the next tick: the active CA
// keeps signing meanwhile.
func (m *X509Manager) Run(ctx context.Context) {
	runLifecycle(ctx, m.cfg.TTL,
		func(ctx context.Context) {
			if _, err := m.Rotate(ctx); err != nil && ctx.Err() == nil {
				m.log.Error("x509 CA rotation failed; the current CA keeps signing", "err", err,
					"not_after", m.Active().Cert.NotAfter)
			}
		},
		func(ctx context.Context) {
			if err := m.RefreshBundle(ctx); err != nil && ctx.Err() == nil {
				m.log.Warn("x509 bundle refresh failed; keeping the cached bundle", "err", err)
			}
		})
}

// runLifecycle drives an authority until ctx ends: rotate is called often
// enough to catch half life (a twentieth of ttl, at most
// maxRotateCheckInterval) and refresh every BundleRefreshInterval to pick up
// other servers' authorities.
func runLifecycle(ctx context.Context, ttl time.Duration, rotate, refresh func(context.Context)) {
	rotateTick := time.NewTicker(min(ttl/20, maxRotateCheckInterval))
	defer rotateTick.Stop()
	refreshTick := time.NewTicker(BundleRefreshInterval)
	defer refreshTick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-rotateTick.C:
			rotate(ctx)
		case <-refreshTick.C:
			refresh(ctx)
		}
	}
}

// RefreshBundle reloads the CA certificates of all servers from the store.
// On error the cached bundle is kept. A record that does not parse as a CA
// certificate is skipped with a warning rather than failing the bundle.
func (m *X509Manager) RefreshBundle(ctx context.Context) error {
	now := m.cfg.Now()
	records, err := m.cfg.Store.ListCACerts(ctx, now)
	if err != nil {
		return fmt.Errorf("ca: refresh bundle: %w", err)
	}
	m.bundleMu.Lock()
	defer m.bundleMu.Unlock()
	parsed := make(map[string]*x509.Certificate, len(records)+1)
	certs := make([]*x509.Certificate, 0, len(records)+1)
	for _, r := range records {
		key := string(r.CertDER)
		if _, dup := parsed[key]; dup {
			continue
		}
		cert := m.parsed[key]
		if cert == nil {
			cert, err = x509.ParseCertificate(r.CertDER)
			if err != nil {
				m.log.Warn("skipping unparsable CA certificate from the store", "server_id", r.ServerID, "err", err)
				continue
			}
			if !cert.IsCA {
				m.log.Warn("skipping a non-CA certificate from the store", "server_id", r.ServerID, "serial", cert.SerialNumber.String())
				continue
			}
		}
		parsed[key] = cert
		if now.Before(cert.NotAfter) {
			certs = append(certs, cert)
		}
	}
	// Read under bundleMu: a rotation stores the new CA before adding it
	// to the bundle under the same lock, so it cannot be lost here.
	if a := m.active.Load(); a != nil {
		for _, c := range m.authorities(a.Cert) {
			if _, ok := parsed[string(c.Raw)]; !ok {
				parsed[string(c.Raw)] = c
				certs = append(certs, c)
			}
		}
	}
	m.parsed = parsed
	m.bundle.Store(&certs)
	return nil
}

func (m *X509Manager) addToBundle(add ...*x509.Certificate) {
	m.bundleMu.Lock()
	defer m.bundleMu.Unlock()
	old := *m.bundle.Load()
	certs := slices.Clip(old)
	for _, cert := range add {
		if _, ok := m.parsed[string(cert.Raw)]; ok {
			continue
		}
		m.parsed[string(cert.Raw)] = cert
		certs = append(certs, cert)
	}
	if len(certs) != len(old) {
		m.bundle.Store(&certs)
	}
}

// authorities are the certificates this server contributes to the bundle
// for its CA certificate cert: cert itself, or under an upstream CA the
// upstream roots, which is what relying parties anchor on.
func (m *X509Manager) authorities(cert *x509.Certificate) []*x509.Certificate {
	if m.cfg.Upstream != nil {
		return m.cfg.Upstream.Roots
	}
	return []*x509.Certificate{cert}
}

// due reports whether cert should be replaced: past half its life, unless
// it already ends with its upstream certificate, when a successor could
// not live any longer and rotating would only speed up as the end nears.
func (m *X509Manager) due(cert *x509.Certificate, now time.Time) bool {
	if !pastHalfLife(cert, now) {
		return false
	}
	if up := m.cfg.Upstream; up != nil && !cert.NotAfter.Before(up.Cert.NotAfter) {
		if !m.clampWarned {
			m.clampWarned = true
			m.log.Warn("the X.509 CA cannot be renewed beyond its upstream CA certificate; renew the upstream certificate and restart",
				"upstream_subject", up.Cert.Subject.String(), "upstream_not_after", up.Cert.NotAfter, "ca_not_after", cert.NotAfter)
		}
		return false
	}
	return true
}

// caChain is what a CA certificate of this manager chains through to a root.
func (m *X509Manager) caChain() []*x509.Certificate {
	if m.cfg.Upstream == nil {
		return nil
	}
	return append([]*x509.Certificate{m.cfg.Upstream.Cert}, m.cfg.Upstream.Chain...)
}

// activateNew makes a key and root, publishes the root, records it as
// active and then retires the key named retire, if any. The new key never
// takes the name avoid, so a key found not to match its certificate is left
// for inspection. It is called with rotateMu held. A failure before the
// switch leaves the current CA active and removes the new key.
func (m *X509Manager) activateNew(ctx context.Context, reason, retire, avoid string) error {
	now := m.cfg.Now()
	name, err := m.newKeyName(ctx, now, retire, avoid)
	if err != nil {
		return err
	}
	signer, err := m.cfg.KeyStore.Generate(ctx, name, m.cfg.KeyType)
	if err != nil {
		return fmt.Errorf("ca: new X.509 CA key: %w", err)
	}
	abandon := func(err error) error {
		if derr := m.cfg.KeyStore.Delete(context.WithoutCancel(ctx), name); derr != nil {
			m.log.Warn("could not delete the key of an abandoned CA", "key", name, "err", derr)
		}
		return err
	}
	var cert *x509.Certificate
	if up := m.cfg.Upstream; up != nil {
		cert, err = NewIntermediateCert(signer, up, m.cfg.TrustDomain, m.cfg.Subject, now, m.cfg.TTL)
		if err == nil {
			err = up.verifyIntermediate(cert, now)
		}
	} else {
		cert, err = NewRootCert(signer, m.cfg.TrustDomain, m.cfg.Subject, now, m.cfg.TTL)
	}
	if err != nil {
		return abandon(err)
	}
	// Published before it signs, so peers reading the store can already
	// trust what it issues.
	if err := m.publish(ctx, cert); err != nil {
		return abandon(err)
	}
	if err := writeState(m.cfg.StatePath, name, cert); err != nil {
		return abandon(err)
	}
	ca := &X509CA{Cert: cert, Signer: signer, Chain: m.caChain()}
	m.active.Store(ca)
	m.activeKey = name
	m.addToBundle(m.authorities(cert)...)
	m.log.Info("x509 CA activated", append(caAttrs(name, cert), "reason", reason)...)

	if retire != "" && retire != name {
		if err := m.cfg.KeyStore.Delete(ctx, retire); err != nil {
			m.log.Warn("could not delete the previous CA key", "key", retire, "err", err)
		}
	}
	return nil
}

// newKeyName picks a name no key holds yet for a new CA key.
func (m *X509Manager) newKeyName(ctx context.Context, now time.Time, avoid ...string) (string, error) {
	return freeKeyName(ctx, m.cfg.KeyStore, "x509-ca", now, append(avoid, m.activeKey))
}

// freeKeyName picks a name "<prefix>-<n>" that no key holds yet and that is
// not in avoid, so a new authority never replaces a key that may still be
// needed, whatever the clock says.
func freeKeyName(ctx context.Context, ks keystore.KeyStore, prefix string, now time.Time, avoid []string) (string, error) {
	n := now.UnixNano()
	for range 1000 {
		name := fmt.Sprintf("%s-%d", prefix, n)
		n++
		if slices.Contains(avoid, name) {
			continue
		}
		_, err := ks.Get(ctx, name)
		if errors.Is(err, keystore.ErrNotFound) {
			return name, nil
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
	}
	return "", fmt.Errorf("ca: no free name for a new %s key in the keystore", prefix)
}

// publish records in the store the authorities of CA certificate cert, so
// every server of the trust domain puts them in its bundle.
func (m *X509Manager) publish(ctx context.Context, cert *x509.Certificate) error {
	for _, c := range m.authorities(cert) {
		ev, err := authorityEvent(m.cfg.Now(), "ca.x509.publish", ServerActor(m.cfg.TrustDomain, m.cfg.ServerID), c.SerialNumber.String(), map[string]any{
			"server_id": m.cfg.ServerID, "subject": c.Subject.String(), "not_before": c.NotBefore, "not_after": c.NotAfter,
		})
		if err != nil {
			return fmt.Errorf("ca: publish CA certificate %s: %w", c.SerialNumber, err)
		}
		err = m.cfg.Store.PutCACert(ctx, store.CACert{
			ServerID:  m.cfg.ServerID,
			CertDER:   c.Raw,
			NotBefore: c.NotBefore,
			NotAfter:  c.NotAfter,
		}, ev)
		if err != nil {
			return fmt.Errorf("ca: publish CA certificate %s: %w", c.SerialNumber, err)
		}
	}
	return nil
}

type loadedCA struct {
	ca      *X509CA
	keyName string
}

// load reads the recorded CA. When it cannot be used it returns why, the
// name of a key to delete once a new CA is active (only a key that was the
// legitimate active one and has simply aged out), and the recorded key name,
// which the new key must not take. Only failures that a new CA would not
// fix, such as an unreadable state file or keystore, are errors.
func (m *X509Manager) load(ctx context.Context) (loaded *loadedCA, reason, retire, recorded string, err error) {
	st, err := readState(m.cfg.StatePath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "no CA recorded yet", "", "", nil
	}
	if errors.Is(err, errBadState) {
		m.log.Warn("ignoring the unusable CA state file", "path", m.cfg.StatePath, "err", err)
		return nil, "state file unusable", "", "", nil
	}
	if err != nil {
		return nil, "", "", "", fmt.Errorf("ca: read CA state: %w", err)
	}
	td, err := (&X509CA{Cert: st.cert}).TrustDomain()
	if err != nil || td != m.cfg.TrustDomain {
		return nil, fmt.Sprintf("recorded CA is not for trust domain %s", m.cfg.TrustDomain), "", st.keyName, nil
	}
	signer, err := m.cfg.KeyStore.Get(ctx, st.keyName)
	if errors.Is(err, keystore.ErrNotFound) {
		m.log.Warn("the recorded CA's key is missing from the keystore", "key", st.keyName)
		return nil, "recorded CA key missing", "", st.keyName, nil
	}
	if err != nil {
		return nil, "", "", "", fmt.Errorf("ca: load X.509 CA key %q: %w", st.keyName, err)
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(st.cert.PublicKey) {
		m.log.Warn("the recorded CA's key does not match its certificate", "key", st.keyName)
		return nil, "recorded CA key does not match", "", st.keyName, nil
	}
	if up := m.cfg.Upstream; up != nil && !up.signs(st.cert) {
		return nil, "recorded CA is not signed by the configured upstream CA", st.keyName, st.keyName, nil
	}
	if m.cfg.Upstream == nil && !isSelfSigned(st.cert) {
		return nil, "recorded CA is an intermediate but no upstream CA is configured", st.keyName, st.keyName, nil
	}
	if !m.cfg.Now().Before(st.cert.NotAfter) {
		return nil, "recorded CA expired", st.keyName, st.keyName, nil
	}
	if m.due(st.cert, m.cfg.Now()) {
		return nil, "recorded CA past half life", st.keyName, st.keyName, nil
	}
	return &loadedCA{ca: &X509CA{Cert: st.cert, Signer: signer, Chain: m.caChain()}, keyName: st.keyName}, "", "", "", nil
}

func pastHalfLife(cert *x509.Certificate, now time.Time) bool {
	return pastHalf(cert.NotBefore, cert.NotAfter, now)
}

func caAttrs(keyName string, cert *x509.Certificate) []any {
	return []any{
		"key", keyName,
		"serial", cert.SerialNumber.String(),
		"not_before", cert.NotBefore,
		"not_after", cert.NotAfter,
	}
}

// stateFile is the JSON layout of StatePath. Version leaves room for the
// rotation journal (prepared, active, old) to extend it.
type stateFile struct {
	Version int         `json:"version"`
	Active  *stateEntry `json:"active"`
}

type stateEntry struct {
	KeyName string `json:"key_name"`
	CertPEM string `json:"cert_pem"`
}

const stateVersion = 1

var errBadState = errors.New("bad CA state file")

type recordedCA struct {
	keyName string
	cert    *x509.Certificate
}

func readState(path string) (*recordedCA, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var st stateFile
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%w %s: %v", errBadState, path, err)
	}
	if st.Version != stateVersion || st.Active == nil {
		return nil, fmt.Errorf("%w %s: version %d without an active CA", errBadState, path, st.Version)
	}
	if err := keystore.ValidateName(st.Active.KeyName); err != nil {
		return nil, fmt.Errorf("%w %s: %v", errBadState, path, err)
	}
	block, _ := pem.Decode([]byte(st.Active.CertPEM))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%w %s: no CERTIFICATE PEM block", errBadState, path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", errBadState, path, err)
	}
	return &recordedCA{keyName: st.Active.KeyName, cert: cert}, nil
}

func writeState(path, keyName string, cert *x509.Certificate) error {
	data, err := json.MarshalIndent(stateFile{
		Version: stateVersion,
		Active: &stateEntry{
			KeyName: keyName,
			CertPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})),
		},
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("ca: encode CA state: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("ca: write CA state: %w", err)
	}
	if err := atomicfile.Write(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("ca: write CA state %s: %w", path, err)
	}
	return nil
}
