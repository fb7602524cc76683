// Package server is writ's control plane: it wires the store, the keystore
// and the authorities together and serves the gRPC API on a local admin
// socket (authorized by peer credentials) and on a TCP listener for remote
// callers (mTLS with X.509-SVIDs), plus health and metrics over HTTP.
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/attest/node/oidc"
	"writ.dev/writ/authz"
	"writ.dev/writ/ca"
	"writ.dev/writ/ca/rotation"
	"writ.dev/writ/internal/peercred"
	"writ.dev/writ/keystore"
	"writ.dev/writ/store"
	"writ.dev/writ/store/postgres"
	"writ.dev/writ/store/sqlite"
)

// Options are the parts of a server that are not configuration.
type Options struct {
	Logger  *slog.Logger
	Version string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Server is one writ control-plane process.
type Server struct {
	cfg      Config
	td       spiffeid.TrustDomain
	serverID string
	log      *slog.Logger
	version  string
	now      func() time.Time

	store   store.Store
	keys    keystore.KeyStore
	x509    *rotation.X509Manager
	jwt     *rotation.JWTManager
	metrics *metrics
	tlsID   *serverSVID
	dirLock *os.File
	// locks is the in-memory lock set checked at issuance (server/locks.go).
	locks *lockSet
	// audit signs checkpoints of the audit log (server/audit.go).
	audit *auditLog
	// clock watches this server's offset from the store's clock.
	clock *clockWatch
	// issuer is the pipeline every SVID goes through (server/issuer.go).
	issuer *issuer
	// requests rate limits token exchanges and decisions per identity
	// (server/requestlimit.go).
	requests *requestLimits
	// nodes verifies the join methods that need no secret (server/join.go).
	nodes *nodeAttestors
	// people verifies ID tokens of people signing in (server/people.go).
	people *oidc.Verifier
	// decisions is the index Check decides over; decisionLog records the
	// decisions in the background (server/decide.go).
	decisions   *decisions
	decisionLog *decisionLog
	// decisionFeed wakes WatchDecisions streams at every rebuild of the
	// decision index (server/decisionwatch.go).
	decisionFeed *decisionFeed
	// guardrail bounds every decision; nil without policy files.
	guardrail authz.Guardrail
	// delegator issues and verifies delegation tokens (server/delegate.go).
	delegator *delegator
	// ruleCache keeps the review rules parsed (server/requests.go).
	ruleCache ruleCache
	// feed follows the store for every agent's sync stream (server/feed.go).
	feed *entryFeed
	// requestMetrics and webhooks hear of request changes this server
	// writes (server/requestevents.go, server/webhooks.go).
	requestMetrics *requestMetrics
	webhooks       *webhookSender
	// requestFeed follows request changes for WatchRequests
	// (server/requestwatch.go).
	requestFeed *requestFeed
	// anonymousSlots holds one token per call in progress on the network
	// listener from a caller without a certificate (server/limits.go).
	anonymousSlots chan struct{}
	// stopping is closed when shutdown begins, so long-lived streams end
	// and a graceful stop does not wait on them.
	stopping <-chan struct{}

	grpcAdmin  *grpc.Server
	grpcRemote *grpc.Server
	ops        *http.Server
	oidc       *http.Server
	bundleEP   *http.Server
	tokenEP    *http.Server
	// bundleTLS is the bundle endpoint's TLS configuration, made in New so
	// that unusable certificate files stop the server before it starts.
	bundleTLS *tls.Config

	// console serves the web console (server/console.go); nil when off.
	console *consoleEndpoint

	adminLn, remoteLn, opsLn, oidcLn, bundleLn, tokenLn net.Listener
	wg                                                  sync.WaitGroup
	cancel                                              context.CancelFunc
}

// New opens the store and keys and loads (or makes) the authority. cfg must
// have been through Defaults; New validates it.
func New(ctx context.Context, cfg Config, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		td:      cfg.trustDomain(),
		log:     opts.Logger,
		version: opts.Version,
		now:     opts.Now,
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if err := s.open(ctx); err != nil {
		s.closeResources()
		return nil, err
	}
	return s, nil
}

func (s *Server) open(ctx context.Context) error {
	if err := prepareDataDir(s.cfg.DataDir); err != nil {
		return err
	}
	lock, err := lockDataDir(s.cfg.DataDir)
	if err != nil {
		return err
	}
	s.dirLock = lock
	if s.serverID, err = loadServerID(s.cfg); err != nil {
		return err
	}
	if s.cfg.TrustDomain == DefaultTrustDomain {
		s.log.Warn("using the default trust domain; choose your own with --trust-domain before issuing real identities", "trust_domain", s.cfg.TrustDomain)
	}
	// The engines' Open return a typed nil on failure; assigned to s.store
	// it would be a non-nil interface that closeResources then calls.
	switch s.cfg.Store.Engine {
	case "postgres":
		var st *postgres.Store
		if st, err = postgres.Open(ctx, s.cfg.Store.DSN); err == nil {
			s.store = st
		}
	default:
		var st *sqlite.Store
		if st, err = sqlite.Open(ctx, s.cfg.Store.DSN); err == nil {
			s.store = st
		}
	}
	if err != nil {
		return fmt.Errorf("store (%s): %w", s.cfg.Store.Engine, err)
	}
	if s.keys, err = keystore.NewDisk(filepath.Join(s.cfg.DataDir, "keys")); err != nil {
		return fmt.Errorf("keystore: %w", err)
	}
	if s.audit, err = newAuditLog(ctx, s, s.keys); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	s.clock = newClockWatch(s)
	if err := s.clock.check(ctx); err != nil {
		return err
	}
	kt, _ := keystore.ParseKeyType(s.cfg.CA.KeyType)
	var upstream *ca.Upstream
	if u := s.cfg.CA.Upstream; u.Enabled() {
		if upstream, err = ca.LoadUpstream(u.CertFile, u.KeyFile, u.BundleFile); err != nil {
			return fmt.Errorf("ca.upstream: %w", err)
		}
		s.log.Info("x509 authority runs under an upstream CA", "upstream_subject", upstream.Cert.Subject.String(),
			"upstream_not_after", upstream.Cert.NotAfter, "roots", len(upstream.Roots))
	}
	s.x509, err = rotation.NewX509Manager(ctx, rotation.X509ManagerConfig{
		TrustDomain: s.td,
		ServerID:    s.serverID,
		KeyStore:    s.keys,
		Store:       s.store,
		KeyType:     kt,
		TTL:         s.cfg.CA.TTL.Duration,
		Subject:     pkix.Name{Organization: []string{s.cfg.CA.Organization}, CommonName: s.cfg.CA.CommonName},
		StatePath:   filepath.Join(s.cfg.DataDir, "x509-ca.json"),
		Upstream:    upstream,
		Now:         s.now,
		Logger:      s.log,
	})
	if err != nil {
		return fmt.Errorf("x509 authority: %w", err)
	}
	s.jwt, err = rotation.NewJWTManager(ctx, rotation.JWTManagerConfig{
		TrustDomain: s.td,
		ServerID:    s.serverID,
		KeyStore:    s.keys,
		Store:       s.store,
		TTL:         s.cfg.CA.TTL.Duration,
		StatePath:   filepath.Join(s.cfg.DataDir, "jwt-ca.json"),
		Now:         s.now,
		Logger:      s.log,
	})
	if err != nil {
		return fmt.Errorf("jwt authority: %w", err)
	}
	if err := s.loadNodeAttestors(ctx); err != nil {
		return err
	}
	if err := s.loadPeople(ctx); err != nil {
		return err
	}
	if err := s.loadDelegation(ctx); err != nil {
		return err
	}
	if len(s.cfg.Guardrails.Files) > 0 {
		set, err := LoadGuardrails(s.cfg.Guardrails.Files)
		if err != nil {
			return err
		}
		s.guardrail = guardrails{set}
		s.log.Info("guardrails loaded", "policies", set.Len())
	}
	s.metrics = newMetrics(s)
	s.registerRequestMetrics()
	s.tlsID = newServerSVID(s)
	if len(s.cfg.Webhooks) > 0 {
		s.loadWebhooks()
	}
	if s.cfg.BundleEndpoint.Address != "" {
		if s.bundleTLS, err = s.bundleEndpointTLS(); err != nil {
			return err
		}
	}
	return nil
}

// TrustDomain is the trust domain the server issues in.
func (s *Server) TrustDomain() spiffeid.TrustDomain { return s.td }

// ServerID distinguishes this server among those sharing a store.
func (s *Server) ServerID() string { return s.serverID }

// DataDir is where the server keeps its state.
func (s *Server) DataDir() string { return s.cfg.DataDir }

// AdminSocket is the path of the admin socket.
func (s *Server) AdminSocket() string { return s.cfg.AdminSocket }

// ListenAddr is the remote gRPC address once started, or nil.
func (s *Server) ListenAddr() net.Addr { return addrOf(s.remoteLn) }

// OpsAddr is the health and metrics address once started, or nil.
func (s *Server) OpsAddr() net.Addr { return addrOf(s.opsLn) }

// OIDCAddr is the OIDC discovery address once started, or nil.
func (s *Server) OIDCAddr() net.Addr { return addrOf(s.oidcLn) }

// Store exposes the store for in-process users such as `writ dev`.
func (s *Server) Store() store.Store { return s.store }

func addrOf(ln net.Listener) net.Addr {
	if ln == nil {
		return nil
	}
	return ln.Addr()
}

// Start binds every listener and serves in the background. Binding errors are
// returned before anything is served.
func (s *Server) Start(ctx context.Context) error {
	ctx, s.cancel = context.WithCancel(ctx)
	s.stopping = ctx.Done()
	// Locks are loaded before anything can issue, and kept fresh below.
	s.loadLocks(ctx)
	s.startIssuer(ctx)
	s.startRequestLimits(ctx)
	s.feed = newEntryFeed(s)
	if err := s.feed.start(ctx); err != nil {
		return fmt.Errorf("agent feed: %w", err)
	}
	s.requestFeed = newRequestFeed(s)
	if err := s.requestFeed.start(ctx); err != nil {
		return fmt.Errorf("request feed: %w", err)
	}
	s.decisionFeed = newDecisionFeed()
	s.decisions, s.decisionLog = newDecisions(s), newDecisionLog(s)
	if err := s.decisions.refresh(ctx, true); err != nil {
		return fmt.Errorf("decision index: %w", err)
	}
	if err := s.listen(); err != nil {
		s.closeListeners()
		return err
	}
	if err := s.listenConsole(); err != nil {
		s.closeListeners()
		return err
	}
	s.grpcAdmin = s.newGRPC(grpc.Creds(peercred.Credentials()), grpc.MaxRecvMsgSize(adminMaxMessage))
	s.serve("admin", func() error { return s.grpcAdmin.Serve(s.adminLn) })
	if s.remoteLn != nil || s.tokenLn != nil || s.console != nil || s.webhooks != nil || (s.bundleLn != nil && s.cfg.BundleEndpoint.Profile == ProfileHTTPSSPIFFE) {
		if err := s.tlsID.rotate(); err != nil {
			return err
		}
	}
	if s.remoteLn != nil {
		s.anonymousSlots = make(chan struct{}, s.cfg.Limits.AnonymousCalls)
		s.grpcRemote = s.newGRPC(append(s.networkGRPCOptions(), grpc.Creds(credentials.NewTLS(s.tlsID.tlsConfig())))...)
		s.serve("remote", func() error { return s.grpcRemote.Serve(s.remoteLn) })
	}
	if s.opsLn != nil {
		s.ops = s.newHTTPServer("ops", s.opsHandler())
		s.serve("ops", func() error { return s.ops.Serve(s.opsLn) })
	}
	if s.oidcLn != nil {
		s.oidc = s.newHTTPServer("oidc", s.oidcHandler())
		s.serve("oidc", func() error { return s.oidc.Serve(s.oidcLn) })
	}
	if s.bundleLn != nil {
		s.bundleEP = s.newHTTPServer("bundle", s.bundleEndpointHandler())
		s.bundleEP.TLSConfig = s.bundleTLS
		s.serve("bundle", func() error { return s.bundleEP.ServeTLS(s.bundleLn, "", "") })
	}
	if s.tokenLn != nil {
		s.tokenEP = s.newHTTPServer("token", s.tokenHandler())
		s.tokenEP.TLSConfig = s.tokenTLS()
		s.serve("token", func() error { return s.tokenEP.ServeTLS(s.tokenLn, "", "") })
	}
	if err := s.startConsole(); err != nil {
		return err
	}
	s.background(ctx, s.x509.Run)
	s.background(ctx, s.jwt.Run)
	s.background(ctx, s.tlsID.run)
	s.background(ctx, s.locks.run)
	s.background(ctx, s.audit.run)
	s.background(ctx, s.feed.run)
	s.background(ctx, s.requestFeed.run)
	if s.webhooks != nil {
		s.webhooks.run(ctx)
	}
	s.background(ctx, s.decisions.run)
	s.background(ctx, s.decisionLog.run)
	s.background(ctx, s.decisions.firstUse.run)
	s.background(ctx, s.clock.run)
	s.background(ctx, s.runRequestSweep)
	s.background(ctx, s.runWatchSweep)
	s.log.Info("writ server started",
		"trust_domain", s.td.Name(), "server_id", s.serverID, "store", s.cfg.Store.Engine,
		"admin_socket", s.cfg.AdminSocket, "listen", addrString(s.remoteLn), "ops", addrString(s.opsLn),
		"oidc", addrString(s.oidcLn), "bundle_endpoint", addrString(s.bundleLn), "console", addrString(s.consoleListener()),
		"version", s.version)
	return nil
}

func addrString(ln net.Listener) string {
	if ln == nil {
		return "disabled"
	}
	return ln.Addr().String()
}

func (s *Server) listen() error {
	var err error
	if s.adminLn, err = listenAdminSocket(s.cfg.AdminSocket); err != nil {
		return err
	}
	if s.cfg.ListenAddress != "" {
		if s.remoteLn, err = net.Listen("tcp", s.cfg.ListenAddress); err != nil {
			return fmt.Errorf("listen_address: %w", err)
		}
	}
	if s.cfg.OpsAddress != "" {
		if s.opsLn, err = net.Listen("tcp", s.cfg.OpsAddress); err != nil {
			return fmt.Errorf("ops_address: %w", err)
		}
	}
	if s.cfg.OIDCAddress != "" {
		if s.oidcLn, err = net.Listen("tcp", s.cfg.OIDCAddress); err != nil {
			return fmt.Errorf("oidc_address: %w", err)
		}
	}
	if s.cfg.BundleEndpoint.Address != "" {
		if s.bundleLn, err = net.Listen("tcp", s.cfg.BundleEndpoint.Address); err != nil {
			return fmt.Errorf("bundle_endpoint.address: %w", err)
		}
	}
	if s.cfg.TokenEndpoint.Address != "" {
		if s.tokenLn, err = net.Listen("tcp", s.cfg.TokenEndpoint.Address); err != nil {
			return fmt.Errorf("token_endpoint.address: %w", err)
		}
	}
	// The listeners callers reach directly get a cap per source address;
	// ops is local and OIDC sits behind a proxy, whose one address would
	// hit the cap.
	for _, ln := range []*net.Listener{&s.remoteLn, &s.bundleLn, &s.tokenLn} {
		if *ln != nil {
			*ln = limitPerSource(*ln, s.cfg.Limits.ConnsPerSource, s.log)
		}
	}
	return nil
}

// newGRPC makes a gRPC server; opts come first so that their interceptors
// (the size limits) run before metrics and authorization.
func (s *Server) newGRPC(opts ...grpc.ServerOption) *grpc.Server {
	g := grpc.NewServer(append(opts,
		grpc.MaxSendMsgSize(maxResponseBytes),
		grpc.ChainUnaryInterceptor(s.metrics.unary, s.unaryAuthz),
		grpc.ChainStreamInterceptor(s.streamAuthz),
	)...)
	writv1.RegisterEntryServiceServer(g, &entryService{s: s})
	writv1.RegisterSVIDServiceServer(g, &svidService{s: s})
	writv1.RegisterBundleServiceServer(g, &bundleService{s: s})
	writv1.RegisterStatusServiceServer(g, &statusService{s: s})
	writv1.RegisterLockServiceServer(g, &lockService{s: s})
	writv1.RegisterAuditServiceServer(g, &auditService{s: s})
	writv1.RegisterCAServiceServer(g, &caService{s: s})
	writv1.RegisterTokenServiceServer(g, &tokenService{s: s})
	writv1.RegisterAgentServiceServer(g, &agentService{s: s})
	writv1.RegisterPersonServiceServer(g, &personService{s: s})
	writv1.RegisterTaskServiceServer(g, &taskService{s: s})
	writv1.RegisterDecisionServiceServer(g, &decisionService{s: s})
	writv1.RegisterInventoryServiceServer(g, &inventoryService{s: s})
	writv1.RegisterStoreServiceServer(g, &storeService{s: s})
	writv1.RegisterRequestServiceServer(g, &requestService{s: s})
	writv1.RegisterReviewServiceServer(g, &reviewService{s: s})
	writv1.RegisterRequestWatchServiceServer(g, &requestWatchService{s: s})
	writv1.RegisterWatchServiceServer(g, &watchService{s: s})
	return g
}

func (s *Server) serve(name string, fn func() error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := fn(); err != nil && !errors.Is(err, grpc.ErrServerStopped) && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			s.log.Error("listener stopped", "listener", name, "err", err)
		}
	}()
}

func (s *Server) background(ctx context.Context, fn func(context.Context)) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn(ctx)
	}()
}

// Shutdown stops accepting work, lets in-flight calls finish until ctx ends,
// then closes everything. It is safe to call once after Start.
func (s *Server) Shutdown(ctx context.Context) {
	if s.cancel != nil {
		s.cancel()
	}
	done := make(chan struct{})
	go func() {
		for _, g := range []*grpc.Server{s.grpcAdmin, s.grpcRemote} {
			if g != nil {
				g.GracefulStop()
			}
		}
		for _, h := range []*http.Server{s.ops, s.oidc, s.bundleEP, s.tokenEP, s.consoleServer()} {
			if h != nil {
				_ = h.Shutdown(ctx)
			}
		}
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("graceful shutdown timed out; closing connections")
		for _, g := range []*grpc.Server{s.grpcAdmin, s.grpcRemote} {
			if g != nil {
				g.Stop()
			}
		}
		for _, h := range []*http.Server{s.ops, s.oidc, s.bundleEP, s.tokenEP, s.consoleServer()} {
			if h != nil {
				_ = h.Close()
			}
		}
		<-done
	}
	s.closeListeners()
	s.wg.Wait()
	s.closeResources()
	s.log.Info("writ server stopped")
}

// Run starts the server and blocks until ctx ends, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(ctx); err != nil {
		s.closeResources()
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	s.Shutdown(sctx)
	return nil
}

func (s *Server) closeListeners() {
	for _, ln := range []net.Listener{s.adminLn, s.remoteLn, s.opsLn, s.oidcLn, s.bundleLn, s.tokenLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
	if s.console != nil {
		_ = s.console.ln.Close()
	}
	if s.adminLn != nil {
		_ = os.Remove(s.cfg.AdminSocket)
	}
}

func (s *Server) closeResources() {
	if s.store != nil {
		_ = s.store.Close()
		s.store = nil
	}
	if s.dirLock != nil {
		_ = s.dirLock.Close()
		s.dirLock = nil
	}
}

// prepareDataDir makes the data dir private to the server's user.
func prepareDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("data_dir: %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("data_dir: %s is writable by other users (mode %v): chmod 700 it", dir, fi.Mode().Perm())
	}
	return nil
}

// lockDataDir keeps two servers from sharing one data dir, which would make
// them fight over the CA key and the embedded store.
func lockDataDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "writ.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("data_dir: %s is in use by another writ server (%v)", dir, err)
	}
	return f, nil
}

// loadServerID returns the configured server id, or one generated on the
// first run and kept in the data dir so it survives restarts.
func loadServerID(cfg Config) (string, error) {
	if cfg.ServerID != "" {
		return cfg.ServerID, nil
	}
	path := filepath.Join(cfg.DataDir, "server-id")
	b, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if !validServerID(id) {
			return "", fmt.Errorf("server_id: %s holds %q, which is not a valid server id: remove the file or set server_id", path, id)
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("server_id: %w", err)
	}
	var raw [8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(raw[:])
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("server_id: %w", err)
	}
	return id, nil
}

// listenAdminSocket binds the admin socket, replacing a stale socket file but
// never a live server's or a file that is not a socket.
func listenAdminSocket(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("admin_socket: %s exists and is not a socket; remove it or choose another path", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin_socket: another server is listening on %s", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("admin_socket: removing stale socket: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("admin_socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin_socket: %w", err)
	}
	// Anyone who can reach the socket may connect; the peer credentials
	// decide, so a refused uid is told why and the refusal is logged.
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin_socket: %w", err)
	}
	return ln, nil
}
