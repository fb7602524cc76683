package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
	"writ.dev/writ/internal/atomicfile"
)

// runAudit runs `writ audit <tail|export|verify> [flags]`.
func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const summary = "Read and check the tamper-evident audit log: every change and issuance is one event, a leaf of\n" +
		"a Merkle tree whose checkpoints the servers sign."
	return runGroup(ctx, "writ audit", summary, []subcommand{
		{"tail", "show the newest events, and follow new ones with --follow", withStdout(auditTail)},
		{"export", "write the log and its signed checkpoints as JSON lines (for a SIEM or an outside party)", auditExport},
		{"verify", "recompute the log's tree and check it against every signed checkpoint", withStdout(auditVerify)},
	}, args, stdout, stderr)
}

// auditPage is how many events one read asks for.
const auditPage = 5000

func auditTail(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ audit tail", "Show the newest events of the audit log, oldest of them first.",
		"writ audit tail [-n N] [--follow] [--json]")
	n := c.fs.Int64("n", 20, "how many of the newest `events` to show")
	follow := c.fs.Bool("follow", false, "keep printing new events as they are written")
	asJSON := c.fs.Bool("json", false, "print each event exactly as stored, one per line")
	socket := c.socketFlag()
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	if *n < 0 {
		return c.usageError("-n %d is negative", *n)
	}
	cl, err := dial(*socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	api := writv1.NewAuditServiceClient(cl.conn)
	first, err := api.ReadEvents(ctx, &writv1.ReadAuditEventsRequest{Limit: 1})
	if err != nil {
		return cl.explain(err)
	}
	next := max(0, first.GetSize()-*n)
	var tw *tabwriter.Writer
	if !*asJSON {
		tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "INDEX\tTIME\tTYPE\tACTOR\tSUBJECT")
	}
	for {
		resp, err := api.ReadEvents(ctx, &writv1.ReadAuditEventsRequest{Start: next, Limit: auditPage})
		if err != nil {
			if ctx.Err() != nil && *follow {
				return nil
			}
			return cl.explain(err)
		}
		for _, e := range resp.GetEvents() {
			if err := printAuditEvent(stdout, tw, e); err != nil {
				return err
			}
			next = e.GetIndex() + 1
		}
		if tw != nil {
			tw.Flush()
		}
		if len(resp.GetEvents()) == auditPage {
			continue
		}
		if !*follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func printAuditEvent(stdout io.Writer, tw *tabwriter.Writer, e *writv1.AuditEvent) error {
	if tw == nil {
		_, err := fmt.Fprintf(stdout, "%s\n", e.GetEvent())
		return err
	}
	ev, err := audit.DecodeEvent(e.GetEvent())
	if err != nil {
		// Show what is there rather than stop: a damaged event is news.
		fmt.Fprintf(tw, "%d\t-\t(undecodable: %v)\t\t\n", e.GetIndex(), err)
		return nil
	}
	fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", e.GetIndex(), ev.Time.UTC().Format(time.RFC3339), ev.Type, ev.Actor, ev.Subject)
	return nil
}

func auditExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("writ audit export",
		"Write the whole audit log as JSON lines, each signed checkpoint after the event that completes it.\n"+
			"A fresh checkpoint is signed first, so the export ends with one covering all of it. Keep the\n"+
			"export (or just its checkpoint lines) outside the servers' reach: 'writ audit verify\n"+
			"--checkpoints FILE' then proves the log still extends what you kept.",
		"writ audit export [--out FILE] [--no-checkpoint]")
	out := c.fs.String("out", "", "write to `file` (mode 0600, atomically) instead of standard output")
	noSign := c.fs.Bool("no-checkpoint", false, "do not ask the server to sign a fresh checkpoint first")
	socket := c.socketFlag()
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	cl, err := dial(*socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	api := writv1.NewAuditServiceClient(cl.conn)
	if !*noSign {
		if _, err := api.SignCheckpoint(ctx, &writv1.SignAuditCheckpointRequest{}); err != nil {
			return cl.explain(err)
		}
	}
	log, err := fetchAuditLog(ctx, api)
	if err != nil {
		return cl.explain(err)
	}
	for _, gap := range log.gaps {
		fmt.Fprintf(stderr, "warning: %s\n", gap)
	}
	var buf bytes.Buffer
	w := io.Writer(stdout)
	if *out != "" {
		w = &buf
	}
	if err := audit.WriteExport(w, audit.Leaves(log.leaves), log.checkpoints); err != nil {
		return err
	}
	if *out == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o700); err != nil {
		return err
	}
	if err := atomicfile.Write(*out, buf.Bytes(), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "exported %d events and %d checkpoints to %s\n", len(log.leaves), len(log.checkpoints), *out)
	return nil
}

// fetchedLog is the log as the server handed it out.
type fetchedLog struct {
	leaves      [][]byte
	checkpoints []audit.SignedCheckpoint
	keys        []*writv1.AuditKey
	// size is the log size the store's head records; gaps says where the
	// stored events skip indexes or stop short of it.
	size int64
	gaps []string
}

func fetchAuditLog(ctx context.Context, api writv1.AuditServiceClient) (*fetchedLog, error) {
	cps, err := api.GetCheckpoints(ctx, &writv1.GetAuditCheckpointsRequest{})
	if err != nil {
		return nil, err
	}
	log := &fetchedLog{keys: cps.GetKeys()}
	for _, c := range cps.GetCheckpoints() {
		log.checkpoints = append(log.checkpoints, audit.SignedCheckpoint{
			Note:   c.GetNote(),
			Source: fmt.Sprintf("checkpoint of size %d by server %s", c.GetSize(), c.GetServerId()),
		})
	}
	var next int64
	for {
		resp, err := api.ReadEvents(ctx, &writv1.ReadAuditEventsRequest{Start: next, Limit: auditPage})
		if err != nil {
			return nil, err
		}
		log.size = max(log.size, resp.GetSize())
		for _, e := range resp.GetEvents() {
			if e.GetIndex() != next {
				log.gaps = append(log.gaps, fmt.Sprintf("the store has no event %d: the log jumps from %d to %d (events were deleted)", next, next-1, e.GetIndex()))
			}
			log.leaves = append(log.leaves, e.GetEvent())
			next = e.GetIndex() + 1
		}
		if len(resp.GetEvents()) < auditPage {
			break
		}
	}
	if next < log.size {
		log.gaps = append(log.gaps, fmt.Sprintf("the store's head counts %d events but the last stored one is %d (the tail was cut)", log.size, next-1))
	}
	return log, nil
}

func auditVerify(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ audit verify",
		"Recompute the audit log's Merkle tree from the stored events and check it against every signed\n"+
			"checkpoint: each signature, each root, and that each checkpoint extends the ones before it. With\n"+
			"--checkpoints, also against an earlier export: a log that was cut short, or rebuilt and re-signed\n"+
			"on the server, no longer extends what the export recorded. Names the first event that was changed,\n"+
			"removed or reordered, and exits non-zero when anything is wrong.",
		"writ audit verify [--checkpoints FILE]")
	cpFile := c.fs.String("checkpoints", "", "an earlier `export` (from 'writ audit export') to check the log against")
	socket := c.socketFlag()
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	var ref *audit.Export
	if *cpFile != "" {
		f, err := os.Open(*cpFile)
		if err != nil {
			return err
		}
		ref, err = audit.ReadExport(f, *cpFile)
		f.Close()
		if err != nil {
			return err
		}
	}
	cl, err := dial(*socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	api := writv1.NewAuditServiceClient(cl.conn)
	log, err := fetchAuditLog(ctx, api)
	if err != nil {
		return cl.explain(err)
	}
	var verifiers []note.Verifier
	for _, k := range log.keys {
		v, err := audit.NewVerifier(k.GetName(), ed25519.PublicKey(k.GetPublicKey()))
		if err != nil {
			return fmt.Errorf("audit key %q from the server: %w", k.GetName(), err)
		}
		verifiers = append(verifiers, v)
	}
	if len(verifiers) == 0 {
		return errors.New("the server has published no audit key: nothing can be verified")
	}
	checkpoints := log.checkpoints
	opts := []audit.Option{audit.WithStoredHashes(serverHashes{ctx: ctx, api: api}, log.size)}
	if ref != nil {
		checkpoints = append(checkpoints, ref.Checkpoints...)
		if ref.Start == 0 && len(ref.Leaves) > 0 {
			opts = append(opts, audit.WithReference(ref))
		}
	}
	rep, err := audit.Verify(ctx, audit.Leaves(log.leaves), checkpoints, note.VerifierList(verifiers...), opts...)
	var verr *audit.VerifyError
	if err != nil && !errors.As(err, &verr) {
		return err
	}
	problems := append([]string(nil), log.gaps...)
	if verr != nil {
		problems = append(problems, rep.Summary())
	}
	if len(problems) > 0 {
		return fmt.Errorf("audit log verification FAILED: %s", strings.Join(problems, "; "))
	}
	covered := fmt.Sprintf("all %d events are covered by a signed checkpoint", rep.Leaves)
	if rep.Verified < rep.Leaves {
		covered = fmt.Sprintf("events %d to %d are newer than the last checkpoint and not yet covered by a signature", rep.Verified, rep.Leaves-1)
	}
	_, err = fmt.Fprintf(stdout, "audit log OK: %d events, root %s, %d checkpoints verified with %d keys; %s\n",
		rep.Leaves, rep.Root, len(rep.Checkpoints), len(verifiers), covered)
	return err
}

// serverHashes reads the store's tree hashes through the server. Verify
// trusts them only where a signed checkpoint authenticates them.
type serverHashes struct {
	ctx context.Context
	api writv1.AuditServiceClient
}

func (h serverHashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	resp, err := h.api.ReadHashes(h.ctx, &writv1.ReadAuditHashesRequest{Indexes: indexes})
	if err != nil {
		return nil, err
	}
	if len(resp.GetHashes()) != len(indexes) {
		return nil, fmt.Errorf("asked for %d stored hashes, got %d", len(indexes), len(resp.GetHashes()))
	}
	out := make([]tlog.Hash, len(indexes))
	for i, b := range resp.GetHashes() {
		if len(b) != len(tlog.Hash{}) {
			return nil, fmt.Errorf("stored hash %d is %d bytes", indexes[i], len(b))
		}
		out[i] = tlog.Hash(b)
	}
	return out, nil
}
