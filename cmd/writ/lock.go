package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/identity"
)

// lockKinds are identity's lock kinds, as the flag's help lists them.
var lockKinds = func() []string {
	var out []string
	for _, k := range identity.LockKinds() {
		out = append(out, string(k))
	}
	return out
}()

// runLock runs `writ lock <create|list|delete> [flags]`.
func runLock(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const summary = "Manage locks: a lock stops issuance and renewal for its target within a second on every\n" +
		"server sharing the store. SVIDs already issued live until they expire."
	return runGroup(ctx, "writ lock", summary, []subcommand{
		{"create", "stop issuance for a target at once, on every server", withStdout(lockCreate)},
		{"list", "list the locks in force", withStdout(lockList)},
		{"delete", "lift a lock", withStdout(lockDelete)},
	}, args, stdout, stderr)
}

// parseLockTarget parses KIND=VALUE. The server checks the value; here only
// the shape is checked, so a typo in the kind costs no round trip.
func parseLockTarget(s string) (*writv1.LockTarget, error) {
	kind, value, ok := strings.Cut(s, "=")
	if !ok || value == "" {
		return nil, &identity.FieldError{Field: "target", Msg: fmt.Sprintf("%q is not KIND=VALUE, e.g. spiffe-id=spiffe://example.org/db or join-method=join_token", s)}
	}
	known := false
	for _, k := range lockKinds {
		known = known || k == kind
	}
	if !known {
		return nil, &identity.FieldError{Field: "target", Msg: fmt.Sprintf("%q is not a lock target kind: use one of %s", kind, strings.Join(lockKinds, ", "))}
	}
	return &writv1.LockTarget{Kind: kind, Value: value}, nil
}

func lockCreate(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ lock create",
		"Stop issuance and renewal for a target at once, on every server sharing the store. Targets:\n"+
			"  spiffe-id=ID     exactly this SPIFFE ID\n"+
			"  id-prefix=ID     this SPIFFE ID and everything below it, by whole path segments\n"+
			"                   (spiffe://td/ci locks spiffe://td/ci/x, not spiffe://td/cicd)\n"+
			"  node=ID          a node's own SVID\n"+
			"  agent=ID         an agent: its own SVID and everything issued through it\n"+
			"  join-method=NAME a node attestation method, e.g. join_token: no agent joins that way\n"+
			"  task=ID          a task: its grants are dead while the lock holds\n"+
			"SVIDs already issued live until they expire: short TTLs are the revocation.",
		"writ lock create --target KIND=VALUE --reason TEXT [--ttl DURATION] [--json]")
	target := c.fs.String("target", "", "what to lock, `KIND=VALUE`; KIND is one of "+strings.Join(lockKinds, ", "))
	reason := c.fs.String("reason", "", "why, e.g. an incident reference (`text`, up to 512 characters)")
	ttl := c.fs.String("ttl", "", "how long the lock holds, a `duration` (2h) or seconds; unset means until deleted")
	asJSON := c.fs.Bool("json", false, "print the lock as JSON")
	socket := c.socketFlag()
	c.required("target", "reason")
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	t, err := parseLockTarget(*target)
	if err != nil {
		return err
	}
	if c.set("ttl") {
		if _, err := identity.ParseTTL("ttl", *ttl, 0); err != nil {
			return err
		}
	}
	cl, err := dial(*socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	l, err := writv1.NewLockServiceClient(cl.conn).CreateLock(ctx, &writv1.CreateLockRequest{Target: t, Reason: *reason, Ttl: *ttl})
	if err != nil {
		return cl.explain(err)
	}
	if *asJSON {
		return writeJSONLine(stdout, l)
	}
	return writeLock(stdout, l)
}

func lockList(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ lock list", "List the locks in force, oldest first.", "writ lock list [--json]")
	asJSON := c.fs.Bool("json", false, "print locks as JSON, one object per line")
	socket := c.socketFlag()
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	cl, err := dial(*socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := writv1.NewLockServiceClient(cl.conn).ListLocks(ctx, &writv1.ListLocksRequest{})
	if err != nil {
		return cl.explain(err)
	}
	return writeList(stdout, resp.GetLocks(), *asJSON, "no locks in force", "ID\tTARGET\tEXPIRES\tCREATED BY\tREASON",
		func(l *writv1.Lock) string {
			return strings.Join([]string{l.GetId(), formatLockTarget(l.GetTarget()), formatLockExpiry(l.GetExpiresAt()), l.GetCreatedBy(), l.GetReason()}, "\t")
		})
}

func lockDelete(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ lock delete", "Lift a lock. Issuance for its target resumes within a second on every server.",
		"writ lock delete --id ID")
	id := c.fs.String("id", "", "`id` of the lock to lift")
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
	l, err := writv1.NewLockServiceClient(cl.conn).DeleteLock(ctx, &writv1.DeleteLockRequest{Id: *id})
	if err != nil {
		return cl.explain(err)
	}
	_, err = fmt.Fprintf(stdout, "deleted lock %s (%s)\n", l.GetId(), formatLockTarget(l.GetTarget()))
	return err
}

func formatLockTarget(t *writv1.LockTarget) string {
	return t.GetKind() + "=" + t.GetValue()
}

func formatLockExpiry(s int64) string {
	if s == 0 {
		return "never"
	}
	return formatUnix(s)
}

// writeLock prints one lock as labelled lines.
func writeLock(w io.Writer, l *writv1.Lock) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("ID:", l.GetId())
	row("Target:", formatLockTarget(l.GetTarget()))
	row("Reason:", l.GetReason())
	row("Created by:", l.GetCreatedBy())
	row("Created at:", formatUnix(l.GetCreatedAt()))
	row("Expires at:", formatLockExpiry(l.GetExpiresAt()))
	return tw.Flush()
}
