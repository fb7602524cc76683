package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/agent"
	"writ.dev/writ/agent/output"
	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/attest/node/oidc"
	"writ.dev/writ/attest/workload"
	"writ.dev/writ/attest/workload/container"
	"writ.dev/writ/attest/workload/systemd"
	"writ.dev/writ/attest/workload/unix"
	"writ.dev/writ/identity"
	"writ.dev/writ/server"
)

// joinTokenEnv carries a join token without putting it on the command line,
// where every user of the machine could read it.
const joinTokenEnv = "WRIT_JOIN_TOKEN"

type agentFlags struct {
	serverAddr, dataDir, socket, tokenFile, token, bundle string
	joinMethod, jwtFile, popCert, popKey, trustDomain     string
	oneshot                                               bool
	out, spiffeID, logLevel                               string
	reload                                                string
	audiences                                             stringList
	timeout                                               time.Duration
}

func runAgent(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("writ agent",
		"Run the node agent: join the trust domain once with a join token, then renew with its own\n"+
			"SVID; serve the SPIFFE Workload API to this node's processes, each attested by the kernel's\n"+
			"account of it. With --out it also writes its own identity to files (--oneshot: once, then exit).\n"+
			"Give the join token in $"+joinTokenEnv+" or --join-token-file rather than on the command line.",
		"writ agent --server HOST:PORT [--data-dir DIR] [--socket PATH] [--join-token-file FILE] [--bundle FILE]",
		"writ agent --server HOST:PORT --oneshot --out DIR [--spiffe-id ID] [--jwt-audience AUD ...]")
	var f agentFlags
	c.fs.StringVar(&f.serverAddr, "server", "", "the server's gRPC `address` (its listen_address)")
	c.fs.StringVar(&f.dataDir, "data-dir", "/var/lib/writ-agent", "`directory` for the agent's key and state")
	c.fs.StringVar(&f.socket, "socket", "", "Workload API socket `path` (default "+defaultAgentSocket+"; \"none\" serves none)")
	c.fs.StringVar(&f.tokenFile, "join-token-file", "", "`file` holding the join token (or set $"+joinTokenEnv+")")
	c.fs.StringVar(&f.token, "join-token", "", "the join `token` itself; visible to other users in the process list, prefer the file or variable")
	c.fs.StringVar(&f.bundle, "bundle", "", "PEM `file` of trust anchors to verify the server with at join, instead of the token's pins")
	c.fs.StringVar(&f.joinMethod, "join-method", "", "join without a secret by this `method` configured on the server: an OIDC/Kubernetes issuer's name (e.g. github) or x509pop")
	c.fs.StringVar(&f.jwtFile, "jwt-file", "", "with an OIDC/Kubernetes --join-method: `file` holding the token (or set $"+joinJWTEnv+"; in GitHub Actions it is fetched)")
	c.fs.StringVar(&f.popCert, "x509pop-cert", "", "with --join-method x509pop: PEM `file` of the node's certificate, then its chain")
	c.fs.StringVar(&f.popKey, "x509pop-key", "", "with --join-method x509pop: PEM `file` of its private key")
	c.fs.StringVar(&f.trustDomain, "trust-domain", "", "the trust `domain`, when --bundle's authorities do not name it")
	c.fs.BoolVar(&f.oneshot, "oneshot", false, "write --out once and exit (for CI jobs)")
	c.fs.StringVar(&f.out, "out", "", "write this process's SVID, key, bundle and JWT-SVIDs to `directory` and keep them fresh")
	c.fs.StringVar(&f.spiffeID, "spiffe-id", "", "with --out: which of the identities to write (default: the first)")
	c.fs.Var(&f.audiences, "jwt-audience", "with --out: also write a JWT-SVID for this `audience` (repeatable)")
	c.fs.StringVar(&f.reload, "reload-cmd", "", "with --out: `command` to run after the files change (split on spaces, not run by a shell)")
	c.fs.DurationVar(&f.timeout, "timeout", time.Minute, "with --oneshot: how long to wait for the identity")
	c.fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	c.required("server")
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	if f.oneshot && f.out == "" {
		return c.usageError("--oneshot needs --out DIR")
	}
	if (f.spiffeID != "" || len(f.audiences) > 0 || f.reload != "") && f.out == "" {
		return c.usageError("--spiffe-id, --jwt-audience and --reload-cmd go with --out")
	}
	var want spiffeid.ID
	if f.spiffeID != "" {
		id, err := identity.ParseID("spiffe-id", f.spiffeID)
		if err != nil {
			return err
		}
		want = id
	}
	token, err := joinToken(f)
	if err != nil {
		return err
	}
	log, err := newLogger(server.LogConfig{Level: f.logLevel, Format: "text"}, stderr)
	if err != nil {
		return err
	}
	if f.joinMethod != "" && token != "" {
		return c.usageError("a join token and --join-method exclude each other")
	}
	cfg, err := agentConfig(f, token, log)
	if err != nil {
		return err
	}
	a, err := agent.New(ctx, cfg)
	if err != nil {
		return err
	}
	if f.out == "" {
		return a.Run(ctx)
	}
	w, err := output.New(output.Options{Dir: f.out, ReloadCommand: strings.Fields(f.reload), Logger: log})
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	self := workload.Peer{PID: os.Getpid(), UID: os.Geteuid(), GID: os.Getegid()}
	if f.oneshot {
		wctx, cancel := context.WithTimeout(ctx, f.timeout)
		defer cancel()
		err := writeOnce(wctx, a, w, self, want, f.audiences)
		stop()
		<-done
		if err == nil {
			fmt.Fprintf(stdout, "wrote the identity of %s to %s\n", a.ID(), f.out)
		}
		return err
	}
	return keepWriting(runCtx, a, w, self, want, f.audiences, done, log)
}

// defaultAgentSocket is where `writ agent` serves the Workload API: outside
// its data directory, which is 0700 because it holds the agent's key, so
// that workloads of every user can reach it (attestation, not the file
// mode, decides what they get).
const defaultAgentSocket = "/run/writ/agent.sock"

// agentConfig turns the flags into the agent's configuration.
func agentConfig(f agentFlags, token string, log *slog.Logger) (agent.Config, error) {
	dataDir, err := filepath.Abs(f.dataDir)
	if err != nil {
		return agent.Config{}, err
	}
	socket := f.socket
	switch {
	case f.oneshot || socket == "none":
		socket = ""
	case socket == "":
		socket = defaultAgentSocket
	}
	return agent.Config{
		ServerAddress:   f.serverAddr,
		DataDir:         dataDir,
		JoinToken:       token,
		BundleFile:      f.bundle,
		TrustDomain:     f.trustDomain,
		JoinMethod:      f.joinMethod,
		JoinJWT:         joinJWT(f.jwtFile),
		X509PoPCertFile: f.popCert,
		X509PoPKeyFile:  f.popKey,
		SocketPath:      socket,
		Attestors:       workloadAttestors(log),
		Logger:          log,
	}, nil
}

// workloadAttestors are what the agent learns of a calling process: its
// unix credentials and executable, its systemd unit, and its container and
// pod.
func workloadAttestors(log *slog.Logger) []workload.Attestor {
	return []workload.Attestor{
		unix.New(unix.Options{Logger: log}),
		systemd.New(systemd.Options{}),
		container.New(container.Options{}),
	}
}

// joinJWTEnv carries an identity provider's token for joining.
const joinJWTEnv = "WRIT_JOIN_JWT"

// joinJWT returns where an OIDC or Kubernetes join gets its token: the
// file (read at join time, so a projected token is fresh), the variable,
// or GitHub Actions' token endpoint asked for audience.
func joinJWT(file string) func(ctx context.Context, audience string) (string, error) {
	return func(ctx context.Context, audience string) (string, error) {
		switch {
		case file != "":
			data, err := os.ReadFile(file)
			if err != nil {
				return "", fmt.Errorf("--jwt-file: %w", err)
			}
			return strings.TrimSpace(string(data)), nil
		case os.Getenv(joinJWTEnv) != "":
			return os.Getenv(joinJWTEnv), nil
		case oidc.InGitHubActions():
			return oidc.GitHubActionsToken(ctx, nil, audience)
		}
		return "", errors.New("no token to join with: pass --jwt-file, set " + joinJWTEnv + ", or run in GitHub Actions with 'permissions: id-token: write'")
	}
}

// joinToken takes the token from the variable, the file or the flag.
func joinToken(f agentFlags) (string, error) {
	sources := 0
	token := os.Getenv(joinTokenEnv)
	if token != "" {
		sources++
	}
	if f.tokenFile != "" {
		data, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return "", fmt.Errorf("--join-token-file: %w", err)
		}
		token = strings.TrimSpace(string(data))
		sources++
	}
	if f.token != "" {
		token = f.token
		sources++
	}
	if sources > 1 {
		return "", errors.New("the join token is given more than once: use one of $" + joinTokenEnv + ", --join-token-file and --join-token")
	}
	return token, nil
}

// writeOnce waits until the agent holds an identity for this process and
// writes it.
func writeOnce(ctx context.Context, a *agent.Agent, w *output.Writer, self workload.Peer, want spiffeid.ID, audiences []string) error {
	if err := a.Ready(ctx); err != nil {
		return fmt.Errorf("waiting for the agent's rules and SVIDs: %w", err)
	}
	for {
		m, changed, err := material(ctx, a, self, want, audiences)
		if err == nil {
			_, err = w.Write(ctx, m)
			return err
		}
		if !errors.Is(err, errNoIdentityYet) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no identity for this process (uid %d) within the timeout: is there a rule with parent %s (or parent selectors this agent was attested with) and selector unix:uid:%d?", self.UID, a.ID(), self.UID)
		case <-changed:
		}
	}
}

var errNoIdentityYet = errors.New("no identity yet")

// material gathers what the files hold for this process.
func material(ctx context.Context, a *agent.Agent, self workload.Peer, want spiffeid.ID, audiences []string) (output.Material, <-chan struct{}, error) {
	svids, changed, err := a.X509SVIDsFor(ctx, self)
	if err != nil {
		return output.Material{}, nil, err
	}
	for _, s := range svids {
		if !want.IsZero() && s.SPIFFEID != want {
			continue
		}
		m := output.Material{Chain: s.Chain, Key: s.Key, Bundle: a.Bundle()}
		for _, aud := range audiences {
			jwts, err := a.JWTSVIDsFor(ctx, self, s.SPIFFEID, []string{aud})
			if err != nil {
				return output.Material{}, nil, fmt.Errorf("JWT-SVID for %s: %w", aud, err)
			}
			m.JWTs = append(m.JWTs, output.JWT{Audience: aud, Token: jwts[0].Token})
		}
		return m, changed, nil
	}
	return output.Material{}, changed, errNoIdentityYet
}

// keepWriting rewrites the files whenever the identity or bundle changes,
// and at least every half minute for JWT-SVIDs, until ctx ends.
func keepWriting(ctx context.Context, a *agent.Agent, w *output.Writer, self workload.Peer, want spiffeid.ID, audiences []string, done <-chan error, log *slog.Logger) error {
	for {
		m, changed, err := material(ctx, a, self, want, audiences)
		switch {
		case err == nil:
			if _, err := w.Write(ctx, m); err != nil {
				log.Error("writing the identity files", "dir", w.Dir(), "err", err)
			}
		case !errors.Is(err, errNoIdentityYet):
			log.Error("getting the identity to write", "err", err)
		}
		t := time.NewTimer(30 * time.Second)
		select {
		case err := <-done:
			t.Stop()
			return err
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

func tokenCreate(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ token create",
		"Make a one-time join token. It is shown once and only its digest is stored; it expires after\n"+
			"--ttl (at most 1h) and is burned by its first use. It also pins the trust bundle, so the\n"+
			"agent can check it reached this trust domain's server before it sends anything.",
		"writ token create [--ttl 15m] [--json]")
	ttl := c.fs.String("ttl", "15m", "how long the token may wait to be used, a `duration` up to 1h")
	asJSON := c.fs.Bool("json", false, "print the token as JSON")
	socket := c.socketFlag()
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	cl, err := dial(*socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	tok, err := writv1.NewTokenServiceClient(cl.conn).CreateJoinToken(ctx, &writv1.CreateJoinTokenRequest{Ttl: *ttl})
	if err != nil {
		return cl.explain(err)
	}
	if *asJSON {
		return writeJSONLine(stdout, tok)
	}
	_, err = fmt.Fprintf(stdout, "%s\n\nagent id:  %s   (the parent of its rules)\nexpires:   %s\n\non the node: %s=<token> writ agent --server SERVER:8081\n",
		tok.GetToken(), tok.GetAgentId(), formatUnix(tok.GetExpiresAt()), joinTokenEnv)
	return err
}
