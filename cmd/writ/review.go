package main

import (
	"context"
	"fmt"
	"io"
	"os"

	writv1 "writ.dev/writ/api/writ/v1"
)

// maxRulesFile bounds a review rules file read from disk; the server
// stores at most this much.
const maxRulesFile = 1 << 20

// runReview runs `writ review <command> [flags]`.
func runReview(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const summary = "Review access requests, and manage the review rules that say who must approve what."
	return runGroup(ctx, "writ review", summary, []subcommand{
		{"approve", "approve a request, as yourself", withStdout(reviewApprove)},
		{"deny", "deny a request, as yourself: it ends the request", withStdout(reviewDeny)},
		{"rules", "apply or show the review rules: apply, show", runReviewRules},
	}, args, stdout, stderr)
}

func runReviewRules(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runGroup(ctx, "writ review rules", "The review rules file every server sharing the store judges requests by.", []subcommand{
		{"apply", "validate a rules file and apply it (or, with --dry-run, say what would change)", withStdout(rulesApply)},
		{"show", "print the rules file applied now", withStdout(rulesShow)},
	}, args, stdout, stderr)
}

func reviewApprove(ctx context.Context, args []string, stdout io.Writer) error {
	return reviewVerdict(ctx, args, stdout, "approve")
}

func reviewDeny(ctx context.Context, args []string, stdout io.Writer) error {
	return reviewVerdict(ctx, args, stdout, "deny")
}

func reviewVerdict(ctx context.Context, args []string, stdout io.Writer, verb string) error {
	summary := "Approve a request, as the identity --server and --identity present. Your approval counts for\n" +
		"the groups of the request's rule that name you (or whom you act for); never for your own request."
	if verb == "deny" {
		summary = "Deny a request, as the identity --server and --identity present. Any eligible reviewer's\n" +
			"denial ends the request; say why."
	}
	c := newCommand("writ review "+verb, summary, "writ review "+verb+" ID --reason TEXT [--delegation-token FILE] [--json]")
	reason := c.fs.String("reason", "", "`text` saying why; the requester reads it")
	token := c.fs.String("delegation-token", "", delegationTokenHelp)
	asJSON := c.fs.Bool("json", false, "print the request as JSON")
	t := c.socketFlag()
	if verb == "deny" {
		c.required("reason")
	}
	id, done, err := c.parseOperand(args, stdout, "request ID")
	if done || err != nil {
		return err
	}
	req := &writv1.ReviewAccessRequest{Id: id, Reason: *reason}
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
	rc := writv1.NewReviewServiceClient(cl.conn)
	var d *writv1.AccessRequestDetail
	if verb == "deny" {
		d, err = rc.Deny(ctx, req)
	} else {
		d, err = rc.Approve(ctx, req)
	}
	if err != nil {
		return cl.explain(err)
	}
	if *asJSON {
		return writeJSONLine(stdout, d)
	}
	return writeRequestDetail(stdout, d)
}

func rulesApply(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ review rules apply",
		"Validate a review rules file and apply it: every server sharing the store judges requests by it\n"+
			"from then on. A file with any problem is refused whole, naming the key and line. --dry-run\n"+
			"says what would change (rules added, removed, changed, reordered) and applies nothing.",
		"writ review rules apply FILE [--dry-run] [--revision N] [--json]")
	dryRun := c.fs.Bool("dry-run", false, "validate and say what would change; apply nothing")
	revision := c.fs.Int64("revision", 0, "refuse unless the applied rules are at this `revision`")
	asJSON := c.fs.Bool("json", false, "print the outcome as JSON")
	t := c.socketFlag()
	path, done, err := c.parseOperand(args, stdout, "rules file")
	if done || err != nil {
		return err
	}
	text, err := readRulesFile(path)
	if err != nil {
		return err
	}
	cl, err := dial(*t)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := writv1.NewReviewServiceClient(cl.conn).ApplyRules(ctx, &writv1.ApplyReviewRulesRequest{Text: text, DryRun: *dryRun, Revision: *revision})
	if err != nil {
		return cl.explain(err)
	}
	if *asJSON {
		return writeJSONLine(stdout, resp)
	}
	switch {
	case *dryRun:
		fmt.Fprintf(stdout, "dry run: %s is valid (%d rules); nothing was applied\n", path, len(resp.GetRules().GetRules()))
	case resp.GetApplied():
		fmt.Fprintf(stdout, "applied %s: %d rules (revision %d)\n", path, len(resp.GetRules().GetRules()), resp.GetRules().GetRevision())
	default:
		fmt.Fprintf(stdout, "%s is already applied (revision %d)\n", path, resp.GetRules().GetRevision())
	}
	for _, ch := range resp.GetChanges() {
		fmt.Fprintf(stdout, "  %s\n", ch)
	}
	return nil
}

func readRulesFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxRulesFile+1))
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxRulesFile {
		return "", fmt.Errorf("%s is larger than %d KiB; a rules file is at most that", path, maxRulesFile>>10)
	}
	return string(data), nil
}

func rulesShow(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ review rules show", "Print the review rules file applied now, as it was applied.",
		"writ review rules show [--json]")
	asJSON := c.fs.Bool("json", false, "print the rules as JSON")
	t := c.socketFlag()
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	cl, err := dial(*t)
	if err != nil {
		return err
	}
	defer cl.Close()
	r, err := writv1.NewReviewServiceClient(cl.conn).GetRules(ctx, &writv1.GetReviewRulesRequest{})
	if err != nil {
		return cl.explain(err)
	}
	if *asJSON {
		return writeJSONLine(stdout, r)
	}
	fmt.Fprintf(stdout, "# revision %d, applied %s\n", r.GetRevision(), formatUnix(r.GetUpdatedAt()))
	_, err = io.WriteString(stdout, r.GetText())
	return err
}
