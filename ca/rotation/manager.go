package rotation

import (
	"writ.dev/writ/audit"
	"writ.dev/writ/ca"

	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
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
	Upstream *ca.Upstream
	// StatePath is a file (mode 0600) holding the rotation journal: each
	// CA's certificate, state and key name; the keys stay in the keystore.
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
		c.TTL = ca.DefaultCATTL
	}
	if c.TTL < ca.MinCATTL {
		return c, fmt.Errorf("ca: X.509 CA: TTL %s is too short: use at least %s (default %s)", c.TTL, ca.MinCATTL, ca.DefaultCATTL)
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

// X509Manager keeps a server's X.509 CAs across restarts in a rotation
// journal: past half its life the active CA gets a prepared successor,
// published at once, which takes over with a sixth of the active's life
// left. It also caches the trust domain's bundle for the hot path.
type X509Manager struct {
	cfg X509ManagerConfig
	log *slog.Logger
	j   journal

	active atomic.Pointer[ca.X509CA]
	bundle atomic.Pointer[[]*x509.Certificate]
	// peerTainted holds the IDs of the CA certificates the store marked
	// tainted at the last refresh.
	peerTainted atomic.Pointer[map[string]bool]

	// bundleMu serialises bundle updates; parsed caches certificates by DER
	// so a refresh parses only what is new.
	bundleMu sync.Mutex
	parsed   map[string]*x509.Certificate

	// clampWarned keeps a CA held back by its upstream's expiry from
	// logging on every rotation check.
	clampWarned bool
}

// NewX509Manager loads the journal recorded at cfg.StatePath and resumes
// it: a usable active CA keeps signing, a usable prepared one is activated
// if the active one cannot be used, and a new CA is made when neither can
// (none recorded, keys gone or not matching, another trust domain or
// upstream, expired). Recorded CAs are published again (it is idempotent),
// so a store that lost them heals on restart.
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
	m.j = journal{kind: m, ks: cfg.KeyStore, store: cfg.Store, serverID: cfg.ServerID,
		self: ServerActor(cfg.TrustDomain, cfg.ServerID), now: cfg.Now, log: m.log}
	empty := []*x509.Certificate{}
	m.bundle.Store(&empty)
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
	if err := m.RefreshBundle(ctx); err != nil {
		return nil, err
	}
	m.log.Info("x509 CA ready", caAttrs(m.Active().Cert)...)
	return m, nil
}

// Active is the CA that signs now. It never returns nil once
// NewX509Manager has succeeded, and it takes no lock.
func (m *X509Manager) Active() *ca.X509CA {
	return m.active.Load()
}

// Bundle is the cached union of the unexpired, unrevoked CA certificates of
// every server in the trust domain, this one's always included. Under an
// upstream CA this server's contribution is the upstream roots, not its
// intermediates. The slice is shared: callers must not modify it.
func (m *X509Manager) Bundle() []*x509.Certificate {
	return *m.bundle.Load()
}

// Authorities lists this server's journal, newest first.
func (m *X509Manager) Authorities() []AuthorityStatus {
	return m.j.statuses()
}

// MaxSVIDTTL is the longest X509-SVID the server issues: a sixth of the CA
// TTL, the life the active CA has left when it hands over, so no SVID
// outlives the CA that signed it.
func (m *X509Manager) MaxSVIDTTL() time.Duration {
	return m.cfg.TTL / 6
}

// SignedByTainted reports whether leaf was signed by a tainted CA, this
// server's or, as of the last bundle refresh, a peer's: its holder should
// get a new SVID early.
func (m *X509Manager) SignedByTainted(leaf *x509.Certificate) bool {
	id := hex.EncodeToString(leaf.AuthorityKeyId)
	return id != "" && (m.j.tainted(id) || (*m.peerTainted.Load())[id])
}

// TaintedAuthorityIDs lists the subject key IDs (hex) of the tainted CAs of
// this server and its peers, sorted, for agents to renew what they signed.
func (m *X509Manager) TaintedAuthorityIDs() []string {
	var out []string
	for id, tainted := range *m.peerTainted.Load() {
		if tainted {
			out = append(out, id)
		}
	}
	for _, a := range m.Authorities() {
		if a.Tainted {
			out = append(out, a.ID)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Rotate advances the journal one step when due: it prepares a successor
// past half the active CA's life, or activates it with a sixth left and
// deletes the retired CA's key; old CAs that have expired leave the journal.
// It reports whether the journal changed.
func (m *X509Manager) Rotate(ctx context.Context) (bool, error) {
	m.j.mu.Lock()
	defer m.j.mu.Unlock()
	return m.j.step(ctx, m.j.self)
}

// Prepare makes and publishes a successor CA now, even if none is due yet.
// It fails with ErrAuthorityState if one is already prepared.
func (m *X509Manager) Prepare(ctx context.Context, actor string) (AuthorityStatus, error) {
	return m.j.prepareVerb(ctx, actor)
}

// Activate makes the prepared CA id ("" for whichever is prepared) the
// active one now; the previous active CA's key is deleted.
func (m *X509Manager) Activate(ctx context.Context, actor, id string) (AuthorityStatus, error) {
	return m.j.activateVerb(ctx, actor, id)
}

// Taint marks CA id as suspect for every server, so holders of SVIDs it
// signed renew early. A tainted active CA is replaced at once.
func (m *X509Manager) Taint(ctx context.Context, actor, id string) (AuthorityStatus, error) {
	return m.j.taintVerb(ctx, actor, id)
}

// Revoke takes CA id out of every server's bundle at once and deletes its
// key. The active CA cannot be revoked (taint it first), nor can anything
// under an upstream CA, whose roots are what relying parties trust.
func (m *X509Manager) Revoke(ctx context.Context, actor, id string) (AuthorityStatus, error) {
	return m.j.revokeVerb(ctx, actor, id)
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
// enough to catch half life and five sixths of life (a twentieth of ttl, at
// most maxRotateCheckInterval) and refresh every BundleRefreshInterval to
// pick up other servers' authorities.
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
	tainted := make(map[string]bool)
	// A revocation that lands between the listing and here is already in
	// the journal; its certificate must not come back with the stale list.
	entries := m.j.snapshot()
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
		if r.Tainted {
			tainted[hex.EncodeToString(cert.SubjectKeyId)] = true
		}
		if now.Before(cert.NotAfter) && !revoked(entries, hex.EncodeToString(cert.SubjectKeyId)) {
			certs = append(certs, cert)
		}
	}
	// Read under bundleMu: a journal change is recorded before it is added
	// to the bundle under the same lock, so it cannot be lost here.
	for _, c := range m.ownAuthorities(entries, now) {
		if _, ok := parsed[string(c.Raw)]; !ok {
			parsed[string(c.Raw)] = c
			certs = append(certs, c)
		}
	}
	m.parsed = parsed
	m.bundle.Store(&certs)
	m.peerTainted.Store(&tainted)
	return nil
}

// ownAuthorities are the certificates this server's journal puts in the
// bundle at now, whatever the store holds.
func (m *X509Manager) ownAuthorities(entries []authority, now time.Time) []*x509.Certificate {
	var out []*x509.Certificate
	for _, a := range entries {
		if !a.Revoked && now.Before(a.NotAfter) {
			out = append(out, m.authorities(a.Cert)...)
		}
	}
	return out
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

// caChain is what a CA certificate of this manager chains through to a root.
func (m *X509Manager) caChain() []*x509.Certificate {
	if m.cfg.Upstream == nil {
		return nil
	}
	return append([]*x509.Certificate{m.cfg.Upstream.Cert}, m.cfg.Upstream.Chain...)
}

// republish records the loaded journal's CAs in the store again, flags
// included, so a store that lost them heals. Revoked ones are left out:
// putting them back unrevoked would return them to the bundle. Called with
// the journal's mu held.
func (m *X509Manager) republish(ctx context.Context) error {
	var certs []authority
	if up := m.cfg.Upstream; up != nil {
		for _, r := range up.Roots {
			certs = append(certs, x509Authority(r))
		}
	} else {
		for _, a := range m.j.snapshot() {
			if !a.Revoked && m.cfg.Now().Before(a.NotAfter) {
				certs = append(certs, a)
			}
		}
	}
	for _, a := range certs {
		c := a.Cert
		ev, err := authorityEvent(m.cfg.Now(), audit.EventCAX509Publish, m.j.self, c.SerialNumber.String(), map[string]any{
			"server_id": m.cfg.ServerID, "subject": c.Subject.String(), "not_before": c.NotBefore, "not_after": c.NotAfter,
		})
		if err == nil {
			err = m.putCert(ctx, a, ev)
		}
		if err != nil {
			return fmt.Errorf("ca: publish CA certificate %s: %w", c.SerialNumber, err)
		}
	}
	return nil
}

func (m *X509Manager) putCert(ctx context.Context, a authority, ev store.AuditEvent) error {
	c := a.Cert
	return m.cfg.Store.PutCACert(ctx, store.CACert{
		ServerID:  m.cfg.ServerID,
		CertDER:   c.Raw,
		NotBefore: c.NotBefore,
		NotAfter:  c.NotAfter,
		Tainted:   a.Tainted,
		Revoked:   a.Revoked,
	}, ev)
}

func x509Authority(cert *x509.Certificate) authority {
	return authority{ID: hex.EncodeToString(cert.SubjectKeyId), NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, Cert: cert}
}

func (m *X509Manager) kindName() string          { return "X.509" }
func (m *X509Manager) eventKind() string         { return audit.KindX509 }
func (m *X509Manager) keyPrefix() string         { return "x509-ca" }
func (m *X509Manager) keyType() keystore.KeyType { return m.cfg.KeyType }

func (m *X509Manager) mint(signer crypto.Signer, now time.Time) (authority, error) {
	var (
		cert *x509.Certificate
		err  error
	)
	if up := m.cfg.Upstream; up != nil {
		cert, err = ca.NewIntermediateCert(signer, up, m.cfg.TrustDomain, m.cfg.Subject, now, m.cfg.TTL)
		if err == nil {
			err = up.VerifyIntermediate(cert, now)
		}
	} else {
		cert, err = ca.NewRootCert(signer, m.cfg.TrustDomain, m.cfg.Subject, now, m.cfg.TTL)
	}
	if err != nil {
		return authority{}, err
	}
	return x509Authority(cert), nil
}

// publish records CA a in the store so every server of the trust domain
// trusts it, or marks it tainted or revoked there. Under an upstream CA the
// intermediate is not in the store (the upstream roots, published at
// start, are what the bundle holds), so the change is only audited.
func (m *X509Manager) publish(ctx context.Context, a authority, ev store.AuditEvent) error {
	if m.cfg.Upstream != nil {
		if _, err := m.cfg.Store.AppendAudit(ctx, ev); err != nil {
			return fmt.Errorf("ca: record the audit event of CA %s: %w", a.ID, err)
		}
		return nil
	}
	if err := m.putCert(ctx, a, ev); err != nil {
		return fmt.Errorf("ca: publish CA certificate %s: %w", a.Cert.SerialNumber, err)
	}
	return nil
}

func (m *X509Manager) revocable() error {
	if up := m.cfg.Upstream; up != nil {
		return fmt.Errorf("ca: revoke X.509 CA: this server's CAs are intermediates under upstream CA %q and relying parties anchor on the upstream roots, so the bundle cannot drop one: %w; revoke the intermediate at the upstream CA (tainting it here still works)", up.Cert.Subject, ErrAuthorityState)
	}
	return nil
}

// clamped reports whether the active CA already ends with its upstream
// certificate, when a successor could not live any longer and rotating
// would only speed up as the end nears.
func (m *X509Manager) clamped(active authority) bool {
	up := m.cfg.Upstream
	if up == nil || active.NotAfter.Before(up.Cert.NotAfter) {
		return false
	}
	if !m.clampWarned {
		m.clampWarned = true
		m.log.Warn("the X.509 CA cannot be renewed beyond its upstream CA certificate; renew the upstream certificate and restart",
			"upstream_subject", up.Cert.Subject.String(), "upstream_not_after", up.Cert.NotAfter, "ca_not_after", active.NotAfter)
	}
	return true
}

// check decides whether a recorded CA can be used: an old one needs only
// to be of this trust domain; a prepared or active one also needs its key,
// matching its certificate, the configured upstream (or none) and time left.
func (m *X509Manager) check(ctx context.Context, a *authority, now time.Time) (entryCheck, string, error) {
	td, err := (&ca.X509CA{Cert: a.Cert}).TrustDomain()
	if err != nil || td != m.cfg.TrustDomain {
		return entryForeign, fmt.Sprintf("recorded CA is not for trust domain %s", m.cfg.TrustDomain), nil
	}
	if a.State == StateOld {
		return entryUsable, "", nil
	}
	signer, err := m.cfg.KeyStore.Get(ctx, a.KeyName)
	if errors.Is(err, keystore.ErrNotFound) {
		return entryAbandon, "recorded CA key missing from the keystore", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("ca: load X.509 CA key %q: %w", a.KeyName, err)
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	switch {
	case !ok || !pub.Equal(a.Cert.PublicKey):
		return entryAbandon, "recorded CA key does not match its certificate", nil
	case m.cfg.Upstream != nil && !m.cfg.Upstream.Signs(a.Cert):
		return entryRetire, "recorded CA is not signed by the configured upstream CA", nil
	case m.cfg.Upstream == nil && !ca.IsSelfSigned(a.Cert):
		return entryRetire, "recorded CA is an intermediate but no upstream CA is configured", nil
	case !now.Before(a.NotAfter):
		return entryRetire, "recorded CA expired", nil
	}
	a.Signer = signer
	return entryUsable, "", nil
}

func (m *X509Manager) readJournal() ([]authority, error) { return readState(m.cfg.StatePath) }

func (m *X509Manager) writeJournal(entries []authority) error {
	return writeState(m.cfg.StatePath, entries)
}

// show makes the journal's active CA the one that signs and puts every
// CA it trusts in the bundle, before the active one can sign.
func (m *X509Manager) show(entries []authority) {
	m.addToBundle(m.ownAuthorities(entries, m.cfg.Now())...)
	i := slices.IndexFunc(entries, func(a authority) bool { return a.State == StateActive })
	if i < 0 {
		return
	}
	a := entries[i]
	if cur := m.active.Load(); cur == nil || !cur.Cert.Equal(a.Cert) {
		m.active.Store(&ca.X509CA{Cert: a.Cert, Signer: a.Signer, Chain: m.caChain()})
	}
}

// hide drops a revoked CA from the cached bundle at once.
func (m *X509Manager) hide(a authority) {
	m.bundleMu.Lock()
	defer m.bundleMu.Unlock()
	certs := slices.DeleteFunc(slices.Clone(*m.bundle.Load()), func(c *x509.Certificate) bool { return c.Equal(a.Cert) })
	delete(m.parsed, string(a.Cert.Raw))
	m.bundle.Store(&certs)
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

func caAttrs(cert *x509.Certificate) []any {
	return []any{
		"id", hex.EncodeToString(cert.SubjectKeyId),
		"serial", cert.SerialNumber.String(),
		"not_before", cert.NotBefore,
		"not_after", cert.NotAfter,
	}
}

// stateFile is the JSON layout of StatePath. Version 1 held the active CA
// alone (Active); version 2 holds the rotation journal (Authorities).
type stateFile struct {
	Version     int          `json:"version"`
	Active      *stateEntry  `json:"active,omitempty"`
	Authorities []stateEntry `json:"authorities,omitempty"`
}

type stateEntry struct {
	KeyName   string         `json:"key_name"`
	CertPEM   string         `json:"cert_pem"`
	State     AuthorityState `json:"state,omitempty"`
	NotBefore time.Time      `json:"not_before,omitzero"`
	NotAfter  time.Time      `json:"not_after,omitzero"`
	Tainted   bool           `json:"tainted,omitempty"`
	Revoked   bool           `json:"revoked,omitempty"`
}

const stateVersion = 2

var errBadState = errors.New("bad CA state file")

// journalEntries returns the entries of a state file of either version,
// version 1's single entry being the active one.
func journalEntries[E any](path string, version int, active *E, entries []E, setActive func(*E)) ([]E, error) {
	switch {
	case version == 1 && active != nil:
		setActive(active)
		return []E{*active}, nil
	case version == stateVersion:
		return entries, nil
	}
	return nil, fmt.Errorf("%w %s: version %d: this server reads versions 1 and %d", errBadState, path, version, stateVersion)
}

// checkJournal checks what every journal holds: known states, at most one
// prepared and one active entry, a valid key name for each that holds a key.
func checkJournal(path string, states []AuthorityState, keyNames []string) error {
	count := map[AuthorityState]int{}
	for i, st := range states {
		switch st {
		case StatePrepared, StateActive:
			if err := keystore.ValidateName(keyNames[i]); err != nil {
				return fmt.Errorf("%w %s: entry %d: %v", errBadState, path, i+1, err)
			}
		case StateOld:
			if keyNames[i] != "" {
				if err := keystore.ValidateName(keyNames[i]); err != nil {
					return fmt.Errorf("%w %s: entry %d: %v", errBadState, path, i+1, err)
				}
			}
		default:
			return fmt.Errorf("%w %s: entry %d: unknown state %q", errBadState, path, i+1, st)
		}
		count[st]++
	}
	if count[StatePrepared] > 1 || count[StateActive] > 1 {
		return fmt.Errorf("%w %s: more than one prepared or active entry", errBadState, path)
	}
	return nil
}

func readState(path string) ([]authority, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var st stateFile
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%w %s: %v", errBadState, path, err)
	}
	recorded, err := journalEntries(path, st.Version, st.Active, st.Authorities, func(e *stateEntry) { e.State = StateActive })
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
		block, _ := pem.Decode([]byte(e.CertPEM))
		if block == nil || block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w %s: entry %d: no CERTIFICATE PEM block", errBadState, path, i+1)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w %s: entry %d: %v", errBadState, path, i+1, err)
		}
		a := x509Authority(cert)
		a.KeyName, a.State, a.Tainted, a.Revoked = e.KeyName, e.State, e.Tainted, e.Revoked
		out = append(out, a)
	}
	return out, nil
}

func writeState(path string, entries []authority) error {
	st := stateFile{Version: stateVersion, Authorities: make([]stateEntry, len(entries))}
	for i, a := range entries {
		st.Authorities[i] = stateEntry{
			KeyName:   a.KeyName,
			CertPEM:   string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Cert.Raw})),
			State:     a.State,
			NotBefore: a.NotBefore,
			NotAfter:  a.NotAfter,
			Tainted:   a.Tainted,
			Revoked:   a.Revoked,
		}
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("ca: encode CA state: %w", err)
	}
	return writeStateFile(path, data)
}

// writeStateFile replaces a state file atomically, mode 0600.
func writeStateFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("ca: write state: %w", err)
	}
	if err := atomicfile.Write(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("ca: write state %s: %w", path, err)
	}
	return nil
}
