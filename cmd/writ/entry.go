package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/identity"
)

// stdin is where `--file -` reads from; a variable so tests can replace it.
var stdin io.Reader = os.Stdin

// runEntry runs `writ entry <create|update|delete|show|list> [flags]`.
func runEntry(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const summary = "Manage identity rules (registration entries): the workloads matching all of a rule's selectors,\non the node or agent named by its parent ID, receive its SPIFFE ID."
	return runGroup(ctx, "writ entry", summary, []subcommand{
		{"create", "create one identity rule from flags, or many from a YAML or JSON file", entryCreate},
		{"update", "change the fields of an identity rule", entryUpdate},
		{"delete", "delete an identity rule", entryDelete},
		{"show", "show one identity rule", entryShow},
		{"list", "list identity rules, optionally filtered", entryList},
	}, args, stdout, stderr)
}

// entryFlags are the flags that set an entry's fields, shared by create and
// update. TTLs and times are kept as text and parsed by apply, so that errors
// name the flag and say which forms are accepted.
type entryFlags struct {
	spiffeID  string
	parentID  string
	parentSel stringList
	selectors stringList
	x509TTL   string
	jwtTTL    string
	dns       stringList
	hint      string
	expiresAt string
	expiresIn string
}

// entryFieldFlags lists the flags registered by entryFlags.register.
var entryFieldFlags = []string{"spiffe-id", "parent-id", "parent-selector", "selector", "x509-ttl", "jwt-ttl", "dns", "hint", "expires-at", "expires-in"}

func (f *entryFlags) register(c *cliCommand, update bool) {
	fs := c.fs
	fs.StringVar(&f.spiffeID, "spiffe-id", "", "SPIFFE `ID` the rule hands out, e.g. spiffe://example.org/service/web")
	fs.StringVar(&f.parentID, "parent-id", "", "SPIFFE `ID` of the node or agent allowed to hand it out")
	parentHelp := "node selector `type:value` every agent allowed to hand it out was attested with at join, e.g. github:repository:acme/api; repeatable, instead of or besides --parent-id"
	if update {
		parentHelp += "; replaces all the rule's parent selectors"
	}
	fs.Var(&f.parentSel, "parent-selector", parentHelp)
	selHelp := "selector `type:value` a workload must have, e.g. unix:uid:1000; repeatable"
	dnsHelp := "DNS `name` to put in the X.509-SVID; repeatable"
	if update {
		selHelp += "; replaces all the rule's selectors"
		dnsHelp += "; replaces all the rule's DNS names"
	}
	fs.Var(&f.selectors, "selector", selHelp)
	fs.StringVar(&f.x509TTL, "x509-ttl", "", "X.509-SVID lifetime, a `duration` (1h) or seconds (3600); unset means the server default")
	fs.StringVar(&f.jwtTTL, "jwt-ttl", "", "JWT-SVID lifetime, a `duration` (5m) or seconds (300); unset means the server default")
	fs.Var(&f.dns, "dns", dnsHelp)
	fs.StringVar(&f.hint, "hint", "", "`text` that tells a workload holding several identities which one to use")
	fs.StringVar(&f.expiresAt, "expires-at", "", "`time` (RFC 3339, e.g. 2030-01-02T15:04:05Z) at which the rule stops applying; unset means never")
	fs.StringVar(&f.expiresIn, "expires-in", "", "like --expires-at, as a `duration` from now (720h) or seconds")
}

// apply sets on e the fields whose flags were given on the command line,
// leaving the others as they are.
func (f *entryFlags) apply(c *cliCommand, e *writv1.Entry, now time.Time) error {
	if c.set("expires-at") && c.set("expires-in") {
		return c.usageError("give --expires-at or --expires-in, not both")
	}
	if c.set("spiffe-id") {
		if _, err := identity.ParseID("spiffe-id", f.spiffeID); err != nil {
			return err
		}
		e.SpiffeId = f.spiffeID
	}
	if c.set("parent-id") {
		if _, err := identity.ParseID("parent-id", f.parentID); err != nil {
			return err
		}
		e.ParentId = f.parentID
	}
	if c.set("parent-selector") {
		sels, err := parseSelectors(f.parentSel, func(i int) string { return "parent-selector" })
		if err != nil {
			return err
		}
		e.ParentSelectors = sels
	}
	if c.set("selector") {
		sels, err := parseSelectors(f.selectors, func(i int) string { return "selector" })
		if err != nil {
			return err
		}
		e.Selectors = sels
	}
	if c.set("x509-ttl") {
		secs, err := parseTTLSeconds("x509-ttl", f.x509TTL)
		if err != nil {
			return err
		}
		e.X509TtlSeconds = secs
	}
	if c.set("jwt-ttl") {
		secs, err := parseTTLSeconds("jwt-ttl", f.jwtTTL)
		if err != nil {
			return err
		}
		e.JwtTtlSeconds = secs
	}
	if c.set("dns") {
		e.DnsNames = append([]string(nil), f.dns...)
	}
	if c.set("hint") {
		e.Hint = f.hint
	}
	if c.set("expires-at") {
		at, err := parseExpiresAt("expires-at", f.expiresAt, now)
		if err != nil {
			return err
		}
		e.ExpiresAt = at
	}
	if c.set("expires-in") {
		d, err := identity.ParseTTL("expires-in", f.expiresIn, 0)
		if err != nil {
			return err
		}
		e.ExpiresAt = now.Add(d).Unix()
	}
	return nil
}

// parseSelectors parses "type:value" strings; field(i) names the i-th one in
// errors.
func parseSelectors(in []string, field func(i int) string) ([]*writv1.Selector, error) {
	out := make([]*writv1.Selector, 0, len(in))
	for i, s := range in {
		sel, err := identity.ParseSelector(s)
		if err != nil {
			return nil, renameField(err, field(i))
		}
		out = append(out, &writv1.Selector{Type: sel.Type, Value: sel.Value})
	}
	return out, nil
}

// renameField gives an identity.FieldError the name the user knows the
// value by (a flag, or a path in a batch file).
func renameField(err error, field string) error {
	var fe *identity.FieldError
	if errors.As(err, &fe) {
		return &identity.FieldError{Field: field, Msg: fe.Msg}
	}
	return fmt.Errorf("%s: %w", field, err)
}

func parseTTLSeconds(field, s string) (int64, error) {
	// No upper limit here: the server knows its own and says so.
	d, err := identity.ParseTTL(field, s, 0)
	if err != nil {
		return 0, err
	}
	return int64(d / time.Second), nil
}

// parseExpiresAt parses an RFC 3339 time that must lie in the future, as
// Unix seconds.
func parseExpiresAt(field, s string, now time.Time) (int64, error) {
	t, err := identity.ParseExpiresAt(field, s, now)
	if err != nil {
		return 0, err
	}
	return t.Unix(), nil
}

func entryCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("writ entry create",
		"Create an identity rule from flags, or many from a YAML or JSON file in one all-or-nothing call:\n"+
			"  entries:\n"+
			"    - spiffe_id: spiffe://example.org/service/web\n"+
			"      parent_id: spiffe://example.org/writ/agent/node-1   # or parent_selectors: [\"TYPE:VALUE\", ...]\n"+
			"      selectors: [\"unix:uid:1000\"]\n"+
			"      x509_ttl: 1h        # optional, like jwt_ttl, dns_names, hint, expires_at (RFC 3339), id\n"+
			fmt.Sprintf("A file may hold at most %d entries.", maxBatchEntries),
		"writ entry create --spiffe-id ID (--parent-id ID | --parent-selector TYPE:VALUE...) --selector TYPE:VALUE... [flags]",
		"writ entry create --file FILE [--json]")
	var f entryFlags
	f.register(c, false)
	id := c.fs.String("id", "", "`id` for the new rule; unset means the server assigns one")
	file := c.fs.String("file", "", "YAML or JSON `file` of entries to create together; - reads standard input")
	asJSON := c.fs.Bool("json", false, "print the created entries as JSON, one object per line")
	socket := c.socketFlag()
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	now := time.Now()

	var entries []*writv1.Entry
	if c.set("file") {
		for _, name := range append(entryFieldFlags, "id") {
			if c.set(name) {
				return c.usageError("--%s cannot be combined with --file; put the field in the file", name)
			}
		}
		var err error
		entries, err = readBatchFile(*file, now)
		if err != nil {
			return err
		}
	} else {
		e := &writv1.Entry{Id: *id}
		var missing []string
		if f.spiffeID == "" {
			missing = append(missing, "--spiffe-id")
		}
		if f.parentID == "" && len(f.parentSel) == 0 {
			// Either names the parents: the agent, or node selectors all
			// of its agents were attested with.
			missing = append(missing, "--parent-id (or --parent-selector)")
		}
		if len(f.selectors) == 0 {
			missing = append(missing, "--selector")
		}
		if len(missing) > 0 {
			return c.usageError("missing %s", strings.Join(missing, ", "))
		}
		if err := f.apply(c, e, now); err != nil {
			return err
		}
		entries = []*writv1.Entry{e}
	}

	req := &writv1.CreateEntriesRequest{Entries: entries}
	if n := proto.Size(req); n > maxMessageSize {
		return fmt.Errorf("the request would be %d bytes, more than the %d the connection carries; split the file into smaller ones", n, maxMessageSize)
	}
	cl, err := dial(*socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := cl.entries.CreateEntries(ctx, req)
	if err != nil {
		return cl.explain(err)
	}
	created := resp.GetEntries()
	switch {
	case *asJSON:
		for _, e := range created {
			if err := writeJSONLine(stdout, e); err != nil {
				return err
			}
		}
		return nil
	case c.set("file"):
		var rev int64
		if len(created) > 0 {
			rev = created[0].GetRevision()
		}
		_, err := fmt.Fprintf(stdout, "created %d entries (revision %d)\n", len(created), rev)
		return err
	case len(created) == 1:
		return writeEntry(stdout, created[0])
	default:
		return fmt.Errorf("the server returned %d entries for one created; it may not have stored it as asked, check with 'writ entry list'", len(created))
	}
}

// readBatchFile reads and parses a batch file completely, so that nothing is
// sent unless every entry in it is well formed.
func readBatchFile(name string, now time.Time) ([]*writv1.Entry, error) {
	var r io.Reader
	display := name
	if name == "-" {
		r = stdin
		display = "standard input"
	} else {
		fh, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("cannot read batch file: %w", err)
		}
		defer fh.Close()
		r = fh
	}
	// A batch of the largest allowed size is far below this; the bound stops
	// a wrong file (a disk image, /dev/zero) from exhausting memory.
	const maxFileSize = 512 << 20
	data, err := io.ReadAll(io.LimitReader(r, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", display, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s is larger than %d MiB; split it into smaller files", display, maxFileSize>>20)
	}
	entries, err := parseBatch(data, now)
	if err != nil {
		return nil, fmt.Errorf("%s: %w; nothing was created", display, err)
	}
	return entries, nil
}

func entryUpdate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("writ entry update",
		"Change an identity rule. Only the fields whose flags are given change; --selector and --dns\n"+
			"replace the whole list. If someone else changes the rule at the same time, nothing is\n"+
			"written and the command says to run it again.",
		"writ entry update --id ID [--spiffe-id ID] [--parent-id ID] [--selector TYPE:VALUE...] [flags]")
	var f entryFlags
	f.register(c, true)
	id := c.fs.String("id", "", "`id` of the rule to change")
	clearDNS := c.fs.Bool("clear-dns", false, "remove all DNS names")
	clearExpiry := c.fs.Bool("clear-expiry", false, "make the rule never expire")
	clearParentID := c.fs.Bool("clear-parent-id", false, "remove the parent ID, leaving the parent selectors to name the parents")
	clearParentSels := c.fs.Bool("clear-parent-selectors", false, "remove the parent selectors, leaving the parent ID")
	asJSON := c.fs.Bool("json", false, "print the updated entry as JSON")
	socket := c.socketFlag()
	c.required("id")
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	changes := false
	for _, name := range append(entryFieldFlags, "clear-dns", "clear-expiry", "clear-parent-id", "clear-parent-selectors") {
		changes = changes || c.set(name)
	}
	if !changes {
		return c.usageError("nothing to change; give at least one of --%s, --clear-dns, --clear-expiry, --clear-parent-id or --clear-parent-selectors", strings.Join(entryFieldFlags, ", --"))
	}
	if *clearParentID && c.set("parent-id") {
		return c.usageError("give --parent-id or --clear-parent-id, not both")
	}
	if *clearParentSels && c.set("parent-selector") {
		return c.usageError("give --parent-selector or --clear-parent-selectors, not both")
	}
	if *clearDNS && c.set("dns") {
		return c.usageError("give --dns or --clear-dns, not both")
	}
	if *clearExpiry && (c.set("expires-at") || c.set("expires-in")) {
		return c.usageError("give --expires-at/--expires-in or --clear-expiry, not both")
	}
	now := time.Now()
	// Check the flags before talking to the server, so a typo costs nothing.
	if err := f.apply(c, &writv1.Entry{}, now); err != nil {
		return err
	}

	cl, err := dial(*socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	e, err := cl.entries.GetEntry(ctx, &writv1.GetEntryRequest{Id: *id})
	if err != nil {
		return cl.explain(err)
	}
	if err := f.apply(c, e, now); err != nil {
		return err
	}
	if *clearDNS {
		e.DnsNames = nil
	}
	if *clearExpiry {
		e.ExpiresAt = 0
	}
	if *clearParentID {
		e.ParentId = ""
	}
	if *clearParentSels {
		e.ParentSelectors = nil
	}
	// e.Revision is the revision just read: the server refuses the update if
	// the rule changed in between, instead of silently undoing that change.
	updated, err := cl.entries.UpdateEntry(ctx, &writv1.UpdateEntryRequest{Entry: e})
	if err != nil {
		if status.Code(err) == codes.Aborted {
			return fmt.Errorf("entry %s was changed by someone else while this update ran, so nothing was written; run the command again to apply your change to the new version", *id)
		}
		return cl.explain(err)
	}
	if *asJSON {
		return writeJSONLine(stdout, updated)
	}
	return writeEntry(stdout, updated)
}

func entryDelete(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("writ entry delete", "Delete an identity rule. Workloads stop receiving its identity at their next renewal.",
		"writ entry delete --id ID")
	id := c.fs.String("id", "", "`id` of the rule to delete")
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
	e, err := cl.entries.DeleteEntry(ctx, &writv1.DeleteEntryRequest{Id: *id})
	if err != nil {
		return cl.explain(err)
	}
	_, err = fmt.Fprintf(stdout, "deleted entry %s (%s)\n", e.GetId(), e.GetSpiffeId())
	return err
}

func entryShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("writ entry show", "Show one identity rule.",
		"writ entry show --id ID [--json]")
	id := c.fs.String("id", "", "`id` of the rule to show")
	asJSON := c.fs.Bool("json", false, "print the entry as JSON")
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
	e, err := cl.entries.GetEntry(ctx, &writv1.GetEntryRequest{Id: *id})
	if err != nil {
		return cl.explain(err)
	}
	if *asJSON {
		return writeJSONLine(stdout, e)
	}
	return writeEntry(stdout, e)
}

func entryList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("writ entry list",
		"List identity rules. Filters combine: a rule is listed when it matches all of them, and\n"+
			"holds every --selector given (it may have more).",
		"writ entry list [--spiffe-id ID] [--parent-id ID] [--selector TYPE:VALUE...] [--hint TEXT] [--json]")
	spiffeID := c.fs.String("spiffe-id", "", "only rules handing out this SPIFFE `ID`")
	parentID := c.fs.String("parent-id", "", "only rules whose parent is this SPIFFE `ID`")
	var selectors stringList
	c.fs.Var(&selectors, "selector", "only rules holding this selector `type:value`; repeatable")
	hint := c.fs.String("hint", "", "only rules with this hint `text`")
	asJSON := c.fs.Bool("json", false, "print entries as JSON, one object per line")
	socket := c.socketFlag()
	if done, err := c.parse(args, stdout); done || err != nil {
		return err
	}
	req := &writv1.ListEntriesRequest{Hint: *hint}
	if c.set("spiffe-id") {
		if _, err := identity.ParseID("spiffe-id", *spiffeID); err != nil {
			return err
		}
		req.SpiffeId = *spiffeID
	}
	if c.set("parent-id") {
		if _, err := identity.ParseID("parent-id", *parentID); err != nil {
			return err
		}
		req.ParentId = *parentID
	}
	sels, err := parseSelectors(selectors, func(int) string { return "selector" })
	if err != nil {
		return err
	}
	req.Selectors = sels

	cl, err := dial(*socket)
	if err != nil {
		return err
	}
	defer cl.Close()

	var table *entryTable
	if !*asJSON {
		table = newEntryTable(stdout)
	}
	count := 0
	for {
		resp, err := cl.entries.ListEntries(ctx, req)
		if err != nil {
			return cl.explain(err)
		}
		for _, e := range resp.GetEntries() {
			count++
			if *asJSON {
				if err := writeJSONLine(stdout, e); err != nil {
					return err
				}
			} else {
				table.add(e)
			}
		}
		next := resp.GetNextPageToken()
		if next == "" {
			break
		}
		if next == req.PageToken {
			// A server that hands back the token it was given would keep the
			// client looping forever.
			return fmt.Errorf("the server returned the same page token %q twice; the listing is incomplete", next)
		}
		req.PageToken = next
	}
	if *asJSON {
		return nil
	}
	if count == 0 {
		_, err := fmt.Fprintln(stdout, "no entries")
		return err
	}
	return table.flush()
}

// maxBatchEntries is the most entries the server stores in one call.
const maxBatchEntries = 100_000

// parseBatch parses a batch file (identity.ParseRuleFile) into the
// entries of one CreateEntries call.
func parseBatch(data []byte, now time.Time) ([]*writv1.Entry, error) {
	return parseBatchLimit(data, now, maxBatchEntries)
}

func parseBatchLimit(data []byte, now time.Time, limit int) ([]*writv1.Entry, error) {
	rules, err := identity.ParseRuleFile(data, now, limit)
	if err != nil {
		return nil, err
	}
	entries := make([]*writv1.Entry, len(rules))
	for i, r := range rules {
		e := &writv1.Entry{
			Id:             r.ID,
			SpiffeId:       r.SPIFFEID.String(),
			X509TtlSeconds: int64(r.X509TTL / time.Second),
			JwtTtlSeconds:  int64(r.JWTTTL / time.Second),
			DnsNames:       r.DNSNames,
			Hint:           r.Hint,
		}
		if !r.ParentID.IsZero() {
			e.ParentId = r.ParentID.String()
		}
		for _, sel := range r.ParentSelectors {
			e.ParentSelectors = append(e.ParentSelectors, &writv1.Selector{Type: sel.Type, Value: sel.Value})
		}
		for _, sel := range r.Selectors {
			e.Selectors = append(e.Selectors, &writv1.Selector{Type: sel.Type, Value: sel.Value})
		}
		if !r.ExpiresAt.IsZero() {
			e.ExpiresAt = r.ExpiresAt.Unix()
		}
		entries[i] = e
	}
	return entries, nil
}
