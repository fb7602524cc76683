package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/server"
)

const (
	td        = "example.org"
	botID     = "spiffe://" + td + "/agent/approver-bot"
	stageBot  = "spiffe://" + td + "/agent/stage-bot"
	owner     = "spiffe://" + td + "/person/example.com/ceo"
	botsRules = `rules:
  - name: staging-read
    match: {actions: [read], resources: [db/staging/**], requester_kind: [agent]}
    require:
      - {name: bots, from: ["` + botID + `"], count: 1}
    max_ttl: 1h
  - name: prod-write
    match: {actions: [write], resources: [db/prod/**]}
    require:
      - {name: people, from: ["spiffe://` + td + `/person/**"], count: 2}
    max_ttl: 4h
`
)

func TestPolicy(t *testing.T) {
	p := policy{td: spiffeid.RequireTrustDomainFromString(td), resources: []string{"db/staging/**"}}
	for _, tc := range []struct {
		r    *writv1.AccessRequest
		want bool
	}{
		{&writv1.AccessRequest{State: "pending", Kind: "join", Asks: []string{"read:db/staging/orders"}, Chain: []string{stageBot}, Reason: "r"}, true},
		{&writv1.AccessRequest{State: "pending", Kind: "join", Asks: []string{"write:db/staging/orders"}, Chain: []string{stageBot}, Reason: "r"}, false},
		{&writv1.AccessRequest{State: "pending", Kind: "join", Asks: []string{"read:db/stagingx/orders"}, Chain: []string{stageBot}, Reason: "r"}, false},
		{&writv1.AccessRequest{State: "pending", Kind: "join", Asks: []string{"read:db/staging/orders"}, Chain: []string{owner}, Reason: "r"}, false},
		{&writv1.AccessRequest{State: "pending", Kind: "join", Asks: []string{"read:db/staging/orders"}, Chain: []string{stageBot, owner}, Reason: "r"}, false},
		{&writv1.AccessRequest{State: "pending", Kind: "join", Asks: []string{"read:db/staging/orders"}, Chain: []string{"spiffe://other.org/agent/x"}, Reason: "r"}, false},
		{&writv1.AccessRequest{State: "pending", Kind: "join", Asks: []string{"read:db/staging/orders"}, Chain: []string{stageBot}}, false},
		{&writv1.AccessRequest{State: "pending", Kind: "open", Chain: []string{stageBot}, Reason: "r"}, false},
	} {
		if got, why := p.decide(tc.r); got != tc.want {
			t.Errorf("decide(%v) = %v (%s), want %v", tc.r, got, why, tc.want)
		}
	}
}

// TestBotAgainstServer runs the bot against a real writ server over mTLS
// with real SVIDs: it approves an agent's staging read, which its group
// in writ's rules lets it, and leaves a prod write pending for people.
func TestBotAgainstServer(t *testing.T) {
	dir, err := os.MkdirTemp("", "bot") // short: the admin socket lives here
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := server.DefaultConfig()
	cfg.DataDir, cfg.TrustDomain = filepath.Join(dir, "data"), td
	cfg.ListenAddress, cfg.OpsAddress = "127.0.0.1:0", ""
	cfg.Defaults()
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := server.New(ctx, cfg, server.Options{Logger: quiet, Version: "test"})
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
	admin, err := grpc.NewClient("unix://"+srv.AdminSocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })

	if _, err := writv1.NewReviewServiceClient(admin).ApplyRules(ctx, &writv1.ApplyReviewRulesRequest{Text: botsRules}); err != nil {
		t.Fatal(err)
	}
	tasks := writv1.NewTaskServiceClient(admin)
	task, err := tasks.CreateTask(ctx, &writv1.CreateTaskRequest{Task: &writv1.Task{
		Title: "reconcile", Reason: "failed batch", Owner: owner, Members: []string{owner},
		Grants:   []*writv1.Grant{{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{owner}}},
		Deadline: time.Now().Add(time.Hour).Unix(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tasks.OpenTask(ctx, &writv1.TaskTransitionRequest{Id: task.GetId()}); err != nil {
		t.Fatal(err)
	}

	botCtx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	b := newBot(svidConn(t, srv, admin, botID), policy{td: srv.TrustDomain(), resources: []string{"db/staging/**"}}, quiet)
	go b.run(botCtx)

	agent := svidConn(t, srv, admin, stageBot)
	requests := writv1.NewRequestServiceClient(agent)
	prod, err := requests.CreateRequest(ctx, &writv1.CreateAccessRequest{Kind: "join", Task: task.GetId(), Asks: []string{"write:db/prod/payments"}, Reason: "fix the batch"})
	if err != nil {
		t.Fatal(err)
	}
	stage, err := requests.CreateRequest(ctx, &writv1.CreateAccessRequest{Kind: "join", Task: task.GetId(), Asks: []string{"read:db/staging/orders"}, Reason: "nightly reads"})
	if err != nil {
		t.Fatal(err)
	}
	if stage.GetRequest().GetState() != "pending" {
		t.Fatalf("the staging read = %v, want pending for the bot", stage)
	}
	// The bot sees changes in order: once it approved the later staging
	// read it has judged the prod write too. The deadline only keeps a
	// broken bot from hanging the test.
	deadline := time.Now().Add(time.Minute)
	for {
		got, err := requests.GetRequest(ctx, &writv1.GetAccessRequestRequest{Id: stage.GetRequest().GetId()})
		if err != nil {
			t.Fatal(err)
		}
		if got.GetRequest().GetState() == "approved" {
			if len(got.GetReviews()) != 1 || got.GetReviews()[0].GetChain()[0] != botID {
				t.Fatalf("approved by %v, want the bot", got.GetReviews())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bot never approved the staging read: %v", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	got, err := requests.GetRequest(ctx, &writv1.GetAccessRequestRequest{Id: prod.GetRequest().GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetRequest().GetState() != "pending" || len(got.GetReviews()) != 0 {
		t.Fatalf("the prod write = %v, want pending and unreviewed", got)
	}
}

// svidConn mints an X.509-SVID for id on the admin socket and connects to
// the server's network listener with it, as the Workload API's SVID would.
func svidConn(t *testing.T, srv *server.Server, admin *grpc.ClientConn, id string) *grpc.ClientConn {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := writv1.NewSVIDServiceClient(admin).MintX509SVID(t.Context(), &writv1.MintX509SVIDRequest{SpiffeId: id, Csr: csr})
	if err != nil {
		t.Fatal(err)
	}
	var chain, roots []*x509.Certificate
	for _, der := range resp.GetCertChain() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	for _, der := range resp.GetBundle() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		roots = append(roots, c)
	}
	svid := &x509svid.SVID{ID: spiffeid.RequireFromString(id), Certificates: chain, PrivateKey: key}
	bundle := x509bundle.FromX509Authorities(srv.TrustDomain(), roots)
	cc, err := grpc.NewClient(srv.ListenAddr().String(), grpc.WithTransportCredentials(credentials.NewTLS(
		tlsconfig.MTLSClientConfig(svid, bundle, serverAuthorizer(srv.TrustDomain())))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}
