package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"writ.dev/writ/gateway"
	"writ.dev/writ/gateway/config"
	"writ.dev/writ/gateway/httpproxy"
	"writ.dev/writ/gateway/mcpproxy"
	"writ.dev/writ/gateway/tcpproxy"
	"writ.dev/writ/server"
)

// gatewayIdentityTimeout bounds the wait for the gateway's own identity
// from the Workload API at start.
const gatewayIdentityTimeout = 30 * time.Second

// The MCP front end's HTTP limits: its requests are small JSON-RPC
// messages, and its streams last no longer than a session.
const (
	mcpReadHeaderTimeout = 10 * time.Second
	mcpIdleTimeout       = 2 * time.Minute
	mcpMaxHeaderBytes    = 16 << 10
	// shutdownGrace is how long requests in flight may finish on
	// shutdown before their connections are closed.
	shutdownGrace = 5 * time.Second
)

const gatewayConfigReference = `Configuration file (YAML; unknown keys are refused):

  server: writ.example.com:8081        # the writ server's remote API (mTLS)
  workload_api: unix:///run/writ/agent.sock   # default $SPIFFE_ENDPOINT_SOCKET
  cache_size: 10000                    # decisions remembered between changes; -1 turns the cache off
  metrics_address: 127.0.0.1:9090      # Prometheus /metrics over plain HTTP; default none
  log: {level: info, format: text}     # level debug|info|warn|error, format text|json
  listeners:
    - tcp:
        name: orders-db                # in logs; default the resource
        listen: 0.0.0.0:5433           # callers connect here with mTLS and their X.509-SVID
        upstream: 10.0.0.5:5432        # the protected service, plain TCP from the gateway
        resource: tcp/orders-db        # what each connection asks for
        action: connect                # the default
        max_connections: 1024          # more are closed on accept
        handshake_timeout: 10s
        idle_timeout: 15m              # no traffic either way
        dial_timeout: 10s
    - http:                            # a reverse proxy: each request is one decision
        name: orders-api               # in logs; default the audience
        listen: 0.0.0.0:8443
        upstream: http://127.0.0.1:8080   # scheme, host, port; https with upstream_id: mTLS with the gateway's SVID
        audience: orders-api           # "aud" of the signed Writ-Caller header the upstream receives
        actions: {PATCH: ""}           # over GET/HEAD/OPTIONS read, POST/PUT/PATCH write, DELETE delete; "" refuses
        routes:                        # the first match names the resource
          - {path: "/orders/{id}", resource: "http/orders/{id}"}
          - {prefix: /static, methods: [GET], resource: http/static}
        limits: {max_header_bytes: 16384, max_body_bytes: 10485760, read_header_timeout: 10s,
                 idle_timeout: 2m, upstream_timeout: 30s, caller_header_ttl: 60s}
    - mcp:                             # MCP tool calls: each tools/call is one decision
        name: mcp                      # in logs; the default
        listen: 0.0.0.0:9443
        public_url: https://gateway.example.com:9443/mcp   # upstream "github" at .../mcp/github
        token_endpoint: https://writ.example.com:8443/token # named in the RFC 9728 metadata
        require_delegation: false      # true: refuse agents acting for no one
        upstreams:
          - {name: github, url: https://mcp.github.internal/mcp}   # https (the gateway's SVID as client certificate), or http to loopback
          - {name: files, command: /usr/local/bin/files-mcp, args: [--root, /srv], pass_env: [FILES_TOKEN]}
        limits: {max_body_bytes: 1048576, max_sessions: 1000, call_timeout: 60s, session_idle_timeout: 15m}
`

func runGateway(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("writ gateway",
		"Run the identity-aware proxy: callers connect with mTLS and their X.509-SVID, each\n"+
			"connection is decided by the writ server for the caller's whole chain, and a live\n"+
			"connection is cut within a second of a lock, a closed task or a watcher leaving.\n"+
			"Listeners are tcp (a connection is one decision), http (a request is) or mcp (a tool\n"+
			"call is). The gateway's own identity comes from the Workload API. SIGTERM stops it:\n"+
			"listeners close and live connections and sessions are cut.",
		"writ gateway --config FILE")
	path := c.fs.String("config", "", "YAML configuration `file` (below)")
	c.required("config")
	if done, err := c.parse(args, stdout); done || err != nil {
		if done {
			fmt.Fprint(stdout, "\n"+gatewayConfigReference)
		}
		return err
	}
	f, err := os.Open(*path)
	if err != nil {
		return err
	}
	cfg, err := config.Read(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", *path, err)
	}
	log, err := newLogger(server.LogConfig{Level: cfg.Log.Level, Format: cfg.Log.Format}, stderr)
	if err != nil {
		return err
	}
	socket := cfg.WorkloadAPI
	if socket == "" {
		if socket = os.Getenv(workloadapi.SocketEnv); socket == "" {
			return fmt.Errorf("%s: workload_api is not set and neither is %s: name the Workload API socket the gateway's identity comes from", *path, workloadapi.SocketEnv)
		}
	}
	if err := checkEndpointDir(socket, os.Geteuid(), nil); err != nil {
		return err
	}
	src, err := gateway.WorkloadSource(ctx, socket, gatewayIdentityTimeout)
	if err != nil {
		return err
	}
	defer src.Close()
	own, err := src.GetX509SVID()
	if err != nil {
		return fmt.Errorf("the gateway's identity: %w", err)
	}
	conn, err := gateway.Dial(cfg.Server, src, own.ID.TrustDomain())
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	defer conn.Close()
	var metrics *gateway.Metrics
	if cfg.MetricsAddress != "" {
		metrics = gateway.NewMetrics()
	}
	core, err := gateway.NewCore(gateway.CoreConfig{Conn: conn, CacheSize: cfg.CacheSize, Log: log, Metrics: metrics})
	if err != nil {
		return err
	}
	tlsCfg := gateway.ServerTLSConfig(src)

	// Every listener is opened before any serves, so a taken port stops
	// the gateway at start rather than leaving it half up.
	type serving struct {
		ln    net.Listener
		serve func(ctx context.Context, ln net.Listener) error
	}
	var all []serving
	defer func() {
		for _, s := range all {
			s.ln.Close()
		}
	}()
	for i, l := range cfg.Listeners {
		switch {
		case l.TCP != nil:
			p, err := tcpproxy.New(*l.TCP, tlsCfg, metrics.Decider("tcp", l.TCP.Name, core), core, log)
			if err != nil {
				return fmt.Errorf("listeners[%d].tcp: %w", i, err)
			}
			ln, err := p.Listen()
			if err != nil {
				return fmt.Errorf("listeners[%d].tcp: %w", i, err)
			}
			all = append(all, serving{ln, p.Serve})
			log.Info("gateway listening", "kind", "tcp", "name", l.TCP.Name, "address", ln.Addr().String(),
				"resource", l.TCP.Resource, "action", l.TCP.Action, "upstream", l.TCP.Upstream)
		case l.HTTP != nil:
			p, err := httpproxy.New(l.HTTP.Config, httpproxy.Options{Decider: metrics.Decider("http", l.HTTP.Name, core), Holder: core, SVID: src, Bundle: src, Log: log})
			if err != nil {
				return fmt.Errorf("listeners[%d].http: %w", i, err)
			}
			ln, err := net.Listen("tcp", l.HTTP.Listen)
			if err != nil {
				return fmt.Errorf("listeners[%d].http: %w", i, err)
			}
			// Each server gets its own copy: serving HTTP/2 writes to it.
			srv := httpproxy.NewServer(l.HTTP.Config, p, tlsCfg.Clone())
			srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
			all = append(all, serving{ln, func(ctx context.Context, ln net.Listener) error { return serveHTTPS(ctx, srv, ln, nil) }})
			log.Info("gateway listening", "kind", "http", "name", l.HTTP.Name, "address", ln.Addr().String(),
				"upstream", l.HTTP.Upstream, "audience", l.HTTP.Audience)
		case l.MCP != nil:
			p, err := mcpproxy.New(l.MCP.Config, mcpproxy.Options{Decider: metrics.Decider("mcp", l.MCP.Name, core), Holder: core,
				UpstreamClient: gateway.UpstreamHTTPClient(src), Stderr: stderr, Logger: log,
				PinnedClient: func(id spiffeid.ID) *http.Client { return gateway.PinnedUpstreamHTTPClient(src, id) }})
			if err != nil {
				return fmt.Errorf("listeners[%d].mcp: %w", i, err)
			}
			ln, err := net.Listen("tcp", l.MCP.Listen)
			if err != nil {
				p.Close()
				return fmt.Errorf("listeners[%d].mcp: %w", i, err)
			}
			srv := &http.Server{
				Handler:           p,
				TLSConfig:         tlsCfg.Clone(),
				ReadHeaderTimeout: mcpReadHeaderTimeout,
				IdleTimeout:       mcpIdleTimeout,
				MaxHeaderBytes:    mcpMaxHeaderBytes,
				ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
			}
			all = append(all, serving{ln, func(ctx context.Context, ln net.Listener) error { return serveHTTPS(ctx, srv, ln, p.Close) }})
			names := make([]string, len(l.MCP.Upstreams))
			for j, u := range l.MCP.Upstreams {
				names[j] = u.Name
			}
			log.Info("gateway listening", "kind", "mcp", "name", l.MCP.Name, "address", ln.Addr().String(),
				"public_url", l.MCP.PublicURL, "upstreams", strings.Join(names, ","))
		default:
			return fmt.Errorf("listeners[%d]: no kind of listener set", i)
		}
	}
	if metrics != nil {
		ln, err := net.Listen("tcp", cfg.MetricsAddress)
		if err != nil {
			return fmt.Errorf("metrics_address: %w", err)
		}
		srv := &http.Server{Handler: metrics.Handler(), ReadHeaderTimeout: mcpReadHeaderTimeout, IdleTimeout: mcpIdleTimeout,
			MaxHeaderBytes: mcpMaxHeaderBytes, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
		all = append(all, serving{ln, func(ctx context.Context, ln net.Listener) error { return serveHTTP(ctx, srv, ln) }})
		log.Info("gateway metrics", "address", ln.Addr().String())
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(all)+1)
	wg.Go(func() { errs <- core.Run(ctx) })
	for _, s := range all {
		wg.Go(func() {
			if err := s.serve(ctx, s.ln); err != nil {
				errs <- err
				cancel()
			}
		})
	}
	log.Info("gateway running", "identity", own.ID.String(), "server", cfg.Server, "listeners", len(all))
	<-ctx.Done()
	log.Info("gateway stopping: closing listeners and cutting live connections")
	wg.Wait()
	close(errs)
	var out []error
	for err := range errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return errors.Join(out...)
}

// serveHTTP serves srv on ln in plain HTTP until ctx ends: the metrics,
// which carry no secret and are scraped where TLS is rarely set up.
func serveHTTP(ctx context.Context, srv *http.Server, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
	defer stop()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// serveHTTPS serves srv on ln with TLS until ctx ends, then stops taking
// requests, lets those in flight finish for shutdownGrace and closes what
// is left (streams would otherwise keep the gateway up). closeFront, when
// set, ends the front end's own sessions first.
func serveHTTPS(ctx context.Context, srv *http.Server, ln net.Listener, closeFront func() error) error {
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		if closeFront != nil {
			_ = closeFront()
		}
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			_ = srv.Close()
		}
	}()
	err := srv.ServeTLS(ln, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		<-stopped
		return nil
	}
	return err
}
