// Package agent is the mcp-agent example's client: one MCP session with
// the gateway over mTLS with the agent's X.509-SVID, carrying the
// delegation token of the person it acts for, to list the tools writ lets
// it call or to call one.
package agent

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Source is the agent's identity, kept current: a go-spiffe
// workloadapi.X509Source is one.
type Source interface {
	x509svid.Source
	x509bundle.Source
}

// Options say what to do.
type Options struct {
	// Endpoint is the gateway's MCP endpoint URL, e.g.
	// https://127.0.0.1:9443/mcp/github.
	Endpoint string
	// GatewayID is the only server identity trusted.
	GatewayID spiffeid.ID
	// TokenFile holds the delegation token; empty: act for itself.
	TokenFile string
	// Tool is the tool to call; empty: list the tools.
	Tool string
	Args map[string]any
}

// Denial is a tool call writ refused (or the tool failed), told apart
// from a broken setup.
type Denial struct{ Msg string }

func (d Denial) Error() string { return d.Msg }

// Run opens the session and lists or calls, printing to out.
func Run(ctx context.Context, o Options, src Source, out io.Writer) error {
	var rt http.RoundTripper = &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(o.GatewayID))}
	if o.TokenFile != "" {
		rt = &BearerFromFile{Path: o.TokenFile, Next: rt}
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "writ-example-mcp-agent", Version: "1"}, nil)
	session, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:   o.Endpoint,
		HTTPClient: &http.Client{Transport: rt},
		// One call and done: no stream for server-initiated messages.
		DisableStandaloneSSE: true,
	}, nil)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", o.Endpoint, err)
	}
	defer session.Close()

	if o.Tool == "" {
		for t, err := range session.Tools(ctx, nil) {
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "%s\t%s\n", t.Name, t.Description)
		}
		return nil
	}
	res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: o.Tool, Arguments: o.Args})
	if err != nil {
		return fmt.Errorf("calling %s: %w", o.Tool, err)
	}
	var text strings.Builder
	for _, c := range res.Content {
		if t, ok := c.(*mcp.TextContent); ok {
			text.WriteString(t.Text)
			text.WriteString("\n")
		}
	}
	if res.IsError {
		return Denial{strings.TrimSpace(text.String())}
	}
	fmt.Fprint(out, text.String())
	return nil
}

// BearerFromFile sends the token in the file as the bearer token. The
// token is short-lived (minutes); reading it per request lets whatever
// refreshes the file keep a long session going.
type BearerFromFile struct {
	Path string
	Next http.RoundTripper
}

func (b *BearerFromFile) RoundTrip(r *http.Request) (*http.Response, error) {
	f, err := os.Open(b.Path)
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
		return nil, fmt.Errorf("delegation token: %s is empty; write the output of `writ token exchange` to it", b.Path)
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+tok)
	return b.Next.RoundTrip(r)
}
