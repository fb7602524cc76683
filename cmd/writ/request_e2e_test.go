package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var requestIDWord = regexp.MustCompile(`(?m)^ID:\s+(R-\S+)`)

// TestRequestsAndReviewsCLI follows README's requests and reviews tour with
// the built binary: rules applied (dry run first), an agent asks to join a
// task over --server as itself and a rule approves its staging read; a
// prod write waits for two operators and security, the requester cannot
// approve its own request, and the approval makes the grant live.
func TestRequestsAndReviewsCLI(t *testing.T) {
	dir := shortTempDir(t)
	sh := newShell(t, dir)
	listen := freePort(t)
	conf := fmt.Sprintf("listen_address: %s\nops_address: \"\"\n", listen)
	if err := os.WriteFile(filepath.Join(dir, "writ.yaml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	admin := filepath.Join(dir, "data", "admin.sock")
	sh.start("writ server --data-dir data --config writ.yaml", admin)
	sh.run("export WRIT_SOCKET=" + admin)

	const (
		stage = "spiffe://example.org/agent/stage-bot"
		opsA  = "spiffe://example.org/agent/ops/a"
		opsB  = "spiffe://example.org/agent/ops/b"
		sec   = "spiffe://example.org/agent/sec-bot"
		owner = "spiffe://example.org/person/example.com/ceo"
	)
	// Each identity in its own directory, as 'writ login' or an agent
	// would leave it.
	for name, id := range map[string]string{"stage": stage, "ops-a": opsA, "ops-b": opsB, "sec": sec} {
		sh.run("writ svid mint --spiffe-id " + id + " --out " + name)
	}
	rules := `rules:
  - name: staging-read-by-agents
    match: {actions: [read], resources: [db/staging/**], requester_kind: [agent]}
    auto_approve: {}
    max_ttl: 1h
  - name: prod-write
    match: {actions: [write], resources: [db/prod/**]}
    require:
      - {name: operators, from: ["spiffe://example.org/agent/ops/*"], count: 2}
      - {name: security, from: ["` + sec + `"], count: 1}
    max_ttl: 4h
`
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("rules:\n  - name: x\n    match: {actions: [read]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if msg := sh.fails("writ review rules apply bad.yaml"); !strings.Contains(msg, "nothing changed") {
		t.Errorf("a bad rules file: %s", msg)
	}
	if out := sh.run("writ review rules apply rules.yaml --dry-run"); !strings.Contains(out, "nothing was applied") || !strings.Contains(out, "add prod-write") {
		t.Errorf("dry run: %s", out)
	}
	if out := sh.run("writ review rules apply rules.yaml"); !strings.Contains(out, "applied rules.yaml: 2 rules") {
		t.Errorf("apply: %s", out)
	}
	if out := sh.run("writ review rules show"); !strings.Contains(out, "name: prod-write") {
		t.Errorf("rules show: %s", out)
	}

	out := sh.run("writ task create --title reconcile --reason 'failed batch' --owner " + owner + " --deadline 2h --member " + owner)
	m := taskIDWord.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("task create printed no task ID: %s", out)
	}
	taskID := m[1]
	sh.run("writ task grant --id " + taskID + " --action read --resource hr/salaries --to " + owner)
	sh.run("writ task open --id " + taskID)

	as := func(who string) string { return "WRIT_IDENTITY_DIR=" + who + " writ " }
	remote := " --server " + listen + " --identity login"

	out = sh.run(as("stage") + "request join " + taskID + " --grant read:db/staging/orders --reason 'nightly reconciliation'" + remote)
	if !strings.Contains(out, "approved") || !strings.Contains(out, "staging-read-by-agents") || !strings.Contains(out, "joined task "+taskID) {
		t.Errorf("the staging read: %s", out)
	}
	if out := sh.run("writ check --chain " + stage + " --action read --resource db/staging/orders"); !strings.HasPrefix(out, "ALLOW") {
		t.Errorf("the approved staging read is not live: %s", out)
	}

	out = sh.run(as("stage") + "request join " + taskID + " --grant write:db/prod/payments --reason 'fix the failed batch'" + remote)
	m = requestIDWord.FindStringSubmatch(out)
	if m == nil || !strings.Contains(out, "pending") {
		t.Fatalf("the prod write: %s", out)
	}
	id := m[1]
	if msg := sh.fails(as("stage") + "review approve " + id + remote); !strings.Contains(msg, "made the request") {
		t.Errorf("approving one's own request: %s", msg)
	}
	if msg := sh.fails("writ request join " + taskID + " --grant write:db/prod/x --reason r"); !strings.Contains(msg, "dry run") {
		t.Errorf("a request on the admin socket: %s", msg)
	}
	if out := sh.run("writ request join " + taskID + " --grant write:db/prod/x --reason r --dry-run --as " + stage); !strings.Contains(out, "nothing was stored") || !strings.Contains(out, "prod-write") {
		t.Errorf("a dry run on the admin socket: %s", out)
	}
	sh.run(as("ops-a") + "review approve " + id + " --reason 'batch must run today'" + remote)
	out = sh.run(as("ops-b") + "request show " + id + remote)
	if !strings.Contains(out, "pending") || !strings.Contains(out, "security needs 1 more") || !strings.Contains(out, opsA) {
		t.Errorf("show after one approval: %s", out)
	}
	if out := sh.run("writ check --chain " + stage + " --action write --resource db/prod/payments || true"); !strings.HasPrefix(out, "DENY") {
		t.Errorf("one approval made the grant live: %s", out)
	}
	sh.run(as("ops-b") + "review approve " + id + remote)
	out = sh.run(as("sec") + "review approve " + id + " --reason ok" + remote)
	if !strings.Contains(out, "approved") || !strings.Contains(out, "write:db/prod/payments") {
		t.Errorf("the last approval: %s", out)
	}
	if out := sh.run("writ check --chain " + stage + " --action write --resource db/prod/payments"); !strings.HasPrefix(out, "ALLOW") {
		t.Errorf("the approved prod write is not live: %s", out)
	}

	// A denial ends a request; only the requester cancels.
	out = sh.run(as("stage") + "request join " + taskID + " --grant write:db/prod/ledger --reason 'patch the ledger'" + remote)
	denyID := requestIDWord.FindStringSubmatch(out)[1]
	if msg := sh.fails(as("sec") + "review deny " + denyID + remote); !strings.Contains(msg, "--reason") {
		t.Errorf("deny without a reason: %s", msg)
	}
	if out := sh.run(as("sec") + "review deny " + denyID + " --reason 'not during the freeze'" + remote); !strings.Contains(out, "denied") {
		t.Errorf("deny: %s", out)
	}
	out = sh.run(as("stage") + "request join " + taskID + " --grant write:db/prod/refunds --reason later" + remote)
	cancelID := requestIDWord.FindStringSubmatch(out)[1]
	if msg := sh.fails(as("ops-a") + "request cancel " + cancelID + remote); !strings.Contains(msg, "requester") {
		t.Errorf("cancel by someone else: %s", msg)
	}
	sh.run(as("stage") + "request cancel " + cancelID + remote)
	out = sh.run("writ request list")
	for _, want := range []string{id + "  approved", denyID + "  denied", cancelID + "  cancelled"} {
		if !strings.Contains(out, want) {
			t.Errorf("request list lacks %q:\n%s", want, out)
		}
	}
}
