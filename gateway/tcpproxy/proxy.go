// Package tcpproxy is the gateway's TCP front end: callers connect with
// mTLS and their X.509-SVID, each connection is one decision (action
// connect on the listener's resource, by default), an allowed connection
// is piped to the upstream in plain TCP, and it is cut the moment the
// decision stops holding.
package tcpproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"writ.dev/writ/gateway"
)

// Proxy serves one listener.
type Proxy struct {
	cfg     Config
	tls     *tls.Config
	decider gateway.Decider
	holder  gateway.Holder
	log     *slog.Logger
	slots   chan struct{}
	conns   sync.WaitGroup
}

// New builds a proxy for cfg (defaulted and validated here). tlsCfg must
// require and verify client certificates (gateway.ServerTLSConfig).
func New(cfg Config, tlsCfg *tls.Config, d gateway.Decider, h gateway.Holder, log *slog.Logger) (*Proxy, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if tlsCfg == nil || tlsCfg.ClientAuth != tls.RequireAndVerifyClientCert && tlsCfg.VerifyPeerCertificate == nil {
		return nil, errors.New("tcpproxy: the TLS config must require and verify client X.509-SVIDs: use gateway.ServerTLSConfig")
	}
	if d == nil || h == nil {
		return nil, errors.New("tcpproxy: a Decider and a Holder are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Proxy{cfg: cfg, tls: tlsCfg, decider: d, holder: h, log: log.With("listener", cfg.Name),
		slots: make(chan struct{}, cfg.MaxConnections)}, nil
}

// Listen opens the listener's address.
func (p *Proxy) Listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", p.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("tcp listener %s: %w", p.cfg.Name, err)
	}
	return ln, nil
}

// Serve accepts connections on ln until ctx ends, then closes ln, cuts
// the connections still open and returns once they are gone.
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer p.conns.Wait()
	var delay time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like pass: back off
			// rather than end the listener.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			p.log.Warn("accepting a connection failed; retrying", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		select {
		case p.slots <- struct{}{}:
		default:
			p.log.Warn("refused a connection: the listener holds max_connections already", "source", conn.RemoteAddr().String(),
				"max_connections", p.cfg.MaxConnections)
			conn.Close()
			continue
		}
		p.conns.Add(1)
		go func() {
			defer func() { <-p.slots; p.conns.Done() }()
			p.handle(ctx, conn)
		}()
	}
}

func (p *Proxy) handle(ctx context.Context, raw net.Conn) {
	defer raw.Close()
	source := raw.RemoteAddr().String()
	conn := tls.Server(raw, p.tls)
	hctx, cancel := context.WithTimeout(ctx, p.cfg.HandshakeTimeout)
	err := conn.HandshakeContext(hctx)
	cancel()
	if err != nil {
		p.log.Info("refused a connection: the TLS handshake failed (connect with mTLS and an X.509-SVID of the trust domain)", "source", source, "err", err)
		return
	}
	state := conn.ConnectionState()
	caller, err := gateway.CallerFromTLS(&state, source, "")
	if err != nil {
		p.log.Info("refused a connection", "source", source, "err", err)
		return
	}
	who := peerID(caller)
	req := gateway.Request{Action: p.cfg.Action, Resource: p.cfg.Resource}
	d, err := p.decider.Decide(ctx, caller, req)
	switch {
	case err != nil:
		p.log.Warn("refused a connection: no decision could be had", "caller", who, "source", source, "err", err)
		return
	case !d.Allow:
		p.log.Info("refused a connection", "caller", who, "source", source, "action", req.Action, "resource", req.Resource, "reason", d.Reason)
		return
	}
	live, release := p.holder.Hold(ctx, caller, req)
	defer release()
	if live.Err() != nil {
		p.log.Info("refused a connection: the decision stopped holding", "caller", who, "source", source, "reason", context.Cause(live))
		return
	}
	dialer := net.Dialer{Timeout: p.cfg.DialTimeout}
	up, err := dialer.DialContext(live, "tcp", p.cfg.Upstream)
	if err != nil {
		p.log.Warn("closed an allowed connection: the upstream is unreachable", "caller", who, "upstream", p.cfg.Upstream, "err", err)
		return
	}
	defer up.Close()
	p.log.Debug("connection allowed", "caller", who, "source", source, "chain", d.Chain)
	why := pipe(live, conn, up, p.cfg.IdleTimeout)
	if why != nil {
		p.log.Info("cut a connection", "caller", who, "source", source, "reason", why)
	}
}

// pipe copies both ways until both sides are done, the connection idles
// for idle, or live ends. It returns why the connection was cut, or nil
// when it ended by itself.
func pipe(live context.Context, client *tls.Conn, up net.Conn, idle time.Duration) error {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	done := make(chan error, 2)
	go func() {
		err := copyIdle(up, client, idle, &last)
		if tc, ok := up.(*net.TCPConn); ok && err == nil {
			tc.CloseWrite()
		}
		done <- err
	}()
	go func() {
		err := copyIdle(client, up, idle, &last)
		if err == nil {
			client.CloseWrite()
		}
		done <- err
	}()
	var cut error
	for range 2 {
		select {
		case err := <-done:
			if err != nil && cut == nil {
				cut = err
				client.NetConn().Close()
				up.Close()
			}
		case <-live.Done():
			if cut == nil {
				cut = context.Cause(live)
				client.NetConn().Close()
				up.Close()
			}
			<-done
		}
	}
	if errors.Is(cut, errIdle) {
		return cut
	}
	if live.Err() != nil {
		return context.Cause(live)
	}
	return nil
}

var errIdle = errors.New("no traffic either way for the listener's idle_timeout")

// copyIdle copies src to dst. A read that times out ends the copy only
// when neither direction moved for idle. It returns nil at src's EOF.
func copyIdle(dst io.Writer, src net.Conn, idle time.Duration, last *atomic.Int64) error {
	buf := make([]byte, 32<<10)
	for {
		src.SetReadDeadline(time.Now().Add(idle))
		n, err := src.Read(buf)
		if n > 0 {
			last.Store(time.Now().UnixNano())
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if time.Since(time.Unix(0, last.Load())) < idle {
					continue
				}
				return errIdle
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func peerID(c gateway.Caller) string {
	if len(c.Certificates) > 0 && len(c.Certificates[0].URIs) == 1 {
		return c.Certificates[0].URIs[0].String()
	}
	return "unknown"
}
