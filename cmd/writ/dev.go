package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"text/template"
	"time"

	"writ.dev/writ/server"
)

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("writ dev",
		"Run a local trust domain on the embedded store, for a first try. Every process of the\n"+
			"invoking user can administer it. State is kept in --data-dir between runs.",
		"writ dev [--data-dir DIR] [--trust-domain NAME] [--listen ADDR] [--ops-address ADDR]")
	dataDir := c.fs.String("data-dir", ".writ", "`directory` for the local trust domain's state")
	td := c.fs.String("trust-domain", server.DefaultTrustDomain, "SPIFFE trust `domain`")
	listen := c.fs.String("listen", "127.0.0.1:8081", "`address` of the mTLS gRPC API")
	ops := c.fs.String("ops-address", "127.0.0.1:8082", "`address` of /healthz, /readyz and /metrics")
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
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
	printDevHints(stdout, srv)
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	return nil
}

var devHints = template.Must(template.New("dev").Parse(`
writ dev is running: trust domain {{.TD}}, state in {{.Dir}}

  admin socket  {{.Socket}}
  server API    {{.Listen}} (gRPC, mTLS with X.509-SVIDs)
  health        http://{{.Ops}}/readyz   metrics http://{{.Ops}}/metrics

Dev mode: every process running as uid {{.UID}} can administer this server.

Try, in another terminal:
  export WRIT_SOCKET={{.Socket}}
  {{.Writ}} status
  {{.Writ}} entry create --spiffe-id spiffe://{{.TD}}/web --parent-id spiffe://{{.TD}}/node/dev --selector unix:uid:{{.UID}}
  {{.Writ}} entry list
  {{.Writ}} svid mint --spiffe-id spiffe://{{.TD}}/me --ttl 10m --out ./svid
  openssl verify -CAfile ./svid/bundle.pem -untrusted ./svid/svid.pem ./svid/svid.pem
  {{.Writ}} audit tail
  {{.Writ}} audit verify
  {{.Writ}} ca show

Stop with Ctrl-C; state is kept in {{.Dir}} for the next run.
`))

func printDevHints(w io.Writer, srv *server.Server) {
	data := map[string]any{
		"TD":     srv.TrustDomain().Name(),
		"Dir":    srv.DataDir(),
		"Socket": srv.AdminSocket(),
		"Listen": "disabled",
		"Ops":    "disabled",
		"UID":    os.Getuid(),
		"Writ":   invocation(),
	}
	if a := srv.ListenAddr(); a != nil {
		data["Listen"] = a.String()
	}
	if a := srv.OpsAddr(); a != nil {
		data["Ops"] = a.String()
	}
	_ = devHints.Execute(w, data)
}
