package tcpproxy_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/gateway"
	"writ.dev/writ/gateway/tcpproxy"
	"writ.dev/writ/server"
	"writ.dev/writ/store/sqlite/sqlitetest"
)

const td = "test.writ"

// env is a writ server, a gateway core connected to it with the gateway's
// own SVID, an echo upstream and a TCP proxy in front of it.
type env struct {
	srv      *server.Server
	admin    *grpc.ClientConn
	bundle   *x509bundle.Bundle
	core     *gateway.Core
	proxy    string // the proxy's address
	upstream string // the echo server's address, for direct comparisons
}

// source is a fixed identity: the SVID and bundle a Workload API would give.
type source struct {
	*x509svid.SVID
	*x509bundle.Bundle
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func startServer(t testing.TB) *server.Server {
	t.Helper()
	dir, err := os.MkdirTemp("", "writ")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := server.DefaultConfig()
	cfg.DataDir = dir
	cfg.TrustDomain = td
	cfg.ListenAddress = "127.0.0.1:0"
	cfg.OpsAddress = "127.0.0.1:0"
	// The gateway asks for every connection of the benchmarks.
	cfg.Limits.RequestsPerIdentity.Rate = 1e6
	cfg.Limits.RequestsPerIdentity.Burst = 1e6
	cfg.Defaults()
	sqlitetest.PlaceMigrated(t, cfg.Store.DSN)
	ctx := context.Background()
	srv, err := server.New(ctx, cfg, server.Options{Logger: quiet(), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv
}

func startEnv(t testing.TB) *env {
	t.Helper()
	e := &env{srv: startServer(t)}
	cc, err := grpc.NewClient("unix://"+e.srv.AdminSocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	e.admin = cc
	b, err := writv1.NewBundleServiceClient(cc).GetBundle(context.Background(), &writv1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var roots []*x509.Certificate
	for _, a := range b.GetX509Authorities() {
		c, err := x509.ParseCertificate(a)
		if err != nil {
			t.Fatal(err)
		}
		roots = append(roots, c)
	}
	e.bundle = x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString(td), roots)

	gw := source{e.mint(t, "spiffe://"+td+"/gateway"), e.bundle}
	conn, err := gateway.Dial(e.srv.ListenAddr().String(), gw, e.bundle.TrustDomain())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if e.core, err = gateway.NewCore(gateway.CoreConfig{Conn: conn}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.core.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(20 * time.Second)
	for !e.core.Watching() {
		if time.Now().After(deadline) {
			t.Fatal("the gateway core never watched the server's decisions")
		}
		time.Sleep(5 * time.Millisecond)
	}

	e.upstream = echoServer(t)
	p, err := tcpproxy.New(tcpproxy.Config{Listen: "127.0.0.1:0", Upstream: e.upstream, Resource: "tcp/orders-db"},
		gateway.ServerTLSConfig(gw), e.core, e.core, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := p.Listen()
	if err != nil {
		t.Fatal(err)
	}
	e.proxy = ln.Addr().String()
	pctx, pcancel := context.WithCancel(context.Background())
	pdone := make(chan struct{})
	go func() { p.Serve(pctx, ln); close(pdone) }()
	t.Cleanup(func() { pcancel(); <-pdone })
	return e
}

// mint gets an X.509-SVID for id over the admin socket.
func (e *env) mint(t testing.TB, id string) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := writv1.NewSVIDServiceClient(e.admin).MintX509SVID(context.Background(), &writv1.MintX509SVIDRequest{SpiffeId: id, Csr: csr})
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for _, der := range resp.GetCertChain() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	return &x509svid.SVID{ID: spiffeid.RequireFromString(id), Certificates: certs, PrivateKey: key}
}

// dial connects to the proxy as svid.
func (e *env) dial(t testing.TB, svid *x509svid.SVID) *tls.Conn {
	t.Helper()
	cfg := tlsconfig.MTLSClientConfig(svid, e.bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://"+td+"/gateway")))
	conn, err := tls.Dial("tcp", e.proxy, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// openTask creates and opens a task granting connect on tcp/orders-db to
// the members.
func (e *env) openTask(t testing.TB, members ...string) string {
	t.Helper()
	ctx := context.Background()
	tasks := writv1.NewTaskServiceClient(e.admin)
	created, err := tasks.CreateTask(ctx, &writv1.CreateTaskRequest{Task: &writv1.Task{
		Title: "month-end report", Reason: "finance asked", Owner: "spiffe://" + td + "/person/example.com/ada", Members: members,
		Grants:   []*writv1.Grant{{Actions: []string{"connect"}, Resources: []string{"tcp/orders-db"}, To: members}},
		Deadline: time.Now().Add(time.Hour).Unix(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tasks.OpenTask(ctx, &writv1.TaskTransitionRequest{Id: created.GetId()}); err != nil {
		t.Fatal(err)
	}
	return created.GetId()
}

func echoServer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}
