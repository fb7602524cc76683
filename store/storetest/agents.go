package storetest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"
	"time"

	"writ.dev/writ/store"
)

var agentTests = []struct {
	name string
	fn   func(t *testing.T, s store.Store)
}{
	{"JoinTokenRedeemedOnce", testJoinTokenOnce},
	{"JoinTokenRefusals", testJoinTokenRefusals},
	{"JoinTokenConcurrentRedeem", testJoinTokenConcurrent},
	{"AgentCompareAndSet", testAgentCAS},
	{"GetEntries", testGetEntries},
	{"JoinAgentByAttestation", testJoinAgent},
	{"UseTokenOnce", testUseToken},
	{"CheckTokensWriteNothing", testCheckTokens},
	{"SubjectTokenExchangedOnce", testSubjectToken},
}

func newToken(t *testing.T, s store.Store, id, secret string, expires time.Time) {
	t.Helper()
	sum := sha256.Sum256([]byte(secret))
	if err := s.CreateJoinToken(t.Context(), store.JoinToken{ID: id, SecretSHA256: sum[:], CreatedBy: "uid:0", ExpiresAt: expires}, event("token %s", id)); err != nil {
		t.Fatalf("CreateJoinToken: %v", err)
	}
}

func digest(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

func agent(id string) store.Agent {
	return store.Agent{
		SPIFFEID:   "spiffe://example.org/writ/agent/join-token/" + id,
		JoinMethod: "join_token",
		Selectors:  []store.Selector{{Type: "join_token", Value: id}},
		Serial:     "01", Generation: 1,
		CertNotAfter: time.Now().Add(time.Hour),
	}
}

func testJoinTokenOnce(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := time.Now()
	newToken(t, s, "tok1", "secret-1", now.Add(time.Hour))
	size := auditSize(t, s)
	got, err := s.RedeemJoinToken(ctx, "tok1", digest("secret-1"), now, agent("tok1"), event("join"))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID == "" || got.SPIFFEID != agent("tok1").SPIFFEID {
		t.Fatalf("redeemed agent %+v", got)
	}
	if n := auditSize(t, s); n != size+1 {
		t.Fatalf("redeeming added %d events, want 1", n-size)
	}
	stored, err := s.GetAgent(ctx, got.SPIFFEID)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "stored agent", stored, got)
	_, err = s.RedeemJoinToken(ctx, "tok1", digest("secret-1"), now, agent("again"), event("replay"))
	if !errors.Is(err, store.ErrTokenUsed) {
		t.Fatalf("replay: err = %v, want ErrTokenUsed", err)
	}
	if _, err := s.GetAgent(ctx, agent("again").SPIFFEID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a replay stored an agent: %v", err)
	}
	if n := auditSize(t, s); n != size+1 {
		t.Fatalf("a refused replay wrote events")
	}
}

func testJoinTokenRefusals(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := time.Now()
	newToken(t, s, "tok2", "right", now.Add(time.Minute))
	for name, try := range map[string]struct {
		id, secret string
		at         time.Time
		want       error
	}{
		"wrong secret": {"tok2", "wrong", now, store.ErrNotFound},
		"unknown id":   {"nope", "right", now, store.ErrNotFound},
		"bad id":       {"../x", "right", now, store.ErrNotFound},
		"expired":      {"tok2", "right", now.Add(2 * time.Minute), store.ErrTokenExpired},
	} {
		if _, err := s.RedeemJoinToken(ctx, try.id, digest(try.secret), try.at, agent(name[:3]), event("x")); !errors.Is(err, try.want) {
			t.Errorf("%s: err = %v, want %v", name, err, try.want)
		}
	}
	// Still redeemable after the refusals.
	if _, err := s.RedeemJoinToken(ctx, "tok2", digest("right"), now, agent("tok2"), event("join")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RedeemJoinToken(ctx, "tok2", digest("right"), now, agent("tok2b")); !errors.Is(err, store.ErrNoAuditEvent) {
		t.Fatalf("redeem without an event: %v", err)
	}
}

func testJoinTokenConcurrent(t *testing.T, s store.Store) {
	now := time.Now()
	newToken(t, s, "tok3", "s", now.Add(time.Hour))
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := range 8 {
		wg.Go(func() {
			_, err := s.RedeemJoinToken(t.Context(), "tok3", digest("s"), now, agent("tok3-"+string(rune('a'+i))), event("join"))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, store.ErrTokenUsed):
				t.Errorf("redeem %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d redeemed the token, want exactly 1", wins)
	}
}

func testAgentCAS(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := time.Now()
	newToken(t, s, "tok4", "s", now.Add(time.Hour))
	a, err := s.RedeemJoinToken(ctx, "tok4", digest("s"), now, agent("tok4"), event("join"))
	if err != nil {
		t.Fatal(err)
	}
	next := a
	next.PendingSerial, next.Generation = "02", 2
	if err := s.UpdateAgent(ctx, a, next, event("renew")); err != nil {
		t.Fatal(err)
	}
	// A second server working from the old state loses.
	stale := a
	stale.PendingSerial = "03"
	if err := s.UpdateAgent(ctx, a, stale, event("renew")); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale update: err = %v, want ErrConflict", err)
	}
	got, err := s.GetAgent(ctx, a.SPIFFEID)
	if err != nil || got.PendingSerial != "02" || got.Generation != 2 || !bytes.Equal([]byte(got.Serial), []byte("01")) {
		t.Fatalf("agent after updates: %+v, %v", got, err)
	}
	list, err := s.ListAgents(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("ListAgents: %v, %v", list, err)
	}
}

func testGetEntries(t *testing.T, s store.Store) {
	created := create(t, s, rule(1), rule(2), rule(3))
	got, err := s.GetEntries(t.Context(), []string{created[2].ID, "missing", created[0].ID, "bad id!"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID > got[1].ID {
		t.Fatalf("GetEntries = %v", got)
	}
	for _, e := range got {
		if e.ID != created[0].ID && e.ID != created[2].ID {
			t.Fatalf("unexpected entry %s", e.ID)
		}
		if len(e.Selectors) != 3 {
			t.Fatalf("entry %s came without its selectors", e.ID)
		}
	}
	if got, err := s.GetEntries(t.Context(), nil); err != nil || len(got) != 0 {
		t.Fatalf("GetEntries(nil) = %v, %v", got, err)
	}
}

func testJoinAgent(t *testing.T, s store.Store) {
	ctx := t.Context()
	a := store.Agent{SPIFFEID: "spiffe://example.org/node/github/org/repo/1/1", JoinMethod: "github",
		Selectors: []store.Selector{{Type: "github", Value: "repository:org/repo"}}, Serial: "0a", CertNotAfter: time.Now().Add(time.Hour)}
	replay := &store.JoinReplay{Issuer: "https://issuer", JTI: "jti-1", ExpiresAt: time.Now().Add(time.Hour)}
	got, err := s.JoinAgent(ctx, a, replay, event("join"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Generation != 1 || got.Serial != "0a" || len(got.Selectors) != 1 {
		t.Fatalf("joined agent %+v", got)
	}
	size := auditSize(t, s)
	if _, err := s.JoinAgent(ctx, a, replay, event("replay")); !errors.Is(err, store.ErrTokenUsed) {
		t.Fatalf("replayed token: err = %v, want ErrTokenUsed", err)
	}
	if auditSize(t, s) != size {
		t.Fatal("a refused replay wrote an event")
	}
	// The same node joining again with a new token starts a new generation.
	again := a
	again.Serial = "0b"
	got, err = s.JoinAgent(ctx, again, &store.JoinReplay{Issuer: "https://issuer", JTI: "jti-2", ExpiresAt: time.Now().Add(time.Hour)}, event("rejoin"))
	if err != nil || got.Generation != 2 || got.Serial != "0b" || got.PendingSerial != "" {
		t.Fatalf("re-join: %+v, %v", got, err)
	}
	// An expired record no longer blocks its (expired) token id, and is pruned.
	old := &store.JoinReplay{Issuer: "https://issuer", JTI: "jti-old", ExpiresAt: time.Now().Add(-time.Hour)}
	if _, err := s.JoinAgent(ctx, again, old, event("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.JoinAgent(ctx, again, old, event("x")); err != nil {
		t.Fatalf("an expired replay record was not pruned: %v", err)
	}
}

func testUseToken(t *testing.T, s store.Store) {
	ctx := t.Context()
	exp := time.Now().Add(time.Hour)
	if err := s.UseToken(ctx, "https://idp", "t1", exp, event("login")); err != nil {
		t.Fatal(err)
	}
	size := auditSize(t, s)
	if err := s.UseToken(ctx, "https://idp", "t1", exp, event("again")); !errors.Is(err, store.ErrTokenUsed) {
		t.Fatalf("second use: err = %v, want ErrTokenUsed", err)
	}
	if auditSize(t, s) != size {
		t.Fatal("a refused use wrote an event")
	}
	if err := s.UseToken(ctx, "https://other", "t1", exp, event("login")); err != nil {
		t.Fatalf("the same id from another issuer: %v", err)
	}
	if err := s.UseToken(ctx, "https://idp", "t2", exp); !errors.Is(err, store.ErrNoAuditEvent) {
		t.Fatalf("without an event: %v", err)
	}
}

// testCheckTokens: the read-only checks agree with what redeeming and
// using would say, and change nothing.
func testCheckTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := time.Now()
	newToken(t, s, "tokc", "right", now.Add(time.Minute))
	size := auditSize(t, s)
	for name, try := range map[string]struct {
		id, secret string
		at         time.Time
		want       error
	}{
		"good":         {"tokc", "right", now, nil},
		"wrong secret": {"tokc", "wrong", now, store.ErrNotFound},
		"unknown id":   {"nope", "right", now, store.ErrNotFound},
		"bad id":       {"../x", "right", now, store.ErrNotFound},
		"expired":      {"tokc", "right", now.Add(2 * time.Minute), store.ErrTokenExpired},
	} {
		if err := s.CheckJoinToken(ctx, try.id, digest(try.secret), try.at); !errors.Is(err, try.want) {
			t.Errorf("%s: err = %v, want %v", name, err, try.want)
		}
	}
	if _, err := s.RedeemJoinToken(ctx, "tokc", digest("right"), now, agent("tokc"), event("join")); err != nil {
		t.Fatalf("checking spent the token: %v", err)
	}
	if err := s.CheckJoinToken(ctx, "tokc", digest("right"), now); !errors.Is(err, store.ErrTokenUsed) {
		t.Fatalf("check after redeeming: err = %v, want ErrTokenUsed", err)
	}

	const iss = "https://idp.example"
	if err := s.CheckToken(ctx, iss, "jti-c", now); err != nil {
		t.Fatalf("unused token: %v", err)
	}
	if err := s.UseToken(ctx, iss, "jti-c", now.Add(time.Minute), event("login")); err != nil {
		t.Fatalf("checking spent the token: %v", err)
	}
	if err := s.CheckToken(ctx, iss, "jti-c", now); !errors.Is(err, store.ErrTokenUsed) {
		t.Fatalf("check after use: err = %v, want ErrTokenUsed", err)
	}
	if err := s.CheckToken(ctx, iss, "jti-other", now); err != nil {
		t.Fatalf("another token: %v", err)
	}
	if n := auditSize(t, s); n != size+2 {
		t.Fatalf("checks wrote %d events", n-size-2)
	}
}

// testSubjectToken: a subject token is exchanged once; the check agrees
// and writes nothing; sign-ins keep their own record, so an ID token used
// to sign in can still be exchanged once and the other way round; an
// expired record is pruned.
func testSubjectToken(t *testing.T, s store.Store) {
	ctx := t.Context()
	const iss = "https://idp.example"
	now := time.Now()
	exp := now.Add(time.Hour)
	if err := s.CheckSubjectToken(ctx, iss, "s1", now); err != nil {
		t.Fatalf("unused token: %v", err)
	}
	if err := s.UseToken(ctx, iss, "s1", exp, event("login")); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckSubjectToken(ctx, iss, "s1", now); err != nil {
		t.Fatalf("a sign-in spent the token for exchanges: %v", err)
	}
	if err := s.UseSubjectToken(ctx, iss, "s1", exp, event("exchange")); err != nil {
		t.Fatalf("first exchange: %v", err)
	}
	size := auditSize(t, s)
	if err := s.UseSubjectToken(ctx, iss, "s1", exp, event("again")); !errors.Is(err, store.ErrTokenUsed) {
		t.Fatalf("second exchange: err = %v, want ErrTokenUsed", err)
	}
	if err := s.CheckSubjectToken(ctx, iss, "s1", now); !errors.Is(err, store.ErrTokenUsed) {
		t.Fatalf("check after exchange: err = %v, want ErrTokenUsed", err)
	}
	if auditSize(t, s) != size {
		t.Fatal("a refused exchange or a check wrote an event")
	}
	if err := s.UseSubjectToken(ctx, "https://other", "s1", exp, event("exchange")); err != nil {
		t.Fatalf("the same id from another issuer: %v", err)
	}
	if err := s.UseSubjectToken(ctx, iss, "s2", exp); !errors.Is(err, store.ErrNoAuditEvent) {
		t.Fatalf("without an event: %v", err)
	}
	if err := s.UseSubjectToken(ctx, "", "s3", exp, event("x")); err == nil {
		t.Fatal("a token without an issuer was recorded")
	}
	// Past its expiry a record no longer counts, and the next use prunes it.
	old := now.Add(-time.Hour)
	if err := s.UseSubjectToken(ctx, iss, "s-old", old, event("x")); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckSubjectToken(ctx, iss, "s-old", now); err != nil {
		t.Fatalf("an expired record still counts: %v", err)
	}
	if err := s.UseSubjectToken(ctx, iss, "s-old", old, event("x")); err != nil {
		t.Fatalf("an expired record was not pruned: %v", err)
	}
}
