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
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"writ.dev/writ/examples/mcp-agent/agent"
)

// main exits 2 when writ refused the call (or the tool failed), so a
// script can tell it from a broken setup.
func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mcp-agent:", err)
		var d agent.Denial
		if errors.As(err, &d) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func run() error {
	endpoint := flag.String("gateway", "", "the gateway's MCP endpoint `URL`, e.g. https://127.0.0.1:9443/mcp/github")
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
	return agent.Run(ctx, agent.Options{Endpoint: *endpoint, GatewayID: gwID, TokenFile: *tokenFile, Tool: *tool, Args: args}, source, os.Stdout)
}
