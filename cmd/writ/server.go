package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"writ.dev/writ/server"
)

// serverFlags are the settings given on the command line; they override the
// config file.
type serverFlags struct {
	config, dataDir, trustDomain string
}

func runServer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("writ server",
		"Run the writ control plane. Run it as its own user: root and that user administer it over\n"+
			"the admin socket. --data-dir is all a first run needs.",
		"writ server [--data-dir DIR] [--trust-domain NAME] [--config FILE]")
	var f serverFlags
	c.fs.StringVar(&f.config, "config", "", "YAML configuration `file` (settings below)")
	c.fs.StringVar(&f.dataDir, "data-dir", "/var/lib/writ", "`directory` for the embedded store, CA keys and admin socket")
	c.fs.StringVar(&f.trustDomain, "trust-domain", server.DefaultTrustDomain, "SPIFFE trust `domain`; the default is fit for a first run only")
	c.shownDefault["config"] = "none"
	if done, err := c.parse(args, stdout); done || err != nil {
		if done {
			fmt.Fprint(stdout, "\n"+server.ConfigReference)
		}
		return err
	}
	set := map[string]bool{}
	c.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })

	cfg, err := loadServerConfig(f, set)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	srv, err := server.New(ctx, cfg, server.Options{Logger: log, Version: versionString()})
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}

// loadServerConfig layers defaults, the config file and the flags that were
// set, in that order.
func loadServerConfig(f serverFlags, set map[string]bool) (server.Config, error) {
	cfg := server.DefaultConfig()
	if f.config != "" {
		var err error
		if cfg, err = server.LoadConfig(f.config); err != nil {
			return cfg, err
		}
	}
	if set["data-dir"] || cfg.DataDir == "" {
		cfg.DataDir = f.dataDir
	}
	if set["trust-domain"] {
		cfg.TrustDomain = f.trustDomain
	}
	abs, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return cfg, fmt.Errorf("data_dir: %w", err)
	}
	cfg.DataDir = abs
	cfg.Defaults()
	return cfg, cfg.Validate()
}

func newLogger(c server.LogConfig, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(strings.ToUpper(c.Level))); err != nil {
		return nil, fmt.Errorf("log.level: %q is not a level: use debug, info, warn or error", c.Level)
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

// invocation is how the user ran this binary, for the hints we print: under
// `go run` the binary lives in a temporary build directory.
func invocation() string {
	if strings.Contains(os.Args[0], string(filepath.Separator)+"go-build") {
		return "go run ./cmd/writ"
	}
	return os.Args[0]
}
