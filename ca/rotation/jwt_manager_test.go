package rotation

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/ca"
	"writ.dev/writ/ca/catest"
	"writ.dev/writ/keystore"
	"writ.dev/writ/store"
)

func (e *managerEnv) jwtConfig() JWTManagerConfig {
	return JWTManagerConfig{
		TrustDomain: testTD,
		ServerID:    "server-a",
		KeyStore:    e.ks,
		Store:       e.store,
		StatePath:   filepath.Join(e.dir, "state", "jwt-ca.json"),
		Now:         e.clock.Now,
		Logger:      slog.New(slog.DiscardHandler),
	}
}

func (e *managerEnv) openJWT(t *testing.T) *JWTManager {
	t.Helper()
	m, err := NewJWTManager(context.Background(), e.jwtConfig())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (e *managerEnv) jwtKeyCount() int {
	e.store.mu.Lock()
	defer e.store.mu.Unlock()
	return len(e.store.jwtKeys)
}

func keyIDs(keys []ca.JWTKey) []string {
	var out []string
	for _, k := range keys {
		out = append(out, k.KeyID)
	}
	return out
}

// verifyWithKeys checks tok against the JWKS built from keys, as a relying
// party would.
func verifyWithKeys(t *testing.T, tok string, keys []ca.JWTKey) error {
	t.Helper()
	set, err := ca.JWKS(keys)
	if err != nil {
		t.Fatal(err)
	}
	var jwks jose.JSONWebKeySet
	if err := json.Unmarshal(set, &jwks); err != nil {
		t.Fatal(err)
	}
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	kid := parsed.Headers[0].KeyID
	found := jwks.Key(kid)
	if len(found) == 0 {
		return errors.New("kid " + kid + " not in the JWKS")
	}
	var claims jwt.Claims
	return parsed.Claims(found[0].Key, &claims)
}

func TestJWTManagerStartsAndRestarts(t *testing.T) {
	env := newManagerEnv(t)
	m1 := env.openJWT(t)
	a1 := m1.Active()
	if a1 == nil || a1.Signer == nil || a1.KeyID == "" || a1.TrustDomain != testTD {
		t.Fatalf("no usable active JWT authority: %+v", a1)
	}
	if k, ok := a1.Signer.Public().(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Fatalf("key %T, want an ECDSA P-256 key (ES256)", a1.Signer.Public())
	}
	if kid, _ := ca.KeyIDFor(a1.Signer.Public()); kid != a1.KeyID {
		t.Fatalf("kid %q is not the key's thumbprint %q", a1.KeyID, kid)
	}
	if !a1.NotAfter.Equal(env.clock.Now().Add(ca.DefaultCATTL)) {
		t.Fatalf("default TTL not applied: NotAfter %s", a1.NotAfter)
	}
	if env.jwtKeyCount() != 1 || len(m1.Keys()) != 1 || m1.Keys()[0].KeyID != a1.KeyID {
		t.Fatalf("key not published or not in the key set: %v", keyIDs(m1.Keys()))
	}
	rec := env.store.jwtKeys[0]
	pub, err := x509.ParsePKIXPublicKey(rec.PublicKeyDER)
	if err != nil || !samePublicKey(pub, a1.Signer.Public()) || rec.ServerID != "server-a" || !rec.NotAfter.Equal(a1.NotAfter) {
		t.Fatalf("published record %+v (%v)", rec, err)
	}

	info, err := os.Stat(env.jwtConfig().StatePath)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Fatalf("state file mode %04o, want 0600", perm)
	}
	data, _ := os.ReadFile(env.jwtConfig().StatePath)
	if strings.Contains(string(data), "PRIVATE") || !strings.Contains(string(data), a1.KeyID) {
		t.Fatalf("state file %s", data)
	}

	tok, err := a1.SignJWTSVID(ca.JWTSVIDParams{SPIFFEID: spiffeid.RequireFromPath(testTD, "/w"), Audience: []string{"x"}, TTL: time.Minute}, env.clock.Now())
	if err != nil {
		t.Fatal(err)
	}

	// A restart an hour later on the same state and keystore keeps the key
	// and republishes it idempotently.
	env.clock.Advance(time.Hour)
	m2 := env.openJWT(t)
	a2 := m2.Active()
	if a2.KeyID != a1.KeyID || !samePublicKey(a2.Signer.Public(), a1.Signer.Public()) || !a2.NotAfter.Equal(a1.NotAfter) {
		t.Fatalf("restart replaced the key: %s -> %s", a1.KeyID, a2.KeyID)
	}
	if env.jwtKeyCount() != 1 || len(m2.Keys()) != 1 {
		t.Fatalf("restart duplicated the key: %v", keyIDs(m2.Keys()))
	}
	env.clock.Advance(-time.Hour)
	if err := verifyWithKeys(t, tok, m2.Keys()); err != nil {
		t.Fatalf("token from before the restart: %v", err)
	}
}

func TestJWTManagerRotatesPastHalfLife(t *testing.T) {
	env := newManagerEnv(t)
	cfg := env.jwtConfig()
	cfg.TTL = time.Hour
	m, err := NewJWTManager(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	old := m.Active()
	oldName := activeStatus(t, m.Authorities()).KeyName

	env.clock.Advance(29 * time.Minute)
	if rotated, err := m.Rotate(t.Context()); rotated || err != nil {
		t.Fatalf("Rotate before half life = %v, %v", rotated, err)
	}
	tok, err := old.SignJWTSVID(ca.JWTSVIDParams{SPIFFEID: spiffeid.RequireFromPath(testTD, "/w"), Audience: []string{"x"}, TTL: 20 * time.Minute}, env.clock.Now())
	if err != nil {
		t.Fatal(err)
	}

	// Half life prepares and publishes a successor; the old key still signs.
	env.clock.Advance(time.Minute)
	if rotated, err := m.Rotate(t.Context()); !rotated || err != nil {
		t.Fatalf("Rotate at half life = %v, %v", rotated, err)
	}
	list := m.Authorities()
	if m.Active() != old || len(list) != 2 || list[0].State != StatePrepared || !list[0].NotAfter.Equal(env.clock.Now().Add(time.Hour)) {
		t.Fatalf("journal at half life %+v", list)
	}
	next := list[0].ID
	if got := keyIDs(m.Keys()); len(got) != 2 || got[0] != old.KeyID || got[1] != next {
		t.Fatalf("keys after preparing %v; want old then prepared", got)
	}

	// Ten minutes left: the prepared key takes over.
	env.clock.Advance(20 * time.Minute)
	if rotated, err := m.Rotate(t.Context()); !rotated || err != nil {
		t.Fatalf("Rotate with a sixth of life left = %v, %v", rotated, err)
	}
	cur := m.Active()
	if cur.KeyID != next {
		t.Fatalf("active %s after activation, want the prepared %s", cur.KeyID, next)
	}
	// The old key leaves the keystore but stays published until it expires,
	// so what it signed keeps verifying.
	if _, err := env.ks.Get(t.Context(), oldName); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("old key still in the keystore: %v", err)
	}
	if err := verifyWithKeys(t, tok, m.Keys()); err != nil {
		t.Fatalf("token of the old key after rotation: %v", err)
	}
	if err := m.RefreshKeys(t.Context()); err != nil || len(m.Keys()) != 2 {
		t.Fatalf("refresh: %v, %v", keyIDs(m.Keys()), err)
	}

	// A restart resumes with the new key.
	m2, err := NewJWTManager(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if m2.Active().KeyID != cur.KeyID || len(m2.Keys()) != 2 {
		t.Fatalf("restart after rotation: active %s, keys %v", m2.Active().KeyID, keyIDs(m2.Keys()))
	}

	// Once the old key has expired it leaves the set.
	env.clock.Advance(11 * time.Minute)
	if err := m.RefreshKeys(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := keyIDs(m.Keys()); len(got) != 1 || got[0] != cur.KeyID {
		t.Fatalf("keys after the old key expired %v", got)
	}
}

func TestJWTManagerStartRotatesStaleKey(t *testing.T) {
	env := newManagerEnv(t)
	first := env.openJWT(t).Active()
	env.clock.Advance(ca.DefaultCATTL / 2)
	m := env.openJWT(t)
	if m.Active().KeyID != first.KeyID {
		t.Fatal("a key past half life was replaced at once on start")
	}
	if list := m.Authorities(); len(list) != 2 || list[0].State != StatePrepared || len(m.Keys()) != 2 {
		t.Fatalf("start past half life: journal %+v, keys %v", list, keyIDs(m.Keys()))
	}
}

func TestJWTManagerReplacesUnusableState(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spoil func(t *testing.T, env *managerEnv, keyName string)
	}{
		{"garbage", func(t *testing.T, env *managerEnv, _ string) {
			if err := os.WriteFile(env.jwtConfig().StatePath, []byte("{not json"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"key missing", func(t *testing.T, env *managerEnv, keyName string) {
			if err := env.ks.Delete(t.Context(), keyName); err != nil {
				t.Fatal(err)
			}
		}},
		{"key replaced", func(t *testing.T, env *managerEnv, keyName string) {
			if err := env.ks.Delete(t.Context(), keyName); err != nil {
				t.Fatal(err)
			}
			if _, err := env.ks.Generate(t.Context(), keyName, keystore.ECP256); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newManagerEnv(t)
			m := env.openJWT(t)
			first := m.Active()
			tc.spoil(t, env, activeStatus(t, m.Authorities()).KeyName)
			m2 := env.openJWT(t)
			if m2.Active().KeyID == first.KeyID {
				t.Fatal("an unusable recorded key was kept")
			}
		})
	}

	// Another trust domain's key is never used.
	env := newManagerEnv(t)
	first := env.openJWT(t).Active()
	cfg := env.jwtConfig()
	cfg.TrustDomain = spiffeid.RequireTrustDomainFromString("other.test")
	m, err := NewJWTManager(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if m.Active().KeyID == first.KeyID || m.Active().TrustDomain != cfg.TrustDomain {
		t.Fatal("a key recorded for another trust domain was kept")
	}
}

func TestJWTManagerKeyUnion(t *testing.T) {
	env := newManagerEnv(t)
	m := env.openJWT(t)

	// A peer publishes its key in the same store; a record whose kid does
	// not match its key is skipped rather than trusted.
	peer := catest.FreshKey(t)
	der, _ := x509.MarshalPKIXPublicKey(peer.Public())
	kid, _ := ca.KeyIDFor(peer.Public())
	for _, k := range []store.JWTKey{
		{ServerID: "server-b", KeyID: kid, PublicKeyDER: der, NotAfter: env.clock.Now().Add(2 * time.Hour)},
		{ServerID: "server-c", KeyID: "wrong", PublicKeyDER: der, NotAfter: env.clock.Now().Add(2 * time.Hour)},
		{ServerID: "server-d", KeyID: "garbage", PublicKeyDER: []byte{1, 2, 3}, NotAfter: env.clock.Now().Add(2 * time.Hour)},
	} {
		if err := env.store.PutJWTKey(t.Context(), k, testEvent); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.RefreshKeys(t.Context()); err != nil {
		t.Fatal(err)
	}
	got := keyIDs(m.Keys())
	if len(got) != 2 || got[0] != kid || got[1] != m.Active().KeyID {
		t.Fatalf("keys %v; want the peer's then ours", got)
	}

	// A failing store keeps the cached set.
	env.store.setErrors(nil, errStoreDown)
	if err := m.RefreshKeys(t.Context()); !errors.Is(err, errStoreDown) || len(m.Keys()) != 2 {
		t.Fatalf("refresh with the store down: %v, %v", err, keyIDs(m.Keys()))
	}
}

func TestJWTManagerPublishFailure(t *testing.T) {
	env := newManagerEnv(t)
	env.store.setErrors(errStoreDown, nil)
	if _, err := NewJWTManager(t.Context(), env.jwtConfig()); !errors.Is(err, errStoreDown) {
		t.Fatalf("start with the store down: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(env.dir, "keys")); len(entries) != 0 {
		t.Fatalf("abandoned key left in the keystore: %d files", len(entries))
	}
	if _, err := os.Stat(env.jwtConfig().StatePath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state written though publishing failed: %v", err)
	}
}

func TestJWTManagerConfigErrors(t *testing.T) {
	env := newManagerEnv(t)
	for name, mod := range map[string]func(*JWTManagerConfig){
		"trust domain": func(c *JWTManagerConfig) { c.TrustDomain = spiffeid.TrustDomain{} },
		"server id":    func(c *JWTManagerConfig) { c.ServerID = "" },
		"keystore":     func(c *JWTManagerConfig) { c.KeyStore = nil },
		"store":        func(c *JWTManagerConfig) { c.Store = nil },
		"state path":   func(c *JWTManagerConfig) { c.StatePath = "" },
		"short TTL":    func(c *JWTManagerConfig) { c.TTL = time.Second },
	} {
		cfg := env.jwtConfig()
		mod(&cfg)
		if _, err := NewJWTManager(t.Context(), cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
