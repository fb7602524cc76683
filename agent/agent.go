// Package agent is writ's node agent. It joins the trust domain once (by
// token), then renews with its own SVID; it follows its rules from the
// server by store revision, pre-issues SVIDs for them with keys made here,
// and serves them to the workloads of its node over the SPIFFE Workload API,
// attesting each caller. It keeps serving what it holds through a server
// outage, until the SVIDs expire.
package agent

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"writ.dev/writ/agent/workloadapi"
	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/attest/node/jointoken"
	"writ.dev/writ/attest/workload"
	"writ.dev/writ/identity"
	"writ.dev/writ/internal/pemfile"
	"writ.dev/writ/keystore"
)

// Config is what an agent needs.
type Config struct {
	// ServerAddress is the server's remote gRPC listener, host:port.
	ServerAddress string
	// DataDir keeps the agent's key (keys/, mode 0600) and state.
	DataDir string
	// JoinToken is used when the agent has no usable identity yet.
	JoinToken string
	// BundleFile, when set, holds the trust anchors to verify the server
	// with at join, instead of the pins the join token carries. Joins
	// without a token need it.
	BundleFile string
	// TrustDomain names the trust domain when BundleFile's authorities do
	// not (an upstream PKI's roots carry no SPIFFE ID).
	TrustDomain string
	// JoinMethod, when set, joins by a method configured on the server
	// instead of a token: an OIDC or Kubernetes issuer's name (JoinJWT
	// supplies the token) or "x509pop" (X509PoPCertFile and KeyFile).
	JoinMethod string
	// JoinJWT returns a token for audience, the trust domain's name.
	JoinJWT func(ctx context.Context, audience string) (string, error)
	// X509PoPCertFile and X509PoPKeyFile are PEM files: the node's
	// certificate (then its chain) and its private key.
	X509PoPCertFile string
	X509PoPKeyFile  string
	// SocketPath is the Workload API socket; empty serves none.
	SocketPath string
	// Attestors attest workloads; at least one.
	Attestors []workload.Attestor
	Logger    *slog.Logger
	// Clock defaults to the system's.
	Clock Clock
}

// Agent is a running node agent.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	keys  keystore.KeyStore
	cache *cache

	id spiffeid.ID
	td spiffeid.TrustDomain

	mu    sync.Mutex
	state *agentState
	key   crypto.Signer
	conn  *grpc.ClientConn
	// connGen counts connections, so a loop can tell its stream's
	// connection was replaced.
	connGen int

	wl *workloadapi.Server
}

// New loads the agent's identity from DataDir, or joins with the token
// when there is none or it has expired. It fails when neither works, with
// what to do.
func New(ctx context.Context, cfg Config) (*Agent, error) {
	if cfg.ServerAddress == "" {
		return nil, errors.New("agent: no server address: pass --server HOST:PORT")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("agent: no data dir")
	}
	if len(cfg.Attestors) == 0 {
		return nil, errors.New("agent: no workload attestors")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: data dir: %w", err)
	}
	ks, err := keystore.NewDisk(cfg.DataDir + "/keys")
	if err != nil {
		return nil, fmt.Errorf("agent: keystore: %w", err)
	}
	a := &Agent{cfg: cfg, log: cfg.Logger.With("component", "agent"), keys: ks}
	if err := a.loadOrJoin(ctx); err != nil {
		return nil, err
	}
	a.cache = newCache(a.id, cfg.Clock.Now)
	a.cache.mintJWT = a.mintJWT
	a.cache.setBundle(a.state.bundle, nil)
	return a, nil
}

// ID is the agent's SPIFFE ID; rules whose parent it is apply on this node.
func (a *Agent) ID() spiffeid.ID { return a.id }

// loadOrJoin restores the saved identity if it is still valid, else joins.
func (a *Agent) loadOrJoin(ctx context.Context) error {
	st, err := readState(a.cfg.DataDir)
	switch {
	case err == nil:
		key, kerr := a.keys.Get(ctx, st.keyName)
		leaf := st.chain[0]
		now := a.cfg.Clock.Now()
		switch {
		case kerr != nil:
			a.log.Warn("the agent's saved key is unusable; joining again", "err", kerr)
		case !now.Before(leaf.NotAfter):
			if a.cfg.JoinToken == "" && a.cfg.JoinMethod == "" {
				return fmt.Errorf("agent: its SVID expired at %s, so it must join again: create a token with 'writ token create' on the server and pass it with --join-token-file or WRIT_JOIN_TOKEN", leaf.NotAfter.UTC().Format(time.RFC3339))
			}
			a.log.Warn("the agent's SVID expired; joining again", "expired", leaf.NotAfter)
		default:
			id, err := x509svid.IDFromCert(leaf)
			if err != nil {
				return fmt.Errorf("agent: saved certificate: %w", err)
			}
			a.setIdentity(id, st, key)
			a.log.Info("agent identity loaded", "agent_id", id.String(), "expires", leaf.NotAfter)
			return nil
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		a.log.Warn("the agent's saved state is unusable", "err", err)
	}
	switch {
	case a.cfg.JoinMethod != "":
		return a.joinByAttestation(ctx)
	case a.cfg.JoinToken == "":
		return errors.New("agent: it has not joined yet: create a token with 'writ token create' on the server and pass it with --join-token-file or WRIT_JOIN_TOKEN, or join with --join-method")
	}
	return a.join(ctx)
}

func (a *Agent) setIdentity(id spiffeid.ID, st *agentState, key crypto.Signer) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.id, a.td, a.state, a.key = id, id.TrustDomain(), st, key
}

// join redeems the token. The server is trusted only if its certificate
// chains to an authority pinned in the token (or given in BundleFile), so
// nothing is sent to an impostor, the token least of all.
func (a *Agent) join(ctx context.Context) error {
	tok, err := jointoken.Parse(a.cfg.JoinToken)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	roots, err := a.trustAnchors(ctx, tok)
	if err != nil {
		return err
	}
	var serverID spiffeid.ID
	conn, err := grpc.NewClient(a.cfg.ServerAddress, grpc.WithTransportCredentials(credentials.NewTLS(pinnedTLS(roots, &serverID))))
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	defer conn.Close()
	keyName := fmt.Sprintf("agent-%d", a.cfg.Clock.Now().UnixNano())
	key, csr, err := a.newKey(ctx, keyName)
	if err != nil {
		return err
	}
	resp, err := retryJoin(ctx, a, "join", func(ctx context.Context) (*writv1.AgentSVID, error) {
		return writv1.NewAgentServiceClient(conn).Join(ctx, &writv1.JoinRequest{Token: a.cfg.JoinToken, Csr: csr})
	})
	if err != nil {
		_ = a.keys.Delete(context.WithoutCancel(ctx), keyName)
		return fmt.Errorf("agent: join: %w", err)
	}
	st, id, err := stateFromSVID(resp, keyName)
	if err != nil {
		return err
	}
	if err := writeState(a.cfg.DataDir, st, id.String()); err != nil {
		return fmt.Errorf("agent: saving its identity: %w", err)
	}
	a.setIdentity(id, st, key)
	a.log.Info("agent joined", "agent_id", id.String(), "server", serverID.String(), "expires", st.chain[0].NotAfter)
	return nil
}

// trustAnchors returns the authorities to verify the server with at join:
// BundleFile's, or those of the server's bundle that the token pins. The
// bundle is fetched without verification, which is safe because only the
// pinned authorities are kept from it.
func (a *Agent) trustAnchors(ctx context.Context, tok jointoken.Token) ([]*x509.Certificate, error) {
	if a.cfg.BundleFile != "" {
		return pemfile.ReadCertificates(a.cfg.BundleFile)
	}
	conn, err := grpc.NewClient(a.cfg.ServerAddress, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		// Nothing from this connection is trusted but what matches a pin.
		InsecureSkipVerify: true, //nolint:gosec
		MinVersion:         tls.VersionTLS12,
	})))
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	defer conn.Close()
	b, err := retryJoin(ctx, a, "bundle request", func(ctx context.Context) (*writv1.Bundle, error) {
		return writv1.NewBundleServiceClient(conn).GetBundle(ctx, &writv1.GetBundleRequest{})
	})
	if err != nil {
		return nil, fmt.Errorf("agent: fetching the server's bundle from %s: %w", a.cfg.ServerAddress, err)
	}
	var pinned []*x509.Certificate
	for _, der := range b.GetX509Authorities() {
		c, err := x509.ParseCertificate(der)
		if err == nil && tok.Pinned(c) {
			pinned = append(pinned, c)
		}
	}
	if len(pinned) == 0 {
		return nil, fmt.Errorf("agent: the server at %s holds none of the authorities the join token pins: it is not the server that made the token, or its authorities all changed since; make a new token, or pass --bundle", a.cfg.ServerAddress)
	}
	return pinned, nil
}

// pinnedTLS verifies the server against roots only, and records its ID.
// Standard verification is off because these are not Web PKI roots and the
// server is named by SPIFFE ID, not host name; VerifyPeerCertificate does
// the whole check.
func pinnedTLS(roots []*x509.Certificate, serverID *spiffeid.ID) *tls.Config {
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	return &tls.Config{
		InsecureSkipVerify: true, //nolint:gosec // verified below
		MinVersion:         tls.VersionTLS12,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("the server sent no certificate")
			}
			certs := make([]*x509.Certificate, len(raw))
			for i, der := range raw {
				c, err := x509.ParseCertificate(der)
				if err != nil {
					return err
				}
				certs[i] = c
			}
			inter := x509.NewCertPool()
			for _, c := range certs[1:] {
				inter.AddCert(c)
			}
			if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return fmt.Errorf("the server's certificate does not chain to a trusted authority: %w", err)
			}
			id, err := x509svid.IDFromCert(certs[0])
			if err != nil {
				return err
			}
			if !isServerID(id) {
				return fmt.Errorf("%s is not a writ server", id)
			}
			*serverID = id
			return nil
		},
	}
}

func isServerID(id spiffeid.ID) bool { return identity.IsServerID(id) }

func stateFromSVID(resp *writv1.AgentSVID, keyName string) (*agentState, spiffeid.ID, error) {
	st := &agentState{keyName: keyName}
	for _, der := range resp.GetCertChain() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, spiffeid.ID{}, fmt.Errorf("agent: the server's certificate: %w", err)
		}
		st.chain = append(st.chain, c)
	}
	for _, der := range resp.GetBundle() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, spiffeid.ID{}, fmt.Errorf("agent: the server's bundle: %w", err)
		}
		st.bundle = append(st.bundle, c)
	}
	if len(st.chain) == 0 || len(st.bundle) == 0 {
		return nil, spiffeid.ID{}, errors.New("agent: the server sent no certificate or no bundle")
	}
	id, err := x509svid.IDFromCert(st.chain[0])
	if err != nil {
		return nil, spiffeid.ID{}, err
	}
	return st, id, nil
}

// newKey makes a P-256 key in the keystore and a CSR for it.
func (a *Agent) newKey(ctx context.Context, name string) (crypto.Signer, []byte, error) {
	key, err := a.keys.Generate(ctx, name, keystore.ECP256)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: new key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: CSR: %w", err)
	}
	return key, csr, nil
}

// GetX509SVID implements x509svid.Source with the agent's own SVID.
func (a *Agent) GetX509SVID() (*x509svid.SVID, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return &x509svid.SVID{ID: a.id, Certificates: a.state.chain, PrivateKey: a.key}, nil
}

// GetX509BundleForTrustDomain implements x509bundle.Source with the
// bundle the agent has now.
func (a *Agent) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != a.td {
		return nil, fmt.Errorf("trust domain %s is not this agent's (%s)", td, a.td)
	}
	return x509bundle.FromX509Authorities(td, a.cache.bundle()), nil
}

// client returns the connection to the server, made with the agent's
// current SVID.
func (a *Agent) client() (*grpc.ClientConn, int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.conn != nil {
		return a.conn, a.connGen, nil
	}
	tlsCfg := tlsconfig.MTLSClientConfig(a, a, tlsconfig.AdaptMatcher(func(id spiffeid.ID) error {
		if !id.MemberOf(a.td) || !isServerID(id) {
			return fmt.Errorf("%s is not a writ server of %s", id, a.td)
		}
		return nil
	}))
	conn, err := grpc.NewClient(a.cfg.ServerAddress, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return nil, 0, err
	}
	a.conn = conn
	a.connGen++
	return conn, a.connGen, nil
}

// Run serves until ctx ends: the Workload API, the sync stream, minting and
// the agent's own renewal.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	if a.cfg.SocketPath != "" {
		ln, err := workloadapi.Listen(a.cfg.SocketPath)
		if err != nil {
			return fmt.Errorf("agent: Workload API socket: %w", err)
		}
		a.wl = workloadapi.New(workloadapi.Config{Source: a.cache, Logger: a.log, Attest: func(ctx context.Context, p workload.Peer) ([]identity.Selector, error) {
			return workload.AttestAll(ctx, a.cfg.Attestors, p)
		}})
		wg.Go(func() {
			if err := a.wl.Serve(ln); err != nil && ctx.Err() == nil {
				a.log.Error("Workload API stopped", "err", err)
			}
		})
		a.log.Info("Workload API listening", "socket", a.cfg.SocketPath)
	}
	wg.Go(func() { a.syncLoop(ctx) })
	wg.Go(func() { a.mintLoop(ctx) })
	wg.Go(func() { a.renewLoop(ctx) })
	<-ctx.Done()
	if a.wl != nil {
		a.wl.GracefulStop()
	}
	wg.Wait()
	a.mu.Lock()
	if a.conn != nil {
		a.conn.Close()
		a.conn = nil
	}
	a.mu.Unlock()
	return nil
}

// Ready waits until the first snapshot has arrived and every rule has an
// SVID.
func (a *Agent) Ready(ctx context.Context) error { return a.cache.waitReady(ctx) }

// backoff doubles from one second to thirty, with jitter.
type backoff struct{ d time.Duration }

func (b *backoff) next() time.Duration {
	b.d = min(max(b.d*2, time.Second), 30*time.Second)
	return b.d/2 + time.Duration(mrand.Int64N(int64(b.d/2)))
}

func (b *backoff) reset() { b.d = 0 }

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// syncLoop keeps a sync stream open, reconnecting with backoff.
func (a *Agent) syncLoop(ctx context.Context) {
	var b backoff
	for ctx.Err() == nil {
		conn, _, err := a.client()
		if err == nil {
			err = a.syncOnce(ctx, conn, &b)
		}
		if ctx.Err() != nil {
			return
		}
		a.disownedBy(err)
		d := b.next()
		a.log.Warn("sync with the server interrupted; serving cached SVIDs meanwhile", "err", err, "retry_in", d.Round(time.Millisecond))
		if !sleep(ctx, d) {
			return
		}
	}
}

func (a *Agent) syncOnce(ctx context.Context, conn *grpc.ClientConn, b *backoff) error {
	stream, err := writv1.NewAgentServiceClient(conn).Sync(ctx, &writv1.SyncRequest{})
	if err != nil {
		return err
	}
	for {
		u, err := stream.Recv()
		if err != nil {
			return err
		}
		b.reset()
		if err := a.cache.apply(u); err != nil {
			a.log.Error("a sync update could not be applied", "err", err)
			continue
		}
		if u.GetBundle() != nil {
			a.saveBundle()
		}
	}
}

// disownedBy withdraws every identity the agent serves when err is the
// server refusing the agent itself (PermissionDenied from Sync or
// RenewAgent: locked as a clone, removed, not of this trust domain).
// Other errors, such as an outage, leave the cache serving.
func (a *Agent) disownedBy(err error) {
	if a.cache.disownedByServer(err) {
		a.log.Error("the server refuses this agent; it serves no identities until the server accepts it again (after the lock is lifted) or it joins again", "reason", status.Convert(err).Message())
	}
}

// saveBundle keeps the latest bundle in the state file, so a restart can
// verify the server even after rotations.
func (a *Agent) saveBundle() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.state.bundle = a.cache.bundle()
	if err := writeState(a.cfg.DataDir, a.state, a.id.String()); err != nil {
		a.log.Warn("saving the bundle", "err", err)
	}
}

// maxMintBatch bounds one minting call.
const maxMintBatch = 500

// refusedRetry is how long a rule the server refused waits before it is
// asked for again, unless it changes first.
const refusedRetry = 5 * time.Second

// mintLoop issues SVIDs for rules that need them, whenever rules change
// and when held SVIDs reach their renewal point.
func (a *Agent) mintLoop(ctx context.Context) {
	var b backoff
	for {
		due := a.cache.due(a.cfg.Clock.Now())
		if len(due) > 0 {
			if err := a.mint(ctx, due); err != nil {
				if ctx.Err() != nil {
					return
				}
				d := b.next()
				a.log.Warn("minting SVIDs failed; retrying", "err", err, "rules", len(due), "retry_in", d.Round(time.Millisecond))
				if !sleep(ctx, d) {
					return
				}
				continue
			}
			b.reset()
		}
		wait := time.Minute
		if next := a.cache.nextRenewal(); !next.IsZero() {
			wait = min(wait, max(next.Sub(a.cfg.Clock.Now()), 10*time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return
		case <-a.cache.mintWanted:
		case <-a.cfg.Clock.After(wait):
		}
	}
}

// mint issues SVIDs for rules in batches; keys are made here and never
// leave the process. A rule refused by the server (locked, deleted
// meanwhile) is logged and retried at its next change.
func (a *Agent) mint(ctx context.Context, rules []*rule) error {
	conn, _, err := a.client()
	if err != nil {
		return err
	}
	api := writv1.NewAgentServiceClient(conn)
	for len(rules) > 0 {
		batch := rules[:min(len(rules), maxMintBatch)]
		rules = rules[len(batch):]
		keys := make(map[string]crypto.Signer, len(batch))
		req := &writv1.MintWorkloadX509SVIDsRequest{}
		for _, r := range batch {
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return err
			}
			csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
			if err != nil {
				return err
			}
			keys[r.id] = key
			req.Csrs = append(req.Csrs, &writv1.WorkloadCSR{EntryId: r.id, Csr: csr})
		}
		resp, err := api.MintWorkloadX509SVIDs(ctx, req)
		if err != nil {
			return err
		}
		revs := make(map[string]int64, len(batch))
		for _, r := range batch {
			revs[r.id] = r.revision
		}
		minted := map[string]*heldSVID{}
		var refused []string
		for _, s := range resp.GetSvids() {
			if s.GetError() != "" {
				a.log.Warn("the server did not issue an SVID", "entry_id", s.GetEntryId(), "spiffe_id", s.GetSpiffeId(), "reason", s.GetError())
				refused = append(refused, s.GetEntryId())
				continue
			}
			key := keys[s.GetEntryId()]
			if len(s.GetCertChain()) == 0 || key == nil {
				continue
			}
			held, err := holdSVID(s.GetCertChain(), key)
			if err != nil {
				return fmt.Errorf("SVID for %s: %w", s.GetEntryId(), err)
			}
			held.revision = revs[s.GetEntryId()]
			minted[s.GetEntryId()] = held
		}
		a.cache.setSVIDs(minted)
		a.cache.refused(refused, a.cfg.Clock.Now().Add(refusedRetry))
	}
	return nil
}

// holdSVID keeps what the agent needs of a minted SVID: its encodings and
// the leaf's expiry, signer and renewal point.
func holdSVID(chain [][]byte, key crypto.Signer) (*heldSVID, error) {
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	var der []byte
	for _, c := range chain {
		der = append(der, c...)
	}
	return &heldSVID{chainDER: der, keyDER: keyDER, notAfter: leaf.NotAfter, caID: hex.EncodeToString(leaf.AuthorityKeyId), renewAt: renewalPoint(leaf)}, nil
}

// renewalPoint is half the certificate's life plus up to a tenth of it at
// random, so SVIDs issued together are not all renewed at one instant.
func renewalPoint(c *x509.Certificate) time.Time {
	life := c.NotAfter.Sub(c.NotBefore)
	return c.NotBefore.Add(life/2 + time.Duration(mrand.Int64N(int64(life/10)+1)))
}

// mintJWT asks the server for a JWT-SVID for a rule.
func (a *Agent) mintJWT(ctx context.Context, ruleID string, audience []string) (string, time.Time, error) {
	conn, _, err := a.client()
	if err != nil {
		return "", time.Time{}, err
	}
	resp, err := writv1.NewAgentServiceClient(conn).MintWorkloadJWTSVID(ctx, &writv1.MintWorkloadJWTSVIDRequest{EntryId: ruleID, Audience: audience})
	if err != nil {
		return "", time.Time{}, err
	}
	return resp.GetToken(), time.Unix(resp.GetExpiresAt(), 0), nil
}

// renewLoop renews the agent's own SVID at its renewal point. The new key
// and certificate are saved before they are used; the connection is then
// replaced, so the old certificate is never presented again after the new
// one (which would look like a copy of the agent to the server).
func (a *Agent) renewLoop(ctx context.Context) {
	var b backoff
	for {
		a.mu.Lock()
		at := renewalPointFixed(a.state.chain[0])
		a.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-a.cfg.Clock.After(max(at.Sub(a.cfg.Clock.Now()), 0)):
		}
		if err := a.renew(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			a.disownedBy(err)
			d := b.next()
			a.log.Warn("renewing the agent's SVID failed; retrying", "err", err, "retry_in", d.Round(time.Millisecond))
			if !sleep(ctx, d) {
				return
			}
			continue
		}
		b.reset()
	}
}

// renewalPointFixed is the agent's own renewal point: half its life, so
// it has half a life of retries before it would lapse.
func renewalPointFixed(c *x509.Certificate) time.Time {
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) / 2)
}

func (a *Agent) renew(ctx context.Context) error {
	conn, _, err := a.client()
	if err != nil {
		return err
	}
	keyName := fmt.Sprintf("agent-%d", a.cfg.Clock.Now().UnixNano())
	key, csr, err := a.newKey(ctx, keyName)
	if err != nil {
		return err
	}
	resp, err := writv1.NewAgentServiceClient(conn).RenewAgent(ctx, &writv1.RenewAgentRequest{Csr: csr})
	if err != nil {
		_ = a.keys.Delete(context.WithoutCancel(ctx), keyName)
		return err
	}
	st, id, err := stateFromSVID(resp, keyName)
	if err != nil {
		return err
	}
	if id != a.id {
		return fmt.Errorf("agent: the server renewed %s, not %s", id, a.id)
	}
	if err := writeState(a.cfg.DataDir, st, id.String()); err != nil {
		return fmt.Errorf("agent: saving the renewed identity: %w", err)
	}
	a.mu.Lock()
	old, oldKey := a.conn, a.state.keyName
	a.state, a.key, a.conn = st, key, nil
	a.mu.Unlock()
	if old != nil {
		old.Close()
	}
	if err := a.keys.Delete(ctx, oldKey); err != nil {
		a.log.Warn("deleting the previous agent key", "err", err)
	}
	a.log.Info("agent SVID renewed", "expires", st.chain[0].NotAfter, "serial", st.chain[0].SerialNumber.Text(16))
	return nil
}

// RenewNow renews the agent's SVID at once; tests and operators use it.
func (a *Agent) RenewNow(ctx context.Context) error { return a.renew(ctx) }

// X509SVIDsFor returns the SVIDs the process p holds now, attested as a
// Workload API caller would be, and a channel closed when that may change.
// The file output uses it with the agent's own process.
func (a *Agent) X509SVIDsFor(ctx context.Context, p workload.Peer) ([]workloadapi.X509SVID, <-chan struct{}, error) {
	sels, err := workload.AttestAll(ctx, a.cfg.Attestors, p)
	if err != nil {
		return nil, nil, err
	}
	svids, changed := a.cache.X509SVIDs(sels)
	for i := range svids {
		if err := parseSVID(&svids[i]); err != nil {
			return nil, nil, err
		}
	}
	return svids, changed, nil
}

// parseSVID fills Chain and Key from the encodings the cache keeps.
func parseSVID(s *workloadapi.X509SVID) error {
	chain, err := x509.ParseCertificates(s.ChainDER)
	if err != nil {
		return fmt.Errorf("SVID %s: %w", s.SPIFFEID, err)
	}
	key, err := x509.ParsePKCS8PrivateKey(s.KeyDER)
	if err != nil {
		return fmt.Errorf("SVID %s: %w", s.SPIFFEID, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return fmt.Errorf("SVID %s: key is a %T", s.SPIFFEID, key)
	}
	s.Chain, s.Key = chain, signer
	return nil
}

// JWTSVIDsFor returns JWT-SVIDs for audience for the process p: one per
// identity it holds, or spiffeID's only when it is not zero.
func (a *Agent) JWTSVIDsFor(ctx context.Context, p workload.Peer, spiffeID spiffeid.ID, audience []string) ([]workloadapi.JWTSVID, error) {
	sels, err := workload.AttestAll(ctx, a.cfg.Attestors, p)
	if err != nil {
		return nil, err
	}
	return a.cache.JWTSVIDs(ctx, sels, spiffeID, audience)
}

// Bundle is the trust domain's X.509 authorities as the agent has them.
func (a *Agent) Bundle() []*x509.Certificate { return a.cache.bundle() }
