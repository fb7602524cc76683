package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"text/template"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"writ.dev/writ/agent"
	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/identity"
	"writ.dev/writ/server"
)

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("writ dev",
		"Run a local trust domain on the embedded store, for a first try: the server and an agent in\n"+
			"one process, the agent joined, and a rule that gives your processes an identity over the\n"+
			"SPIFFE Workload API. Every process of the invoking user can administer it. State is kept in\n"+
			"--data-dir between runs.",
		"writ dev [--data-dir DIR] [--trust-domain NAME] [--listen ADDR] [--ops-address ADDR] [--socket PATH]")
	dataDir := c.fs.String("data-dir", ".writ", "`directory` for the local trust domain's state")
	td := c.fs.String("trust-domain", server.DefaultTrustDomain, "SPIFFE trust `domain`")
	listen := c.fs.String("listen", "127.0.0.1:8081", "`address` of the mTLS gRPC API (agents connect here)")
	ops := c.fs.String("ops-address", "127.0.0.1:8082", "`address` of /healthz, /readyz and /metrics")
	socket := c.fs.String("socket", "", "Workload API socket `path` (default $XDG_RUNTIME_DIR/writ/agent.sock when that directory is yours and 0700, which only you reach; else TMPDIR/writ-dev-UID/agent.sock, which every user can reach)")
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	if *listen == "" {
		return c.usageError("--listen cannot be empty: the agent reaches the server there")
	}
	abs, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	cfg := server.DefaultConfig()
	cfg.DataDir = abs
	cfg.TrustDomain = *td
	cfg.ListenAddress = *listen
	cfg.OpsAddress = *ops
	cfg.Defaults()
	log, err := newLogger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	srv, err := server.New(ctx, cfg, server.Options{Logger: log, Version: versionString()})
	if err != nil {
		return err
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()

	agentCfg := agent.Config{
		ServerAddress: srv.ListenAddr().String(),
		DataDir:       filepath.Join(abs, "agent"),
		SocketPath:    devWorkloadSocket(*socket),
		Attestors:     workloadAttestors(log),
		Logger:        log,
	}
	a, err := devAgent(ctx, srv, agentCfg)
	if err != nil {
		return err
	}
	workloadID, err := devRule(ctx, srv, a.ID())
	if err != nil {
		return err
	}
	agentDone := make(chan error, 1)
	go func() { agentDone <- a.Run(ctx) }()
	readyCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = a.Ready(readyCtx)
	cancel()
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("the agent did not get its rules and SVIDs: %w", err)
	}
	printDevHints(stdout, srv, agentCfg.SocketPath, a.ID().String(), workloadID)
	<-ctx.Done()
	return <-agentDone
}

// devWorkloadSocket is the dev agent's Workload API socket (devSocketPath
// unless --socket names one). It is not in the data directory, which is
// 0700 because it holds keys. Its directory is the invoking user's own,
// and the Workload API refuses one another user could write to.
func devWorkloadSocket(flag string) string {
	if flag != "" {
		return flag
	}
	return devSocketPath()
}

// devAgent loads the dev agent, or joins it with a token made in process
// when it has not joined yet or its SVID lapsed while dev was stopped.
func devAgent(ctx context.Context, srv *server.Server, cfg agent.Config) (*agent.Agent, error) {
	if a, err := agent.New(ctx, cfg); err == nil {
		return a, nil
	}
	tok, err := srv.NewJoinToken(ctx, 5*time.Minute)
	if err != nil {
		return nil, err
	}
	cfg.JoinToken = tok.GetToken()
	return agent.New(ctx, cfg)
}

// devRule gives the invoking user's processes an identity through the dev
// agent, spiffe://TD/user/NAME, and returns it.
func devRule(ctx context.Context, srv *server.Server, agentID fmt.Stringer) (string, error) {
	uid := os.Getuid()
	name := strconv.Itoa(uid)
	if u, err := user.LookupId(name); err == nil {
		if _, err := identity.ParseID("", "spiffe://x/"+u.Username); err == nil {
			name = u.Username
		}
	}
	id := fmt.Sprintf("spiffe://%s/user/%s", srv.TrustDomain().Name(), name)
	conn, err := grpc.NewClient("unix://"+srv.AdminSocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_, err = writv1.NewEntryServiceClient(conn).CreateEntries(ctx, &writv1.CreateEntriesRequest{Entries: []*writv1.Entry{{
		SpiffeId:  id,
		ParentId:  agentID.String(),
		Selectors: []*writv1.Selector{{Type: "unix", Value: "uid:" + strconv.Itoa(uid)}},
		Hint:      "writ dev",
	}}})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return "", fmt.Errorf("creating the dev rule: %w", err)
	}
	return id, nil
}

var devHints = template.Must(template.New("dev").Parse(`
writ dev is running: trust domain {{.TD}}, state in {{.Dir}}

  admin socket   {{.Socket}}
  Workload API   {{.Workload}}   (agent {{.Agent}})
  server API     {{.Listen}} (gRPC, mTLS with X.509-SVIDs)
  health         http://{{.Ops}}/readyz   metrics http://{{.Ops}}/metrics

Dev mode: every process running as uid {{.UID}} can administer this server, and gets
the identity {{.Identity}} from the Workload API.

Try, in another terminal:
  export WRIT_SOCKET={{.Socket}} SPIFFE_ENDPOINT_SOCKET=unix://{{.Workload}}
  {{.Writ}} fetch                      # your SVID from the Workload API, via go-spiffe's client
  {{.Writ}} fetch --out ./id           # ... written as svid.pem, svid.key, bundle.pem
  openssl verify -CAfile ./id/bundle.pem -untrusted ./id/svid.pem ./id/svid.pem
  {{.Writ}} entry list
  {{.Writ}} entry create --spiffe-id spiffe://{{.TD}}/web --parent-id {{.Agent}} --selector unix:uid:{{.UID}}
  {{.Writ}} svid mint --spiffe-id spiffe://{{.TD}}/me --ttl 10m --out ./svid
  {{.Writ}} audit tail
  {{.Writ}} audit verify
  {{.Writ}} ca show

Any SPIFFE client works the same way: go-spiffe, Envoy, java-spiffe and py-spiffe read
SPIFFE_ENDPOINT_SOCKET. Stop with Ctrl-C; state is kept in {{.Dir}} for the next run.
`))

func printDevHints(w io.Writer, srv *server.Server, workloadSocket, agentID, identity string) {
	data := map[string]any{
		"TD":       srv.TrustDomain().Name(),
		"Dir":      srv.DataDir(),
		"Socket":   srv.AdminSocket(),
		"Workload": workloadSocket,
		"Agent":    agentID,
		"Identity": identity,
		"Listen":   "disabled",
		"Ops":      "disabled",
		"UID":      os.Getuid(),
		"Writ":     invocation(),
	}
	if a := srv.ListenAddr(); a != nil {
		data["Listen"] = a.String()
	}
	if a := srv.OpsAddr(); a != nil {
		data["Ops"] = a.String()
	}
	_ = devHints.Execute(w, data)
}
