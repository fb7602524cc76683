package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/identity"
	"writ.dev/writ/task"
)

// runTask runs `writ task <command> [flags]`.
func runTask(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const summary = "Manage tasks: a task names who works on it and what each member may do. Opening it makes\n" +
		"exactly that live until its deadline; closing it takes it all away."
	transition := func(verb, done, help string) func(context.Context, []string, io.Writer, io.Writer) error {
		return func(ctx context.Context, args []string, stdout, _ io.Writer) error {
			return taskTransition(ctx, args, stdout, verb, done, help)
		}
	}
	return runGroup(ctx, "writ task", summary, []subcommand{
		{"create", "create a draft task: what the work is, who works on it, when it ends", withStdout(taskCreate)},
		{"add", "add members to a draft or open task", withStdout(taskAdd)},
		{"grant", "give members of a task actions on resources", withStdout(taskGrant)},
		{"open", "open a task: its grants become live until its deadline",
			transition("open", "opened", "Open a draft task: its grants become live from now (or its not-before time) until its deadline.")},
		{"close", "close a task: its grants end at once",
			transition("close", "closed", "Close an open task: its grants end at once, on every server.")},
		{"show", "show one task and its grants", withStdout(taskShow)},
		{"list", "list tasks, optionally by state", withStdout(taskList)},
		{"standing", "manage standing grants for workloads: put, delete, list", runStanding},
	}, args, stdout, stderr)
}

func taskCreate(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ task create",
		"Create a draft task. Add members and grants, then open it: nothing is live before.\n"+
			"The deadline is required and at most 30 days ahead: every task ends.",
		"writ task create --title TEXT --reason TEXT --deadline WHEN [--owner ID] [--ticket REF] [--not-before WHEN] [--member PATTERN...] [--id ID] [--json]")
	title := c.fs.String("title", "", "`text` saying what the work is, e.g. \"deploy 4.2 to prod\"")
	reason := c.fs.String("reason", "", "`text` saying why the work needs these privileges")
	ticket := c.fs.String("ticket", "", "external `reference`, e.g. an issue or change number")
	owner := c.fs.String("owner", "", "SPIFFE `ID` of the person responsible; required on the admin socket")
	deadline := c.fs.String("deadline", "", "`when` the grants end: a duration from now (8h) or an RFC 3339 time")
	notBefore := c.fs.String("not-before", "", "`when` the grants start, like --deadline; unset means when the task is opened")
	var members stringList
	c.fs.Var(&members, "member", "SPIFFE ID `pattern` of who works on the task, e.g. spiffe://example.org/ci/*; repeatable")
	id := c.fs.String("id", "", "task `id`; unset means the server picks one")
	asJSON := c.fs.Bool("json", false, "print the task as JSON")
	socket := c.socketFlag()
	c.required("title", "reason", "deadline")
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	now := time.Now()
	pt := &writv1.Task{Id: *id, Title: *title, Reason: *reason, Ticket: *ticket, Owner: *owner}
	var err error
	if pt.Deadline, err = parseWhen("deadline", *deadline, now); err != nil {
		return err
	}
	if c.set("not-before") {
		if pt.NotBefore, err = parseWhen("not-before", *notBefore, now); err != nil {
			return err
		}
	}
	if pt.Members, err = checkPatterns("member", members); err != nil {
		return err
	}
	return callTask(ctx, *socket, stdout, *asJSON, "created", func(tc writv1.TaskServiceClient) (*writv1.Task, error) {
		return tc.CreateTask(ctx, &writv1.CreateTaskRequest{Task: pt})
	})
}

func taskAdd(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ task add",
		"Add members to a draft or open task. Being a member grants nothing by itself: give grants with\n"+
			"'writ task grant'.",
		"writ task add --id ID --member PATTERN... [--revision N] [--json]")
	id := c.fs.String("id", "", "`id` of the task")
	var members stringList
	c.fs.Var(&members, "member", "SPIFFE ID `pattern` to add, e.g. spiffe://example.org/agent/bot/*; repeatable")
	revision := c.fs.Int64("revision", 0, "refuse the change unless the task is at this `revision`")
	asJSON := c.fs.Bool("json", false, "print the task as JSON")
	socket := c.socketFlag()
	c.required("id", "member")
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	ms, err := checkPatterns("member", members)
	if err != nil {
		return err
	}
	return callTask(ctx, *socket, stdout, *asJSON, "added members to", func(tc writv1.TaskServiceClient) (*writv1.Task, error) {
		return tc.AddMembers(ctx, &writv1.AddMembersRequest{Id: *id, Members: ms, Revision: *revision})
	})
}

func taskGrant(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ task grant",
		"Give members of a task actions on resources. Each recipient (--to) must be covered by a member\n"+
			"pattern of the task. On an open task the grant is live at once.",
		"writ task grant --id ID --action ACTION... --resource PATTERN... --to PATTERN... [--revision N] [--json]")
	id := c.fs.String("id", "", "`id` of the task")
	var actions, resources, to stringList
	c.fs.Var(&actions, "action", "`action` allowed, e.g. read or deploy; '*' for any; repeatable")
	c.fs.Var(&resources, "resource", "resource `pattern`, e.g. db/prod/payments or k8s/prod/**; repeatable")
	c.fs.Var(&to, "to", "SPIFFE ID `pattern` of the members it is given to; repeatable")
	revision := c.fs.Int64("revision", 0, "refuse the change unless the task is at this `revision`")
	asJSON := c.fs.Bool("json", false, "print the task as JSON")
	socket := c.socketFlag()
	c.required("id", "action", "resource", "to")
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	g, err := grantFromFlags(actions, resources, to)
	if err != nil {
		return err
	}
	return callTask(ctx, *socket, stdout, *asJSON, "added a grant to", func(tc writv1.TaskServiceClient) (*writv1.Task, error) {
		return tc.AddGrant(ctx, &writv1.AddGrantRequest{Id: *id, Grant: g, Revision: *revision})
	})
}

// grantFromFlags checks the patterns of a grant here, so an error names the
// flag; the server checks the rest against the task.
func grantFromFlags(actions, resources, to []string) (*writv1.Grant, error) {
	for _, r := range resources {
		if _, err := task.ParseResourcePattern(r); err != nil {
			return nil, &identity.FieldError{Field: "resource", Msg: err.Error()}
		}
	}
	recipients, err := checkPatterns("to", to)
	if err != nil {
		return nil, err
	}
	return &writv1.Grant{Actions: actions, Resources: resources, To: recipients}, nil
}

// taskTransition runs `writ task open` and `writ task close`.
func taskTransition(ctx context.Context, args []string, stdout io.Writer, verb, done, summary string) error {
	c := newCommand("writ task "+verb, summary, "writ task "+verb+" --id ID [--revision N] [--json]")
	id := c.fs.String("id", "", "`id` of the task")
	revision := c.fs.Int64("revision", 0, "refuse the change unless the task is at this `revision`")
	asJSON := c.fs.Bool("json", false, "print the task as JSON")
	socket := c.socketFlag()
	c.required("id")
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	req := &writv1.TaskTransitionRequest{Id: *id, Revision: *revision}
	return callTask(ctx, *socket, stdout, *asJSON, done, func(tc writv1.TaskServiceClient) (*writv1.Task, error) {
		if verb == "open" {
			return tc.OpenTask(ctx, req)
		}
		return tc.CloseTask(ctx, req)
	})
}

func taskShow(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ task show", "Show one task and its grants.", "writ task show --id ID [--json]")
	id := c.fs.String("id", "", "`id` of the task")
	asJSON := c.fs.Bool("json", false, "print the task as JSON")
	socket := c.socketFlag()
	c.required("id")
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	cl, err := dial(*socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	t, err := writv1.NewTaskServiceClient(cl.conn).GetTask(ctx, &writv1.GetTaskRequest{Id: *id})
	if err != nil {
		return cl.explain(err)
	}
	if *asJSON {
		return writeJSONLine(stdout, t)
	}
	return writeTask(stdout, t)
}

func taskList(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ task list", "List tasks by ID. A task whose deadline has passed while open is listed as expired.",
		"writ task list [--state STATE...] [--json]")
	var states stringList
	c.fs.Var(&states, "state", "only tasks in this `state`: draft, open, closed or expired; repeatable")
	asJSON := c.fs.Bool("json", false, "print tasks as JSON, one object per line")
	socket := c.socketFlag()
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	cl, err := dial(*socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := writv1.NewTaskServiceClient(cl.conn).ListTasks(ctx, &writv1.ListTasksRequest{States: states})
	if err != nil {
		return cl.explain(err)
	}
	return writeList(stdout, resp.GetTasks(), *asJSON, "no tasks", "ID\tSTATE\tDEADLINE\tTITLE",
		func(t *writv1.Task) string {
			return strings.Join([]string{t.GetId(), t.GetState(), formatUnix(t.GetDeadline()), t.GetTitle()}, "\t")
		})
}

// runStanding runs `writ task standing <put|delete|list> [flags]`.
func runStanding(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const summary = "Manage standing grants: actions on resources that workloads hold at all times, without a task.\n" +
		"People, agents and nodes never hold standing privileges: give them a task."
	return runGroup(ctx, "writ task standing", summary, []subcommand{
		{"put", "create or replace a standing grant for workloads", withStdout(standingPut)},
		{"delete", "delete a standing grant", withStdout(standingDelete)},
		{"list", "list the standing grants", withStdout(standingList)},
	}, args, stdout, stderr)
}

func standingPut(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ task standing put",
		"Create a standing grant, or replace the one with --id. The subject must match workloads only.",
		"writ task standing put --subject PATTERN --action ACTION... --resource PATTERN... [--id ID] [--json]")
	id := c.fs.String("id", "", "`id` of the grant to replace; unset creates a new one")
	subject := c.fs.String("subject", "", "SPIFFE ID `pattern` of the workloads, e.g. spiffe://example.org/svc/billing/*")
	var actions, resources stringList
	c.fs.Var(&actions, "action", "`action` allowed, e.g. read; repeatable")
	c.fs.Var(&resources, "resource", "resource `pattern`, e.g. db/prod/payments; repeatable")
	asJSON := c.fs.Bool("json", false, "print the grant as JSON")
	socket := c.socketFlag()
	c.required("subject", "action", "resource")
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	if _, err := checkPatterns("subject", []string{*subject}); err != nil {
		return err
	}
	cl, err := dial(*socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	g, err := writv1.NewTaskServiceClient(cl.conn).PutStandingGrant(ctx, &writv1.StandingGrant{Id: *id, Subject: *subject, Actions: actions, Resources: resources})
	if err != nil {
		return cl.explain(err)
	}
	if *asJSON {
		return writeJSONLine(stdout, g)
	}
	_, err = fmt.Fprintf(stdout, "put standing grant %s: %s may %s on %s\n", g.GetId(), g.GetSubject(), strings.Join(g.GetActions(), ","), strings.Join(g.GetResources(), ","))
	return err
}

func standingDelete(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ task standing delete", "Delete a standing grant; its workloads lose it at once.",
		"writ task standing delete --id ID")
	id := c.fs.String("id", "", "`id` of the grant")
	socket := c.socketFlag()
	c.required("id")
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	cl, err := dial(*socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	g, err := writv1.NewTaskServiceClient(cl.conn).DeleteStandingGrant(ctx, &writv1.DeleteStandingGrantRequest{Id: *id})
	if err != nil {
		return cl.explain(err)
	}
	_, err = fmt.Fprintf(stdout, "deleted standing grant %s (%s)\n", g.GetId(), g.GetSubject())
	return err
}

func standingList(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ task standing list", "List the standing grants by ID.", "writ task standing list [--json]")
	asJSON := c.fs.Bool("json", false, "print grants as JSON, one object per line")
	socket := c.socketFlag()
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	cl, err := dial(*socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := writv1.NewTaskServiceClient(cl.conn).ListStandingGrants(ctx, &writv1.ListStandingGrantsRequest{})
	if err != nil {
		return cl.explain(err)
	}
	if *asJSON {
		for _, g := range resp.GetGrants() {
			if err := writeJSONLine(stdout, g); err != nil {
				return err
			}
		}
		return nil
	}
	if len(resp.GetGrants()) == 0 {
		_, err := fmt.Fprintln(stdout, "no standing grants")
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSUBJECT\tACTIONS\tRESOURCES")
	for _, g := range resp.GetGrants() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", g.GetId(), g.GetSubject(), strings.Join(g.GetActions(), ","), strings.Join(g.GetResources(), ","))
	}
	return tw.Flush()
}

// checkPatterns checks SPIFFE ID patterns before any round trip, so an
// error names the flag the pattern was given with.
func checkPatterns(flag string, in []string) ([]string, error) {
	for _, s := range in {
		if _, err := task.ParsePattern(s); err != nil {
			return nil, &identity.FieldError{Field: flag, Msg: err.Error()}
		}
	}
	return in, nil
}

// parseWhen reads a time given as a duration from now (8h, or seconds) or
// as an RFC 3339 time, and returns unix seconds.
func parseWhen(field, s string, now time.Time) (int64, error) {
	if d, err := identity.ParseTTL(field, s, 0); err == nil {
		return now.Add(d).Unix(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return 0, &identity.FieldError{Field: field, Msg: fmt.Sprintf("%q is neither a duration from now (8h, 90m) nor an RFC 3339 time (2030-01-02T15:04:05Z)", s)}
	}
	return t.Unix(), nil
}

// callTask dials, makes one task call and prints the task it returns: as
// JSON, or as one line saying what was done.
func callTask(ctx context.Context, socket target, stdout io.Writer, asJSON bool, done string, call func(writv1.TaskServiceClient) (*writv1.Task, error)) error {
	cl, err := dial(socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	t, err := call(writv1.NewTaskServiceClient(cl.conn))
	if err != nil {
		return cl.explain(err)
	}
	if asJSON {
		return writeJSONLine(stdout, t)
	}
	_, err = fmt.Fprintf(stdout, "%s task %s: it is %s (revision %d), deadline %s\n", done, t.GetId(), t.GetState(), t.GetRevision(), formatUnix(t.GetDeadline()))
	return err
}

// writeTask prints one task as labelled lines, then its grants as a table.
func writeTask(w io.Writer, t *writv1.Task) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("ID:", t.GetId())
	row("Title:", t.GetTitle())
	row("Reason:", t.GetReason())
	row("Ticket:", orDash(t.GetTicket()))
	row("Owner:", t.GetOwner())
	row("State:", t.GetState())
	for i, m := range t.GetMembers() {
		if i == 0 {
			row("Members:", m)
		} else {
			row("", m)
		}
	}
	if len(t.GetMembers()) == 0 {
		row("Members:", "-")
	}
	row("Not before:", formatUnix(t.GetNotBefore()))
	row("Deadline:", formatUnix(t.GetDeadline()))
	row("Created at:", formatUnix(t.GetCreatedAt()))
	row("Opened at:", formatUnix(t.GetOpenedAt()))
	row("Closed at:", formatUnix(t.GetClosedAt()))
	row("Revision:", fmt.Sprint(t.GetRevision()))
	if len(t.GetGrants()) == 0 {
		row("Grants:", "none yet; add one with 'writ task grant'")
		return tw.Flush()
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	gw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	watched := slices.ContainsFunc(t.GetGrants(), (*writv1.Grant).GetWatched)
	header := "ACTIONS\tRESOURCES\tTO\tEXPIRES"
	if watched {
		header += "\tWATCHED"
	}
	fmt.Fprintln(gw, header)
	for _, g := range t.GetGrants() {
		fmt.Fprintf(gw, "%s\t%s\t%s\t%s", strings.Join(g.GetActions(), ","), strings.Join(g.GetResources(), ","), strings.Join(g.GetTo(), ","), grantExpiry(g))
		if watched {
			fmt.Fprintf(gw, "\t%s", map[bool]string{true: "yes", false: "no"}[g.GetWatched()])
		}
		fmt.Fprintln(gw)
	}
	return gw.Flush()
}

// grantExpiry says when a grant ends: at its own expiry (a grant an
// approved join added), or with the task; one whose access time starts at
// first use says so until it is used.
func grantExpiry(g *writv1.Grant) string {
	switch {
	case g.GetExpiresAt() == 0:
		return "with the task"
	case g.GetAccessSeconds() > 0 && g.GetFirstUsedAt() == 0:
		return fmt.Sprintf("%s from first use; unused, lapses %s", time.Duration(g.GetAccessSeconds())*time.Second, formatUnix(g.GetExpiresAt()))
	}
	return formatUnix(g.GetExpiresAt())
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
