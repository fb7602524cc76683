package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"writ.dev/writ/gateway/mcpproxy"
)

// noIssuesOnProd is the README's guardrail: nobody opens issues on the
// production repository, whatever their task grants.
const noIssuesOnProd = `@id("no-issues-on-prod")
forbid(principal, action == writ::Action::"call", resource == writ::Resource::"mcp/github/tool/create_issue")
when { context has arguments && context.arguments has repo && context.arguments.repo == "acme/prod" };
`

type issue struct {
	Repo  string `json:"repo"`
	Title string `json:"title,omitempty"`
}

// callLog records the calls that reach an upstream, from its handlers'
// goroutines.
type callLog struct {
	mu    sync.Mutex
	calls []string
}

func (l *callLog) add(c string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, c)
}

func (l *callLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

// toolServer is the upstream MCP server, over streamable HTTP on loopback;
// it logs the calls that reach it.
func toolServer(t testing.TB, calls *callLog) string {
	t.Helper()
	s := mcp.NewServer(&mcp.Implementation{Name: "tools", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "create_issue", Description: "open an issue"},
		func(_ context.Context, _ *mcp.CallToolRequest, in issue) (*mcp.CallToolResult, any, error) {
			calls.add("create_issue " + in.Repo)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("opened %q in %s", in.Title, in.Repo)}}}, nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "delete_repo", Description: "delete a repository"},
		func(_ context.Context, _ *mcp.CallToolRequest, in issue) (*mcp.CallToolResult, any, error) {
			calls.add("delete_repo " + in.Repo)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "deleted " + in.Repo}}}, nil, nil
		})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return "http://" + ln.Addr().String() + "/mcp"
}

// startMCP serves the MCP front end for upstream and returns its endpoint.
func (e *env) startMCP(t testing.TB, upstream mcpproxy.Upstream) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := mcpproxy.Config{
		PublicURL:         "https://" + ln.Addr().String() + "/mcp",
		TokenEndpoint:     "https://" + e.tokenAddr + "/token",
		RequireDelegation: true,
		Upstreams:         []mcpproxy.Upstream{upstream},
	}
	p, err := mcpproxy.New(cfg, mcpproxy.Options{Decider: e.core, Holder: e.core, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	e.serveTLS(t, &http.Server{Handler: p}, ln)
	return p.Endpoint("github")
}

// connect opens an MCP session with the official SDK's client, as agent
// svid acting with token.
func (e *env) connect(t testing.TB, endpoint string, svid *x509svid.SVID, token string) *mcp.ClientSession {
	t.Helper()
	c := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil)
	s, err := c.Connect(context.Background(), &mcp.StreamableClientTransport{
		Endpoint: endpoint, HTTPClient: e.client(svid, token), DisableStandaloneSSE: true,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func call(s *mcp.ClientSession, tool, repo string) (*mcp.CallToolResult, error) {
	return s.CallTool(context.Background(), &mcp.CallToolParams{Name: tool, Arguments: map[string]any{"repo": repo, "title": "flaky test"}})
}

func text(r *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range r.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// mustDeny calls and wants a tool error carrying writ's reason.
func mustDeny(t *testing.T, what string, s *mcp.ClientSession, tool, repo string, reason ...string) {
	t.Helper()
	mustRefuse(t, what, s, tool, repo, append([]string{"writ denied the call of " + tool}, reason...)...)
}

// mustRefuse calls and wants a tool error saying each of reason.
func mustRefuse(t *testing.T, what string, s *mcp.ClientSession, tool, repo string, reason ...string) {
	t.Helper()
	r, err := call(s, tool, repo)
	if err != nil {
		t.Fatalf("%s: %v, want a tool error with the reason", what, err)
	}
	if !r.IsError {
		t.Fatalf("%s: %s, want a refusal", what, text(r))
	}
	for _, want := range reason {
		if !strings.Contains(text(r), want) {
			t.Errorf("%s: %q does not say %q", what, text(r), want)
		}
	}
}

// TestMCPThroughGateway: an agent with its SVID, acting for a person with
// a delegation token made for the gateway, calls tools through the MCP
// front end with the official SDK, against a real writ server.
func TestMCPThroughGateway(t *testing.T) {
	e := startEnv(t, map[string]string{"guard.cedar": noIssuesOnProd})
	calls := &callLog{}
	endpoint := e.startMCP(t, mcpproxy.Upstream{Name: "github", URL: toolServer(t, calls)})

	const agentID = "spiffe://" + td + "/agent/triage-bot"
	agent := e.mint(t, agentID)
	taskID := e.openTask(t, []string{ada, agentID}, "call", mcpproxy.Resource("github", "create_issue"))
	token := e.delegate(t, agent, "ada@example.com", gatewayID, taskID)

	s := e.connect(t, endpoint, agent, token)
	// The list shows only what the chain may call.
	list, err := s.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range list.Tools {
		names = append(names, tool.Name)
	}
	if !slices.Equal(names, []string{"create_issue"}) {
		t.Errorf("tools/list: %v, want only create_issue", names)
	}
	// Allowed inside the task.
	r, err := call(s, "create_issue", "acme/dev")
	if err != nil || r.IsError || !strings.Contains(text(r), `opened "flaky test" in acme/dev`) {
		t.Fatalf("an allowed call: %v %v", err, r)
	}
	// Another tool: denied, the reason names what is missing.
	mustDeny(t, "a tool the task does not grant", s, "delete_repo", "acme/dev", "delete_repo")
	// The guardrail reads the arguments.
	mustDeny(t, "create_issue on acme/prod", s, "create_issue", "acme/prod", "no-issues-on-prod")

	// A token made for another audience is refused at the gateway.
	other := e.delegate(t, agent, "ada@example.com", "spiffe://"+td+"/svc/issues", taskID)
	mustRefuse(t, "a token for another audience", e.connect(t, endpoint, agent, other), "create_issue", "acme/dev",
		"writ refused the call of create_issue", `not for audience "`+gatewayID+`"`)
	// The token is bound to the agent's certificate: another agent in the
	// same task presenting it is refused.
	const otherID = "spiffe://" + td + "/agent/other-bot"
	thief := e.mint(t, otherID)
	mustRefuse(t, "a token replayed by another agent", e.connect(t, endpoint, thief, token), "create_issue", "acme/dev",
		"writ refused the call of create_issue", "bound to another certificate")
	if calls := calls.list(); !slices.Equal(calls, []string{"create_issue acme/dev"}) {
		t.Fatalf("calls reaching the MCP server: %v, want only the allowed one", calls)
	}

	// A lock on the agent cuts the live session: its next request fails
	// naming the cut.
	lockID := e.lock(t, agentID)
	waitFor(t, "the session cut after the lock", func() bool {
		_, err := call(s, "create_issue", "acme/dev")
		return err != nil && strings.Contains(err.Error(), "writ cut this session")
	})
	e.unlock(t, lockID)
	s2 := e.connect(t, endpoint, agent, token)
	waitFor(t, "calls allowed again once the lock is gone", func() bool {
		r, err := call(s2, "create_issue", "acme/dev")
		return err == nil && !r.IsError
	})
	// Once the task closes, calls are denied with the reason.
	e.closeTask(t, taskID)
	waitFor(t, "calls denied after the task closed", func() bool {
		s3 := e.connect(t, endpoint, agent, token)
		r, err := call(s3, "create_issue", "acme/dev")
		return err == nil && r.IsError && strings.Contains(text(r), "writ denied the call of create_issue")
	})
}
