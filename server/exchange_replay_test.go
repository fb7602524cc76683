package server

import (
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/attest/node/oidc"
	"writ.dev/writ/audit"
	"writ.dev/writ/delegation"
	"writ.dev/writ/person/login/logintest"
)

// TestSubjectTokenExchangedOnce: every kind of subject token (an ID token,
// a person's JWT-SVID, a delegation token passed on) is exchanged once,
// whichever of two servers sharing one SQLite file is asked; a refused
// exchange does not spend the token.
func TestSubjectTokenExchangedOnce(t *testing.T) {
	testSubjectTokenExchangedOnce(t, func(a, b *Config) { b.Store.DSN = a.Store.DSN })
}

// TestSubjectTokenExchangedOnceOnPostgres is the same with two servers
// sharing PostgreSQL.
func TestSubjectTokenExchangedOnceOnPostgres(t *testing.T) {
	dsn := freshPostgresDB(t)
	testSubjectTokenExchangedOnce(t, func(a, b *Config) {
		for _, c := range []*Config{a, b} {
			c.Store.Engine, c.Store.DSN = "postgres", dsn
		}
	})
}

func testSubjectTokenExchangedOnce(t *testing.T, share func(a, b *Config)) {
	idp := logintest.New(t)
	jwks := filepath.Join(t.TempDir(), "idp-jwks.json")
	idp.WriteJWKS(t, jwks)
	cfgA, cfgB := testConfig(t), testConfig(t)
	share(&cfgA, &cfgB)
	addrs := map[*Config]string{}
	for _, c := range []*Config{&cfgA, &cfgB} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs[c] = ln.Addr().String()
		ln.Close()
		c.TokenEndpoint.Address = addrs[c]
		// One issuer for the trust domain, as every server of it must have.
		c.TokenEndpoint.Issuer = "https://writ.test/token"
		c.People = PeopleConfig{Issuer: idp.URL, ClientID: idp.ClientID(), JWKSFile: jwks, Allow: []oidc.Rule{{"email_domain": "example.com"}}}
		c.Defaults()
	}
	a := startServer(t, cfgA)
	b := startServer(t, cfgB)
	addrA, addrB := addrs[&cfgA], addrs[&cfgB]
	research := "spiffe://" + testTD + "/agent/research-bot"
	openTask(t, writv1.NewTaskServiceClient(adminConn(t, a)), "answer the CEO's question about payroll", []string{ceo, bot, research},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo, bot, research}})
	issuer := cfgA.TokenEndpoint.Issuer
	hrService := "spiffe://" + testTD + "/svc/hr"
	agent := mintSVID(t, a, bot)
	actorToken := func(id string) string {
		tok, err := mintJWT(t, a, &writv1.MintJWTSVIDRequest{SpiffeId: id, Audience: []string{issuer}})
		if err != nil {
			t.Fatal(err)
		}
		return tok.GetToken()
	}
	exchange := func(srv *Server, addr, subject, subjectType, audience string) (int, map[string]any) {
		t.Helper()
		return exchangeAt(t, srv, addr, agent, exchangeForm(actorToken(bot), subject, subjectType, audience))
	}
	wantSpent := func(what string, code int, body map[string]any) {
		t.Helper()
		desc, _ := body["error_description"].(string)
		if code != http.StatusBadRequest || body["error"] != delegation.CodeInvalidGrant || !strings.Contains(desc, "already exchanged") {
			t.Fatalf("%s: %d %v, want invalid_grant saying the token was already exchanged", what, code, body)
		}
	}

	idToken := idp.IDToken(t, "ceo@example.com")
	// Refused for another reason first: the token is not spent.
	form := exchangeForm(actorToken(bot), idToken, delegation.TokenTypeIDToken, hrService)
	form.Set("scope", "task:no-such-task")
	if code, body := exchangeAt(t, a, addrA, agent, form); code != http.StatusBadRequest || body["error"] != delegation.CodeInvalidTarget {
		t.Fatalf("exchange under a task that does not exist: %d %v", code, body)
	}
	if code, body := exchange(a, addrA, idToken, delegation.TokenTypeIDToken, hrService); code != http.StatusOK {
		t.Fatalf("first exchange of the ID token: %d %v", code, body)
	}
	issued := len(eventsOf(t, a, audit.EventDelegationIssue))
	code, body := exchange(a, addrA, idToken, delegation.TokenTypeIDToken, hrService)
	wantSpent("the ID token again on the same server", code, body)
	code, body = exchange(b, addrB, idToken, delegation.TokenTypeIDToken, hrService)
	wantSpent("the ID token again on the other server", code, body)
	if n := len(eventsOf(t, a, audit.EventDelegationIssue)); n != issued {
		t.Fatalf("%d delegation.issue events after the replays, want %d", n, issued)
	}
	if evs := eventsOf(t, b, audit.EventDelegationRefused); len(evs) == 0 || !strings.Contains(string(evs[len(evs)-1].Details), "already exchanged") {
		t.Fatalf("the replay was not audited as a refusal: %v", evs)
	}
	// A new ID token of the same person is a new exchange.
	if code, body := exchange(b, addrB, idp.IDToken(t, "ceo@example.com"), delegation.TokenTypeIDToken, hrService); code != http.StatusOK {
		t.Fatalf("a fresh ID token: %d %v", code, body)
	}

	// A person's JWT-SVID has no jti: it is known by what it signs.
	personTok := personJWT(t, a, ceo, issuer)
	if code, body := exchange(b, addrB, personTok, delegation.TokenTypeJWT, issuer); code != http.StatusOK {
		t.Fatalf("first exchange of the JWT-SVID: %d %v", code, body)
	}
	code, body = exchange(a, addrA, personTok, delegation.TokenTypeJWT, hrService)
	wantSpent("the JWT-SVID again", code, body)

	// A delegation token passed on is taken on once.
	code, body = exchange(a, addrA, personJWT(t, a, ceo, issuer), delegation.TokenTypeJWT, issuer)
	if code != http.StatusOK {
		t.Fatalf("exchange for the endpoint: %d %v", code, body)
	}
	forward, _ := body["access_token"].(string)
	second := mintSVID(t, a, research)
	if code, body := exchangeAt(t, a, addrA, second, exchangeForm(actorToken(research), forward, delegation.TokenTypeURI, hrService)); code != http.StatusOK {
		t.Fatalf("re-delegation: %d %v", code, body)
	}
	code, body = exchangeAt(t, b, addrB, second, exchangeForm(actorToken(research), forward, delegation.TokenTypeURI, hrService))
	wantSpent("the delegation token again", code, body)
}

// TestSubjectTokenID: a token is known by its jti; without a usable one,
// by the digest of what it signs, which its signature cannot vary.
func TestSubjectTokenID(t *testing.T) {
	const signed = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0"
	byDigest := jwtTokenID(signed+".c2lnLTE", map[string]any{"sub": "x"})
	if !strings.HasPrefix(byDigest, "sha256:") || byDigest != jwtTokenID(signed+".c2lnLTI", map[string]any{"sub": "x"}) {
		t.Fatalf("tokens differing only in signature are %q and %q: want one digest of what they sign",
			byDigest, jwtTokenID(signed+".c2lnLTI", nil))
	}
	if got := jwtTokenID(signed+".c2ln", map[string]any{"jti": "abc"}); got != "abc" {
		t.Fatalf("a token with jti abc is known as %q", got)
	}
	for name, jti := range map[string]any{"empty": "", "long": strings.Repeat("j", maxTokenID+1), "control byte": "a\nb", "not a string": 7.0} {
		if got := jwtTokenID(signed+".c2ln", map[string]any{"jti": jti}); got != byDigest {
			t.Errorf("%s jti: known as %q, want the digest %q", name, got, byDigest)
		}
	}
}
