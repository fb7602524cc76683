package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	writv1 "writ.dev/writ/api/writ/v1"
)

// runInventory runs `writ inventory [--unseen-days N] [--json]`.
func runInventory(ctx context.Context, args []string, stdout, _ io.Writer) error {
	c := newCommand("writ inventory",
		"Report every identity writ knows of (from agents, rules, tasks, standing grants and the audit log),\n"+
			"its kind, when it was last seen, the open tasks it is a member of and the standing grants it holds,\n"+
			"with flags for what deserves a look: identities unseen for a while, standing grants held by\n"+
			"non-workloads, and task grants never used or wider than what was used. The server reads the\n"+
			"latest million audit events to build it, so it may take a while on a large log.",
		"writ inventory [--unseen-days N] [--json]")
	days := c.fs.Int("unseen-days", 30, "flag identities not seen for this many `days`")
	asJSON := c.fs.Bool("json", false, "print the whole inventory as one JSON object")
	socket := c.socketFlag()
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	if *days < 1 || *days > 36500 {
		return c.usageError("--unseen-days %d is out of range: give 1 to 36500", *days)
	}
	cl, err := dial(*socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	inv, err := writv1.NewInventoryServiceClient(cl.conn).GetInventory(ctx, &writv1.GetInventoryRequest{UnseenDays: int32(*days)})
	if err != nil {
		return cl.explain(err)
	}
	if *asJSON {
		return writeJSONLine(stdout, inv)
	}
	return writeInventory(stdout, inv)
}

// writeInventory prints the identities as a table, then the open tasks,
// then the pending requests, then the grant flags, one per line.
func writeInventory(w io.Writer, inv *writv1.Inventory) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IDENTITY\tKIND\tLAST SEEN\tTASKS\tSTANDING\tFLAGS")
	for _, id := range inv.GetIdentities() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", id.GetSpiffeId(), id.GetKind(), formatLastSeen(id.GetLastSeen()),
			listOrDash(id.GetTasks()), listOrDash(id.GetStandingGrants()), listOrDash(id.GetFlags()))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nopen tasks:")
	if len(inv.GetOpenTasks()) == 0 {
		fmt.Fprintln(w, "none")
	} else {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tDEADLINE\tTITLE")
		for _, t := range inv.GetOpenTasks() {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", t.GetId(), formatUnix(t.GetDeadline()), t.GetTitle())
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if err := writePendingRequests(w, inv.GetPendingRequests()); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nflags:")
	if len(inv.GetFlags()) == 0 {
		fmt.Fprintln(w, "none")
	}
	for _, f := range inv.GetFlags() {
		fmt.Fprintln(w, "- "+f)
	}
	return nil
}

func formatLastSeen(s int64) string {
	if s == 0 {
		return "never"
	}
	return formatUnix(s)
}

func listOrDash(l []string) string {
	if len(l) == 0 {
		return "-"
	}
	return strings.Join(l, ",")
}

// writePendingRequests lists the requests waiting for review, oldest
// first; STALE marks those past half their pending_ttl.
func writePendingRequests(w io.Writer, reqs []*writv1.PendingRequest) error {
	fmt.Fprintln(w, "\npending requests:")
	if len(reqs) == 0 {
		fmt.Fprintln(w, "none")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tREQUESTER\tTASK\tASKS\tCREATED\tEXPIRES\tSTALE")
	for _, p := range reqs {
		r := p.GetRequest()
		requester := "-"
		if len(r.GetChain()) > 0 {
			requester = r.GetChain()[0]
		}
		stale := "-"
		if p.GetStale() {
			stale = "stale"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.GetId(), requester, r.GetTask(), listOrDash(r.GetAsks()),
			formatUnix(r.GetCreatedAt()), formatUnix(r.GetPendingUntil()), stale)
	}
	return tw.Flush()
}
