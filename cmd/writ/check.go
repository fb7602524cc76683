package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/server"
)

// runCheck asks the server for a decision on a named chain: an
// administrator's dry run over the open tasks, standing grants, locks and
// guardrails, with the explanation.
func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return checkCommand(ctx, "writ check", args, stdout)
}

func checkCommand(ctx context.Context, name string, args []string, stdout io.Writer) error {
	c := newCommand(name,
		"Decide a request as the server would, for a chain of identities named here (caller first,\n"+
			"then whom it acts for): allowed only if every identity is covered by an open task's grant\n"+
			"to it (workloads also by standing grants), no lock applies and no guardrail forbids. Prints\n"+
			"which task and grant covered each identity, or which identity failed and why. Resource\n"+
			"servers ask with the requester's SVID instead (DecisionService.Check).\n\n"+
			"Naming the chain is for administrators on the admin socket. Over --server, without --chain,\n"+
			"the request is decided for the identity the command presents (with --delegation-token: acting\n"+
			"for the person the token names), as a resource server would decide it.",
		name+" --action ACTION --resource NAME --chain ID [--chain ID ...] [--json]",
		name+" --server HOST:PORT --identity workload --action ACTION --resource NAME [--delegation-token FILE] [--json]")
	action := c.fs.String("action", "", "the `action`, e.g. read")
	resource := c.fs.String("resource", "", "the resource `name`, e.g. hr/salaries")
	var chain stringList
	c.fs.Var(&chain, "chain", "a SPIFFE `ID` of the chain, caller first (repeat for each)")
	delegationToken := c.fs.String("delegation-token", "", "with --server and no --chain: `file` of a delegation token bound to the presented identity; - reads standard input")
	asJSON := c.fs.Bool("json", false, "print the decision as JSON")
	socket := c.socketFlag()
	c.required("action", "resource")
	c.showRequired("chain")
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	if len(chain) > 0 && c.set("delegation-token") {
		return c.usageError("--delegation-token goes with the presented identity, not with --chain")
	}
	req := &writv1.CheckRequest{Action: *action, Resource: *resource, Chain: chain}
	if c.set("delegation-token") {
		tok, err := readTokenFile("delegation-token", *delegationToken)
		if err != nil {
			return err
		}
		req.DelegationToken = tok
	}
	cl, err := dial(*socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	if len(chain) == 0 {
		if cl.identity == nil {
			return c.usageError("missing --chain: on the admin socket name the chain to decide (or use --server to be decided as yourself)")
		}
		// Decided as a resource server would decide this caller: by the
		// certificate chain it presents.
		for _, cert := range cl.identity.svid.Certificates {
			req.X509Svid = append(req.X509Svid, cert.Raw)
		}
	}
	d, err := writv1.NewDecisionServiceClient(cl.conn).Check(ctx, req)
	if err != nil {
		return cl.explain(err)
	}
	if *asJSON {
		return writeJSONLine(stdout, d)
	}
	if !d.GetAllow() {
		fmt.Fprintf(stdout, "DENY %s on %s\n%s\n", *action, *resource, d.GetReason())
		return errDenied
	}
	fmt.Fprintf(stdout, "ALLOW %s on %s\n", *action, *resource)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IDENTITY\tKIND\tCOVERED BY")
	for _, cv := range d.GetCovered() {
		by := fmt.Sprintf("task %s, grant %d", cv.GetTaskId(), cv.GetGrant())
		if cv.GetStandingGrantId() != "" {
			by = "standing grant " + cv.GetStandingGrantId()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", cv.GetSpiffeId(), cv.GetKind(), by)
	}
	return tw.Flush()
}

// errDenied makes a denied check exit non-zero, so scripts can test it.
var errDenied = errors.New("denied")

// runPolicy runs `writ policy validate|test`.
func runPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runGroup(ctx, "writ policy", "Guardrails: Cedar policies that bound what any task may grant and any request may do.", []subcommand{
		{"validate", "compile Cedar guardrail files and report errors with their position", withStdout(policyValidate)},
		{"test", "dry-run a request against the server's open tasks and guardrails (as writ check)",
			func(ctx context.Context, args []string, stdout, _ io.Writer) error {
				return checkCommand(ctx, "writ policy test", args, stdout)
			}},
	}, args, stdout, stderr)
}

func policyValidate(_ context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ policy validate", "Compile Cedar guardrail files (or directories of *.cedar) as the server would.",
		"writ policy validate FILE|DIR ...")
	c.operands = true
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	if c.fs.NArg() == 0 {
		return c.usageError("name at least one policy file or directory")
	}
	set, err := server.LoadGuardrails(c.fs.Args())
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%d policies OK\n", set.Len())
	return err
}
