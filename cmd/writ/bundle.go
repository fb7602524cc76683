package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/server"
)

// bundleFormats are the output formats of `writ bundle show`.
var bundleFormats = []string{"pem", "spiffe"}

// runBundle runs `writ bundle show [flags]`.
func runBundle(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const summary = "Work with the trust bundle: the root certificates that verify this trust domain's SVIDs."
	return runGroup(ctx, "writ bundle", summary, []subcommand{
		{"show", "print the trust domain's authorities as PEM or as a SPIFFE bundle document", bundleShow},
	}, args, stdout, stderr)
}

func bundleShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("writ bundle show",
		"Print the trust domain's authorities, for software that should trust its SVIDs.\n"+
			"pem: the X.509 authorities as PEM certificates.\n"+
			"spiffe: the SPIFFE bundle document (X.509 and JWT authorities, spiffe_sequence,\n"+
			"spiffe_refresh_hint) as the bundle endpoint serves it, for another trust domain to federate with.",
		"writ bundle show [--format pem|spiffe]")
	format := c.fs.String("format", "pem", "output `format`: "+strings.Join(bundleFormats, ", "))
	socket := c.socketFlag()
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	if !slices.Contains(bundleFormats, *format) {
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
	if *format == "spiffe" {
		return printSPIFFEBundle(stdout, b)
	}
	if len(b.GetX509Authorities()) == 0 {
		return fmt.Errorf("the server returned no X.509 authorities for trust domain %q", b.GetTrustDomain())
	}
	_, err = stdout.Write(pemCerts(b.GetX509Authorities()))
	return err
}

// printSPIFFEBundle checks the server's document as any outside input before
// printing it indented, so what is printed is a bundle others can load.
func printSPIFFEBundle(stdout io.Writer, b *writv1.Bundle) error {
	doc := b.GetSpiffeBundle()
	if len(doc) == 0 {
		return errors.New("the server returned no SPIFFE bundle document: it predates --format spiffe; upgrade it or use --format pem")
	}
	td, err := spiffeid.TrustDomainFromString(b.GetTrustDomain())
	if err != nil {
		return fmt.Errorf("the server named trust domain %q: %w", b.GetTrustDomain(), err)
	}
	if _, err := server.ParseSPIFFEBundle(td, doc); err != nil {
		return fmt.Errorf("the server returned a bundle that does not parse: %w", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, doc, "", "  "); err != nil {
		return fmt.Errorf("the server returned a bundle that does not parse: %w", err)
	}
	out.WriteByte('\n')
	_, err = stdout.Write(out.Bytes())
	return err
}
