package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	writv1 "writ.dev/writ/api/writ/v1"
)

// TestTaskCommands runs a task through its life with the CLI against a real
// server: create, add a member, grant, open, show, list, close; then a
// standing grant. Bad input is refused naming the flag or field.
func TestTaskCommands(t *testing.T) {
	dir := shortTempDir(t)
	data := filepath.Join(dir, "data")
	socket := filepath.Join(data, "admin.sock")
	cfg := filepath.Join(dir, "writ.yaml")
	if err := os.WriteFile(cfg, []byte("listen_address: \"\"\nops_address: \"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	startCommand(t, socket, "server", "--data-dir", data, "--trust-domain", "task.test", "--config", cfg)
	const (
		alice = "spiffe://task.test/person/example.com/alice"
		ci    = "spiffe://task.test/ci/*"
	)
	// The socket goes last, after the subcommand words.
	task := func(args ...string) string {
		return writ(t, append(append([]string{"task"}, args...), "--socket", socket)...)
	}
	taskFails := func(args ...string) string {
		return runFails(t, append(append([]string{"task"}, args...), "--socket", socket)...)
	}

	out := task("create", "--title", "deploy 4.2", "--reason", "release 4.2", "--ticket", "CHG-7",
		"--owner", alice, "--deadline", "8h", "--member", alice, "--json")
	var created struct {
		ID       string `json:"id"`
		State    string `json:"state"`
		Members  []string
		Revision string // int64 is a JSON string in protojson
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.ID == "" || created.State != "draft" || len(created.Members) != 1 {
		t.Fatalf("task create --json: %v: %s", err, out)
	}
	id := created.ID

	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"create", "--title", "t", "--reason", "r", "--owner", alice, "--deadline", "1h", "--member", "spiffe://task.test/ci*"}, []string{"member:", "mixes '*'"}},
		{[]string{"create", "--title", "t", "--reason", "r", "--owner", alice}, []string{"missing --deadline"}},
		{[]string{"create", "--title", "t", "--reason", "r", "--owner", alice, "--deadline", "soon"}, []string{"deadline:", "RFC 3339"}},
		{[]string{"create", "--title", "t", "--reason", "r", "--owner", alice, "--deadline", "1000h"}, []string{"task.deadline", "30 days"}},
		{[]string{"create", "--title", "t", "--reason", "r", "--deadline", "1h"}, []string{"task.owner"}},
		{[]string{"grant", "--id", id, "--action", "deploy", "--resource", "k8s/prod/**", "--to", ci}, []string{"grant.to[0]", "not a member"}},
		{[]string{"grant", "--id", id, "--action", "deploy", "--resource", "/k8s", "--to", alice}, []string{"resource:", "starts with '/'"}},
		{[]string{"open", "--id", id}, []string{"cannot open task", "grants"}},
	} {
		msg := taskFails(tc.args...)
		for _, want := range tc.want {
			if !strings.Contains(msg, want) {
				t.Errorf("task %v: error lacks %q: %s", tc.args, want, msg)
			}
		}
	}

	if out := task("add", "--id", id, "--member", ci); !strings.Contains(out, "added members to task "+id) {
		t.Fatalf("task add: %s", out)
	}
	out = task("grant", "--id", id, "--action", "deploy", "--action", "read", "--resource", "k8s/prod/**", "--to", ci)
	if !strings.Contains(out, "added a grant to task "+id) {
		t.Fatalf("task grant: %s", out)
	}
	if out := task("open", "--id", id); !strings.Contains(out, "opened task "+id+": it is open") {
		t.Fatalf("task open: %s", out)
	}

	out = task("show", "--id", id)
	for _, want := range []string{"State:", "open", "CHG-7", ci, "ACTIONS", "RESOURCES", "TO", "deploy,read", "k8s/prod/**"} {
		if !strings.Contains(out, want) {
			t.Errorf("task show lacks %q:\n%s", want, out)
		}
	}
	var shown struct {
		State  string
		Grants []struct{ Actions, Resources, To []string }
	}
	if out := task("show", "--id", id, "--json"); json.Unmarshal([]byte(out), &shown) != nil || shown.State != "open" || len(shown.Grants) != 1 || shown.Grants[0].To[0] != ci {
		t.Fatalf("task show --json: %s", out)
	}
	out = task("list")
	for _, want := range []string{"ID", "STATE", "DEADLINE", "TITLE", id, "open", "deploy 4.2"} {
		if !strings.Contains(out, want) {
			t.Errorf("task list lacks %q:\n%s", want, out)
		}
	}
	if out := task("list", "--state", "closed"); !strings.Contains(out, "no tasks") {
		t.Fatalf("task list --state closed before closing: %s", out)
	}

	if out := task("close", "--id", id); !strings.Contains(out, "closed task "+id+": it is closed") {
		t.Fatalf("task close: %s", out)
	}
	if out := task("list", "--state", "closed", "--json"); strings.Count(out, "\n") != 1 || !strings.Contains(out, id) {
		t.Fatalf("task list --state closed --json: %s", out)
	}
	if msg := taskFails("open", "--id", id); !strings.Contains(msg, "closed") {
		t.Fatalf("reopening a closed task: %s", msg)
	}

	out = task("standing", "put", "--subject", "spiffe://task.test/svc/billing/*", "--action", "read", "--resource", "db/prod/payments", "--json")
	var grant struct{ ID string }
	if err := json.Unmarshal([]byte(out), &grant); err != nil || grant.ID == "" {
		t.Fatalf("task standing put --json: %v: %s", err, out)
	}
	if msg := taskFails("standing", "put", "--subject", alice, "--action", "read", "--resource", "db/x"); !strings.Contains(msg, "only for workloads") {
		t.Fatalf("standing grant to a person: %s", msg)
	}
	if out := task("standing", "list"); !strings.Contains(out, grant.ID) || !strings.Contains(out, "db/prod/payments") {
		t.Fatalf("task standing list: %s", out)
	}
	if out := task("standing", "delete", "--id", grant.ID); !strings.Contains(out, "deleted standing grant "+grant.ID) {
		t.Fatalf("task standing delete: %s", out)
	}
	if out := task("standing", "list"); !strings.Contains(out, "no standing grants") {
		t.Fatalf("task standing list after delete: %s", out)
	}
}

// TestWriteTaskShowsGrantExpiry: task show says when each grant ends: a
// joined grant at its own expiry, the others with the task.
func TestWriteTaskShowsGrantExpiry(t *testing.T) {
	var b strings.Builder
	err := writeTask(&b, &writv1.Task{Id: "T-1", State: "open", Grants: []*writv1.Grant{
		{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{"spiffe://task.test/person/a"}},
		{Actions: []string{"read"}, Resources: []string{"db/staging/orders"}, To: []string{"spiffe://task.test/agent/bot"}, ExpiresAt: 1772359200},
	}})
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"EXPIRES", "with the task", "2026-03-01T10:00:00Z"} {
		if !strings.Contains(out, want) {
			t.Errorf("task show lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "WATCHED") {
		t.Errorf("task show has a WATCHED column with no grant under dual control:\n%s", out)
	}
}

// TestWriteTaskShowsFirstUseAndWatched: a grant whose access time starts at
// first use says so until used, and grants under dual control are marked.
func TestWriteTaskShowsFirstUseAndWatched(t *testing.T) {
	var b strings.Builder
	err := writeTask(&b, &writv1.Task{Id: "T-1", State: "open", Grants: []*writv1.Grant{
		{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{"spiffe://task.test/person/a"}},
		{Actions: []string{"read"}, Resources: []string{"vault/keys"}, To: []string{"spiffe://task.test/agent/bot"}, ExpiresAt: 1772359200, AccessSeconds: 3600, Watched: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"WATCHED", "1h0m0s from first use; unused, lapses 2026-03-01T10:00:00Z", "yes", "no"} {
		if !strings.Contains(out, want) {
			t.Errorf("task show lacks %q:\n%s", want, out)
		}
	}
}
