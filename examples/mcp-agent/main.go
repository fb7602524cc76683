// Command mcp-agent is an example agent that calls an MCP tool through the
// writ gateway. It takes its identity (an X.509-SVID) from the SPIFFE
// Workload API, connects to the gateway's MCP endpoint over mTLS, and,
// when it acts for a person, sends the delegation token `writ token
// exchange` got for the gateway. writ decides the call on the whole chain
// (the agent and the person), and the gateway forwards it only if allowed.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mcp-agent:", err)
		var d denial
		if errors.As(err, &d) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// denial is a tool call writ refused (or the tool failed): exit status 2,
// so a script can tell it from a broken setup.
type denial struct{ msg string }

func (d denial) Error() string { return d.msg }

func run() error {
	endpoint := flag.String("gateway", "", "the gateway's MCP endpoint `URL`, e.g. https://127.0.0.1:8443/mcp/github")
	gatewayID := flag.String("gateway-id", "", "the gateway's SPIFFE `ID`, e.g. spiffe://example.org/gateway: only that server is trusted")
	socket := flag.String("socket", os.Getenv("SPIFFE_ENDPOINT_SOCKET"), "the Workload API socket, unix:///PATH (default $SPIFFE_ENDPOINT_SOCKET)")
	tokenFile := flag.String("token-file", "", "`file` holding the delegation token from `writ token exchange --audience <gateway ID>`; read again for every request, so a refreshed token is picked up. Empty: act for itself")
	tool := flag.String("tool", "", "the tool to call; empty: only list the tools writ lets this agent call")
	argsJSON := flag.String("args", "{}", "the tool's arguments, a JSON object")
	timeout := flag.Duration("timeout", 30*time.Second, "how long to wait for the Workload API and the gateway")
	flag.Parse()
	if *endpoint == "" || *gatewayID == "" || *socket == "" {
		return errors.New("give --gateway URL, --gateway-id SPIFFE_ID and --socket unix:///PATH (or set SPIFFE_ENDPOINT_SOCKET)")
	}
	gwID, err := spiffeid.FromString(*gatewayID)
	if err != nil {
		return fmt.Errorf("--gateway-id: %w", err)
	}
	var args map[string]any
	if err := json.Unmarshal([]byte(*argsJSON), &args); err != nil {
		return fmt.Errorf("--args is not a JSON object: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	// The source keeps the SVID and bundle fresh as the agent rotates them.
	source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(*socket)))
	if err != nil {
		return fmt.Errorf("workload API: %w", err)
	}
	defer source.Close()
	var rt http.RoundTripper = &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(source, source, tlsconfig.AuthorizeID(gwID))}
	if *tokenFile != "" {
		rt = &bearerFromFile{path: *tokenFile, next: rt}
	}

	client := mcp.NewClient(&mcp.Implementation{Name: "writ-example-mcp-agent", Version: "1"}, nil)
	session, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:   *endpoint,
		HTTPClient: &http.Client{Transport: rt},
		// One call and done: no stream for server-initiated messages.
		DisableStandaloneSSE: true,
	}, nil)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", *endpoint, err)
	}
	defer session.Close()

	if *tool == "" {
		for t, err := range session.Tools(ctx, nil) {
			if err != nil {
				return err
			}
			fmt.Printf("%s\t%s\n", t.Name, t.Description)
		}
		return nil
	}
	res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: *tool, Arguments: args})
	if err != nil {
		return fmt.Errorf("calling %s: %w", *tool, err)
	}
	var out strings.Builder
	for _, c := range res.Content {
		if t, ok := c.(*mcp.TextContent); ok {
			out.WriteString(t.Text)
			out.WriteString("\n")
		}
	}
	if res.IsError {
		return denial{strings.TrimSpace(out.String())}
	}
	fmt.Print(out.String())
	return nil
}

// bearerFromFile sends the token in the file as the bearer token. The
// token is short-lived (minutes); reading it per request lets whatever
// refreshes the file keep a long session going.
type bearerFromFile struct {
	path string
	next http.RoundTripper
}

func (b *bearerFromFile) RoundTrip(r *http.Request) (*http.Response, error) {
	f, err := os.Open(b.path)
	if err != nil {
		return nil, fmt.Errorf("delegation token: %w", err)
	}
	data, err := io.ReadAll(io.LimitReader(f, 64<<10))
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("delegation token: %w", err)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" {
		return nil, fmt.Errorf("delegation token: %s is empty; write the output of `writ token exchange` to it", b.path)
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+tok)
	return b.next.RoundTrip(r)
}
