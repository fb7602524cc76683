package rotation

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/audit"
	"writ.dev/writ/ca"
	"writ.dev/writ/ca/catest"
	"writ.dev/writ/keystore"
)

const operator = "uid:0"

// verifyLeaf checks chain against bundle at now as a relying party would.
func verifyLeaf(bundle, chain []*x509.Certificate, now time.Time) error {
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         certPool(bundle),
		Intermediates: certPool(chain[1:]),
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	return err
}

func statusByID(list []AuthorityStatus, id string) (AuthorityStatus, bool) {
	i := slices.IndexFunc(list, func(a AuthorityStatus) bool { return a.ID == id })
	if i < 0 {
		return AuthorityStatus{}, false
	}
	return list[i], true
}

func withState(list []AuthorityStatus, st AuthorityState) []AuthorityStatus {
	return slices.DeleteFunc(slices.Clone(list), func(a AuthorityStatus) bool { return a.State != st })
}

// journalWatch follows a journal across steps and checks each change
// happened when it was due: a successor prepared once the active authority
// was past half its life, activated once a sixth of it was left, old ones
// dropped once expired, retired keys gone from the keystore.
type journalWatch struct {
	t        *testing.T
	ks       keystore.KeyStore
	prev     []AuthorityStatus
	prevNow  time.Time
	retired  []string
	prepares int
	swaps    int
}

func (w *journalWatch) observe(list []AuthorityStatus, now time.Time) {
	t := w.t
	t.Helper()
	active, prepared := withState(list, StateActive), withState(list, StatePrepared)
	if len(active) != 1 || len(prepared) > 1 {
		t.Fatalf("%s: journal %+v, want one active and at most one prepared", now, list)
	}
	for _, a := range withState(list, StateOld) {
		if a.KeyName != "" || !now.Before(a.NotAfter) {
			t.Fatalf("%s: old authority %+v still holds a key or outlived its NotAfter", now, a)
		}
	}
	for _, name := range w.retired {
		if _, err := w.ks.Get(context.Background(), name); !errors.Is(err, keystore.ErrNotFound) {
			t.Fatalf("%s: retired key %s still in the keystore: %v", now, name, err)
		}
	}
	if w.prev != nil {
		w.compare(list, active[0], prepared, now)
	}
	w.prev, w.prevNow = list, now
}

func (w *journalWatch) compare(list []AuthorityStatus, active AuthorityStatus, prepared []AuthorityStatus, now time.Time) {
	t := w.t
	t.Helper()
	was := activeStatus(t, w.prev)
	handoverDue := func(at time.Time) bool {
		return activateDue(authority{NotBefore: was.NotBefore, NotAfter: was.NotAfter}, at)
	}
	if active.ID != was.ID {
		w.swaps++
		w.retired = append(w.retired, was.KeyName)
		if p, ok := statusByID(w.prev, active.ID); !ok || p.State != StatePrepared {
			t.Fatalf("%s: %s became active without being prepared", now, active.ID)
		}
		if !handoverDue(now) || handoverDue(w.prevNow) {
			t.Fatalf("%s: activation not at five sixths of %+v", now, was)
		}
		if o, _ := statusByID(list, was.ID); o.State != StateOld {
			t.Fatalf("%s: the previous active authority is %q, want old", now, o.State)
		}
		return
	}
	if len(prepared) == 1 && len(withState(w.prev, StatePrepared)) == 0 {
		w.prepares++
		half := func(at time.Time) bool { return pastHalf(active.NotBefore, active.NotAfter, at) }
		if !half(now) || half(w.prevNow) {
			t.Fatalf("%s: successor prepared not at half life of %+v", now, active)
		}
	}
}

func TestRotationKeepsEveryLeafValid(t *testing.T) {
	ctx := context.Background()
	env := newManagerEnv(t)
	cfg := env.config()
	cfg.TTL = time.Hour
	m, err := NewX509Manager(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if m.MaxSVIDTTL() != 10*time.Minute {
		t.Fatalf("MaxSVIDTTL %s, want a sixth of the TTL", m.MaxSVIDTTL())
	}
	id := catest.ID(t, "spiffe://example.org/w")
	pub := catest.Key(t, "ec-p256").Public()
	w := &journalWatch{t: t, ks: env.ks}
	var leaves [][]*x509.Certificate
	for step := range 4 * 60 {
		if step > 0 {
			env.clock.Advance(time.Minute)
		}
		if _, err := m.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
		if err := m.RefreshBundle(ctx); err != nil {
			t.Fatal(err)
		}
		now := env.clock.Now()
		w.observe(m.Authorities(), now)
		chain, err := m.Active().SignX509SVID(ca.X509SVIDParams{PublicKey: pub, SPIFFEID: id, TTL: m.MaxSVIDTTL()}, now)
		if err != nil {
			t.Fatal(err)
		}
		leaves = slices.DeleteFunc(append(leaves, chain), func(c []*x509.Certificate) bool { return !now.Before(c[0].NotAfter) })
		for _, c := range leaves {
			if err := verifyLeaf(m.Bundle(), c, now); err != nil {
				t.Fatalf("step %d (%s): leaf signed at %s: %v", step, now, c[0].NotBefore, err)
			}
		}
	}
	if w.swaps < 4 || w.prepares < 4 {
		t.Fatalf("%d activations and %d preparations over four lifetimes, want at least 4 of each", w.swaps, w.prepares)
	}
}

func TestRotationKeepsEveryTokenValid(t *testing.T) {
	ctx := context.Background()
	env := newManagerEnv(t)
	cfg := env.jwtConfig()
	cfg.TTL = time.Hour
	m, err := NewJWTManager(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	type token struct {
		jws string
		exp time.Time
	}
	w := &journalWatch{t: t, ks: env.ks}
	var tokens []token
	for step := range 4 * 60 {
		if step > 0 {
			env.clock.Advance(time.Minute)
		}
		if _, err := m.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
		if err := m.RefreshKeys(ctx); err != nil {
			t.Fatal(err)
		}
		now := env.clock.Now()
		w.observe(m.Authorities(), now)
		a := m.Active()
		jws, err := a.SignJWTSVID(ca.JWTSVIDParams{SPIFFEID: spiffeid.RequireFromPath(testTD, "/w"), Audience: []string{"x"}, TTL: m.MaxSVIDTTL()}, now)
		if err != nil {
			t.Fatal(err)
		}
		exp := now.Add(m.MaxSVIDTTL())
		if exp.After(a.NotAfter) {
			exp = a.NotAfter
		}
		tokens = slices.DeleteFunc(append(tokens, token{jws, exp}),
			func(tok token) bool { return !now.Before(tok.exp) })
		for _, tok := range tokens {
			if err := verifyWithKeys(t, tok.jws, m.Keys()); err != nil {
				t.Fatalf("step %d (%s): token valid until %s: %v", step, now, tok.exp, err)
			}
		}
	}
	if w.swaps < 4 || w.prepares < 4 {
		t.Fatalf("%d activations and %d preparations over four lifetimes, want at least 4 of each", w.swaps, w.prepares)
	}
}

// reopen builds a new manager on the same state file, keystore directory
// and store, as a restart would.
func (e *managerEnv) reopen(t *testing.T, cfg X509ManagerConfig) *X509Manager {
	t.Helper()
	ks, err := keystore.NewDisk(filepath.Join(e.dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.KeyStore = ks
	m, err := NewX509Manager(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRestartResumesJournal(t *testing.T) {
	ctx := context.Background()
	env := newManagerEnv(t)
	cfg := env.config()
	cfg.TTL = time.Hour // 1h30s of validity: half at 29m45s, five sixths at 49m45s
	m1, err := NewX509Manager(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	first := activeStatus(t, m1.Authorities())
	env.clock.Advance(30 * time.Minute)
	if rotated, err := m1.Rotate(ctx); err != nil || !rotated {
		t.Fatalf("Rotate at half life = %v, %v", rotated, err)
	}
	prepared := withState(m1.Authorities(), StatePrepared)[0]

	// Restarted with a successor prepared: same active, same prepared.
	m2 := env.reopen(t, cfg)
	if got := m2.Authorities(); len(got) != 2 || activeStatus(t, got).ID != first.ID || withState(got, StatePrepared)[0].ID != prepared.ID {
		t.Fatalf("journal after restart %+v", got)
	}
	if !m2.Active().Cert.Equal(first.Cert) || !inBundle(m2.Bundle(), prepared.Cert) {
		t.Fatal("restart changed the active CA or left the prepared one out of the bundle")
	}
	env.clock.Advance(19 * time.Minute)
	if rotated, err := m2.Rotate(ctx); err != nil || rotated {
		t.Fatalf("Rotate before five sixths = %v, %v", rotated, err)
	}
	env.clock.Advance(time.Minute)
	if rotated, err := m2.Rotate(ctx); err != nil || !rotated || !m2.Active().Cert.Equal(prepared.Cert) {
		t.Fatalf("the prepared CA was not activated at five sixths: %v, %v", rotated, err)
	}

	// Restarted after activation: the new active and the old one resume.
	m3 := env.reopen(t, cfg)
	got := m3.Authorities()
	if len(got) != 2 || activeStatus(t, got).ID != prepared.ID || got[1].ID != first.ID || got[1].State != StateOld {
		t.Fatalf("journal after restart %+v", got)
	}
	if !inBundle(m3.Bundle(), first.Cert) {
		t.Fatal("the old CA left the bundle before it expired")
	}
}

func TestRestartActivatesPreparedWhenActiveKeyIsGone(t *testing.T) {
	ctx := context.Background()
	env := newManagerEnv(t)
	m1 := env.open(t)
	first := activeStatus(t, m1.Authorities())
	next, err := m1.Prepare(ctx, operator)
	if err != nil {
		t.Fatal(err)
	}
	if err := env.ks.Delete(ctx, first.KeyName); err != nil {
		t.Fatal(err)
	}
	m2 := env.open(t)
	if got := activeStatus(t, m2.Authorities()); got.ID != next.ID || !m2.Active().Cert.Equal(next.Cert) {
		t.Fatalf("active after restart %s, want the prepared %s", got.ID, next.ID)
	}
	if old, ok := statusByID(m2.Authorities(), first.ID); !ok || old.State != StateOld || !inBundle(m2.Bundle(), first.Cert) {
		t.Fatalf("the unusable CA %+v is not kept as old in the bundle", old)
	}
}

func TestVersion1StateLoads(t *testing.T) {
	ctx := context.Background()
	env := newManagerEnv(t)
	m1 := env.open(t)
	first := activeStatus(t, m1.Authorities())
	st := env.readState(t)
	v1, _ := json.Marshal(map[string]any{"version": 1, "active": map[string]string{
		"key_name": first.KeyName, "cert_pem": st.active(t).CertPEM,
	}})
	if err := os.WriteFile(env.config().StatePath, v1, 0o600); err != nil {
		t.Fatal(err)
	}
	m2 := env.open(t)
	if got := m2.Authorities(); len(got) != 1 || got[0].ID != first.ID || got[0].State != StateActive || got[0].KeyName != first.KeyName {
		t.Fatalf("journal from a version 1 file %+v", got)
	}

	jm := env.openJWT(t)
	jfirst := activeStatus(t, jm.Authorities())
	v1, _ = json.Marshal(map[string]any{"version": 1, "active": map[string]any{
		"key_name": jfirst.KeyName, "kid": jfirst.ID, "trust_domain": testTD.Name(),
		"not_before": jfirst.NotBefore, "not_after": jfirst.NotAfter,
	}})
	if err := os.WriteFile(env.jwtConfig().StatePath, v1, 0o600); err != nil {
		t.Fatal(err)
	}
	jm2 := env.openJWT(t)
	if got := jm2.Authorities(); len(got) != 1 || got[0].ID != jfirst.ID || got[0].State != StateActive || jm2.Active().KeyID != jfirst.ID {
		t.Fatalf("journal from a version 1 JWT file %+v", got)
	}
	if _, err := jm2.Prepare(ctx, operator); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(env.jwtConfig().StatePath)
	var jst jwtStateFile
	if err := json.Unmarshal(data, &jst); err != nil || jst.Version != stateVersion || len(jst.Authorities) != 2 {
		t.Fatalf("JWT state after a change %s (%v), want version %d with two entries", data, err, stateVersion)
	}
}

func wantEvents(t *testing.T, env *managerEnv, from int, actor string, want ...string) {
	t.Helper()
	if got := env.store.eventTypes(t, from, actor); !slices.Equal(got, want) {
		t.Fatalf("audit events %v, want %v", got, want)
	}
}

func TestX509Verbs(t *testing.T) {
	ctx := context.Background()
	env := newManagerEnv(t)
	m := env.open(t)
	first := activeStatus(t, m.Authorities())

	// Activate needs a prepared CA; refusals record nothing.
	mark := env.store.eventCount()
	if _, err := m.Activate(ctx, operator, ""); !errors.Is(err, ErrAuthorityState) {
		t.Fatalf("Activate with none prepared: %v", err)
	}
	if _, err := m.Activate(ctx, operator, first.ID); !errors.Is(err, ErrAuthorityState) {
		t.Fatalf("Activate of the active CA: %v", err)
	}
	for verb, f := range map[string]func(context.Context, string, string) (AuthorityStatus, error){
		"Activate": m.Activate, "Taint": m.Taint, "Revoke": m.Revoke,
	} {
		if _, err := f(ctx, operator, "00ff"); !errors.Is(err, ErrNoSuchAuthority) {
			t.Fatalf("%s of an unknown ID: %v", verb, err)
		}
	}
	if _, err := m.Revoke(ctx, operator, first.ID); !errors.Is(err, ErrAuthorityState) || !strings.Contains(err.Error(), "taint it first") {
		t.Fatalf("Revoke of the active CA: %v", err)
	}
	wantEvents(t, env, mark, operator)

	// Prepare, once.
	next, err := m.Prepare(ctx, operator)
	if err != nil || next.State != StatePrepared || next.KeyName == "" || !inBundle(m.Bundle(), next.Cert) {
		t.Fatalf("Prepare = %+v, %v", next, err)
	}
	if _, err := m.Prepare(ctx, operator); !errors.Is(err, ErrAuthorityState) {
		t.Fatalf("second Prepare: %v", err)
	}
	wantEvents(t, env, mark, operator, audit.EventCAX509Prepare)

	// Activate it by ID; the old key goes.
	mark = env.store.eventCount()
	got, err := m.Activate(ctx, operator, next.ID)
	if err != nil || got.State != StateActive || !m.Active().Cert.Equal(next.Cert) {
		t.Fatalf("Activate = %+v, %v", got, err)
	}
	if _, err := env.ks.Get(ctx, first.KeyName); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("the previous CA's key is still held: %v", err)
	}
	wantEvents(t, env, mark, operator, audit.EventCAX509Activate)

	// Revoke the old CA: out of the bundle at once, and after a refresh.
	mark = env.store.eventCount()
	rev, err := m.Revoke(ctx, operator, first.ID)
	if err != nil || !rev.Revoked || rev.State != StateOld {
		t.Fatalf("Revoke = %+v, %v", rev, err)
	}
	if inBundle(m.Bundle(), first.Cert) {
		t.Fatal("the revoked CA is still in the bundle")
	}
	if err := m.RefreshBundle(ctx); err != nil || inBundle(m.Bundle(), first.Cert) {
		t.Fatalf("the revoked CA is back in the bundle after a refresh (%v)", err)
	}
	if s, ok := statusByID(m.Authorities(), first.ID); !ok || !s.Revoked {
		t.Fatal("the revoked CA left the journal before it expired")
	}
	for _, verb := range []func(context.Context, string, string) (AuthorityStatus, error){m.Revoke, m.Taint} {
		if _, err := verb(ctx, operator, first.ID); !errors.Is(err, ErrAuthorityState) {
			t.Fatalf("a second change to a revoked CA: %v", err)
		}
	}
	wantEvents(t, env, mark, operator, audit.EventCAX509Revoke)

	// Taint the active CA: a successor takes over at once.
	id := catest.ID(t, "spiffe://example.org/w")
	leaf, err := m.Active().SignX509SVID(ca.X509SVIDParams{PublicKey: catest.Key(t, "ec-p256").Public(), SPIFFEID: id, TTL: time.Minute}, env.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	mark = env.store.eventCount()
	tainted, err := m.Taint(ctx, operator, next.ID)
	if err != nil || !tainted.Tainted || tainted.State != StateOld || tainted.KeyName != "" {
		t.Fatalf("Taint of the active CA = %+v, %v", tainted, err)
	}
	if m.Active().Cert.Equal(next.Cert) || !m.SignedByTainted(leaf[0]) {
		t.Fatal("the tainted CA still signs, or its leaves are not reported")
	}
	if _, err := m.Taint(ctx, operator, next.ID); !errors.Is(err, ErrAuthorityState) {
		t.Fatalf("a second Taint: %v", err)
	}
	wantEvents(t, env, mark, operator, audit.EventCAX509Taint, audit.EventCAX509Prepare, audit.EventCAX509Activate)
	fresh, err := m.Active().SignX509SVID(ca.X509SVIDParams{PublicKey: catest.Key(t, "ec-p256").Public(), SPIFFEID: id, TTL: time.Minute}, env.clock.Now())
	if err != nil || m.SignedByTainted(fresh[0]) {
		t.Fatalf("a leaf of the new CA is reported tainted (%v)", err)
	}
	if !inBundle(m.Bundle(), next.Cert) {
		t.Fatal("a tainted CA must stay in the bundle until revoked")
	}
	for _, c := range env.store.certs {
		if string(c.CertDER) == string(next.Cert.Raw) && !c.Tainted {
			t.Fatal("the store does not mark the tainted CA")
		}
	}

	// Tainting a prepared CA retires it unused.
	p, err := m.Prepare(ctx, operator)
	if err != nil {
		t.Fatal(err)
	}
	if tp, err := m.Taint(ctx, operator, p.ID); err != nil || tp.State != StateOld || tp.KeyName != "" {
		t.Fatalf("Taint of the prepared CA = %+v, %v", tp, err)
	}
	if _, err := env.ks.Get(ctx, p.KeyName); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("the tainted prepared CA's key is still held: %v", err)
	}
	p, err = m.Prepare(ctx, operator)
	if err != nil {
		t.Fatalf("Prepare after the prepared CA was tainted: %v", err)
	}

	// Revoking a prepared CA retires it unused and out of the bundle.
	if rp, err := m.Revoke(ctx, operator, p.ID); err != nil || rp.State != StateOld || !rp.Revoked || inBundle(m.Bundle(), p.Cert) {
		t.Fatalf("Revoke of the prepared CA = %+v, %v", rp, err)
	}
	if _, err := env.ks.Get(ctx, p.KeyName); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("the revoked prepared CA's key is still held: %v", err)
	}
	if _, err := m.Activate(ctx, operator, p.ID); !errors.Is(err, ErrAuthorityState) {
		t.Fatalf("Activate of a revoked CA: %v", err)
	}
}

func TestX509PeerTaint(t *testing.T) {
	ctx := context.Background()
	env := newManagerEnv(t)
	m := env.open(t)
	peerEnv := &managerEnv{dir: t.TempDir(), ks: keystore.NewMemory(), store: env.store, clock: env.clock}
	cfg := peerEnv.config()
	cfg.ServerID = "server-b"
	peer, err := NewX509Manager(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := peer.Active().SignX509SVID(ca.X509SVIDParams{PublicKey: catest.Key(t, "ec-p256").Public(), SPIFFEID: catest.ID(t, "spiffe://example.org/w"), TTL: time.Minute}, env.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := peer.Taint(ctx, "spiffe://example.org/admin", activeStatus(t, peer.Authorities()).ID); err != nil {
		t.Fatal(err)
	}
	if m.SignedByTainted(leaf[0]) {
		t.Fatal("a peer's taint was seen before a refresh")
	}
	if err := m.RefreshBundle(ctx); err != nil {
		t.Fatal(err)
	}
	if !m.SignedByTainted(leaf[0]) {
		t.Fatal("a peer's tainted CA is not reported after a refresh")
	}
}

func TestX509VerbsUnderUpstream(t *testing.T) {
	ctx := context.Background()
	env := newManagerEnv(t)
	pki := catest.NewPKI(t, env.clock.Now(), 365*24*time.Hour)
	m, err := NewX509Manager(ctx, env.upstreamConfig(upstreamOf(pki)))
	if err != nil {
		t.Fatal(err)
	}
	first := activeStatus(t, m.Authorities())
	if _, err := m.Prepare(ctx, operator); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Activate(ctx, operator, ""); err != nil {
		t.Fatal(err)
	}
	mark := env.store.eventCount()
	if _, err := m.Revoke(ctx, operator, first.ID); !errors.Is(err, ErrAuthorityState) || !strings.Contains(err.Error(), "upstream") {
		t.Fatalf("Revoke under an upstream CA: %v", err)
	}
	wantEvents(t, env, mark, operator)
	cur := activeStatus(t, m.Authorities())
	if _, err := m.Taint(ctx, operator, cur.ID); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, env, mark, operator, audit.EventCAX509Taint, audit.EventCAX509Prepare, audit.EventCAX509Activate)
	if activeStatus(t, m.Authorities()).ID == cur.ID {
		t.Fatal("the tainted intermediate still signs")
	}
	if b := m.Bundle(); len(b) != 1 || !b[0].Equal(pki.Root.Cert) {
		t.Fatal("the bundle under an upstream CA is not the upstream root alone")
	}
}

func TestJWTVerbs(t *testing.T) {
	ctx := context.Background()
	env := newManagerEnv(t)
	m := env.openJWT(t)
	first := activeStatus(t, m.Authorities())
	if m.MaxSVIDTTL() != ca.DefaultCATTL/6 {
		t.Fatalf("MaxSVIDTTL %s", m.MaxSVIDTTL())
	}

	mark := env.store.eventCount()
	if _, err := m.Taint(ctx, operator, "nope"); !errors.Is(err, ErrNoSuchAuthority) {
		t.Fatalf("Taint of an unknown kid: %v", err)
	}
	if _, err := m.Revoke(ctx, operator, first.ID); !errors.Is(err, ErrAuthorityState) {
		t.Fatalf("Revoke of the active key: %v", err)
	}
	next, err := m.Prepare(ctx, operator)
	if err != nil || !slices.Contains(keyIDs(m.Keys()), next.ID) {
		t.Fatalf("Prepare = %+v, %v; keys %v", next, err, keyIDs(m.Keys()))
	}
	if _, err := m.Prepare(ctx, operator); !errors.Is(err, ErrAuthorityState) {
		t.Fatalf("second Prepare: %v", err)
	}
	if got, err := m.Activate(ctx, operator, ""); err != nil || got.ID != next.ID || m.Active().KeyID != next.ID {
		t.Fatalf("Activate = %+v, %v", got, err)
	}
	if _, err := env.ks.Get(ctx, first.KeyName); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("the previous key is still held: %v", err)
	}
	wantEvents(t, env, mark, operator, audit.EventCAJWTPrepare, audit.EventCAJWTActivate)

	mark = env.store.eventCount()
	if _, err := m.Revoke(ctx, operator, first.ID); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(keyIDs(m.Keys()), first.ID) {
		t.Fatal("the revoked key is still in the set")
	}
	if err := m.RefreshKeys(ctx); err != nil || slices.Contains(keyIDs(m.Keys()), first.ID) {
		t.Fatalf("the revoked key is back after a refresh (%v)", err)
	}
	wantEvents(t, env, mark, operator, audit.EventCAJWTRevoke)

	mark = env.store.eventCount()
	if _, err := m.Taint(ctx, operator, next.ID); err != nil {
		t.Fatal(err)
	}
	if m.Active().KeyID == next.ID || !m.KeyTainted(next.ID) || m.KeyTainted(m.Active().KeyID) {
		t.Fatal("the tainted key still signs or is not reported tainted")
	}
	wantEvents(t, env, mark, operator, audit.EventCAJWTTaint, audit.EventCAJWTPrepare, audit.EventCAJWTActivate)

	// Another server sees the taint after a refresh.
	peer, err := NewJWTManager(ctx, JWTManagerConfig{TrustDomain: testTD, ServerID: "server-b", KeyStore: keystore.NewMemory(),
		Store: env.store, StatePath: filepath.Join(t.TempDir(), "jwt.json"), Now: env.clock.Now, Logger: env.jwtConfig().Logger})
	if err != nil {
		t.Fatal(err)
	}
	if !peer.KeyTainted(next.ID) {
		t.Fatal("a peer does not see the tainted key")
	}
}

func TestJWTRestartResumesJournal(t *testing.T) {
	ctx := context.Background()
	env := newManagerEnv(t)
	cfg := env.jwtConfig()
	cfg.TTL = time.Hour // half at 30m, five sixths at 50m
	m1, err := NewJWTManager(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	first := m1.Active().KeyID
	env.clock.Advance(30 * time.Minute)
	if _, err := m1.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	prepared := withState(m1.Authorities(), StatePrepared)[0].ID

	m2, err := NewJWTManager(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if m2.Active().KeyID != first || withState(m2.Authorities(), StatePrepared)[0].ID != prepared {
		t.Fatalf("journal after restart %+v", m2.Authorities())
	}
	env.clock.Advance(20*time.Minute - time.Second)
	if rotated, err := m2.Rotate(ctx); err != nil || rotated {
		t.Fatalf("Rotate before five sixths = %v, %v", rotated, err)
	}
	env.clock.Advance(time.Second)
	if rotated, err := m2.Rotate(ctx); err != nil || !rotated || m2.Active().KeyID != prepared {
		t.Fatalf("the prepared key was not activated at five sixths: %v, %v", rotated, err)
	}

	// After activation the old key's public half survives a restart even
	// if the store lost it.
	env.store.mu.Lock()
	env.store.jwtKeys = nil
	env.store.mu.Unlock()
	m3, err := NewJWTManager(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := keyIDs(m3.Keys()); m3.Active().KeyID != prepared || !slices.Contains(got, first) || !slices.Contains(got, prepared) {
		t.Fatalf("after restart: active %s, keys %v", m3.Active().KeyID, got)
	}
	if env.jwtKeyCount() != 2 {
		t.Fatalf("restart republished %d keys, want 2", env.jwtKeyCount())
	}
}

// Errors name the fix, in the package's style.
func TestVerbErrorsExplain(t *testing.T) {
	env := newManagerEnv(t)
	m := env.open(t)
	_, err := m.Activate(context.Background(), operator, "")
	if err == nil || !strings.HasPrefix(err.Error(), "ca: ") || !strings.Contains(err.Error(), "prepare one first") {
		t.Fatalf("error %v", err)
	}
	_, err = m.Taint(context.Background(), operator, "abc")
	if want := fmt.Sprintf("%q", "abc"); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v does not name the ID", err)
	}
}
