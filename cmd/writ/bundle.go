package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	writv1 "writ.dev/writ/api/writ/v1"
)

var bundleSubcommands = [][2]string{
	{"show", "print the trust domain's X.509 authorities"},
}

// bundleFormats are the output formats of `writ bundle show`.
var bundleFormats = []string{"pem"}

// runBundle runs `writ bundle show [flags]`.
func runBundle(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const summary = "Work with the trust bundle: the root certificates that verify this trust domain's SVIDs."
	if len(args) == 0 {
		return errors.New("a command is needed: show\nrun 'writ bundle --help' for what it does")
	}
	if isHelpArg(args[0]) {
		printHelpIndex(stdout, "writ bundle", summary, bundleSubcommands)
		return nil
	}
	if args[0] != "show" {
		return fmt.Errorf("unknown command %q; use show\nrun 'writ bundle --help' for what it does", args[0])
	}
	return bundleShow(ctx, args[1:], stdout, stderr)
}

func bundleShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("writ bundle show",
		"Print the trust domain's X.509 authorities, for software that should trust its SVIDs.",
		"writ bundle show [--format pem]")
	format := c.fs.String("format", "pem", "output `format`: "+strings.Join(bundleFormats, ", "))
	socket := c.socketFlag()
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	if *format != "pem" {
		return c.usageError("format: %q is not supported; the formats are %s", *format, strings.Join(bundleFormats, ", "))
	}
	cl, err := dial(*socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	b, err := cl.bundles.GetBundle(ctx, &writv1.GetBundleRequest{})
	if err != nil {
		return cl.explain(err)
	}
	if len(b.GetX509Authorities()) == 0 {
		return fmt.Errorf("the server returned no X.509 authorities for trust domain %q", b.GetTrustDomain())
	}
	_, err = stdout.Write(pemCerts(b.GetX509Authorities()))
	return err
}
