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
