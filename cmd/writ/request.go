package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"writ.dev/writ/internal/quote"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/identity"
)

// runRequest runs `writ request <command> [flags]`.
func runRequest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const summary = "Ask for access through a task, as yourself: to open a drafted task, or to join an open task\n" +
		"with named grants. The review rules say who must approve; some requests are approved at once."
	return runGroup(ctx, "writ request", summary, []subcommand{
		{"open", "ask to open a drafted task, making its grants live", withStdout(requestOpen)},
		{"join", "ask to join an open task with named grants", withStdout(requestJoin)},
		{"list", "list requests, optionally by state", withStdout(requestList)},
		{"show", "show a request: its rule, who may approve it, the reviews so far", withStdout(requestShow)},
		{"cancel", "withdraw a pending request you made", withStdout(requestCancel)},
	}, args, stdout, stderr)
}

// parseOperand parses a command that takes one operand, before or after
// its flags (writ request open TASK --reason R).
func (c *cliCommand) parseOperand(args []string, stdout io.Writer, what string) (operand string, done bool, err error) {
	c.operands = true
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		operand, args = args[0], args[1:]
	}
	if done, err := c.parse(args, stdout); done || err != nil {
		return "", done, err
	}
	rest := c.fs.Args()
	if operand == "" && len(rest) > 0 {
		operand, rest = rest[0], rest[1:]
	}
	switch {
	case len(rest) > 0:
		return "", false, c.usageError("unexpected argument %s after the %s (every value needs its flag)", quote.String(rest[0]), what)
	case operand == "":
		return "", false, c.usageError("missing the %s", what)
	}
	return operand, false, nil
}

// delegationTokenHelp describes --delegation-token for requests and reviews.
const delegationTokenHelp = "with --server: `file` of a delegation token bound to the presented identity, for the token endpoint's issuer as audience, saying whom you act for; - reads standard input"

// requestFlags are the flags every way of asking takes.
type requestFlags struct {
	reason string
	ttl    string
	token  string
	dryRun bool
	as     stringList
	asJSON bool
	target *target
}

func addRequestFlags(c *cliCommand) *requestFlags {
	f := &requestFlags{}
	c.fs.StringVar(&f.reason, "reason", "", "`text` saying why you need the access; reviewers read it")
	c.fs.StringVar(&f.ttl, "ttl", "", "how long the access should last once approved (`duration`, e.g. 1h); unset asks for the rule's max_ttl")
	c.fs.StringVar(&f.token, "delegation-token", "", delegationTokenHelp)
	c.fs.BoolVar(&f.dryRun, "dry-run", false, "say which rule applies and what it would decide, and store nothing")
	c.fs.Var(&f.as, "as", "with --dry-run on the admin socket: the requester's SPIFFE `ID`, then whom it acts for; repeatable")
	c.fs.BoolVar(&f.asJSON, "json", false, "print the request as JSON")
	f.target = c.socketFlag()
	c.required("reason")
	return f
}

func (f *requestFlags) request(kind, taskID string, asks []string) (*writv1.CreateAccessRequest, error) {
	req := &writv1.CreateAccessRequest{Kind: kind, Task: taskID, Asks: asks, Reason: f.reason, DryRun: f.dryRun, Chain: f.as}
	if len(f.as) > 0 && !f.dryRun {
		return nil, fmt.Errorf("--as names a requester only for a dry run: add --dry-run, or ask as yourself with --server")
	}
	if f.token != "" {
		tok, err := readTokenFile("delegation-token", f.token)
		if err != nil {
			return nil, err
		}
		req.DelegationToken = tok
	}
	if f.ttl != "" {
		d, err := identity.ParseTTL("ttl", f.ttl, 365*24*time.Hour)
		if err != nil {
			return nil, err
		}
		req.TtlSeconds = int64(d / time.Second)
	}
	return req, nil
}

func requestOpen(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ request open",
		"Ask to open a drafted task: approved, its grants become live until its deadline (brought in to\n"+
			"the access asked for, at most the rule's max_ttl). You ask as yourself: the identity --server\n"+
			"and --identity present.",
		"writ request open TASK --reason TEXT [--ttl DURATION] [--delegation-token FILE] [--dry-run] [--json]")
	f := addRequestFlags(c)
	taskID, done, err := c.parseOperand(args, stdout, "task ID")
	if done || err != nil {
		return err
	}
	req, err := f.request("open", taskID, nil)
	if err != nil {
		return err
	}
	return createRequest(ctx, *f.target, stdout, f.asJSON, req)
}

func requestJoin(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ request join",
		"Ask to join an open task with named grants: approved, you become a member holding exactly them.",
		"writ request join TASK --grant ACTION:RESOURCE... --reason TEXT [--ttl DURATION] [--delegation-token FILE] [--dry-run] [--json]")
	var grants stringList
	c.fs.Var(&grants, "grant", "`action:resource` you ask for, e.g. read:db/staging/orders; repeatable")
	f := addRequestFlags(c)
	c.required("grant")
	taskID, done, err := c.parseOperand(args, stdout, "task ID")
	if done || err != nil {
		return err
	}
	req, err := f.request("join", taskID, grants)
	if err != nil {
		return err
	}
	return createRequest(ctx, *f.target, stdout, f.asJSON, req)
}

func createRequest(ctx context.Context, t target, stdout io.Writer, asJSON bool, req *writv1.CreateAccessRequest) error {
	cl, err := dial(t)
	if err != nil {
		return err
	}
	defer cl.Close()
	d, err := writv1.NewRequestServiceClient(cl.conn).CreateRequest(ctx, req)
	if err != nil {
		return cl.explain(err)
	}
	if asJSON {
		return writeJSONLine(stdout, d)
	}
	if req.GetDryRun() {
		fmt.Fprintln(stdout, "dry run: nothing was stored")
	}
	return writeRequestDetail(stdout, d)
}

func requestList(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ request list", "List access requests by ID. A pending request past its pending time is listed as expired.",
		"writ request list [--state STATE...] [--json]")
	var states stringList
	c.fs.Var(&states, "state", "only requests in this `state`: pending, approved, denied, cancelled or expired; repeatable")
	asJSON := c.fs.Bool("json", false, "print requests as JSON, one object per line")
	t := c.socketFlag()
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	cl, err := dial(*t)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := writv1.NewRequestServiceClient(cl.conn).ListRequests(ctx, &writv1.ListAccessRequestsRequest{States: states})
	if err != nil {
		return cl.explain(err)
	}
	return writeList(stdout, resp.GetRequests(), *asJSON, "no requests", "ID\tSTATE\tKIND\tTASK\tREQUESTER\tRULE\tASKS",
		func(r *writv1.AccessRequest) string {
			return strings.Join([]string{r.GetId(), r.GetState(), r.GetKind(), r.GetTask(), requester(r), r.GetRule(), orDash(strings.Join(r.GetAsks(), ","))}, "\t")
		})
}

func requester(r *writv1.AccessRequest) string {
	chain := r.GetChain()
	if len(chain) == 0 {
		return "-"
	}
	if len(chain) > 1 {
		return chain[0] + " for " + chain[len(chain)-1]
	}
	return chain[0]
}

func requestShow(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ request show", "Show a request: the rule that applies, who may approve it, and the reviews so far.",
		"writ request show ID [--json]")
	asJSON := c.fs.Bool("json", false, "print the request as JSON")
	t := c.socketFlag()
	id, done, err := c.parseOperand(args, stdout, "request ID")
	if done || err != nil {
		return err
	}
	cl, err := dial(*t)
	if err != nil {
		return err
	}
	defer cl.Close()
	d, err := writv1.NewRequestServiceClient(cl.conn).GetRequest(ctx, &writv1.GetAccessRequestRequest{Id: id})
	if err != nil {
		return cl.explain(err)
	}
	if *asJSON {
		return writeJSONLine(stdout, d)
	}
	return writeRequestDetail(stdout, d)
}

func requestCancel(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ request cancel", "Withdraw a pending request. Only the requester, or one it acts for, may.",
		"writ request cancel ID [--delegation-token FILE] [--json]")
	token := c.fs.String("delegation-token", "", delegationTokenHelp)
	asJSON := c.fs.Bool("json", false, "print the request as JSON")
	t := c.socketFlag()
	id, done, err := c.parseOperand(args, stdout, "request ID")
	if done || err != nil {
		return err
	}
	req := &writv1.CancelAccessRequestRequest{Id: id}
	if *token != "" {
		if req.DelegationToken, err = readTokenFile("delegation-token", *token); err != nil {
			return err
		}
	}
	cl, err := dial(*t)
	if err != nil {
		return err
	}
	defer cl.Close()
	d, err := writv1.NewRequestServiceClient(cl.conn).CancelRequest(ctx, req)
	if err != nil {
		return cl.explain(err)
	}
	if *asJSON {
		return writeJSONLine(stdout, d)
	}
	_, err = fmt.Fprintf(stdout, "cancelled request %s\n", d.GetRequest().GetId())
	return err
}

// writeRequestDetail prints a request as labelled lines, then who may
// approve it and the reviews so far.
func writeRequestDetail(w io.Writer, d *writv1.AccessRequestDetail) error {
	r := d.GetRequest()
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("ID:", orDash(r.GetId()))
	row("State:", r.GetState())
	row("Kind:", r.GetKind())
	row("Task:", r.GetTask())
	if len(r.GetAsks()) > 0 {
		row("Asks:", strings.Join(r.GetAsks(), ", "))
	}
	row("Requester:", requester(r))
	row("Reason:", r.GetReason())
	row("Access for:", (time.Duration(r.GetTtlSeconds()) * time.Second).String())
	row("Rule:", r.GetRule())
	row("Created at:", formatUnix(r.GetCreatedAt()))
	row("Pending until:", formatUnix(r.GetPendingUntil()))
	if r.GetDecidedAt() != 0 {
		row("Decided at:", formatUnix(r.GetDecidedAt()))
	}
	row("Why:", orDash(d.GetWhy()))
	if r.GetEffect() != "" {
		row("Effect:", r.GetEffect())
	}
	switch {
	case d.GetAutoApprove():
		row("Approvers:", "none: the rule approves automatically")
	case len(d.GetGroups()) > 0:
		row("Approvers:", "every group must be met; never the requester or anyone in its chain")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(d.GetGroups()) > 0 {
		fmt.Fprintln(w)
		gw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(gw, "GROUP\tNEED\tFROM\tAPPROVED BY")
		for _, g := range d.GetGroups() {
			fmt.Fprintf(gw, "%s\t%d\t%s\t%s\n", g.GetName(), g.GetNeed(), strings.Join(g.GetFrom(), ","), orDash(strings.Join(g.GetApprovedBy(), ",")))
		}
		if err := gw.Flush(); err != nil {
			return err
		}
	}
	if len(d.GetReviews()) > 0 {
		fmt.Fprintln(w)
		rw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(rw, "AT\tVERDICT\tBY\tREASON\tNOTE")
		for _, rv := range d.GetReviews() {
			by := rv.GetChain()
			who := "-"
			if len(by) > 0 {
				who = by[0]
				if len(by) > 1 {
					who += " for " + by[len(by)-1]
				}
			}
			fmt.Fprintf(rw, "%s\t%s\t%s\t%s\t%s\n", formatUnix(rv.GetAt()), rv.GetVerdict(), who, orDash(rv.GetReason()), orDash(rv.GetIgnored()))
		}
		return rw.Flush()
	}
	return nil
}
