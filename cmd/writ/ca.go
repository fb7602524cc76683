package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"google.golang.org/grpc"

	writv1 "writ.dev/writ/api/writ/v1"
)

// runCA runs `writ ca <show|prepare|activate|taint|revoke> [flags]`.
func runCA(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const summary = "Inspect and steer this server's authorities: the X.509 CA (--kind x509) and the JWT signing\n" +
		"key (--kind jwt). Each rotates on its own: a successor is prepared and published at half life\n" +
		"and activated when a sixth of the life is left; old ones stay in the bundle until they expire.\n" +
		"These commands are for incidents and planned changes."
	verb := func(name string) func(context.Context, []string, io.Writer, io.Writer) error {
		return func(ctx context.Context, args []string, stdout, _ io.Writer) error {
			return caVerb(ctx, name, args, stdout)
		}
	}
	return runGroup(ctx, "writ ca", summary, []subcommand{
		{"show", "list this server's authorities and where each is in its rotation", withStdout(caShow)},
		{"prepare", "make and publish a successor now, ahead of schedule", verb("prepare")},
		{"activate", "make the prepared successor sign from now on", verb("activate")},
		{"taint", "mark an authority suspect: an active one is replaced at once, its SVIDs renew early", verb("taint")},
		{"revoke", "take a non-active authority out of the trust bundle", verb("revoke")},
	}, args, stdout, stderr)
}

func caShow(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ ca show", "List this server's authorities, newest first.", "writ ca show [--json]")
	asJSON := c.fs.Bool("json", false, "print each authority as JSON, one per line")
	socket := c.socketFlag()
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	cl, err := dial(*socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := writv1.NewCAServiceClient(cl.conn).ListAuthorities(ctx, &writv1.ListAuthoritiesRequest{})
	if err != nil {
		return cl.explain(err)
	}
	if *asJSON {
		for _, a := range resp.GetAuthorities() {
			if err := writeJSONLine(stdout, a); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tID\tSTATE\tNOT BEFORE\tNOT AFTER\tFLAGS")
	for _, a := range resp.GetAuthorities() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.GetKind(), a.GetId(), a.GetState(),
			formatUnix(a.GetNotBefore()), formatUnix(a.GetNotAfter()), authorityFlags(a))
	}
	return tw.Flush()
}

func authorityFlags(a *writv1.Authority) string {
	switch {
	case a.GetRevoked():
		return "revoked"
	case a.GetTainted():
		return "tainted"
	}
	return "-"
}

var caVerbHelp = map[string]string{
	"prepare": "Make a successor authority now and publish it in the bundle; it signs nothing until activated.\n" +
		"Give peers and federated trust domains time to fetch the bundle before activating it.",
	"activate": "Make the prepared successor the signing authority now (--id names it; empty means the prepared\n" +
		"one). The previous one stays in the bundle until everything it signed has expired.",
	"taint": "Mark an authority suspect, e.g. after its key may have leaked. An active one is replaced at once\n" +
		"by a successor, and holders of SVIDs it signed get new ones early. Revoke it once they have.",
	"revoke": "Take a prepared or old authority out of the trust bundle of every server sharing the store:\n" +
		"everything it signed stops verifying. An active authority must be tainted (which replaces it) first.",
}

func caVerb(ctx context.Context, verb string, args []string, stdout io.Writer) error {
	synopsis := "writ ca " + verb + " --kind x509|jwt"
	switch verb {
	case "activate":
		synopsis += " [--id ID]"
	case "taint", "revoke":
		synopsis += " --id ID"
	}
	c := newCommand("writ ca "+verb, caVerbHelp[verb], synopsis+" [--json]")
	kind := c.fs.String("kind", "", "which authority: `x509` (the CA) or jwt (the JWT signing key)")
	var id *string
	if verb != "prepare" {
		id = c.fs.String("id", "", "the authority's `id`, as 'writ ca show' lists it")
	}
	asJSON := c.fs.Bool("json", false, "print the authority as JSON")
	socket := c.socketFlag()
	c.required("kind")
	if verb == "taint" || verb == "revoke" {
		// Checked below, where the error can say where ids come from.
		c.showRequired("id")
	}
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	if *kind != "x509" && *kind != "jwt" {
		return c.usageError("--kind must be x509 or jwt")
	}
	req := &writv1.AuthorityRequest{Kind: *kind}
	if id != nil {
		req.Id = *id
	}
	if (verb == "taint" || verb == "revoke") && req.Id == "" {
		return c.usageError("missing --id: run 'writ ca show' to list the authorities")
	}
	cl, err := dial(*socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	api := writv1.NewCAServiceClient(cl.conn)
	call := map[string]func(context.Context, *writv1.AuthorityRequest, ...grpc.CallOption) (*writv1.Authority, error){
		"prepare":  api.PrepareAuthority,
		"activate": api.ActivateAuthority,
		"taint":    api.TaintAuthority,
		"revoke":   api.RevokeAuthority,
	}[verb]
	a, err := call(ctx, req)
	if err != nil {
		return cl.explain(err)
	}
	if *asJSON {
		return writeJSONLine(stdout, a)
	}
	_, err = fmt.Fprintf(stdout, "%s authority %s is now %s (%s), valid until %s\n", a.GetKind(), a.GetId(), a.GetState(), authorityFlags(a), formatUnix(a.GetNotAfter()))
	return err
}
