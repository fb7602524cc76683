package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"writ.dev/writ/gateway"
	"writ.dev/writ/gateway/config"
	"writ.dev/writ/gateway/tcpproxy"
	"writ.dev/writ/server"
)

// gatewayIdentityTimeout bounds the wait for the gateway's own identity
// from the Workload API at start.
const gatewayIdentityTimeout = 30 * time.Second

const gatewayConfigReference = `Configuration file (YAML; unknown keys are refused):

  server: writ.example.com:8081        # the writ server's remote API (mTLS)
  workload_api: unix:///run/writ/agent.sock   # default $SPIFFE_ENDPOINT_SOCKET
  cache_size: 10000                    # decisions remembered between changes; -1 turns the cache off
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
`

func runGateway(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("writ gateway",
		"Run the identity-aware proxy: callers connect with mTLS and their X.509-SVID, each\n"+
			"connection is decided by the writ server for the caller's whole chain, and a live\n"+
			"connection is cut within a second of a lock, a closed task or a watcher leaving.\n"+
			"The gateway's own identity comes from the Workload API. SIGTERM stops it: listeners\n"+
			"close and live connections are cut.",
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
	core, err := gateway.NewCore(gateway.CoreConfig{Conn: conn, CacheSize: cfg.CacheSize, Log: log})
	if err != nil {
		return err
	}
	tlsCfg := gateway.ServerTLSConfig(src)

	// Every listener is opened before any serves, so a taken port stops
	// the gateway at start rather than leaving it half up.
	type serving struct {
		proxy *tcpproxy.Proxy
		ln    net.Listener
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
			p, err := tcpproxy.New(*l.TCP, tlsCfg, core, core, log)
			if err != nil {
				return fmt.Errorf("listeners[%d].tcp: %w", i, err)
			}
			ln, err := p.Listen()
			if err != nil {
				return fmt.Errorf("listeners[%d].tcp: %w", i, err)
			}
			all = append(all, serving{p, ln})
			log.Info("gateway listening", "kind", "tcp", "name", l.TCP.Name, "address", ln.Addr().String(),
				"resource", l.TCP.Resource, "action", l.TCP.Action, "upstream", l.TCP.Upstream)
			// The HTTP (l.HTTP, httpproxy) and MCP (l.MCP, mcpproxy)
			// front ends are started here, on the same tlsCfg, core
			// and log, once their configs plug into config.Listener.
		default:
			return fmt.Errorf("listeners[%d]: no kind of listener set", i)
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(all)+1)
	wg.Go(func() { errs <- core.Run(ctx) })
	for _, s := range all {
		wg.Go(func() {
			if err := s.proxy.Serve(ctx, s.ln); err != nil {
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
