package mcpproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// upstream is the gateway's one client session with an MCP server, shared
// by every caller of its endpoint. The caller's bearer token is never
// part of it: the session is opened with the gateway's own HTTP client (or
// pipes), so no token can be passed through.
type upstream struct {
	name      string
	transport func() mcp.Transport
	client    *mcp.Client
	timeout   time.Duration

	mu      sync.Mutex
	session *mcp.ClientSession
	tools   []*mcp.Tool // nil when not fetched or changed since
	closed  bool
}

func newUpstream(cfg Upstream, httpClient *http.Client, stderr io.Writer, timeout time.Duration) *upstream {
	u := &upstream{name: cfg.Name, timeout: timeout}
	if cfg.URL != "" {
		u.transport = func() mcp.Transport {
			return &mcp.StreamableClientTransport{Endpoint: cfg.URL, HTTPClient: httpClient}
		}
	} else {
		u.transport = func() mcp.Transport {
			cmd := exec.Command(cfg.Command, cfg.Args...)
			cmd.Env = commandEnv(cfg)
			cmd.Stderr = stderr
			return &mcp.CommandTransport{Command: cmd, TerminateDuration: 2 * time.Second}
		}
	}
	u.client = mcp.NewClient(&mcp.Implementation{Name: "writ-gateway", Version: "1"}, &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			u.mu.Lock()
			u.tools = nil
			u.mu.Unlock()
		},
	})
	return u
}

func commandEnv(cfg Upstream) []string {
	env := []string{"PATH=" + os.Getenv("PATH")}
	for _, k := range cfg.PassEnv {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	for k, v := range cfg.Env {
		env = append(env, k+"="+v)
	}
	return env
}

var errUpstreamClosed = errors.New("the gateway is shutting down")

// conn returns the live session, connecting when there is none. Connecting
// holds the lock, so a burst of callers opens one session, not many.
func (u *upstream) conn(ctx context.Context) (*mcp.ClientSession, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil, errUpstreamClosed
	}
	if u.session != nil {
		return u.session, nil
	}
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	s, err := u.client.Connect(ctx, u.transport(), nil)
	if err != nil {
		return nil, fmt.Errorf("connecting to MCP server %q: %w", u.name, err)
	}
	u.session, u.tools = s, nil
	go func() {
		// A session that ends (the server exited, the connection broke) is
		// forgotten, so the next caller reconnects instead of failing forever.
		_ = s.Wait()
		u.mu.Lock()
		if u.session == s {
			u.session, u.tools = nil, nil
		}
		u.mu.Unlock()
	}()
	return s, nil
}

// listTools returns every tool of the server, all pages, cached until the
// server says the list changed or the session ends.
func (u *upstream) listTools(ctx context.Context) ([]*mcp.Tool, error) {
	s, err := u.conn(ctx)
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	tools := u.tools
	u.mu.Unlock()
	if tools != nil {
		return tools, nil
	}
	tools = []*mcp.Tool{}
	for t, err := range s.Tools(ctx, nil) {
		if err != nil {
			return nil, fmt.Errorf("listing the tools of MCP server %q: %w", u.name, err)
		}
		tools = append(tools, t)
	}
	u.mu.Lock()
	if u.session == s {
		u.tools = tools
	}
	u.mu.Unlock()
	return tools, nil
}

// callTool forwards one call. It is never retried: a tool call may have
// effects, and whether a broken call took effect is unknown.
func (u *upstream) callTool(ctx context.Context, p *mcp.CallToolParams) (*mcp.CallToolResult, error) {
	s, err := u.conn(ctx)
	if err != nil {
		return nil, &unavailableError{err}
	}
	return s.CallTool(ctx, p)
}

// unavailableError is a call that never reached the server.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string { return e.err.Error() }
func (e *unavailableError) Unwrap() error { return e.err }

func (u *upstream) close() {
	u.mu.Lock()
	s := u.session
	u.session, u.closed = nil, true
	u.mu.Unlock()
	if s != nil {
		_ = s.Close()
	}
}
