package rotation

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"writ.dev/writ/audit"
	"writ.dev/writ/ca"
	"writ.dev/writ/ca/catest"
	"writ.dev/writ/keystore"
	"writ.dev/writ/store"
)

var testTD = spiffeid.RequireTrustDomainFromString("example.org")

// newTestCA makes a self-signed root of key type kt valid from now-ClockSkew
// to now+ttl.
func newTestCA(t testing.TB, kt keystore.KeyType, now time.Time, ttl time.Duration) *ca.X509CA {
	t.Helper()
	signer, err := keystore.NewMemory().Generate(context.Background(), "ca", kt)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.NewRootCert(signer, testTD, pkix.Name{}, now, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return &ca.X509CA{Cert: cert, Signer: signer}
}

// fakeStore keeps CA certificates in memory; the rest of store.Store is not
// needed here and panics if called.
type fakeStore struct {
	store.Store

	mu      sync.Mutex
	certs   []store.CACert
	jwtKeys []store.JWTKey
	putErr  error
	listErr error
	puts    int
	events  [][]byte
}

func (s *fakeStore) PutCACert(_ context.Context, c store.CACert, evs ...store.AuditEvent) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.putErr != nil {
		return s.putErr
	}
	if err := s.record(evs); err != nil {
		return err
	}
	s.puts++
	for i, have := range s.certs {
		if string(have.CertDER) == string(c.CertDER) {
			c.Tainted = c.Tainted || have.Tainted
			c.Revoked = c.Revoked || have.Revoked
			c.CertDER = have.CertDER
			s.certs[i] = c
			return nil
		}
	}
	c.CertDER = append([]byte(nil), c.CertDER...)
	s.certs = append(s.certs, c)
	return nil
}

func (s *fakeStore) ListCACerts(_ context.Context, now time.Time) ([]store.CACert, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listErr != nil {
		return nil, s.listErr
	}
	var out []store.CACert
	for _, c := range s.certs {
		if c.NotAfter.After(now) && !c.Revoked {
			out = append(out, c)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].NotBefore.Before(out[j].NotBefore) })
	return out, nil
}

func (s *fakeStore) PutJWTKey(_ context.Context, k store.JWTKey, evs ...store.AuditEvent) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.putErr != nil {
		return s.putErr
	}
	if err := s.record(evs); err != nil {
		return err
	}
	s.puts++
	for i, have := range s.jwtKeys {
		if have.KeyID == k.KeyID {
			k.Tainted = k.Tainted || have.Tainted
			k.Revoked = k.Revoked || have.Revoked
			s.jwtKeys[i] = k
			return nil
		}
	}
	k.PublicKeyDER = append([]byte(nil), k.PublicKeyDER...)
	s.jwtKeys = append(s.jwtKeys, k)
	return nil
}

func (s *fakeStore) ListJWTKeys(_ context.Context, now time.Time) ([]store.JWTKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listErr != nil {
		return nil, s.listErr
	}
	var out []store.JWTKey
	for _, k := range s.jwtKeys {
		if k.NotAfter.After(now) && !k.Revoked {
			out = append(out, k)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].NotAfter.Before(out[j].NotAfter) })
	return out, nil
}

// record keeps the events of a change, refusing a change without one as
// the real stores do. Called with mu held.
func (s *fakeStore) record(evs []store.AuditEvent) error {
	if len(evs) == 0 {
		return store.ErrNoAuditEvent
	}
	for _, ev := range evs {
		if len(ev) == 0 {
			return store.ErrNoAuditEvent
		}
		s.events = append(s.events, append([]byte(nil), ev...))
	}
	return nil
}

// AppendAudit records events the way changes do, failing like them while
// puts fail.
func (s *fakeStore) AppendAudit(_ context.Context, evs ...store.AuditEvent) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.putErr != nil {
		return 0, s.putErr
	}
	first := int64(len(s.events))
	return first, s.record(evs)
}

// eventTypes decodes the recorded events from index from on, failing the
// test on any that does not decode or whose actor is not actor.
func (s *fakeStore) eventTypes(t *testing.T, from int, actor string) []string {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var types []string
	for _, raw := range s.events[from:] {
		ev, err := audit.DecodeEvent(raw)
		if err != nil {
			t.Fatalf("recorded event %s: %v", raw, err)
		}
		if ev.Actor != actor {
			t.Errorf("event %s by %q, want %q", ev.Type, ev.Actor, actor)
		}
		types = append(types, ev.Type)
	}
	return types
}

func (s *fakeStore) eventCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.events)
}

func (s *fakeStore) setErrors(put, list error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.putErr, s.listErr = put, list
}

func (s *fakeStore) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.certs)
}

var errStoreDown = errors.New("store is down")

// fakeClock is a settable Now for managers.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testEvent is the audit event tests give changes they make to the store
// directly.
var testEvent = store.AuditEvent(`{"time":"2026-01-01T00:00:00Z","type":"test"}`)

// upstreamOf is the PKI's issuing CA as writ's upstream authority.
func upstreamOf(p *catest.PKI) *ca.Upstream {
	return &ca.Upstream{
		Cert:   p.Issuing.Cert,
		Chain:  []*x509.Certificate{p.Policy.Cert},
		Signer: p.Issuing.Signer,
		Roots:  []*x509.Certificate{p.Root.Cert},
	}
}

func (e *managerEnv) upstreamConfig(up *ca.Upstream) X509ManagerConfig {
	cfg := e.config()
	cfg.Upstream = up
	return cfg
}

func verifyUpstreamChain(t *testing.T, chain []*x509.Certificate, pki *catest.PKI, now time.Time) {
	t.Helper()
	if len(chain) != 4 {
		t.Fatalf("SVID chain has %d certificates, want leaf, writ intermediate, issuing CA, policy CA", len(chain))
	}
	if !chain[2].Equal(pki.Issuing.Cert) || !chain[3].Equal(pki.Policy.Cert) {
		t.Fatal("SVID chain does not end with the upstream chain")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	roots := x509.NewCertPool()
	roots.AddCert(pki.Root.Cert)
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("crypto/x509 Verify against the upstream root: %v", err)
	}
	bundle := x509bundle.FromX509Authorities(testTD, []*x509.Certificate{pki.Root.Cert})
	if _, _, err := x509svid.Verify(chain, bundle, x509svid.WithTime(now)); err != nil {
		t.Fatalf("x509svid.Verify against the upstream root: %v", err)
	}
}

func TestUpstreamManager(t *testing.T) {
	env := newManagerEnv(t)
	env.clock.now = time.Now().Truncate(time.Second)
	now := env.clock.Now()
	pki := catest.NewPKI(t, now, 365*24*time.Hour)
	up := upstreamOf(pki)
	m, err := NewX509Manager(context.Background(), env.upstreamConfig(up))
	if err != nil {
		t.Fatal(err)
	}
	a := m.Active()
	c := a.Cert
	if ca.IsSelfSigned(c) || !up.Signs(c) {
		t.Fatal("the CA certificate is not signed by the upstream CA")
	}
	if !c.IsCA || !c.MaxPathLenZero || c.MaxPathLen != 0 {
		t.Fatalf("intermediate: IsCA=%v MaxPathLen=%d zero=%v, want a CA with path length 0", c.IsCA, c.MaxPathLen, c.MaxPathLenZero)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://example.org" {
		t.Fatalf("intermediate URI SANs %v, want spiffe://example.org", c.URIs)
	}
	if !samePublicKey(mustGetKey(t, env, m).Public(), c.PublicKey) {
		t.Fatal("the intermediate's key is not the one in the keystore")
	}
	if len(a.Chain) != 2 || !a.Chain[0].Equal(pki.Issuing.Cert) || !a.Chain[1].Equal(pki.Policy.Cert) {
		t.Fatal("X509CA.Chain is not the upstream certificate and its chain")
	}
	if b := m.Bundle(); len(b) != 1 || !b[0].Equal(pki.Root.Cert) {
		t.Fatalf("bundle holds %d certificates, want the upstream root only", len(b))
	}
	listed, err := env.store.ListCACerts(context.Background(), now)
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || string(listed[0].CertDER) != string(pki.Root.Cert.Raw) {
		t.Fatalf("store holds %d CA certificates, want the upstream root only", len(listed))
	}

	chain := signTestSVID(t, m.Active(), now)
	verifyUpstreamChain(t, chain, pki, now)
	opensslVerify(t, pki.Root.Cert, chain)

	// A restart keeps the intermediate.
	m2, err := NewX509Manager(context.Background(), env.upstreamConfig(up))
	if err != nil {
		t.Fatal(err)
	}
	if !m2.Active().Cert.Equal(c) || len(m2.Active().Chain) != 2 {
		t.Fatal("restart did not keep the intermediate and its chain")
	}

	// Half life prepares a new intermediate under the upstream; five
	// sixths of life activates it.
	env.clock.Advance(ca.DefaultCATTL/2 + time.Minute)
	for range 2 {
		rotated, err := m2.Rotate(context.Background())
		if err != nil || !rotated {
			t.Fatalf("Rotate = %v, %v; want a rotation step", rotated, err)
		}
		env.clock.Advance(ca.DefaultCATTL / 3)
	}
	n := m2.Active()
	if n.Cert.Equal(c) || !up.Signs(n.Cert) || len(n.Chain) != 2 {
		t.Fatal("the rotated CA is not a new intermediate under the upstream")
	}
	if b := m2.Bundle(); len(b) != 1 || !b[0].Equal(pki.Root.Cert) {
		t.Fatalf("after rotation the bundle holds %d certificates, want the upstream root only", len(b))
	}
	if err := m2.RefreshBundle(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b := m2.Bundle(); len(b) != 1 || !b[0].Equal(pki.Root.Cert) {
		t.Fatalf("after refresh the bundle holds %d certificates, want the upstream root only", len(b))
	}
	later := env.clock.Now()
	verifyUpstreamChain(t, signTestSVID(t, n, later), pki, later)
}

func mustGetKey(t *testing.T, env *managerEnv, m *X509Manager) crypto.Signer {
	t.Helper()
	k, err := env.ks.Get(context.Background(), activeStatus(t, m.Authorities()).KeyName)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func signTestSVID(t *testing.T, a *ca.X509CA, now time.Time) []*x509.Certificate {
	t.Helper()
	pub, err := ca.ParseCSR(catest.CSR(t, catest.Key(t, "ec-p256"), nil))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := a.SignX509SVID(ca.X509SVIDParams{PublicKey: pub, SPIFFEID: catest.ID(t, "spiffe://example.org/ns/prod/sa/api"), TTL: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	return chain
}

// opensslVerify has OpenSSL check chain (as SignX509SVID returns it)
// against root at the current time.
func opensslVerify(t *testing.T, root *x509.Certificate, chain []*x509.Certificate) {
	t.Helper()
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Log("openssl is not on PATH; skipping the OpenSSL cross-check")
		return
	}
	dir := t.TempDir()
	rootFile := filepath.Join(dir, "upstream-root.pem")
	chainFile := filepath.Join(dir, "chain.pem")
	leafFile := filepath.Join(dir, "leaf.pem")
	catest.WritePEM(t, rootFile, []*x509.Certificate{root})
	catest.WritePEM(t, chainFile, chain)
	catest.WritePEM(t, leafFile, chain[:1])
	out, err := exec.Command(openssl, "verify", "-x509_strict", "-CAfile", rootFile, "-untrusted", chainFile, leafFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "leaf.pem: OK") {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
	// Without the upstream intermediates it must fail, or the check
	// proves nothing about them.
	catest.WritePEM(t, chainFile, chain[:2])
	if out, err := exec.Command(openssl, "verify", "-CAfile", rootFile, "-untrusted", chainFile, leafFile).CombinedOutput(); err == nil {
		t.Fatalf("openssl verified a leaf without the upstream chain:\n%s", out)
	}
}

func TestUpstreamOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not on PATH")
	}
	now := time.Now()
	pki := catest.NewPKI(t, now, 30*24*time.Hour)
	certFile, keyFile, bundleFile := pki.Files(t)
	up, err := ca.LoadUpstream(certFile, keyFile, bundleFile)
	if err != nil {
		t.Fatal(err)
	}
	env := newManagerEnv(t)
	env.clock.now = now
	m, err := NewX509Manager(context.Background(), env.upstreamConfig(up))
	if err != nil {
		t.Fatal(err)
	}
	opensslVerify(t, pki.Root.Cert, signTestSVID(t, m.Active(), now))
}

func TestUpstreamClampedToUpstreamExpiry(t *testing.T) {
	env := newManagerEnv(t)
	now := env.clock.Now()
	pki := catest.NewPKI(t, now, 3*time.Hour) // well under the 24h CA TTL
	up := upstreamOf(pki)
	m, err := NewX509Manager(context.Background(), env.upstreamConfig(up))
	if err != nil {
		t.Fatal(err)
	}
	c := m.Active().Cert
	if !c.NotAfter.Equal(pki.Issuing.Cert.NotAfter) {
		t.Fatalf("intermediate NotAfter %s, want it clamped to the upstream's %s", c.NotAfter, pki.Issuing.Cert.NotAfter)
	}
	chain := signTestSVID(t, m.Active(), now)
	verifyUpstreamChain(t, chain, pki, now)

	// Past half life a successor could not outlive the upstream either,
	// so the CA is kept rather than re-made ever faster.
	env.clock.Advance(2 * time.Hour)
	rotated, err := m.Rotate(context.Background())
	if err != nil || rotated {
		t.Fatalf("Rotate = %v, %v; want no rotation while clamped to the upstream", rotated, err)
	}
	// Nor is an upstream that has so little left accepted at start.
	env.clock.Advance(time.Hour - 30*time.Second)
	if _, err := NewX509Manager(context.Background(), env.upstreamConfig(up)); err == nil || !strings.Contains(err.Error(), "renew it") {
		t.Fatalf("NewX509Manager with a nearly expired upstream: %v, want a refusal", err)
	}
	env.clock.Advance(time.Hour)
	if err := up.Validate(env.clock.Now()); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("Validate of an expired upstream: %v", err)
	}
}

func TestUpstreamSwitchFromSelfSigned(t *testing.T) {
	env := newManagerEnv(t)
	self := env.open(t)
	root := self.Active().Cert
	now := env.clock.Now()
	pki := catest.NewPKI(t, now, 365*24*time.Hour)
	m, err := NewX509Manager(context.Background(), env.upstreamConfig(upstreamOf(pki)))
	if err != nil {
		t.Fatal(err)
	}
	if !upstreamOf(pki).Signs(m.Active().Cert) {
		t.Fatal("switching to an upstream kept the self-signed CA")
	}
	// The old root stays trusted until it expires: what it signed lives on.
	if !inBundle(m.Bundle(), root) || !inBundle(m.Bundle(), pki.Root.Cert) {
		t.Fatal("bundle after the switch lacks the old root or the upstream root")
	}
	// And back: an intermediate without its upstream is replaced.
	m2 := env.open(t)
	if !ca.IsSelfSigned(m2.Active().Cert) {
		t.Fatal("removing the upstream kept the intermediate")
	}
	// A different upstream re-signs too.
	other := catest.NewPKI(t, now, 365*24*time.Hour)
	m3, err := NewX509Manager(context.Background(), env.upstreamConfig(upstreamOf(other)))
	if err != nil {
		t.Fatal(err)
	}
	if !upstreamOf(other).Signs(m3.Active().Cert) {
		t.Fatal("a new upstream did not re-sign the CA")
	}
}

func certPool(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}
