package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"writ.dev/writ/agent/output"
)

// TestGatewayCommandMCPAndHTTP: `writ gateway --config` serves the mcp
// and http listeners of its file with mTLS, deciding each tool call and
// each request with the writ server, and stops cleanly with a session
// open.
func TestGatewayCommandMCPAndHTTP(t *testing.T) {
	dir := shortTempDir(t)
	t.Setenv("TMPDIR", dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, ".writ")
	admin := filepath.Join(data, "admin.sock")
	listen := freePort(t)
	startCommand(t, admin, "dev", "--data-dir", data, "--listen", listen, "--ops-address", "127.0.0.1:0")
	t.Setenv("WRIT_SOCKET", admin)

	mcpUpstream := toolsUpstream(t)
	httpUpstream := helloUpstream(t)
	mcpAddr, httpAddr, metricsAddr := freePort(t), freePort(t), freePort(t)
	conf := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`server: %s
workload_api: unix://%s
metrics_address: %s
listeners:
  - mcp:
      listen: %s
      public_url: https://%s/mcp
      token_endpoint: https://writ.example.com:8443/token
      upstreams: [{name: github, url: %s}]
  - http:
      listen: %s
      upstream: %s
      audience: hello-api
      routes: [{path: "/hello/{name}", resource: "http/hello/{name}"}]
`, listen, filepath.Join(dir, fmt.Sprintf("writ-dev-%d", os.Getuid()), "agent.sock"), metricsAddr, mcpAddr, mcpAddr, mcpUpstream, httpAddr, httpUpstream)), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var gwOut syncBuffer
	go func() { done <- run(ctx, []string{"gateway", "--config", conf}, io.Discard, &gwOut) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("the gateway exited with %d on cancellation: %s", code, gwOut.String())
			}
		case <-time.After(20 * time.Second):
			t.Error("the gateway did not stop within 20s of cancellation")
		}
	}
	defer stop()
	waitFor(t, "the gateway running", func() bool { return strings.Contains(gwOut.String(), "gateway running") }, &gwOut)
	for _, kind := range []string{"kind=mcp", "kind=http"} {
		if !strings.Contains(gwOut.String(), kind) {
			t.Errorf("the gateway's log names no %s listener:\n%s", kind, gwOut.String())
		}
	}

	const agent = "spiffe://example.org/agent/triage-bot"
	writ(t, "svid", "mint", "--spiffe-id", agent, "--out", filepath.Join(dir, "bot"))
	svid, err := x509svid.Load(filepath.Join(dir, "bot", output.SVIDFile), filepath.Join(dir, "bot", output.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := x509bundle.Load(spiffeid.RequireTrustDomainFromString("example.org"), filepath.Join(dir, "bot", output.BundleFile))
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeMemberOf(bundle.TrustDomain()))}}
	session, err := mcp.NewClient(&mcp.Implementation{Name: "bot", Version: "1"}, nil).Connect(context.Background(),
		&mcp.StreamableClientTransport{Endpoint: "https://" + mcpAddr + "/mcp/github", HTTPClient: hc, DisableStandaloneSSE: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()
	callIssue := func() (string, bool) {
		r, err := session.CallTool(context.Background(), &mcp.CallToolParams{Name: "create_issue", Arguments: map[string]any{"repo": "acme/dev"}})
		if err != nil {
			t.Fatal(err)
		}
		return r.Content[0].(*mcp.TextContent).Text, r.IsError
	}
	hello := func() (int, string) {
		resp, err := hc.Get("https://" + httpAddr + "/hello/ada")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if msg, refused := callIssue(); !refused || !strings.Contains(msg, "writ denied the call of create_issue") {
		t.Fatalf("a call without a task: %q", msg)
	}
	if code, body := hello(); code != http.StatusForbidden || !strings.Contains(body, "writ denied read on http/hello/ada") {
		t.Fatalf("a request without a task: %d %s", code, body)
	}

	out := writ(t, "task", "create", "--title", "triage", "--reason", "bug sweep", "--owner", "spiffe://example.org/person/example.com/ada",
		"--deadline", "1h", "--member", agent)
	taskID := taskIDWord.FindStringSubmatch(out)[1]
	writ(t, "task", "grant", "--id", taskID, "--action", "call", "--resource", "mcp/github/tool/create_issue", "--to", agent)
	writ(t, "task", "grant", "--id", taskID, "--action", "read", "--resource", "http/hello/ada", "--to", agent)
	writ(t, "task", "open", "--id", taskID)
	waitFor(t, "the tool call allowed inside the task", func() bool {
		msg, refused := callIssue()
		return !refused && msg == "opened an issue in acme/dev"
	}, &gwOut)
	waitFor(t, "the request allowed inside the task", func() bool {
		code, body := hello()
		return code == http.StatusOK && body == "hello ada"
	}, &gwOut)

	// The metrics count what the front ends decided, each under its own
	// name, and show the decision stream up.
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`writ_gateway_decisions_total{front_end="http",listener="hello-api",outcome="allow"} `,
		`writ_gateway_decisions_total{front_end="http",listener="hello-api",outcome="deny"} `,
		`writ_gateway_decisions_total{front_end="mcp",listener="mcp",outcome="allow"} `,
		`writ_gateway_decisions_total{front_end="mcp",listener="mcp",outcome="deny"} `,
		"writ_gateway_decision_stream_up 1\n",
	} {
		if !strings.Contains(string(page), want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// SIGTERM with the MCP session open: the gateway stops, and the
	// session is gone with it.
	stop()
	if _, err := session.CallTool(context.Background(), &mcp.CallToolParams{Name: "create_issue", Arguments: map[string]any{"repo": "acme/dev"}}); err == nil {
		t.Error("a tool call went through after the gateway stopped")
	}
}

// toolsUpstream is an MCP server over streamable HTTP on loopback.
func toolsUpstream(t *testing.T) string {
	t.Helper()
	s := mcp.NewServer(&mcp.Implementation{Name: "tools", Version: "1"}, nil)
	type issue struct {
		Repo string `json:"repo"`
	}
	mcp.AddTool(s, &mcp.Tool{Name: "create_issue"}, func(_ context.Context, _ *mcp.CallToolRequest, in issue) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "opened an issue in " + in.Repo}}}, nil, nil
	})
	return "http://" + serveLoopback(t, mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)) + "/mcp"
}

func helloUpstream(t *testing.T) string {
	t.Helper()
	return "http://" + serveLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Writ-Caller") == "" {
			http.Error(w, "no Writ-Caller header", http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, "hello "+strings.TrimPrefix(r.URL.Path, "/hello/"))
	}))
}

func serveLoopback(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}
