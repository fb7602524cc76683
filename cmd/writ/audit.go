package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

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
		{"keys", "export this server's audit public key into a key bundle to keep outside the servers", auditKeys},
		{"verify", "recompute the log's tree and check it against checkpoints signed by keys you trust", withStdout(auditVerify)},
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
		"writ audit export [--out FILE] [--no-checkpoint] [--follow]")
	out := c.fs.String("out", "", "write to `file` (mode 0600, atomically) instead of standard output")
	noSign := c.fs.Bool("no-checkpoint", false, "do not ask the server to sign a fresh checkpoint first")
	follow := c.fs.Bool("follow", false, "then keep writing new events, each followed by the checkpoints that cover it, to standard output: a feed for a SIEM")
	socket := c.socketFlag()
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	if *follow && *out != "" {
		return c.usageError("--follow writes to standard output; it cannot be used with --out")
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
	for _, gap := range log.events.Gaps() {
		fmt.Fprintf(stderr, "warning: %s\n", gap)
	}
	var buf bytes.Buffer
	w := io.Writer(stdout)
	if *out != "" {
		w = &buf
	}
	if err := audit.WriteExport(w, log.events.Leaves(), log.checkpoints); err != nil {
		return err
	}
	if *follow {
		var covered int64
		for _, sc := range log.checkpoints {
			if n, ok := audit.PeekSize(sc.Note); ok {
				covered = max(covered, n)
			}
		}
		if err := followExport(ctx, api, stdout, log.events.Next(), covered); err != nil {
			return cl.explain(err)
		}
		return nil
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
	fmt.Fprintf(stderr, "exported %d events and %d checkpoints to %s\n", log.events.Len(), len(log.checkpoints), *out)
	return nil
}

// followExport writes events from next on as they are stored, and after
// them every checkpoint larger than covered that they complete, until ctx
// ends. Checkpoints are read before events, so the events read always reach
// the newest checkpoint even while later commits supersede it.
func followExport(ctx context.Context, api writv1.AuditServiceClient, stdout io.Writer, next, covered int64) error {
	x := audit.NewExportWriter(stdout)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
		cps, err := api.GetCheckpoints(ctx, &writv1.GetAuditCheckpointsRequest{MinSize: covered + 1})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		want := next
		for _, c := range cps.GetCheckpoints() {
			want = max(want, c.GetSize())
			// Signed later for events already written.
			if c.GetSize() <= next {
				if err := x.WriteCheckpoint(c.GetNote()); err != nil {
					return err
				}
			}
		}
		for {
			resp, err := api.ReadEvents(ctx, &writv1.ReadAuditEventsRequest{Start: next, Limit: auditPage})
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			for _, e := range resp.GetEvents() {
				if err := x.WriteLeaf(e.GetIndex(), e.GetEvent()); err != nil {
					return fmt.Errorf("the store skipped events: %w", err)
				}
				next = e.GetIndex() + 1
				for _, c := range cps.GetCheckpoints() {
					if c.GetSize() == next && c.GetSize() > covered {
						if err := x.WriteCheckpoint(c.GetNote()); err != nil {
							return err
						}
					}
				}
			}
			if len(resp.GetEvents()) < auditPage || next >= want {
				break
			}
		}
		for _, c := range cps.GetCheckpoints() {
			if c.GetSize() <= next {
				covered = max(covered, c.GetSize())
			}
		}
		if err := x.Flush(); err != nil {
			return err
		}
	}
}

// fetchedLog is the log as the server handed it out.
type fetchedLog struct {
	events      audit.Assembly
	checkpoints []audit.SignedCheckpoint
	// keys are the keys the store lists: shown, never trusted.
	keys      []*writv1.AuditKey
	serverKey *writv1.AuditKey
}

func fetchAuditLog(ctx context.Context, api writv1.AuditServiceClient) (*fetchedLog, error) {
	cps, err := api.GetCheckpoints(ctx, &writv1.GetAuditCheckpointsRequest{})
	if err != nil {
		return nil, err
	}
	log := &fetchedLog{keys: cps.GetKeys(), serverKey: cps.GetServerKey()}
	for _, c := range cps.GetCheckpoints() {
		log.checkpoints = append(log.checkpoints, audit.SignedCheckpoint{
			Note:   c.GetNote(),
			Source: fmt.Sprintf("checkpoint of size %d by server %s", c.GetSize(), c.GetServerId()),
		})
	}
	for {
		resp, err := api.ReadEvents(ctx, &writv1.ReadAuditEventsRequest{Start: log.events.Next(), Limit: auditPage})
		if err != nil {
			return nil, err
		}
		log.events.Head(resp.GetSize())
		for _, e := range resp.GetEvents() {
			log.events.Add(e.GetIndex(), e.GetEvent())
		}
		if len(resp.GetEvents()) < auditPage {
			break
		}
	}
	return log, nil
}

func auditKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("writ audit keys",
		"Export the audit public key of the server behind the socket, taken from its own keystore (not\n"+
			"from the database, which anyone who can write it could change), as a key bundle. Run it on\n"+
			"each server host with the same --out file to collect them all, and keep the bundle where the\n"+
			"servers cannot write: 'writ audit verify --keys FILE' trusts only the keys in it.",
		"writ audit keys [--out FILE]")
	out := c.fs.String("out", "", "add the key to the bundle in `file` (made if missing, mode 0600, written atomically) instead of printing a bundle")
	socket := c.socketFlag()
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	bundle := &audit.KeyBundle{}
	if *out != "" {
		data, err := readBounded(*out, audit.MaxKeyBundleSize)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return err
		default:
			if bundle, err = audit.ParseKeys(data, *out); err != nil {
				return fmt.Errorf("%w; move it aside to start a new bundle", err)
			}
		}
	}
	cl, err := dial(*socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := writv1.NewAuditServiceClient(cl.conn).GetCheckpoints(ctx, &writv1.GetAuditCheckpointsRequest{MinSize: math.MaxInt64})
	if err != nil {
		return cl.explain(err)
	}
	k := resp.GetServerKey()
	if k == nil {
		return errors.New("the server did not name its audit key: it runs an older version of writ; upgrade it first")
	}
	vk, err := audit.VerifierKey(k.GetName(), ed25519.PublicKey(k.GetPublicKey()))
	if err != nil {
		return fmt.Errorf("the server's audit key: %w", err)
	}
	if vk != k.GetVerifierKey() {
		return fmt.Errorf("the server's audit key %q does not match its verifier key: refusing to export it", k.GetName())
	}
	if err := bundle.Add(audit.BundleKey{ServerID: k.GetServerId(), VerifierKey: vk}); err != nil {
		return err
	}
	data, err := bundle.Marshal()
	if err != nil {
		return err
	}
	if *out == "" {
		_, err := stdout.Write(data)
		return err
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o700); err != nil {
		return err
	}
	if err := atomicfile.Write(*out, data, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "key %s of server %s is in %s (%d keys)\n", k.GetName(), k.GetServerId(), *out, len(bundle.Keys))
	return nil
}

// readTrustedKeys reads the key files given to verify into one bundle.
func readTrustedKeys(keyFiles []string, bundleFile string) (*audit.KeyBundle, error) {
	files := append([]string(nil), keyFiles...)
	if bundleFile != "" {
		files = append(files, bundleFile)
	}
	all := &audit.KeyBundle{}
	for _, name := range files {
		data, err := readBounded(name, audit.MaxKeyBundleSize)
		if err != nil {
			return nil, err
		}
		b, err := audit.ParseKeys(data, name)
		if err != nil {
			return nil, err
		}
		for _, k := range b.Keys {
			if err := all.Add(k); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	return all, nil
}

// readBounded reads a file of at most limit bytes.
func readBounded(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than the %d bytes allowed", name, limit)
	}
	return data, nil
}

func auditVerify(ctx context.Context, args []string, stdout io.Writer) error {
	c := newCommand("writ audit verify",
		"Recompute the audit log's Merkle tree from the stored events and check it against the signed\n"+
			"checkpoints, trusting only the audit keys you give: each signature, each root, that each\n"+
			"checkpoint extends the ones before, and that every event is covered by one. Keys the servers\n"+
			"publish in the database are never trusted, since anyone who can write the database can add\n"+
			"their own. With --checkpoints, also against an earlier export: a log that was cut short, or\n"+
			"rebuilt and re-signed, no longer extends what the export recorded. Names the first event that\n"+
			"was changed, removed or reordered, and exits non-zero unless everything verified.",
		"writ audit verify --keys BUNDLE [--key FILE]... [--checkpoints FILE]")
	var keyFiles stringList
	c.fs.Var(&keyFiles, "key", "a `file` of trusted audit verifier keys, one a line, or a key bundle; repeatable")
	bundleFile := c.fs.String("keys", "", "the key `bundle` written by 'writ audit keys' and kept outside the servers")
	cpFile := c.fs.String("checkpoints", "", "an earlier `export` (from 'writ audit export') to check the log against")
	socket := c.socketFlag()
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	trusted, err := readTrustedKeys(keyFiles, *bundleFile)
	if err != nil {
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
	keys := trusted
	if len(trusted.Keys) == 0 {
		// Check what can be checked with the keys the store lists, to
		// report damage, but never call the result verified.
		keys = &audit.KeyBundle{}
		for _, k := range log.keys {
			if vk, err := audit.VerifierKey(k.GetName(), ed25519.PublicKey(k.GetPublicKey())); err == nil {
				_ = keys.Add(audit.BundleKey{ServerID: k.GetServerId(), VerifierKey: vk})
			}
		}
	}
	verifiers, err := keys.Verifiers()
	if err != nil {
		return fmt.Errorf("audit log NOT VERIFIED: %v; pass the key bundle from 'writ audit keys' with --keys FILE", err)
	}
	checkpoints := log.checkpoints
	opts := []audit.Option{audit.WithStoredHashes(serverHashes{ctx: ctx, api: api}, log.events.HeadSize())}
	if ref != nil {
		checkpoints = append(checkpoints, ref.Checkpoints...)
		if ref.Start == 0 && len(ref.Leaves) > 0 {
			opts = append(opts, audit.WithReference(ref))
		}
	}
	rep, err := audit.Verify(ctx, &log.events, checkpoints, verifiers, opts...)
	var verr *audit.VerifyError
	if err != nil && !errors.As(err, &verr) {
		return err
	}
	if len(trusted.Keys) == 0 {
		found := "checked against the keys the database lists, nothing is wrong"
		if verr != nil {
			found = "checked against the keys the database lists: " + rep.Summary()
		}
		return fmt.Errorf("audit log NOT VERIFIED: no trusted audit keys were given. The keys the database lists (%s) "+
			"can be replaced by anyone who can write it, so they prove nothing; %s. Pass the bundle from 'writ audit keys', "+
			"kept outside the servers, with --keys FILE (or --key FILE)", strings.Join(keys.Names(), ", "), found)
	}
	if verr != nil {
		return fmt.Errorf("audit log verification FAILED: %s", rep.Summary())
	}
	_, err = fmt.Fprintf(stdout, "audit log OK: %d events, root %s, every event covered by checkpoints signed with the %d trusted keys (%d checkpoints checked)\n",
		rep.Leaves, rep.Root, len(trusted.Keys), len(rep.Checkpoints))
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
