package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	writv1 "writ.dev/writ/api/writ/v1"
)

// cliCommand is one leaf subcommand's flags and help text.
type cliCommand struct {
	name     string   // e.g. "writ entry create"
	synopsis []string // usage lines without the leading "Usage:"
	summary  string   // what the command does, one paragraph
	fs       *flag.FlagSet
	// shownDefault overrides the default printed in help for flags whose
	// real default is computed at run time.
	shownDefault map[string]string
	// requiredFlags must have a value once parsed; parse refuses the
	// command otherwise.
	requiredFlags []string
	// operands is set by commands that take arguments after their flags
	// (writ policy validate FILE...); the others refuse any.
	operands bool
}

func newCommand(name, summary string, synopsis ...string) *cliCommand {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// Help goes to stdout when asked for and parse errors are returned to
	// main, which prints them once; the flag package prints nothing itself.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &cliCommand{name: name, synopsis: synopsis, summary: summary, fs: fs, shownDefault: map[string]string{}}
}

// required marks flags that must always be given: help says so, and parse
// refuses the command naming every one that has no value.
func (c *cliCommand) required(names ...string) {
	c.requiredFlags = append(c.requiredFlags, names...)
	c.showRequired(names...)
}

// showRequired marks flags as required in help only, for flags whose need
// depends on other flags; the command checks them itself with need.
func (c *cliCommand) showRequired(names ...string) {
	for _, n := range names {
		c.shownDefault[n] = ""
	}
}

// need refuses the command when any of the named flags has no value,
// naming all of them at once. A flag given an empty value counts as
// missing: an empty --id is never what was meant.
func (c *cliCommand) need(names ...string) error {
	var missing []string
	for _, n := range names {
		if f := c.fs.Lookup(n); f == nil || f.Value.String() == "" {
			missing = append(missing, "--"+n)
		}
	}
	if len(missing) > 0 {
		return c.usageError("missing %s", strings.Join(missing, ", "))
	}
	return nil
}

// socketFlag adds the flags that say which server a client command reaches
// and as whom: --socket (the admin socket) or --server with --identity (the
// remote API over mTLS).
func (c *cliCommand) socketFlag() *target {
	t := &target{}
	c.fs.StringVar(&t.socket, "socket", "", socketHelp)
	c.shownDefault["socket"] = socketDefaultText
	c.fs.StringVar(&t.server, "server", "", "reach this server's remote API (`host:port`) over mTLS instead of the admin socket")
	c.shownDefault["server"] = "$" + serverEnv + " when no socket is named"
	c.fs.StringVar(&t.identity, "identity", "", "with --server, who to be: `login` (what 'writ login' saved) or workload (from the Workload API at $SPIFFE_ENDPOINT_SOCKET)")
	c.shownDefault["identity"] = "$" + identityEnv + ", else login"
	c.fs.StringVar(&t.socketOwners, "socket-owner", os.Getenv(socketOwnerEnv), "also accept an admin socket owned by these `users` (uids or names, comma-separated); root and you always are")
	c.shownDefault["socket-owner"] = "$" + socketOwnerEnv
	return t
}

// parse parses args. It returns done=true when help was printed and the
// command should stop without error.
func (c *cliCommand) parse(args []string, stdout io.Writer) (done bool, err error) {
	if err := c.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.printHelp(stdout)
			return true, nil
		}
		return false, c.usageError("%v", err)
	}
	if c.fs.NArg() > 0 && !c.operands {
		return false, c.usageError("unexpected argument %q (flags go before other arguments, and every value needs its flag)", c.fs.Arg(0))
	}
	return false, c.need(c.requiredFlags...)
}

// usageError says what was wrong and what to type instead.
func (c *cliCommand) usageError(format string, a ...any) error {
	return fmt.Errorf("%s\nusage: %s\nrun '%s --help' for every flag",
		fmt.Sprintf(format, a...), strings.Join(c.synopsis, "\n   or: "), c.name)
}

// set reports whether the flag was given on the command line.
func (c *cliCommand) set(name string) bool {
	found := false
	c.fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			found = true
		}
	})
	return found
}

func (c *cliCommand) printHelp(w io.Writer) {
	for i, s := range c.synopsis {
		if i == 0 {
			fmt.Fprintf(w, "Usage: %s\n", s)
		} else {
			fmt.Fprintf(w, "   or: %s\n", s)
		}
	}
	fmt.Fprintf(w, "\n%s\n\nFlags:\n", c.summary)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	c.fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); isBool {
			name = ""
		}
		def, ok := c.shownDefault[f.Name]
		if !ok {
			def = f.DefValue
			if def == "" || def == "[]" {
				def = "none"
			}
		}
		if def == "" {
			fmt.Fprintf(tw, "  --%s %s\t%s (required)\n", f.Name, name, usage)
		} else {
			fmt.Fprintf(tw, "  --%s %s\t%s (default: %s)\n", f.Name, name, usage, def)
		}
	})
	fmt.Fprintln(tw, "  -h, --help\tshow this help")
	tw.Flush()
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string {
	if l == nil || len(*l) == 0 {
		return ""
	}
	return strings.Join(*l, ",")
}

func (l *stringList) Set(s string) error {
	*l = append(*l, s)
	return nil
}

// subcommand is one command of a group such as `writ lock`.
type subcommand struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// withStdout adapts a subcommand that writes only to stdout.
func withStdout(f func(context.Context, []string, io.Writer) error) func(context.Context, []string, io.Writer, io.Writer) error {
	return func(ctx context.Context, args []string, stdout, _ io.Writer) error { return f(ctx, args, stdout) }
}

// runGroup runs `GROUP <command> [flags]`: the help index, the named
// command, or an error listing the commands there are.
func runGroup(ctx context.Context, group, summary string, subs []subcommand, args []string, stdout, stderr io.Writer) error {
	names := make([]string, len(subs))
	for i, s := range subs {
		names[i] = s.name
	}
	list := names[0]
	if n := len(names); n > 1 {
		list = strings.Join(names[:n-1], ", ") + " or " + names[n-1]
	}
	hint := fmt.Sprintf("run '%s --help' for what each does", group)
	if len(subs) == 1 {
		hint = fmt.Sprintf("run '%s --help' for what it does", group)
	}
	if len(args) == 0 {
		return fmt.Errorf("a command is needed: %s\n%s", list, hint)
	}
	if isHelpArg(args[0]) {
		printHelpIndex(stdout, group, summary, subs)
		return nil
	}
	for _, s := range subs {
		if s.name == args[0] {
			return s.run(ctx, args[1:], stdout, stderr)
		}
	}
	return fmt.Errorf("unknown command %q; use %s\n%s", args[0], list, hint)
}

// printHelpIndex prints the help of a command group (e.g. `writ entry`).
func printHelpIndex(w io.Writer, group, summary string, subs []subcommand) {
	fmt.Fprintf(w, "Usage: %s <command> [flags]\n\n%s\n\nCommands:\n", group, summary)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, s := range subs {
		fmt.Fprintf(tw, "  %s\t%s\n", s.name, s.summary)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nRun '%s <command> --help' for the flags of a command.\n", group)
}

func isHelpArg(s string) bool {
	return s == "-h" || s == "--help" || s == "-help" || s == "help"
}

// protoJSON renders a message on one line with the proto field names, so
// scripts see the same keys as the .proto file and as batch files. Unset
// fields are included so every object has the same shape. protojson varies
// its whitespace on purpose; compacting makes the output byte-stable.
func protoJSON(m proto.Message) ([]byte, error) {
	raw, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeJSONLine writes one message as a line of JSON.
// writeList prints a listing: one JSON object per line with asJSON;
// otherwise empty when there is nothing, or a table of header and one row
// per item (columns tab-separated).
func writeList[T proto.Message](w io.Writer, items []T, asJSON bool, empty, header string, row func(T) string) error {
	if asJSON {
		for _, it := range items {
			if err := writeJSONLine(w, it); err != nil {
				return err
			}
		}
		return nil
	}
	if len(items) == 0 {
		_, err := fmt.Fprintln(w, empty)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, it := range items {
		fmt.Fprintln(tw, row(it))
	}
	return tw.Flush()
}

func writeJSONLine(w io.Writer, m proto.Message) error {
	b, err := protoJSON(m)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	_, err = w.Write(b)
	return err
}

// formatSeconds shows a TTL the way a person would type it: 3600 → "1h",
// 90 → "1m30s".
func formatSeconds(s int64) string {
	d := time.Duration(s) * time.Second
	out := d.String()
	// time.Duration prints 1h0m0s; drop the zero units.
	if strings.HasSuffix(out, "m0s") {
		out = strings.TrimSuffix(out, "0s")
	}
	if strings.HasSuffix(out, "h0m") {
		out = strings.TrimSuffix(out, "0m")
	}
	return out
}

func formatTTL(s int64) string {
	if s == 0 {
		return "default"
	}
	return formatSeconds(s)
}

func formatUnix(s int64) string {
	if s == 0 {
		return "-"
	}
	return time.Unix(s, 0).UTC().Format(time.RFC3339)
}

func formatSelectors(sels []*writv1.Selector) []string {
	out := make([]string, len(sels))
	for i, s := range sels {
		out[i] = s.GetType() + ":" + s.GetValue()
	}
	return out
}

// writeEntry prints one entry as labelled lines.
func writeEntry(w io.Writer, e *writv1.Entry) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("ID:", e.GetId())
	row("SPIFFE ID:", e.GetSpiffeId())
	parentID := e.GetParentId()
	if parentID == "" {
		parentID = "-"
	}
	row("Parent ID:", parentID)
	for i, s := range formatSelectors(e.GetParentSelectors()) {
		if i == 0 {
			row("Parent selectors:", s)
		} else {
			row("", s)
		}
	}
	sels := formatSelectors(e.GetSelectors())
	if len(sels) == 0 {
		row("Selectors:", "-")
	}
	for i, s := range sels {
		if i == 0 {
			row("Selectors:", s)
		} else {
			row("", s)
		}
	}
	row("X.509 TTL:", formatTTL(e.GetX509TtlSeconds()))
	row("JWT TTL:", formatTTL(e.GetJwtTtlSeconds()))
	dns := "-"
	if len(e.GetDnsNames()) > 0 {
		dns = strings.Join(e.GetDnsNames(), ", ")
	}
	row("DNS names:", dns)
	hint := e.GetHint()
	if hint == "" {
		hint = "-"
	}
	row("Hint:", hint)
	expires := "never"
	if e.GetExpiresAt() != 0 {
		expires = formatUnix(e.GetExpiresAt())
	}
	row("Expires at:", expires)
	row("Revision:", fmt.Sprint(e.GetRevision()))
	row("Created at:", formatUnix(e.GetCreatedAt()))
	row("Updated at:", formatUnix(e.GetUpdatedAt()))
	return tw.Flush()
}

// entryTable prints entries as aligned columns.
type entryTable struct {
	tw *tabwriter.Writer
}

func newEntryTable(w io.Writer) *entryTable {
	t := &entryTable{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	fmt.Fprintln(t.tw, "ID\tSPIFFE ID\tPARENT\tSELECTORS\tTTL\tREVISION")
	return t
}

func (t *entryTable) add(e *writv1.Entry) {
	sels := strings.Join(formatSelectors(e.GetSelectors()), ",")
	if sels == "" {
		sels = "-"
	}
	// TTL shows the X.509 and JWT TTLs; "default" means the server's.
	ttl := formatTTL(e.GetX509TtlSeconds()) + "/" + formatTTL(e.GetJwtTtlSeconds())
	// A rule whose parents are named by node selectors shows them in the
	// parent column, joined by "+" to read as "all of".
	parent := e.GetParentId()
	if ps := formatSelectors(e.GetParentSelectors()); len(ps) > 0 {
		if parent != "" {
			parent += "|"
		}
		parent += strings.Join(ps, "+")
	}
	fmt.Fprintf(t.tw, "%s\t%s\t%s\t%s\t%s\t%d\n", e.GetId(), e.GetSpiffeId(), parent, sels, ttl, e.GetRevision())
}

func (t *entryTable) flush() error { return t.tw.Flush() }
