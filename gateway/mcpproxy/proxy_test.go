package mcpproxy

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestAllowedCallIsForwardedWithTheCallersEvidence(t *testing.T) {
	e := newEnv(t, nil)
	cs := e.mustConnect("github", testToken)
	res, err := call(t, cs, "create_issue", map[string]any{"repo": "acme/dev", "title": "t"})
	if err != nil || res.IsError {
		t.Fatalf("allowed call failed: %v %q", err, text(res))
	}
	if got := text(res); got != "created in acme/dev" {
		t.Fatalf("upstream answer = %q", got)
	}
	ds := e.decider.decisions()
	last := ds[len(ds)-1]
	if last.req.Action != "call" || last.req.Resource != "mcp/github/tool/create_issue" {
		t.Fatalf("decided %+v", last.req)
	}
	if last.req.Arguments["repo"] != "acme/dev" || last.req.Arguments["title"] != "t" {
		t.Fatalf("arguments in the decision = %v", last.req.Arguments)
	}
	if last.caller.DelegationToken != testToken {
		t.Fatalf("decision got token %q, want the bearer token", last.caller.DelegationToken)
	}
	if got := last.caller.Certificates[0].URIs[0].String(); got != "spiffe://example.org/agent/a" {
		t.Fatalf("decision got SVID %s", got)
	}
	if last.caller.SourceAddress == "" {
		t.Fatal("decision got no source address")
	}
}

func TestDeniedCallCarriesTheReasonAndIsNotForwarded(t *testing.T) {
	e := newEnv(t, nil)
	cs := e.mustConnect("github", testToken)
	res, err := call(t, cs, "delete_repo", nil)
	if err != nil {
		t.Fatalf("a denial should be a tool error, got protocol error %v", err)
	}
	if !res.IsError || !strings.Contains(text(res), "no task that allows call on mcp/github/tool/delete_repo") {
		t.Fatalf("denial = %v %q", res.IsError, text(res))
	}
	if n := e.upstream.calls.Load(); n != 0 {
		t.Fatalf("upstream ran %d calls for a denied one", n)
	}
}

func TestArgumentGuardrailDeniesOneRepository(t *testing.T) {
	e := newEnv(t, nil)
	cs := e.mustConnect("github", testToken)
	res, err := call(t, cs, "create_issue", map[string]any{"repo": "acme/prod"})
	if err != nil || !res.IsError || !strings.Contains(text(res), `guardrail no-prod forbids call with repo "acme/prod"`) {
		t.Fatalf("guardrail: err=%v res=%q", err, text(res))
	}
	if n := e.upstream.calls.Load(); n != 0 {
		t.Fatalf("upstream ran %d calls", n)
	}
	res, err = call(t, cs, "create_issue", map[string]any{"repo": "acme/dev"})
	if err != nil || res.IsError {
		t.Fatalf("another repository should pass: %v %q", err, text(res))
	}
}

func TestDeciderErrorIsADenialSayingSo(t *testing.T) {
	e := newEnv(t, nil)
	cs := e.mustConnect("github", testToken)
	res, err := call(t, cs, "broken", nil)
	if err != nil || !res.IsError || !strings.Contains(text(res), "writ could not decide") || !strings.Contains(text(res), "writ server unreachable") {
		t.Fatalf("decider error: err=%v res=%q", err, text(res))
	}
	if n := e.upstream.calls.Load(); n != 0 {
		t.Fatalf("upstream ran %d calls", n)
	}
}

// A token the server refuses is the caller's to fix: the denial says writ
// refused it and why, not that writ could not decide.
func TestRefusedEvidenceIsADenialWithTheReason(t *testing.T) {
	e := newEnv(t, nil)
	cs := e.mustConnect("github", testToken)
	res, err := call(t, cs, "misdirected", nil)
	if err != nil || !res.IsError || !strings.Contains(text(res), "writ refused the call of misdirected") || !strings.Contains(text(res), "not for audience") {
		t.Fatalf("refused evidence: err=%v res=%q", err, text(res))
	}
	if n := e.upstream.calls.Load(); n != 0 {
		t.Fatalf("upstream ran %d calls", n)
	}
}

func TestListShowsOnlyToolsTheChainMayCall(t *testing.T) {
	e := newEnv(t, nil)
	cs := e.mustConnect("github", testToken)
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	if want := []string{"create_issue", "read_file", "slow"}; !slices.Equal(names, want) {
		t.Fatalf("listed %v, want %v", names, want)
	}
	for _, tool := range res.Tools {
		if tool.Name == "create_issue" && tool.Description != "opens an issue" {
			t.Fatalf("tool description lost: %q", tool.Description)
		}
	}
}

func TestCallerWithoutCertificateIsRefused(t *testing.T) {
	e := newEnv(t, nil)
	if _, err := e.connectAs(nil, "github", testToken); err == nil {
		t.Fatal("a caller without an SVID connected")
	}
	resp, err := e.pki.httpClient(nil, testToken).Post(e.proxy.Endpoint("github"), "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "X.509-SVID") {
		t.Fatalf("no certificate: %d %q", resp.StatusCode, body)
	}
	if got := resp.Header.Get("WWW-Authenticate"); !strings.Contains(got, `resource_metadata="https://`) || !strings.Contains(got, "/.well-known/oauth-protected-resource/mcp/github") {
		t.Fatalf("WWW-Authenticate = %q", got)
	}
	if len(e.decider.decisions()) != 0 {
		t.Fatal("a decision was asked for a caller without a certificate")
	}
}

func TestMalformedBearerIsRefused(t *testing.T) {
	e := newEnv(t, nil)
	for _, h := range []string{"Bearer not-a-jwt", "Basic dXNlcjpwdw==", "Bearer a.b", "Bearer a.b.c.d", "Bearer a.b!.c", "Bearer " + strings.Repeat("a", maxTokenBytes) + ".b.c"} {
		req, _ := http.NewRequest(http.MethodPost, e.proxy.Endpoint("github"), strings.NewReader(`{}`))
		req.Header.Set("Authorization", h)
		req.Header.Set("Content-Type", "application/json")
		resp, err := e.pki.httpClient(&e.agent, "").Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_request"`) {
			t.Errorf("%.30q: %d %q", h, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		if len(body) > 300 || strings.Contains(string(body), "aaaaaaaaaa") {
			t.Errorf("error echoes the token: %q", body)
		}
	}
	if len(e.decider.decisions()) != 0 {
		t.Fatal("a malformed token reached a decision")
	}
}

func TestMissingBearerActsForItselfUnlessDelegationIsRequired(t *testing.T) {
	e := newEnv(t, nil)
	cs := e.mustConnect("github", "")
	res, err := call(t, cs, "read_file", nil)
	if err != nil || res.IsError {
		t.Fatalf("call without token: %v %q", err, text(res))
	}
	ds := e.decider.decisions()
	if tok := ds[len(ds)-1].caller.DelegationToken; tok != "" {
		t.Fatalf("token %q without a bearer header", tok)
	}

	strict := newEnv(t, func(c *Config) { c.RequireDelegation = true })
	if _, err := strict.connect("github", ""); err == nil {
		t.Fatal("connected without a delegation token where one is required")
	}
	resp, err := strict.pki.httpClient(&strict.agent, "").Post(strict.proxy.Endpoint("github"), "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "writ token exchange") || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "resource_metadata=") {
		t.Fatalf("missing token: %d %q %q", resp.StatusCode, body, resp.Header.Get("WWW-Authenticate"))
	}
	if _, err := strict.connect("github", testToken); err != nil {
		t.Fatalf("with a token: %v", err)
	}
}

func TestBearerTokenIsNeverForwardedUpstream(t *testing.T) {
	e := newEnv(t, nil)
	cs := e.mustConnect("github", testToken)
	if _, err := cs.ListTools(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if res, err := call(t, cs, "create_issue", map[string]any{"repo": "acme/dev"}); err != nil || res.IsError {
		t.Fatalf("call: %v %q", err, text(res))
	}
	if e.upReqs.Load() == 0 {
		t.Fatal("the upstream saw no request; the test proves nothing")
	}
	if n := e.upAuth.Load(); n != 0 {
		t.Fatalf("%d upstream requests carried an Authorization header", n)
	}
}

func TestSessionIsCutWhenItsDecisionStopsHolding(t *testing.T) {
	e := newEnv(t, nil)
	cs := e.mustConnect("github", testToken)
	if res, err := call(t, cs, "read_file", nil); err != nil || res.IsError {
		t.Fatalf("call: %v %q", err, text(res))
	}
	if e.holder.holds() != 1 {
		t.Fatalf("holds after one allowed call = %d, want 1", e.holder.holds())
	}
	e.holder.revokeAll(errors.New("lock on spiffe://example.org/person/alice"))
	waitFor(t, "the session to be closed", func() bool { return e.proxy.liveSessions() == 0 })

	_, err := call(t, cs, "read_file", nil)
	if err == nil {
		t.Fatal("a call on a cut session succeeded")
	}
	if !strings.Contains(err.Error(), "writ cut this session") || !strings.Contains(err.Error(), "lock on spiffe://example.org/person/alice") {
		t.Fatalf("cut session error does not say why: %v", err)
	}
	if got := e.holder.released.Load(); got != 1 {
		t.Fatalf("released %d holds, want 1", got)
	}

	// Another SVID that knows the session's ID learns nothing of why.
	other := e.pki.leaf(t, "spiffe://example.org/agent/b", nil)
	req, _ := http.NewRequest(http.MethodPost, e.proxy.Endpoint("github"), strings.NewReader(`{"jsonrpc":"2.0","id":9,"method":"tools/list"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Session-Id", cs.ID())
	resp, err := e.pki.httpClient(&other, testToken).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || strings.Contains(string(body), "alice") {
		t.Fatalf("another SVID on the cut session: %d %q", resp.StatusCode, body)
	}
}

func TestCutEndsACallInFlight(t *testing.T) {
	e := newEnv(t, nil)
	cs := e.mustConnect("github", testToken)
	done := make(chan error, 1)
	go func() {
		res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "slow"})
		if err == nil && !res.IsError {
			err = errors.New("slow call succeeded")
		} else if err == nil {
			err = errors.New(text(res))
		}
		done <- err
	}()
	<-e.upstream.slowStarted
	e.holder.revokeAll(errors.New("task closed"))
	// The upstream sees the call cancelled: the gateway does not let a
	// revoked call run on.
	<-e.upstream.slowEnded
	if err := <-done; err == nil {
		t.Fatal("in-flight call on a cut session did not fail")
	}
}

func TestRefreshedTokenReplacesTheHoldWithoutCutting(t *testing.T) {
	e := newEnv(t, nil)
	cs := e.mustConnect("github", testToken)
	if res, err := call(t, cs, "read_file", nil); err != nil || res.IsError {
		t.Fatalf("call: %v %q", err, text(res))
	}
	// Same tool, same evidence: the hold is kept, not renewed.
	if res, err := call(t, cs, "read_file", nil); err != nil || res.IsError {
		t.Fatalf("call: %v %q", err, text(res))
	}
	if e.holder.holds() != 1 {
		t.Fatalf("holds = %d, want 1", e.holder.holds())
	}

	// A second session of the same agent with a new token: its hold must
	// not be confused with the first session's.
	cs2 := e.mustConnect("github", "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSIsIm4iOjJ9.c2ln")
	if res, err := call(t, cs2, "read_file", nil); err != nil || res.IsError {
		t.Fatalf("call: %v %q", err, text(res))
	}
	if e.holder.holds() != 2 || e.holder.released.Load() != 0 {
		t.Fatalf("holds = %d released = %d, want 2 and 0", e.holder.holds(), e.holder.released.Load())
	}
	cs2.Close()
	waitFor(t, "the closed session's hold to be released", func() bool { return e.holder.released.Load() == 1 })
	if res, err := call(t, cs, "read_file", nil); err != nil || res.IsError {
		t.Fatalf("first session hurt by the second closing: %v %q", err, text(res))
	}
}

func TestRefreshedTokenReplacesTheHoldInTheSameSession(t *testing.T) {
	e := newEnv(t, nil)
	hc := e.pki.httpClient(&e.agent, testToken)
	cs, err := e.connectClient(hc, "github")
	if err != nil {
		t.Fatal(err)
	}
	if res, err := call(t, cs, "read_file", nil); err != nil || res.IsError {
		t.Fatalf("call: %v %q", err, text(res))
	}
	fresh := "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSIsIm4iOjN9.c2ln"
	hc.Transport.(*bearer).token.Store(&fresh)
	if res, err := call(t, cs, "read_file", nil); err != nil || res.IsError {
		t.Fatalf("call with the refreshed token: %v %q", err, text(res))
	}
	// The old token's hold is released by the gateway, which must not
	// read its own release as a revocation.
	if e.holder.holds() != 2 || e.holder.released.Load() != 1 {
		t.Fatalf("holds = %d released = %d, want 2 and 1", e.holder.holds(), e.holder.released.Load())
	}
	if res, err := call(t, cs, "read_file", nil); err != nil || res.IsError {
		t.Fatalf("session cut by the gateway's own release: %v %q", err, text(res))
	}
	if e.proxy.liveSessions() != 1 {
		t.Fatal("session gone after a token refresh")
	}
}

func TestSessionOfOneAgentIsRefusedToAnother(t *testing.T) {
	e := newEnv(t, nil)
	cs := e.mustConnect("github", testToken)
	other := e.pki.leaf(t, "spiffe://example.org/agent/b", nil)
	req, _ := http.NewRequest(http.MethodPost, e.proxy.Endpoint("github"), strings.NewReader(`{"jsonrpc":"2.0","id":9,"method":"tools/list"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Session-Id", cs.ID())
	resp, err := e.pki.httpClient(&other, testToken).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("another SVID using the session: %d, want 403", resp.StatusCode)
	}
}

func TestStdioUpstream(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) {
		c.Upstreams = append(c.Upstreams, Upstream{Name: "local", Command: exe, Env: map[string]string{stdioServerEnv: "1"}})
	})
	cs := e.mustConnect("local", testToken)
	res, err := call(t, cs, "create_issue", map[string]any{"repo": "acme/dev"})
	if err != nil || res.IsError || text(res) != "created in acme/dev" {
		t.Fatalf("stdio call: %v %q", err, text(res))
	}
	list, err := cs.ListTools(context.Background(), nil)
	if err != nil || len(list.Tools) != 1 || list.Tools[0].Name != "create_issue" {
		t.Fatalf("stdio list: %v %v", err, list)
	}
	res, err = call(t, cs, "read_file", nil)
	if err != nil || !res.IsError || !strings.Contains(text(res), "mcp/local/tool/read_file") {
		t.Fatalf("stdio denial: %v %q", err, text(res))
	}
}

func TestProtectedResourceMetadata(t *testing.T) {
	e := newEnv(t, nil)
	base := strings.TrimSuffix(e.proxy.cfg.PublicURL, "/mcp")
	for path, resource := range map[string]string{
		"/.well-known/oauth-protected-resource/mcp/github": e.proxy.Endpoint("github"),
		"/.well-known/oauth-protected-resource":            e.proxy.cfg.PublicURL,
	} {
		resp, err := e.pki.httpClient(nil, "").Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		var m struct {
			Resource             string   `json:"resource"`
			AuthorizationServers []string `json:"authorization_servers"`
			BearerMethods        []string `json:"bearer_methods_supported"`
		}
		err = json.NewDecoder(resp.Body).Decode(&m)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %d %v", path, resp.StatusCode, err)
		}
		if m.Resource != resource || !slices.Equal(m.AuthorizationServers, []string{"https://writ.example.org/token"}) || !slices.Equal(m.BearerMethods, []string{"header"}) {
			t.Fatalf("%s: %+v", path, m)
		}
	}
}

func TestSessionLimit(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Limits.MaxSessions = 1 })
	e.mustConnect("github", testToken)
	if _, err := e.connect("github", testToken); err == nil {
		t.Fatal("a second session opened past the limit")
	}
	req, _ := http.NewRequest(http.MethodPost, e.proxy.Endpoint("github"), strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.pki.httpClient(&e.agent, testToken).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "maximum of 1 MCP sessions") {
		t.Fatalf("past the limit: %d %q", resp.StatusCode, body)
	}
}

func TestBadArgumentsAreRefusedBeforeADecision(t *testing.T) {
	for _, raw := range []string{`[1]`, `"x"`, `{"a":1} {}`, `{`} {
		if _, err := arguments(json.RawMessage(raw)); err == nil {
			t.Errorf("arguments(%s) accepted", raw)
		}
	}
	args, err := arguments(json.RawMessage(`{"n": 12345678901234567890}`))
	if err != nil || args["n"].(json.Number).String() != "12345678901234567890" {
		t.Fatalf("large number: %v %v", args, err)
	}
}

// A key given twice is decided on one value and could be read as the other
// by the upstream's parser: the guardrail would check "acme/dev" while the
// server acts on "acme/prod".
func TestDuplicateArgumentKeysAreRefused(t *testing.T) {
	for _, raw := range []string{`{"repo":"acme/prod","repo":"acme/dev"}`, `{"a":{"repo":"x","repo":"y"}}`, `{"a":[{"k":1,"k":2}]}`} {
		if args, err := arguments(json.RawMessage(raw)); err == nil || !strings.Contains(err.Error(), "more than once") {
			t.Errorf("arguments(%s) = %v, %v; want a duplicate-key error", raw, args, err)
		}
	}
	e := newEnv(t, nil)
	cs := e.mustConnect("github", testToken)
	_, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "create_issue", Arguments: json.RawMessage(`{"repo":"acme/prod","repo":"acme/dev"}`)})
	if err == nil || !strings.Contains(err.Error(), "more than once") {
		t.Fatalf("duplicate key call: %v", err)
	}
	if n := e.upstream.calls.Load(); n != 0 {
		t.Fatalf("upstream ran %d calls", n)
	}
}

// A session the client closes is not a cut: its holds derive from the
// session's context, and their ending must not be read as a revocation.
func TestClosedSessionIsNotRecordedAsCut(t *testing.T) {
	e := newEnv(t, nil)
	cs := e.mustConnect("github", testToken)
	if res, err := call(t, cs, "read_file", nil); err != nil || res.IsError {
		t.Fatalf("call: %v %q", err, text(res))
	}
	id := cs.ID()
	cs.Close()
	waitFor(t, "the hold to be released", func() bool { return e.holder.released.Load() == 1 })
	waitFor(t, "the session to end", func() bool { return e.proxy.liveSessions() == 0 })
	if reason, cut := e.proxy.cuts.reason(id, "spiffe://example.org/agent/a"); cut {
		t.Fatalf("a closed session was recorded as cut: %s", reason)
	}
}

func TestCallRevokedBetweenDecisionAndHoldIsNotMade(t *testing.T) {
	// The cut waits until the call is answered, so the call itself must
	// see that its hold is already over.
	gate := &gateHandler{msg: "cut MCP session", gate: make(chan struct{})}
	e := newEnv(t, nil, func(o *Options) { o.Logger = slog.New(gate) })
	cs := e.mustConnect("github", testToken)
	e.holder.revoked.Store(true)
	res, err := call(t, cs, "read_file", nil)
	close(gate.gate)
	if err != nil || !res.IsError || !strings.Contains(text(res), "stopped holding") {
		t.Fatalf("call with a revoked hold: %v %q", err, text(res))
	}
	if n := e.upstream.calls.Load(); n != 0 {
		t.Fatalf("upstream ran %d calls", n)
	}
	waitFor(t, "the session to be cut", func() bool { return e.proxy.liveSessions() == 0 })
}

func TestUnavailableUpstreamIsAnErrorNotADecision(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String() + "/mcp"
	l.Close()
	e := newEnv(t, func(c *Config) {
		c.Upstreams = append(c.Upstreams, Upstream{Name: "down", URL: dead})
		c.Limits.CallTimeout = 5 * time.Second
	})
	e.decider.allow[Resource("down", "read_file")] = true
	cs := e.mustConnect("down", testToken)
	if _, err := cs.ListTools(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "MCP server down is unavailable") {
		t.Fatalf("list with the upstream down: %v", err)
	}
	if _, err := call(t, cs, "read_file", nil); err == nil || !strings.Contains(err.Error(), "MCP server down") {
		t.Fatalf("call with the upstream down: %v", err)
	}
}
