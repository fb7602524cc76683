package e2e

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"writ.dev/writ/gateway"
	"writ.dev/writ/gateway/mcpproxy"
)

// TestMCPUpstreamOverMTLS: `writ gateway` reaches an https MCP upstream
// with gateway.UpstreamHTTPClient: the upstream, itself a workload of the
// trust domain, requires the gateway's SVID and gets it; an upstream whose
// certificate is neither an SVID of the bundle nor valid for its host is
// never sent the call.
func TestMCPUpstreamOverMTLS(t *testing.T) {
	e := startEnv(t, nil)
	calls := &callLog{}
	handler := mcpHandler(calls)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tools := e.mint(t, "spiffe://"+td+"/mcp/tools")
	hs := &http.Server{Handler: handler, TLSConfig: tlsconfig.MTLSServerConfig(tools, e.bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromString(gatewayID)))}
	go hs.ServeTLS(ln, "", "")
	t.Cleanup(func() { hs.Close() })
	impostor := httptest.NewUnstartedServer(handler)
	impostor.Config.ErrorLog = log.New(io.Discard, "", 0)
	impostor.StartTLS()
	t.Cleanup(impostor.Close)

	const agentID = "spiffe://" + td + "/agent/triage-bot"
	agent := e.mint(t, agentID)
	e.openTask(t, []string{agentID}, "call", mcpproxy.Resource("github", "create_issue"), mcpproxy.Resource("fake", "create_issue"))

	start := func(name, url string) string {
		t.Helper()
		pl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p, err := mcpproxy.New(mcpproxy.Config{
			PublicURL: "https://" + pl.Addr().String() + "/mcp", TokenEndpoint: "https://" + e.tokenAddr + "/token",
			Upstreams: []mcpproxy.Upstream{{Name: name, URL: url}},
		}, mcpproxy.Options{Decider: e.core, Holder: e.core, UpstreamClient: gateway.UpstreamHTTPClient(e.gw), Logger: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		e.serveTLS(t, &http.Server{Handler: p}, pl)
		return p.Endpoint(name)
	}
	s := e.connect(t, start("github", "https://"+ln.Addr().String()+"/mcp"), agent, "")
	r, err := call(s, "create_issue", "acme/dev")
	if err != nil || r.IsError {
		t.Fatalf("a call to an upstream over mTLS: %v %s", err, text(r))
	}
	_, err = call(e.connect(t, start("fake", impostor.URL+"/mcp"), agent, ""), "create_issue", "acme/dev")
	if err == nil || !strings.Contains(err.Error(), "neither valid for") {
		t.Fatalf("a call to an upstream with an unverifiable certificate: %v", err)
	}
	if calls := calls.list(); len(calls) != 1 {
		t.Fatalf("calls reaching an upstream: %v, want the one over mTLS", calls)
	}
}

func mcpHandler(calls *callLog) http.Handler {
	s := mcp.NewServer(&mcp.Implementation{Name: "tools", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "create_issue"}, func(_ context.Context, _ *mcp.CallToolRequest, in issue) (*mcp.CallToolResult, any, error) {
		calls.add("create_issue " + in.Repo)
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "opened"}}}, nil, nil
	})
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
}

// TestMCPUpstreamPinned: an upstream named by upstream_id is reached only
// when it presents that SVID. Any other workload of the trust domain is
// refused, though the unpinned client would take it.
func TestMCPUpstreamPinned(t *testing.T) {
	e := startEnv(t, nil)
	calls := &callLog{}
	serve := func(id string) string {
		t.Helper()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{Handler: mcpHandler(calls), ErrorLog: log.New(io.Discard, "", 0),
			TLSConfig: tlsconfig.MTLSServerConfig(e.mint(t, id), e.bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromString(gatewayID)))}
		go hs.ServeTLS(ln, "", "")
		t.Cleanup(func() { hs.Close() })
		return "https://" + ln.Addr().String() + "/mcp"
	}
	toolsURL := serve("spiffe://" + td + "/mcp/tools")
	rogueURL := serve("spiffe://" + td + "/mcp/rogue")

	const agentID = "spiffe://" + td + "/agent/triage-bot"
	agent := e.mint(t, agentID)
	e.openTask(t, []string{agentID}, "call", mcpproxy.Resource("github", "create_issue"), mcpproxy.Resource("rogue", "create_issue"))

	start := func(name, url string) string {
		t.Helper()
		pl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p, err := mcpproxy.New(mcpproxy.Config{
			PublicURL: "https://" + pl.Addr().String() + "/mcp", TokenEndpoint: "https://" + e.tokenAddr + "/token",
			Upstreams: []mcpproxy.Upstream{{Name: name, URL: url, UpstreamID: "spiffe://" + td + "/mcp/tools"}},
		}, mcpproxy.Options{Decider: e.core, Holder: e.core, UpstreamClient: gateway.UpstreamHTTPClient(e.gw), Logger: quiet(),
			PinnedClient: func(id spiffeid.ID) *http.Client { return gateway.PinnedUpstreamHTTPClient(e.gw, id) }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		e.serveTLS(t, &http.Server{Handler: p}, pl)
		return p.Endpoint(name)
	}
	if r, err := call(e.connect(t, start("github", toolsURL), agent, ""), "create_issue", "acme/dev"); err != nil || r.IsError {
		t.Fatalf("a call to the pinned upstream: %v %s", err, text(r))
	}
	_, err := call(e.connect(t, start("rogue", rogueURL), agent, ""), "create_issue", "acme/dev")
	if err == nil || !strings.Contains(err.Error(), "/mcp/rogue, not spiffe://"+td+"/mcp/tools") {
		t.Fatalf("a call to another workload where the pinned upstream was expected: %v", err)
	}
	if calls := calls.list(); len(calls) != 1 {
		t.Fatalf("calls reaching an upstream: %v, want the pinned one only", calls)
	}
}
