package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/attest/node/oidc"
	"writ.dev/writ/delegation"
	"writ.dev/writ/gateway"
	"writ.dev/writ/person/login/logintest"
	"writ.dev/writ/server"
	"writ.dev/writ/store/sqlite/sqlitetest"
)

const td = "test.writ"

var (
	gatewayID = "spiffe://" + td + "/gateway"
	ada       = "spiffe://" + td + "/person/example.com/ada"
)

// env is a writ server with a token endpoint and people sign-in, and a
// gateway core connected to it with the gateway's own SVID.
type env struct {
	srv       *server.Server
	admin     *grpc.ClientConn
	bundle    *x509bundle.Bundle
	idp       *logintest.Provider
	tokenAddr string
	gw        source
	core      *gateway.Core
}

// source is a fixed identity: what a Workload API would give.
type source struct {
	*x509svid.SVID
	*x509bundle.Bundle
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startEnv starts the server with the guardrail files given (name →
// Cedar text) and a gateway core watching it.
func startEnv(t testing.TB, guardrails map[string]string) *env {
	t.Helper()
	dir, err := os.MkdirTemp("", "writ")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &env{idp: logintest.New(t), tokenAddr: freeAddr(t)}
	jwks := filepath.Join(dir, "idp-jwks.json")
	e.idp.WriteJWKS(t, jwks)
	cfg := server.DefaultConfig()
	cfg.DataDir = dir
	cfg.TrustDomain = td
	cfg.ListenAddress = "127.0.0.1:0"
	cfg.OpsAddress = "127.0.0.1:0"
	cfg.TokenEndpoint.Address = e.tokenAddr
	cfg.People = server.PeopleConfig{Issuer: e.idp.URL, ClientID: e.idp.ClientID(), JWKSFile: jwks,
		Allow: []oidc.Rule{{"email_domain": "example.com"}}}
	for name, text := range guardrails {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.Guardrails.Files = append(cfg.Guardrails.Files, path)
	}
	cfg.Defaults()
	sqlitetest.PlaceMigrated(t, cfg.Store.DSN)
	ctx := context.Background()
	e.srv, err = server.New(ctx, cfg, server.Options{Logger: quiet(), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.srv.Shutdown(ctx)
	})
	cc, err := grpc.NewClient("unix://"+e.srv.AdminSocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	e.admin = cc
	b, err := writv1.NewBundleServiceClient(cc).GetBundle(ctx, &writv1.GetBundleRequest{})
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

	e.gw = source{e.mint(t, gatewayID), e.bundle}
	conn, err := gateway.Dial(e.srv.ListenAddr().String(), e.gw, e.bundle.TrustDomain())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if e.core, err = gateway.NewCore(gateway.CoreConfig{Conn: conn, Log: quiet()}); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.core.Run(cctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "the gateway core watching the server's decisions", e.core.Watching)
	return e
}

// waitFor polls cond with a generous deadline: what is measured is that
// it happens, not how fast (BENCHMARKS.md has the figures).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
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

// delegate is what `writ token exchange` does: the agent, over mTLS with
// its SVID and with its JWT-SVID as actor token, exchanges the person's
// ID token for a delegation token made for audience.
func (e *env) delegate(t testing.TB, agent *x509svid.SVID, email, audience, taskID string) string {
	t.Helper()
	issuer := "https://" + e.tokenAddr + "/token"
	actor, err := writv1.NewSVIDServiceClient(e.admin).MintJWTSVID(context.Background(),
		&writv1.MintJWTSVIDRequest{SpiffeId: agent.ID.String(), Audience: []string{issuer}})
	if err != nil {
		t.Fatal(err)
	}
	form := url.Values{
		"grant_type":         {delegation.GrantTypeTokenExchange},
		"subject_token":      {e.idp.IDToken(t, email)},
		"subject_token_type": {delegation.TokenTypeIDToken},
		"actor_token":        {actor.GetToken()},
		"actor_token_type":   {delegation.TokenTypeJWT},
		"audience":           {audience},
		"scope":              {"task:" + taskID},
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(agent, e.bundle, tlsconfig.AuthorizeMemberOf(e.bundle.TrustDomain()))}}
	resp, err := hc.PostForm(issuer, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	json.NewDecoder(resp.Body).Decode(&body)
	tok, _ := body["access_token"].(string)
	if resp.StatusCode != http.StatusOK || tok == "" {
		t.Fatalf("token exchange for %s: %d %v", audience, resp.StatusCode, body)
	}
	return tok
}

// openTask creates and opens a task whose members are granted action on
// each resource.
func (e *env) openTask(t testing.TB, members []string, action string, resources ...string) string {
	t.Helper()
	ctx := context.Background()
	tasks := writv1.NewTaskServiceClient(e.admin)
	created, err := tasks.CreateTask(ctx, &writv1.CreateTaskRequest{Task: &writv1.Task{
		Title: "bug sweep", Reason: "release", Owner: ada, Members: members,
		Grants:   []*writv1.Grant{{Actions: []string{action}, Resources: resources, To: members}},
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

func (e *env) closeTask(t testing.TB, id string) {
	t.Helper()
	if _, err := writv1.NewTaskServiceClient(e.admin).CloseTask(context.Background(), &writv1.TaskTransitionRequest{Id: id}); err != nil {
		t.Fatal(err)
	}
}

// lock locks id and returns the lock's ID.
func (e *env) lock(t testing.TB, id string) string {
	t.Helper()
	l, err := writv1.NewLockServiceClient(e.admin).CreateLock(context.Background(), &writv1.CreateLockRequest{
		Target: &writv1.LockTarget{Kind: "spiffe-id", Value: id}, Reason: "incident INC-9"})
	if err != nil {
		t.Fatal(err)
	}
	return l.GetId()
}

func (e *env) unlock(t testing.TB, lockID string) {
	t.Helper()
	if _, err := writv1.NewLockServiceClient(e.admin).DeleteLock(context.Background(), &writv1.DeleteLockRequest{Id: lockID}); err != nil {
		t.Fatal(err)
	}
}

// serveTLS serves h with the gateway's mTLS on ln until the test ends.
func (e *env) serveTLS(t testing.TB, srv *http.Server, ln net.Listener) {
	t.Helper()
	srv.TLSConfig = gateway.ServerTLSConfig(e.gw)
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
}

// client is an HTTP client presenting svid to the gateway, with token (if
// any) as its bearer token.
func (e *env) client(svid *x509svid.SVID, token string) *http.Client {
	tr := &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(svid, e.bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromString(gatewayID)))}
	var rt http.RoundTripper = tr
	if token != "" {
		rt = bearer{token, tr}
	}
	return &http.Client{Transport: rt}
}

type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}
