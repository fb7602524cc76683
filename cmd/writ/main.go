// Command writ is the whole of writ in one binary: the server, the dev
// environment and the client.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=..."; otherwise
// it comes from the module's build information.
var version = ""

type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{
	"server":  {"run the control plane", runServer},
	"dev":     {"run a local trust domain on the embedded store, for a first try", runDev},
	"entry":   {"manage identity rules: create, update, delete, show, list", runEntry},
	"svid":    {"mint an X.509-SVID (administrators only)", runSVID},
	"bundle":  {"show the trust bundle", runBundle},
	"lock":    {"stop issuance for an identity at once: create, list, delete", runLock},
	"task":    {"manage tasks, where privileges live: create, add, grant, open, close, show, list, standing", runTask},
	"audit":   {"read and verify the tamper-evident audit log: tail, export, verify", runAudit},
	"ca":      {"inspect and steer the authorities' rotation: show, prepare, activate, taint, revoke", runCA},
	"status":  {"show the server's status", runStatus},
	"backup":  {"copy the running server's store to a file, consistently", runBackup},
	"agent":   {"run the node agent: join, serve the SPIFFE Workload API, write identities to files", runAgent},
	"token":   {"join tokens for new agents; token exchange for an agent acting for a person", runToken},
	"fetch":   {"fetch this process's identity from the SPIFFE Workload API", runFetch},
	"login":   {"sign in as a person and get a short-lived SVID", runLogin},
	"check":   {"dry-run a decision for a chain of identities, with the explanation", runCheck},
	"policy":  {"guardrails: validate Cedar policy files, test a request", runPolicy},
	"request": {"ask for access through a task, as yourself: open, join, list, show, cancel", runRequest},
	"review":  {"review access requests and apply review rules: approve, deny, rules", runReview},
	"watch":   {"watch over a dual-controlled task, keeping its grants live while you do", runWatch},
	"gateway": {"run the identity-aware proxy: a decision per connection, cut when it stops holding", runGateway},
	"version": {"print the version", runVersion},

	"inventory": {"report every identity, what it holds and what deserves a look", runInventory},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "writ: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	if err := cmd.run(ctx, args[1:], stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "writ %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprint(w, `writ gives every workload, agent, machine and person a short-lived SPIFFE
identity proven by attestation.

Usage: writ <command> [flags]   (writ <command> --help for its flags)

Commands:
`)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, commands[n].summary)
	}
	fmt.Fprint(w, `
The client commands reach the server's admin socket: --socket, else $WRIT_SOCKET,
else ./.writ/admin.sock (writ dev), else /var/lib/writ/admin.sock; a socket owned by
anyone but root or you is refused unless named with --socket-owner. With --server
HOST:PORT (or $WRIT_SERVER) they reach the remote API over mTLS instead, as the identity
'writ login' saved or, with --identity workload, this process's from the Workload API.
`)
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}

func runVersion(_ context.Context, _ []string, stdout, _ io.Writer) error {
	fmt.Fprintln(stdout, "writ", versionString())
	return nil
}
