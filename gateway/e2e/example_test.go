package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/examples/mcp-agent/agent"
	"writ.dev/writ/gateway/config"
	"writ.dev/writ/gateway/mcpproxy"
)

// exampleBlock returns the first ```lang block of examples/mcp-agent's
// README that follows marker.
func exampleBlock(t *testing.T, marker, lang string) string {
	t.Helper()
	data, err := os.ReadFile("../../examples/mcp-agent/README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), marker)
	if !ok {
		t.Fatalf("the example's README has no %q", marker)
	}
	_, rest, ok = strings.Cut(rest, "```"+lang+"\n")
	if !ok {
		t.Fatalf("the example's README has no %s block after %q", lang, marker)
	}
	block, _, _ := strings.Cut(rest, "```")
	// The blocks are indented under a list item.
	var lines []string
	for _, l := range strings.Split(block, "\n") {
		lines = append(lines, strings.TrimPrefix(l, "   "))
	}
	return strings.Join(lines, "\n")
}

// TestExampleMCPAgent follows examples/mcp-agent's README with a real
// server: its gateway.yaml is a configuration `writ gateway` accepts, its
// guardrail is the server's, its stand-in tool server is the stdio
// upstream, and the example's agent gets the answers the README shows.
func TestExampleMCPAgent(t *testing.T) {
	c, err := config.Parse([]byte(exampleBlock(t, "`gateway.yaml`", "yaml")))
	if err != nil {
		t.Fatalf("the example's gateway.yaml: %v", err)
	}
	guard := exampleBlock(t, "guardrail", "cedar")
	e := startEnv(t, map[string]string{"guard.cedar": guard})

	bin := filepath.Join(t.TempDir(), "example-toolserver")
	if out, err := exec.Command("go", "build", "-o", bin, "../../examples/mcp-agent/toolserver").CombinedOutput(); err != nil {
		t.Fatalf("building the stand-in tool server: %v\n%s", err, out)
	}
	up := c.Listeners[0].MCP.Upstreams[0]
	up.Command = bin
	endpoint := e.startMCP(t, up)

	const agentID = "spiffe://" + td + "/agent/triage-bot"
	svid := e.mint(t, agentID)
	taskID := e.openTask(t, []string{ada, agentID}, "call", mcpproxy.Resource("github", "create_issue"))
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(e.delegate(t, svid, "ada@example.com", gatewayID, taskID)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(tool, repo string) (string, error) {
		var out bytes.Buffer
		o := agent.Options{Endpoint: endpoint, GatewayID: spiffeid.RequireFromString(gatewayID), TokenFile: tokenFile, Tool: tool}
		if tool != "" {
			o.Args = map[string]any{"repo": repo, "title": "flaky test"}
		}
		err := agent.Run(context.Background(), o, source{svid, e.bundle}, &out)
		return out.String(), err
	}
	denied := func(what, tool, repo, want string) {
		t.Helper()
		_, err := run(tool, repo)
		var d agent.Denial
		if !errors.As(err, &d) || !strings.Contains(d.Msg, "writ denied the call of "+tool) || !strings.Contains(d.Msg, want) {
			t.Errorf("%s: %v, want a denial saying %q", what, err, want)
		}
	}
	if out, err := run("", ""); err != nil || !strings.HasPrefix(out, "create_issue\t") || strings.Count(out, "\n") != 1 {
		t.Errorf("the list: %q %v, want create_issue only", out, err)
	}
	if out, err := run("create_issue", "acme/dev"); err != nil || out != "would open \"flaky test\" in acme/dev\n" {
		t.Errorf("the allowed call: %q %v", out, err)
	}
	denied("the guardrail", "create_issue", "acme/prod", "no-issues-on-prod")
	denied("another tool", "delete_repo", "acme/dev", "holds no grant for call on mcp/github/tool/delete_repo in any open task")
	e.closeTask(t, taskID)
	waitFor(t, "the call denied once the task closed", func() bool {
		_, err := run("create_issue", "acme/dev")
		var d agent.Denial
		return errors.As(err, &d) && strings.Contains(d.Msg, "task "+taskID+" is closed")
	})
}
