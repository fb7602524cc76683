package agent_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"writ.dev/writ/agent"
	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/attest/workload"
	"writ.dev/writ/attest/workload/unix"
	"writ.dev/writ/audit"
	"writ.dev/writ/server"
)

const td = "agent.test"

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func shortDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "wa")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// env is a server and the means to administer it.
type env struct {
	t      testing.TB
	cfg    server.Config
	srv    *server.Server
	admin  *grpc.ClientConn
	listen string
}

func newServerConfig(t testing.TB, dir string) server.Config {
	cfg := server.DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "server")
	cfg.TrustDomain = td
	cfg.ListenAddress = "127.0.0.1:0"
	cfg.OpsAddress = ""
	cfg.Defaults()
	return cfg
}

func startServer(t testing.TB, cfg server.Config) *env {
	t.Helper()
	return startServerWith(t, cfg, server.Options{Logger: quiet()})
}

func startServerWith(t testing.TB, cfg server.Config, opts server.Options) *env {
	t.Helper()
	ctx := context.Background()
	srv, err := server.New(ctx, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, cfg: cfg, srv: srv, listen: srv.ListenAddr().String()}
	t.Cleanup(e.stop)
	e.admin, err = grpc.NewClient("unix://"+srv.AdminSocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) stop() {
	if e.srv == nil {
		return
	}
	e.admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e.srv.Shutdown(ctx)
	e.srv = nil
}

// restart starts the server again on the same data dir and address.
func (e *env) restart() {
	e.t.Helper()
	cfg := e.cfg
	cfg.ListenAddress = e.listen
	ne := startServer(e.t, cfg)
	e.srv, e.admin = ne.srv, ne.admin
	ne.srv = nil // e owns it now
}

func (e *env) token() *writv1.JoinToken {
	e.t.Helper()
	tok, err := writv1.NewTokenServiceClient(e.admin).CreateJoinToken(context.Background(), &writv1.CreateJoinTokenRequest{})
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func (e *env) rule(spiffeID, parent string, ttl int64, sels ...string) *writv1.Entry {
	e.t.Helper()
	pe := &writv1.Entry{SpiffeId: spiffeID, ParentId: parent, X509TtlSeconds: ttl}
	for _, s := range sels {
		typ, val, _ := strings.Cut(s, ":")
		pe.Selectors = append(pe.Selectors, &writv1.Selector{Type: typ, Value: val})
	}
	resp, err := writv1.NewEntryServiceClient(e.admin).CreateEntries(context.Background(), &writv1.CreateEntriesRequest{Entries: []*writv1.Entry{pe}})
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.GetEntries()[0]
}

func (e *env) events() []string {
	e.t.Helper()
	resp, err := writv1.NewAuditServiceClient(e.admin).ReadEvents(context.Background(), &writv1.ReadAuditEventsRequest{Limit: 10000})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, ev := range resp.GetEvents() {
		out = append(out, string(ev.GetEvent()))
	}
	return out
}

func (e *env) hasEvent(typ, contains string) bool {
	for _, ev := range e.events() {
		if strings.Contains(ev, `"type":"`+typ+`"`) && strings.Contains(ev, contains) {
			return true
		}
	}
	return false
}

type runningAgent struct {
	*agent.Agent
	socket string
	cancel context.CancelFunc
	done   chan error
}

func startAgent(t testing.TB, e *env, dataDir, token string) *runningAgent {
	t.Helper()
	return startAgentWith(t, e, dataDir, token, nil)
}

func startAgentWith(t testing.TB, e *env, dataDir, token string, clock agent.Clock) *runningAgent {
	t.Helper()
	socket := filepath.Join(dataDir, "agent.sock")
	a, err := agent.New(context.Background(), agent.Config{
		ServerAddress: e.listen,
		DataDir:       dataDir,
		JoinToken:     token,
		SocketPath:    socket,
		Attestors:     []workload.Attestor{unix.New(unix.Options{})},
		Logger:        quiet(),
		Clock:         clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ra := &runningAgent{Agent: a, socket: socket, cancel: cancel, done: make(chan error, 1)}
	go func() { ra.done <- a.Run(ctx) }()
	t.Cleanup(ra.stop)
	waitFor(t, "the Workload API socket", func() bool {
		_, err := os.Stat(socket)
		return err == nil
	})
	return ra
}

func (ra *runningAgent) stop() {
	if ra.cancel != nil {
		ra.cancel()
		<-ra.done
		ra.cancel = nil
	}
}

func (ra *runningAgent) addr() workloadapi.ClientOption {
	return workloadapi.WithAddr("unix://" + ra.socket)
}

func uidSelector() string { return "unix:uid:" + strconv.Itoa(os.Geteuid()) }

// TestAgentServesGoSPIFFE is the promise of the Workload API: go-spiffe's
// own client, unchanged, gets X.509 and JWT SVIDs from a writ agent; two
// workloads talk mTLS with them; a changed rule reaches a watching
// workload; SVIDs keep being served while the server is down; and after a
// restart new rules arrive again.
func TestAgentServesGoSPIFFE(t *testing.T) {
	dir := shortDir(t)
	testAgentServesGoSPIFFE(t, dir, newServerConfig(t, dir))
}

// TestAgentServesGoSPIFFEOnPostgres is the same with the server on
// PostgreSQL.
func TestAgentServesGoSPIFFEOnPostgres(t *testing.T) {
	dir := shortDir(t)
	cfg := newServerConfig(t, dir)
	cfg.Store.Engine, cfg.Store.DSN = "postgres", freshPostgresDB(t)
	testAgentServesGoSPIFFE(t, dir, cfg)
}

func testAgentServesGoSPIFFE(t *testing.T, dir string, cfg server.Config) {
	e := startServer(t, cfg)
	tok := e.token()
	e.rule("spiffe://"+td+"/web", tok.GetAgentId(), 0, uidSelector())
	a := startAgent(t, e, filepath.Join(dir, "agent"), tok.GetToken())
	if a.ID().String() != tok.GetAgentId() {
		t.Fatalf("agent id %s, token said %s", a.ID(), tok.GetAgentId())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	svid, err := firstSVID(t, ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID.String() != "spiffe://"+td+"/web" {
		t.Fatalf("got %s", svid.ID)
	}
	bundles, err := workloadapi.FetchX509Bundles(ctx, a.addr())
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundles.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString(td))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	for _, c := range b.X509Authorities() {
		roots.AddCert(c)
	}
	if _, err := svid.Certificates[0].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("the SVID does not verify against the served bundle: %v", err)
	}

	// JWT-SVID, validated with the JWT bundle the agent serves.
	jwt, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "billing"}, a.addr())
	if err != nil {
		t.Fatal(err)
	}
	jb, err := workloadapi.FetchJWTBundles(ctx, a.addr())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(jwt.Marshal(), jb, []string{"billing"}); err != nil {
		t.Fatalf("JWT-SVID does not validate: %v", err)
	}
	if _, err := workloadapi.ValidateJWTSVID(ctx, jwt.Marshal(), "billing", a.addr()); err != nil {
		t.Fatalf("ValidateJWTSVID: %v", err)
	}

	// Two workloads (here: one process, two identities chosen by hint-free
	// ID) talk mTLS with go-spiffe's spiffetls.
	e.rule("spiffe://"+td+"/api", tok.GetAgentId(), 0, uidSelector())
	source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(a.addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer source.Close()
	waitFor(t, "both identities served", func() bool {
		resp, err := workloadapi.FetchX509Context(ctx, a.addr())
		return err == nil && len(resp.SVIDs) == 2
	})
	member := tlsconfig.AuthorizeMemberOf(spiffeid.RequireTrustDomainFromString(td))
	ln, err := spiffetls.ListenWithMode(ctx, "tcp", "127.0.0.1:0", spiffetls.MTLSServerWithSource(member, source))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("hello"))
			c.Close()
		}
	}()
	conn, err := spiffetls.DialWithMode(ctx, "tcp", ln.Addr().String(), spiffetls.MTLSClientWithSource(member, source))
	if err != nil {
		t.Fatalf("mTLS between two workloads: %v", err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("mTLS read: %q %v", buf, err)
	}
	conn.Close()

	// The server goes away: workloads keep their SVIDs.
	e.stop()
	if _, err := workloadapi.FetchX509SVID(ctx, a.addr()); err != nil {
		t.Fatalf("with the server down the agent stopped serving: %v", err)
	}
	e.restart()
	e.rule("spiffe://"+td+"/after-restart", tok.GetAgentId(), 0, uidSelector())
	waitFor(t, "a rule made after the server restarted reaches the workload", func() bool {
		resp, err := workloadapi.FetchX509Context(ctx, a.addr())
		if err != nil {
			return false
		}
		for _, s := range resp.SVIDs {
			if s.ID.Path() == "/after-restart" {
				return true
			}
		}
		return false
	})
}

// TestRotationReachesWatchers gives a rule a short TTL and watches the
// workload receive a new SVID before the old one expires. The server and
// the agent share a clock that the test moves past the renewal point, so
// the test does not wait for it.
func TestRotationReachesWatchers(t *testing.T) {
	dir := shortDir(t)
	clk := &jumpClock{jumped: make(chan struct{})}
	e := startServerWith(t, newServerConfig(t, dir), server.Options{Logger: quiet(), Now: clk.Now})
	tok := e.token()
	// A TTL short enough that the jump stays within the server's allowed
	// skew from the store's clock (which the test does not move), and long
	// enough that the renewed SVID, backdated like all, is not due at once.
	const ttl = 40
	e.rule("spiffe://"+td+"/short", tok.GetAgentId(), ttl, uidSelector())
	a := startAgentWith(t, e, filepath.Join(dir, "agent"), tok.GetToken(), clk)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first, err := firstSVID(t, ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	w := &serialWatcher{updates: make(chan *x509.Certificate, 16)}
	go workloadapi.WatchX509Context(ctx, w, a.addr())
	old := first.Certificates[0]
	if latest := <-w.updates; latest.SerialNumber.Cmp(old.SerialNumber) != 0 {
		t.Fatal("the SVID changed before its renewal point")
	}
	// Renewal is due between half and six tenths of the SVID's life; move
	// just past that, well before it expires.
	life := old.NotAfter.Sub(old.NotBefore)
	clk.jump(old.NotBefore.Add(life*6/10 + time.Second).Sub(clk.Now()))
	for {
		select {
		case <-ctx.Done():
			t.Fatal("no rotated SVID reached the watcher")
		case latest := <-w.updates:
			if latest.SerialNumber.Cmp(old.SerialNumber) != 0 {
				if !clk.Now().Before(old.NotAfter) {
					t.Fatalf("the SVID was rotated only at %v, after it expired at %v", clk.Now(), old.NotAfter)
				}
				return
			}
		}
	}
}

// jumpClock is the system clock moved forward by the test. Its timers
// fire by its own time, so a jump wakes those it passes.
type jumpClock struct {
	mu     sync.Mutex
	offset time.Duration
	jumped chan struct{} // closed and replaced at each jump
}

func (c *jumpClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *jumpClock) jump(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
	close(c.jumped)
	c.jumped = make(chan struct{})
}

func (c *jumpClock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	deadline := c.Now().Add(d)
	go func() {
		for {
			c.mu.Lock()
			now, jumped := time.Now().Add(c.offset), c.jumped
			c.mu.Unlock()
			if !now.Before(deadline) {
				ch <- now
				return
			}
			select {
			case <-time.After(deadline.Sub(now)):
			case <-jumped:
			}
		}
	}()
	return ch
}

// serialWatcher hands each update's first SVID to the test.
type serialWatcher struct{ updates chan *x509.Certificate }

func (w *serialWatcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	if len(c.SVIDs) > 0 {
		w.updates <- c.SVIDs[0].Certificates[0]
	}
}

func (w *serialWatcher) OnX509ContextWatchError(error) {}

// TestReplayedTokenAndClonedAgentAreRefused: a token joins once; a copy of
// an agent presenting a superseded certificate is locked out and audited.
func TestReplayedTokenAndClonedAgentAreRefused(t *testing.T) {
	dir := shortDir(t)
	e := startServer(t, newServerConfig(t, dir))
	tok := e.token()
	e.rule("spiffe://"+td+"/svc", tok.GetAgentId(), 0, uidSelector())
	a := startAgent(t, e, filepath.Join(dir, "agent"), tok.GetToken())

	_, err := agent.New(context.Background(), agent.Config{
		ServerAddress: e.listen, DataDir: filepath.Join(dir, "replay"), JoinToken: tok.GetToken(),
		Attestors: []workload.Attestor{unix.New(unix.Options{})}, Logger: quiet(),
	})
	if err == nil || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("replayed token: err = %v, want a refusal saying the token was already used", err)
	}
	if !e.hasEvent(audit.EventAgentJoinRefused, "already used") {
		t.Fatal("the replay left no audit event")
	}

	// Copy the agent's state, then let the real agent renew and use its
	// new certificate: the copy now holds a superseded one.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := firstSVID(t, ctx, a); err != nil {
		t.Fatal(err)
	}
	a.stop()
	clone := filepath.Join(dir, "clone")
	if out, err := exec.Command("cp", "-a", filepath.Join(dir, "agent"), clone).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	a = startAgent(t, e, filepath.Join(dir, "agent"), "")
	if err := a.RenewNow(ctx); err != nil {
		t.Fatal(err)
	}
	e.rule("spiffe://"+td+"/after-renewal", tok.GetAgentId(), 0, uidSelector())
	waitFor(t, "the renewed agent syncs with its new certificate", func() bool {
		resp, err := workloadapi.FetchX509Context(ctx, a.addr())
		return err == nil && len(resp.SVIDs) == 2
	})

	c := startAgent(t, e, clone, "")
	waitFor(t, "the clone is detected and the agent locked", func() bool {
		return e.hasEvent(audit.EventAgentClone, tok.GetAgentId())
	})
	locks, err := writv1.NewLockServiceClient(e.admin).ListLocks(ctx, &writv1.ListLocksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(locks.GetLocks()) != 1 || locks.GetLocks()[0].GetTarget().GetKind() != "agent" || locks.GetLocks()[0].GetTarget().GetValue() != tok.GetAgentId() {
		t.Fatalf("locks after the clone: %v", locks.GetLocks())
	}
	// Neither copy may go on serving the SVIDs it cached: the server
	// cannot tell which is the real agent.
	waitFor(t, "the locked agent withdraws its cached SVIDs", func() bool {
		_, err := workloadapi.FetchX509Context(ctx, a.addr())
		return status.Code(err) == codes.PermissionDenied
	})
	if _, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "x"}, a.addr()); err == nil {
		t.Error("the locked agent still serves JWT-SVIDs")
	}
	if _, err := workloadapi.FetchX509Context(ctx, c.addr()); status.Code(err) != codes.PermissionDenied {
		t.Errorf("the clone serves: %v", err)
	}
}

// freshPostgresDB creates an empty database on the test cluster, or skips.
func freshPostgresDB(t *testing.T) string {
	t.Helper()
	dsn := os.Getenv("WRIT_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("WRIT_TEST_POSTGRES_DSN not set: start a throwaway cluster with scripts/pg-test-cluster.sh (make test-postgres does)")
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var raw [6]byte
	rand.Read(raw[:])
	name := "writ_agent_" + hex.EncodeToString(raw[:])
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := pgx.Connect(context.Background(), dsn); err == nil {
			c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			c.Close(context.Background())
		}
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// firstSVID waits for the agent's first sync and minting, then fetches
// the workload's SVID as go-spiffe does.
func firstSVID(t testing.TB, ctx context.Context, a *runningAgent) (*x509svid.SVID, error) {
	t.Helper()
	if err := a.Ready(ctx); err != nil {
		return nil, err
	}
	return workloadapi.FetchX509SVID(ctx, a.addr())
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting: %s", what)
}

// TestLockedIdentityIsNotServed locks one of a workload's identities: the
// agent stops serving it within about a second and serves it again once
// the lock is lifted.
func TestLockedIdentityIsNotServed(t *testing.T) {
	dir := shortDir(t)
	e := startServer(t, newServerConfig(t, dir))
	tok := e.token()
	e.rule("spiffe://"+td+"/keep", tok.GetAgentId(), 0, uidSelector())
	e.rule("spiffe://"+td+"/ci/build", tok.GetAgentId(), 0, uidSelector())
	a := startAgent(t, e, filepath.Join(dir, "agent"), tok.GetToken())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ids := func() []string {
		resp, err := workloadapi.FetchX509Context(ctx, a.addr())
		if err != nil {
			return nil
		}
		var out []string
		for _, s := range resp.SVIDs {
			out = append(out, s.ID.Path())
		}
		return out
	}
	waitFor(t, "both identities served", func() bool { return len(ids()) == 2 })
	l, err := writv1.NewLockServiceClient(e.admin).CreateLock(ctx, &writv1.CreateLockRequest{
		Target: &writv1.LockTarget{Kind: "id-prefix", Value: "spiffe://" + td + "/ci"}, Reason: "INC-1"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, "the locked identity withdrawn", func() bool {
		got := ids()
		return len(got) == 1 && got[0] == "/keep"
	})
	t.Logf("lock reached the workload in %s", time.Since(start).Round(time.Millisecond))
	if _, err := writv1.NewLockServiceClient(e.admin).DeleteLock(ctx, &writv1.DeleteLockRequest{Id: l.GetId()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the identity served again", func() bool { return len(ids()) == 2 })
}

// TestTaintedAuthorityRenewsSVIDs taints the CA that signed a workload's
// SVID: the server replaces the CA and the agent renews the SVID at once,
// long before its renewal point.
func TestTaintedAuthorityRenewsSVIDs(t *testing.T) {
	dir := shortDir(t)
	e := startServer(t, newServerConfig(t, dir))
	tok := e.token()
	e.rule("spiffe://"+td+"/svc", tok.GetAgentId(), 0, uidSelector())
	clk := &jumpClock{jumped: make(chan struct{})}
	a := startAgentWith(t, e, filepath.Join(dir, "agent"), tok.GetToken(), clk)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	before, err := firstSVID(t, ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	caID := hex.EncodeToString(before.Certificates[0].AuthorityKeyId)
	if _, err := writv1.NewCAServiceClient(e.admin).TaintAuthority(ctx, &writv1.AuthorityRequest{Kind: "x509", Id: caID}); err != nil {
		t.Fatal(err)
	}
	// The agent mints again at once. When the server has not replaced the
	// tainted CA yet, that SVID comes from it again, and the agent asks
	// once more after its retry pause (5s) on its own clock: the test moves
	// that clock past the pause rather than waiting it out, still long
	// before the SVID's renewal point.
	jumped := false
	waitFor(t, "an SVID from the new CA", func() bool {
		s, err := workloadapi.FetchX509SVID(ctx, a.addr())
		if err != nil {
			return false
		}
		if hex.EncodeToString(s.Certificates[0].AuthorityKeyId) != caID {
			return true
		}
		if !jumped && s.Certificates[0].SerialNumber.Cmp(before.Certificates[0].SerialNumber) != 0 {
			clk.jump(6 * time.Second)
			jumped = true
		}
		return false
	})
}
