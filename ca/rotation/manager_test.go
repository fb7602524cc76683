package rotation

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/ca"
	"writ.dev/writ/ca/catest"
	"writ.dev/writ/keystore"
	"writ.dev/writ/store"
)

type managerEnv struct {
	dir   string
	ks    keystore.KeyStore
	store *fakeStore
	clock *fakeClock
}

func newManagerEnv(t *testing.T) *managerEnv {
	t.Helper()
	dir := t.TempDir()
	ks, err := keystore.NewDisk(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	return &managerEnv{dir: dir, ks: ks, store: &fakeStore{}, clock: newFakeClock()}
}

func (e *managerEnv) config() X509ManagerConfig {
	return X509ManagerConfig{
		TrustDomain: testTD,
		ServerID:    "server-a",
		KeyStore:    e.ks,
		Store:       e.store,
		StatePath:   filepath.Join(e.dir, "state", "x509-ca.json"),
		Now:         e.clock.Now,
		Logger:      slog.New(slog.DiscardHandler),
	}
}

func (e *managerEnv) open(t *testing.T) *X509Manager {
	t.Helper()
	m, err := NewX509Manager(context.Background(), e.config())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (e *managerEnv) readState(t *testing.T) stateFile {
	t.Helper()
	data, err := os.ReadFile(e.config().StatePath)
	if err != nil {
		t.Fatal(err)
	}
	var st stateFile
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// active is the state file's active entry.
func (st stateFile) active(t *testing.T) *stateEntry {
	t.Helper()
	for i := range st.Authorities {
		if st.Authorities[i].State == StateActive {
			return &st.Authorities[i]
		}
	}
	t.Fatalf("state file has no active entry: %+v", st)
	return nil
}

// activeStatus is the active authority of a journal listing.
func activeStatus(t *testing.T, list []AuthorityStatus) AuthorityStatus {
	t.Helper()
	for _, a := range list {
		if a.State == StateActive {
			return a
		}
	}
	t.Fatalf("no active authority in %+v", list)
	return AuthorityStatus{}
}

func inBundle(bundle []*x509.Certificate, c *x509.Certificate) bool {
	for _, b := range bundle {
		if b.Equal(c) {
			return true
		}
	}
	return false
}

func samePublicKey(a, b crypto.PublicKey) bool {
	return a.(interface{ Equal(crypto.PublicKey) bool }).Equal(b)
}

func TestManagerStartsAndRestarts(t *testing.T) {
	env := newManagerEnv(t)
	m1 := env.open(t)
	a1 := m1.Active()
	if a1 == nil || a1.Cert == nil || a1.Signer == nil || len(a1.Chain) != 0 {
		t.Fatal("no usable active CA")
	}
	if td, err := a1.TrustDomain(); err != nil || td != testTD {
		t.Fatalf("trust domain %v %v", td, err)
	}
	if !a1.Cert.NotAfter.Equal(env.clock.Now().Add(ca.DefaultCATTL)) {
		t.Fatalf("default TTL not applied: NotAfter %s", a1.Cert.NotAfter)
	}
	if _, ok := a1.Signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok {
		t.Fatal("signer public key")
	}
	if env.store.count() != 1 || !inBundle(m1.Bundle(), a1.Cert) || len(m1.Bundle()) != 1 {
		t.Fatal("new CA not published or not in the bundle")
	}

	info, err := os.Stat(env.config().StatePath)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Fatalf("state file mode %04o, want 0600", perm)
	}
	st := env.readState(t)
	if st.Version != stateVersion || len(st.Authorities) != 1 || !strings.HasPrefix(st.active(t).KeyName, "x509-ca-") || strings.Contains(st.active(t).CertPEM, "PRIVATE") {
		t.Fatalf("state %+v", st)
	}

	// A restart an hour later on the same state and keystore keeps the CA
	// and re-publishes it without duplicating it.
	env.clock.Advance(time.Hour)
	ks2, err := keystore.NewDisk(filepath.Join(env.dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	env.ks = ks2
	m2 := env.open(t)
	a2 := m2.Active()
	if !a2.Cert.Equal(a1.Cert) || !samePublicKey(a2.Signer.Public(), a1.Signer.Public()) {
		t.Fatal("restart made a new CA")
	}
	if env.store.count() != 1 || env.store.puts != 2 {
		t.Fatalf("store holds %d certificates after %d puts, want 1 after 2", env.store.count(), env.store.puts)
	}

	// The restarted CA's leaves verify against the first one's bundle.
	now := env.clock.Now()
	id := catest.ID(t, "spiffe://example.org/w")
	chain, err := a2.SignX509SVID(ca.X509SVIDParams{PublicKey: catest.Key(t, "ec-p256").Public(), SPIFFEID: id, TTL: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	catest.VerifyChain(t, testTD, m1.Bundle(), chain, now, id)
}

func TestManagerRotatesPastHalfLife(t *testing.T) {
	env := newManagerEnv(t)
	cfg := env.config()
	cfg.KeyType = keystore.ECP384
	cfg.TTL = 10 * time.Hour
	m, err := NewX509Manager(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	old := m.Active()
	oldKey := env.readState(t).active(t).KeyName
	id := catest.ID(t, "spiffe://example.org/w")
	workload := catest.Key(t, "ec-p256").Public()
	oldLeaf, err := old.SignX509SVID(ca.X509SVIDParams{PublicKey: workload, SPIFFEID: id, TTL: 9*time.Hour + 30*time.Minute}, env.clock.Now())
	if err != nil {
		t.Fatal(err)
	}

	env.clock.Advance(4 * time.Hour)
	if rotated, err := m.Rotate(context.Background()); err != nil || rotated {
		t.Fatalf("rotated before half life: %v %v", rotated, err)
	}

	// Half life of 10h30s of validity: a successor is prepared and
	// published, but the old CA keeps signing.
	env.clock.Advance(time.Hour + 15*time.Second)
	if rotated, err := m.Rotate(context.Background()); err != nil || !rotated {
		t.Fatalf("nothing prepared past half life: %v %v", rotated, err)
	}
	if m.Active() != old {
		t.Fatal("the active CA changed at half life")
	}
	list := m.Authorities()
	if len(list) != 2 || list[0].State != StatePrepared || list[1].State != StateActive {
		t.Fatalf("journal after half life %+v, want prepared then active", list)
	}
	next := list[0].Cert
	if b := m.Bundle(); len(b) != 2 || !inBundle(b, next) || !inBundle(b, old.Cert) {
		t.Fatal("the prepared CA is not in the bundle beside the active one")
	}
	if env.store.count() != 2 {
		t.Fatalf("store holds %d certificates, want 2", env.store.count())
	}

	// A sixth of the life (1h45m) left: the prepared CA takes over.
	env.clock.Advance(4 * time.Hour)
	if rotated, err := m.Rotate(context.Background()); err != nil || !rotated {
		t.Fatalf("not activated with a sixth of life left: %v %v", rotated, err)
	}
	cur := m.Active()
	if !cur.Cert.Equal(next) || samePublicKey(cur.Signer.Public(), old.Signer.Public()) {
		t.Fatal("activation did not switch to the prepared CA")
	}
	if list := m.Authorities(); len(list) != 2 || list[0].State != StateActive || list[1].State != StateOld || list[1].KeyName != "" {
		t.Fatalf("journal after activation %+v, want active then old without a key", list)
	}
	if _, err := env.ks.Get(context.Background(), oldKey); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("old key still in the keystore: %v", err)
	}
	if env.readState(t).active(t).KeyName == oldKey {
		t.Fatal("state still names the old key")
	}

	// Leaves of both CAs verify against the bundle, and a bundle refresh
	// from the store keeps both.
	now := env.clock.Now()
	bundle := m.Bundle()
	catest.VerifyChain(t, testTD, bundle, oldLeaf, now, id)
	newLeaf, err := cur.SignX509SVID(ca.X509SVIDParams{PublicKey: workload, SPIFFEID: id, TTL: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	catest.VerifyChain(t, testTD, bundle, newLeaf, now, id)
	if err := m.RefreshBundle(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(m.Bundle()) != 2 {
		t.Fatalf("refreshed bundle holds %d", len(m.Bundle()))
	}

	// A restart picks up the rotated CA.
	m2, err := NewX509Manager(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !m2.Active().Cert.Equal(cur.Cert) {
		t.Fatal("restart did not load the rotated CA")
	}

	// Once the old root expires it leaves the bundle and the journal.
	env.clock.Advance(2 * time.Hour)
	if err := m.RefreshBundle(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b := m.Bundle(); len(b) != 1 || !b[0].Equal(cur.Cert) {
		t.Fatalf("bundle after the old root expired holds %d", len(b))
	}
	if rotated, err := m.Rotate(context.Background()); err != nil || !rotated {
		t.Fatalf("expired old CA not dropped: %v %v", rotated, err)
	}
	for _, a := range m.Authorities() {
		if a.State == StateOld {
			t.Fatalf("expired old CA still in the journal: %+v", a)
		}
	}
}

func TestManagerStartRotatesStaleCA(t *testing.T) {
	env := newManagerEnv(t)
	m1 := env.open(t)
	old := m1.Active()

	// Restarted past half life, the CA is kept and a successor prepared.
	env.clock.Advance(ca.DefaultCATTL/2 + time.Minute)
	m2 := env.open(t)
	if !m2.Active().Cert.Equal(old.Cert) {
		t.Fatal("a CA past half life was replaced at once on start")
	}
	list := m2.Authorities()
	if len(list) != 2 || list[0].State != StatePrepared || !inBundle(m2.Bundle(), list[0].Cert) || !inBundle(m2.Bundle(), old.Cert) {
		t.Fatalf("start past half life: journal %+v, bundle of %d", list, len(m2.Bundle()))
	}

	// Long past expiry (the server was down): a new CA, and the dead roots
	// are no longer in the bundle.
	env.clock.Advance(3 * ca.DefaultCATTL)
	m3 := env.open(t)
	if b := m3.Bundle(); len(b) != 1 || !b[0].Equal(m3.Active().Cert) {
		t.Fatalf("bundle holds %d certificates, want only the new root", len(b))
	}
	if entries, _ := os.ReadDir(filepath.Join(env.dir, "keys")); len(entries) != 1 {
		t.Fatalf("keystore holds %d keys, want the new CA's only", len(entries))
	}
}

func TestManagerReplacesUnusableState(t *testing.T) {
	ctx := context.Background()
	cases := map[string]func(t *testing.T, env *managerEnv, st stateFile){
		"key missing": func(t *testing.T, env *managerEnv, st stateFile) {
			if err := env.ks.Delete(ctx, st.active(t).KeyName); err != nil {
				t.Fatal(err)
			}
		},
		"fresh keystore": func(t *testing.T, env *managerEnv, st stateFile) {
			env.ks = keystore.NewMemory()
		},
		"key does not match": func(t *testing.T, env *managerEnv, st stateFile) {
			if _, err := env.ks.Generate(ctx, st.active(t).KeyName, keystore.ECP256); err != nil {
				t.Fatal(err)
			}
		},
		"corrupt state": func(t *testing.T, env *managerEnv, st stateFile) {
			if err := os.WriteFile(env.config().StatePath, []byte("{not json"), 0o600); err != nil {
				t.Fatal(err)
			}
		},
		"state without a certificate": func(t *testing.T, env *managerEnv, st stateFile) {
			if err := os.WriteFile(env.config().StatePath, []byte(`{"version":1,"active":{"key_name":"k","cert_pem":""}}`), 0o600); err != nil {
				t.Fatal(err)
			}
		},
		"state with a bad key name": func(t *testing.T, env *managerEnv, st stateFile) {
			st.active(t).KeyName = "../../etc/passwd"
			data, _ := json.Marshal(st)
			if err := os.WriteFile(env.config().StatePath, data, 0o600); err != nil {
				t.Fatal(err)
			}
		},
		"unknown state version": func(t *testing.T, env *managerEnv, st stateFile) {
			st.Version = 99
			data, _ := json.Marshal(st)
			if err := os.WriteFile(env.config().StatePath, data, 0o600); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, spoil := range cases {
		t.Run(name, func(t *testing.T) {
			env := newManagerEnv(t)
			first := env.open(t).Active()
			st := env.readState(t)
			spoil(t, env, st)
			m := env.open(t)
			if m.Active().Cert.Equal(first.Cert) {
				t.Fatal("unusable CA was loaded")
			}
			if got := env.readState(t).active(t).KeyName; got == st.active(t).KeyName {
				t.Fatal("new CA key took the recorded key's name")
			}
			if !inBundle(m.Bundle(), first.Cert) {
				t.Fatal("the earlier root, still unexpired, left the bundle")
			}
		})
	}
	t.Run("mismatched key is left in place", func(t *testing.T) {
		env := newManagerEnv(t)
		env.open(t)
		st := env.readState(t)
		stray, err := env.ks.Generate(ctx, st.active(t).KeyName, keystore.ECP256)
		if err != nil {
			t.Fatal(err)
		}
		env.open(t)
		got, err := env.ks.Get(ctx, st.active(t).KeyName)
		if err != nil || !samePublicKey(got.Public(), stray.Public()) {
			t.Fatalf("mismatched key was removed or replaced: %v", err)
		}
	})
}

func TestManagerTrustDomainChange(t *testing.T) {
	env := newManagerEnv(t)
	first := env.open(t).Active()
	cfg := env.config()
	cfg.TrustDomain = spiffeid.RequireTrustDomainFromString("other.example")
	m, err := NewX509Manager(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	td, err := m.Active().TrustDomain()
	if err != nil || td != cfg.TrustDomain || m.Active().Cert.Equal(first.Cert) {
		t.Fatalf("CA for the old trust domain kept: %v %v", td, err)
	}
}

func TestManagerBundleUnion(t *testing.T) {
	ctx := context.Background()
	env := newManagerEnv(t)
	m := env.open(t)
	now := env.clock.Now()

	// Another server of the trust domain publishes its root, with a
	// shorter life.
	peer := newTestCA(t, keystore.ECP256, now, 2*time.Hour)
	if err := env.store.PutCACert(ctx, store.CACert{ServerID: "server-b", CertDER: peer.Cert.Raw, NotBefore: peer.Cert.NotBefore, NotAfter: peer.Cert.NotAfter}, testEvent); err != nil {
		t.Fatal(err)
	}
	// Records that are not CA certificates are skipped, not fatal.
	leaf, err := peer.SignX509SVID(ca.X509SVIDParams{PublicKey: catest.Key(t, "ec-p256").Public(), SPIFFEID: catest.ID(t, "spiffe://example.org/w"), TTL: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []store.CACert{
		{ServerID: "server-c", CertDER: []byte("junk"), NotBefore: now, NotAfter: now.Add(time.Hour)},
		{ServerID: "server-c", CertDER: leaf[0].Raw, NotBefore: now, NotAfter: now.Add(time.Hour)},
	} {
		if err := env.store.PutCACert(ctx, bad, testEvent); err != nil {
			t.Fatal(err)
		}
	}
	if len(m.Bundle()) != 1 {
		t.Fatal("bundle changed before a refresh")
	}
	if err := m.RefreshBundle(ctx); err != nil {
		t.Fatal(err)
	}
	b := m.Bundle()
	if len(b) != 2 || !inBundle(b, peer.Cert) || !inBundle(b, m.Active().Cert) {
		t.Fatalf("bundle holds %d certificates, want ours and the peer's", len(b))
	}
	id := catest.ID(t, "spiffe://example.org/w")
	catest.VerifyChain(t, testTD, b, leaf, now, id)

	// A store outage keeps the cached bundle.
	env.store.setErrors(nil, errStoreDown)
	if err := m.RefreshBundle(ctx); !errors.Is(err, errStoreDown) {
		t.Fatalf("refresh during an outage: %v", err)
	}
	if len(m.Bundle()) != 2 {
		t.Fatal("outage emptied the bundle")
	}

	// Our own root stays even when the store has lost it; the peer's root
	// leaves once expired.
	env.store.setErrors(nil, nil)
	env.store.mu.Lock()
	env.store.certs = env.store.certs[1:]
	env.store.mu.Unlock()
	env.clock.Advance(3 * time.Hour)
	if err := m.RefreshBundle(ctx); err != nil {
		t.Fatal(err)
	}
	if b := m.Bundle(); len(b) != 1 || !b[0].Equal(m.Active().Cert) {
		t.Fatalf("bundle holds %d certificates, want ours only", len(b))
	}
}

func TestManagerPublishFailures(t *testing.T) {
	ctx := context.Background()
	env := newManagerEnv(t)
	env.store.setErrors(errStoreDown, nil)
	if _, err := NewX509Manager(ctx, env.config()); !errors.Is(err, errStoreDown) {
		t.Fatalf("start with the store down: %v", err)
	}
	if _, err := os.Stat(env.config().StatePath); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("state written for a CA that was never published")
	}
	if entries, _ := os.ReadDir(filepath.Join(env.dir, "keys")); len(entries) != 0 {
		t.Fatalf("abandoned key left in the keystore: %d files", len(entries))
	}

	env.store.setErrors(nil, nil)
	m := env.open(t)
	old := m.Active()
	oldState := env.readState(t)
	env.clock.Advance(ca.DefaultCATTL)
	env.store.setErrors(errStoreDown, nil)
	rotated, err := m.Rotate(ctx)
	if rotated || !errors.Is(err, errStoreDown) {
		t.Fatalf("rotate with the store down: %v %v", rotated, err)
	}
	if m.Active() != old || env.readState(t).active(t).KeyName != oldState.active(t).KeyName {
		t.Fatal("failed rotation changed the active CA")
	}
	if entries, _ := os.ReadDir(filepath.Join(env.dir, "keys")); len(entries) != 1 {
		t.Fatalf("keystore holds %d keys after a failed rotation, want the current one only", len(entries))
	}
	env.store.setErrors(nil, nil)
	if rotated, err := m.Rotate(ctx); !rotated || err != nil {
		t.Fatalf("rotation after recovery: %v %v", rotated, err)
	}
}

func TestManagerConfigErrors(t *testing.T) {
	env := newManagerEnv(t)
	cases := map[string]struct {
		edit func(c *X509ManagerConfig)
		want string
	}{
		"no trust domain": {func(c *X509ManagerConfig) { c.TrustDomain = spiffeid.TrustDomain{} }, "trust domain is empty"},
		"no server id":    {func(c *X509ManagerConfig) { c.ServerID = "" }, "server id is empty"},
		"no keystore":     {func(c *X509ManagerConfig) { c.KeyStore = nil }, "no keystore"},
		"no store":        {func(c *X509ManagerConfig) { c.Store = nil }, "no store"},
		"no state path":   {func(c *X509ManagerConfig) { c.StatePath = "" }, "state path is empty"},
		"bad key type":    {func(c *X509ManagerConfig) { c.KeyType = "dsa" }, "not supported"},
		"short TTL":       {func(c *X509ManagerConfig) { c.TTL = time.Second }, "too short"},
		"negative TTL":    {func(c *X509ManagerConfig) { c.TTL = -time.Hour }, "too short"},
	}
	for name, tc := range cases {
		cfg := env.config()
		tc.edit(&cfg)
		if _, err := NewX509Manager(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, tc.want)
		}
	}
	if _, err := os.Stat(env.config().StatePath); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("refused configuration wrote state")
	}
}

func TestManagerSubjectAndDefaults(t *testing.T) {
	env := newManagerEnv(t)
	cfg := env.config()
	cfg.Subject = pkix.Name{Organization: []string{"Acme"}, CommonName: "Acme writ CA"}
	cfg.Now = nil
	cfg.Logger = nil
	cfg.TTL = time.Hour
	m, err := NewX509Manager(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := m.Active().Cert
	if c.Subject.CommonName != "Acme writ CA" {
		t.Fatalf("subject %s", c.Subject)
	}
	if d := time.Until(c.NotAfter); d < 59*time.Minute || d > time.Hour {
		t.Fatalf("NotAfter %s with the real clock and a 1h TTL", c.NotAfter)
	}
}

// Active and Bundle are read on the hot path while Run rotates.
// Run's tickers and the signers' pauses run on testing/synctest's fake
// clock: the rotation Run makes by itself comes at once, while the signers
// still run on real threads beside it.
func TestManagerRunRotatesConcurrently(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		env := newManagerEnv(t)
		cfg := env.config()
		cfg.TTL = ca.MinCATTL // Run checks every 3s, on the bubble's clock
		m, err := NewX509Manager(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		first := m.Active()
		env.clock.Advance(45 * time.Second)

		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			m.Run(ctx)
			close(done)
		}()
		var wg sync.WaitGroup
		stop := make(chan struct{})
		id := catest.ID(t, "spiffe://example.org/w")
		pub := catest.Key(t, "ec-p256").Public()
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					a := m.Active()
					if _, err := a.SignX509SVID(ca.X509SVIDParams{PublicKey: pub, SPIFFEID: id, TTL: 10 * time.Second}, env.clock.Now()); err != nil {
						t.Error(err)
						return
					}
					if !inBundle(m.Bundle(), a.Cert) {
						// The bundle gains a new root before the root becomes
						// active... or right after: allow a moment.
						time.Sleep(time.Millisecond)
						if !inBundle(m.Bundle(), m.Active().Cert) {
							t.Error("active root missing from the bundle")
							return
						}
					}
					time.Sleep(10 * time.Millisecond) // some 300 signatures each before the rotation
				}
			}()
		}
		deadline := time.Now().Add(10 * time.Second)
		for m.Active() == first && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		close(stop)
		wg.Wait()
		cancel()
		<-done
		if m.Active() == first {
			t.Fatal("Run did not rotate a CA past half life")
		}
	})
}
