package server

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protojson"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
	"writ.dev/writ/delegation"
)

// TestDelegation is an agent acting for the CEO: it exchanges its own
// JWT-SVID and the CEO's for a delegation token bound to its certificate,
// and a resource server decides on the whole chain from the token and the
// agent's certificate. The token is useless to another agent, to another
// resource server, and for a person who shares no task with the agent.
func TestDelegation(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := testConfig(t)
	cfg.TokenEndpoint.Address = addr
	cfg.Defaults()
	srv := startServer(t, cfg)
	admin := adminConn(t, srv)
	research := "spiffe://" + testTD + "/agent/research-bot"
	openTask(t, writv1.NewTaskServiceClient(admin), "answer the CEO's question about payroll", []string{ceo, bot, research},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo, bot, research}})
	issuer := cfg.TokenEndpoint.Issuer
	hrService := "spiffe://" + testTD + "/svc/hr"

	agent := mintSVID(t, srv, bot)
	jwt := func(id string) string {
		if strings.Contains(id, "/person/") {
			return personJWT(t, srv, id, issuer)
		}
		tok, err := mintJWT(t, srv, &writv1.MintJWTSVIDRequest{SpiffeId: id, Audience: []string{issuer}})
		if err != nil {
			t.Fatal(err)
		}
		return tok.GetToken()
	}
	bundle := x509bundle.FromX509Authorities(srv.TrustDomain(), srv.x509.Bundle())
	exchangeToken := func(client *x509svid.SVID, subjectToken, subjectType string, audience string) (int, map[string]any) {
		t.Helper()
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(client, bundle, tlsconfig.AuthorizeID(srv.tlsID.ID()))}}
		form := url.Values{
			"grant_type":         {delegation.GrantTypeTokenExchange},
			"subject_token":      {subjectToken},
			"subject_token_type": {subjectType},
			"actor_token":        {jwt(client.ID.String())},
			"actor_token_type":   {delegation.TokenTypeJWT},
			"audience":           {audience},
		}
		resp, err := hc.PostForm("https://"+addr+"/token", form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	exchange := func(client *x509svid.SVID, subject string, audience string) (int, map[string]any) {
		t.Helper()
		return exchangeToken(client, jwt(subject), delegation.TokenTypeJWT, audience)
	}
	code, body := exchange(agent, ceo, hrService)
	if code != http.StatusOK {
		t.Fatalf("exchange: %d %v", code, body)
	}
	token, _ := body["access_token"].(string)
	if body["issued_token_type"] != delegation.TokenTypeURI || token == "" {
		t.Fatalf("exchange response: %v", body)
	}

	// The resource server asks with the agent's certificate and the token.
	checkAs := func(rsID string, requester *x509svid.SVID, tok string) (*writv1.CheckResponse, error) {
		rs := mintSVID(t, srv, rsID)
		cc, err := grpc.NewClient(srv.ListenAddr().String(), grpc.WithTransportCredentials(credentials.NewTLS(
			tlsconfig.MTLSClientConfig(rs, bundle, tlsconfig.AuthorizeID(srv.tlsID.ID())))))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		var der [][]byte
		for _, c := range requester.Certificates {
			der = append(der, c.Raw)
		}
		return writv1.NewDecisionServiceClient(cc).Check(t.Context(), &writv1.CheckRequest{Action: "read", Resource: "hr/salaries", X509Svid: der, DelegationToken: tok})
	}
	r, err := checkAs(hrService, agent, token)
	if err != nil {
		t.Fatal(err)
	}
	if !r.GetAllow() || strings.Join(r.GetChain(), " ") != bot+" "+ceo {
		t.Fatalf("the agent acting for the CEO through a delegation token: %v", r)
	}
	// The same over HTTP/JSON, for resource servers that do not speak gRPC.
	rsSVID := mintSVID(t, srv, hrService)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(rsSVID, bundle, tlsconfig.AuthorizeID(srv.tlsID.ID()))}}
	reqJSON, err := protojson.Marshal(&writv1.CheckRequest{Action: "read", Resource: "hr/salaries", X509Svid: [][]byte{agent.Certificates[0].Raw}, DelegationToken: token})
	if err != nil {
		t.Fatal(err)
	}
	hr, err := hc.Post("https://"+addr+"/v1/check", "application/json", bytes.NewReader(reqJSON))
	if err != nil {
		t.Fatal(err)
	}
	var viaHTTP writv1.CheckResponse
	raw, _ := io.ReadAll(hr.Body)
	hr.Body.Close()
	if err := protojson.Unmarshal(raw, &viaHTTP); err != nil || hr.StatusCode != http.StatusOK || !viaHTTP.GetAllow() {
		t.Fatalf("check over HTTP: %d %s %v", hr.StatusCode, raw, err)
	}

	// Another agent replaying the token is refused: it is bound to the first agent's certificate.
	thief := mintSVID(t, srv, "spiffe://"+testTD+"/agent/other-bot")
	_, err = checkAs(hrService, thief, token)
	wantCode(t, err, codes.PermissionDenied, "delegation_token")
	// The same agent's token is no good at another resource server.
	_, err = checkAs("spiffe://"+testTD+"/svc/other", agent, token)
	wantCode(t, err, codes.PermissionDenied, "audience")
	// Expired or garbage tokens are refused with the reason.
	_, err = checkAs(hrService, agent, "not-a-token")
	wantCode(t, err, codes.PermissionDenied, "delegation_token")

	// The agent passes the work on to another agent of the same task: the
	// chain grows, every hop checked at the endpoint.
	code, body = exchange(agent, ceo, issuer)
	if code != http.StatusOK {
		t.Fatalf("exchange for the endpoint: %d %v", code, body)
	}
	forward, _ := body["access_token"].(string)
	second := mintSVID(t, srv, research)
	code, body = exchangeToken(second, forward, delegation.TokenTypeURI, hrService)
	if code != http.StatusOK {
		t.Fatalf("re-delegation: %d %v", code, body)
	}
	r, err = checkAs(hrService, second, body["access_token"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if !r.GetAllow() || strings.Join(r.GetChain(), " ") != research+" "+bot+" "+ceo {
		t.Fatalf("the second agent for the first for the CEO: %v", r)
	}
	// An agent outside the task cannot take the work on.
	code, body = exchangeToken(thief, forward, delegation.TokenTypeURI, hrService)
	if code != http.StatusBadRequest || body["error"] != "invalid_target" {
		t.Fatalf("re-delegation to an outsider: %d %v", code, body)
	}

	// The intern shares no task with the agent: no token.
	code, body = exchange(agent, intern, hrService)
	if code != http.StatusBadRequest || body["error"] != "invalid_target" {
		t.Fatalf("exchange for the intern: %d %v", code, body)
	}
}

// exchangeAt posts one token exchange to the endpoint at addr as client.
func exchangeAt(t *testing.T, srv *Server, addr string, client *x509svid.SVID, form url.Values) (int, map[string]any) {
	t.Helper()
	bundle := x509bundle.FromX509Authorities(srv.TrustDomain(), srv.x509.Bundle())
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(client, bundle, tlsconfig.AuthorizeID(srv.tlsID.ID()))}}
	resp, err := hc.PostForm("https://"+addr+"/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

func exchangeForm(actorToken, subjectToken, subjectType, audience string) url.Values {
	return url.Values{
		"grant_type":         {delegation.GrantTypeTokenExchange},
		"subject_token":      {subjectToken},
		"subject_token_type": {subjectType},
		"actor_token":        {actorToken},
		"actor_token_type":   {delegation.TokenTypeJWT},
		"audience":           {audience},
	}
}

func startTokenEndpoint(t *testing.T, opts ...func(*Config)) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := testConfig(t)
	cfg.TokenEndpoint.Address = addr
	for _, o := range opts {
		o(&cfg)
	}
	cfg.Defaults()
	return startServer(t, cfg), addr
}

// TestDelegationRefusedUnderLocks: no delegation token is issued while a
// lock names the agent, the person or the task, and a re-exchange is
// refused while a lock names any actor already in the chain. Each refusal
// is an audit event naming the agent that asked and where from.
func TestDelegationRefusedUnderLocks(t *testing.T) {
	srv, addr := startTokenEndpoint(t)
	admin := adminConn(t, srv)
	research := "spiffe://" + testTD + "/agent/research-bot"
	hrService := "spiffe://" + testTD + "/svc/hr"
	payroll := openTask(t, writv1.NewTaskServiceClient(admin), "answer the CEO's question about payroll", []string{ceo, bot, research},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo, bot, research}})
	issuer := srv.cfg.TokenEndpoint.Issuer
	agent, second := mintSVID(t, srv, bot), mintSVID(t, srv, research)
	// Tokens are fetched before any lock: a lock must stop the exchange
	// itself, not only the minting of the tokens it takes.
	agentJWT := func() string {
		tok, err := mintJWT(t, srv, &writv1.MintJWTSVIDRequest{SpiffeId: bot, Audience: []string{issuer}})
		if err != nil {
			t.Fatal(err)
		}
		return tok.GetToken()
	}
	secondJWT, err := mintJWT(t, srv, &writv1.MintJWTSVIDRequest{SpiffeId: research, Audience: []string{issuer}})
	if err != nil {
		t.Fatal(err)
	}
	ceoJWT := personJWT(t, srv, ceo, issuer)
	actorJWT := agentJWT()
	code, body := exchangeAt(t, srv, addr, agent, exchangeForm(actorJWT, ceoJWT, delegation.TokenTypeJWT, issuer))
	if code != http.StatusOK {
		t.Fatalf("exchange before any lock: %d %v", code, body)
	}
	forward, _ := body["access_token"].(string)

	lc := writv1.NewLockServiceClient(admin)
	for _, tc := range []struct{ name, kind, value string }{
		{"the person", "spiffe-id", ceo},
		{"the agent", "spiffe-id", bot},
		{"the agent by prefix", "id-prefix", "spiffe://" + testTD + "/agent"},
		{"the task", "task", payroll.GetId()},
	} {
		l := createLock(t, admin, tc.kind, tc.value, "INC-77 "+tc.name, "")
		code, body := exchangeAt(t, srv, addr, agent, exchangeForm(actorJWT, ceoJWT, delegation.TokenTypeJWT, hrService))
		desc, _ := body["error_description"].(string)
		if code != http.StatusBadRequest || body["error"] != delegation.CodeInvalidGrant || !strings.Contains(desc, l.GetId()) || !strings.Contains(desc, "INC-77") {
			t.Errorf("exchange while a lock names %s: %d %v", tc.name, code, body)
		}
		if _, err := lc.DeleteLock(t.Context(), &writv1.DeleteLockRequest{Id: l.GetId()}); err != nil {
			t.Fatal(err)
		}
	}

	// Re-exchange: the first agent, already in the chain, is locked.
	l := createLock(t, admin, "spiffe-id", bot, "INC-78 first agent", "")
	code, body = exchangeAt(t, srv, addr, second, exchangeForm(secondJWT.GetToken(), forward, delegation.TokenTypeURI, hrService))
	if desc, _ := body["error_description"].(string); code != http.StatusBadRequest || !strings.Contains(desc, bot) || !strings.Contains(desc, l.GetId()) {
		t.Fatalf("re-exchange while an earlier actor is locked: %d %v", code, body)
	}
	if _, err := lc.DeleteLock(t.Context(), &writv1.DeleteLockRequest{Id: l.GetId()}); err != nil {
		t.Fatal(err)
	}
	code, body = exchangeAt(t, srv, addr, second, exchangeForm(secondJWT.GetToken(), forward, delegation.TokenTypeURI, hrService))
	if code != http.StatusOK {
		t.Fatalf("re-exchange once the lock is gone: %d %v", code, body)
	}

	// A task the caller names is repeated in the error only cut short.
	form := exchangeForm(agentJWT(), ceoJWT, delegation.TokenTypeJWT, hrService)
	long := strings.Repeat("T", 1000)
	form.Set("scope", "task:"+long)
	code, body = exchangeAt(t, srv, addr, agent, form)
	if desc, _ := body["error_description"].(string); code != http.StatusBadRequest || len(desc) > 400 || strings.Contains(desc, long) || !strings.Contains(desc, "(1000 bytes)") {
		t.Fatalf("a long task name in scope: %d %d bytes %q", code, len(desc), desc)
	}

	// Every refusal above names the agent that asked and its address.
	var refused []audit.Event
	for _, ev := range readEvents(t, writv1.NewAuditServiceClient(admin)) {
		if ev.Type == audit.EventDelegationRefused {
			refused = append(refused, ev)
		}
	}
	if len(refused) != 6 {
		t.Fatalf("%d delegation.refused events, want 6", len(refused))
	}
	for _, ev := range refused {
		var d struct{ Caller, Source, Reason string }
		if err := json.Unmarshal(ev.Details, &d); err != nil {
			t.Fatal(err)
		}
		if (d.Caller != bot && d.Caller != research) || ev.Actor != d.Caller || ev.Subject != d.Caller || !strings.HasPrefix(d.Source, "127.0.0.1:") || d.Reason == "" {
			t.Errorf("refusal event does not name the caller and source: actor %q subject %q details %s", ev.Actor, ev.Subject, ev.Details)
		}
	}
}
