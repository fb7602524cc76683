package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	writv1 "writ.dev/writ/api/writ/v1"
)

// TestInventoryCommand reads the inventory with the CLI against a real
// server: the table names a minted identity and the members of an open
// task, the open task and its unused grant; --json is one object.
func TestInventoryCommand(t *testing.T) {
	dir := shortTempDir(t)
	data := filepath.Join(dir, "data")
	socket := filepath.Join(data, "admin.sock")
	cfg := filepath.Join(dir, "writ.yaml")
	if err := os.WriteFile(cfg, []byte("listen_address: \"\"\nops_address: \"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	startCommand(t, socket, "server", "--data-dir", data, "--trust-domain", "inv.test", "--config", cfg)
	const (
		alice = "spiffe://inv.test/person/example.com/alice"
		build = "spiffe://inv.test/ci/build"
	)
	writ(t, "svid", "mint", "--socket", socket, "--jwt", "--spiffe-id", build, "--audience", "a")
	out := writ(t, "task", "create", "--title", "rotate the db password", "--reason", "INC-3", "--owner", alice,
		"--deadline", "8h", "--member", alice, "--json", "--socket", socket)
	var created struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.ID == "" {
		t.Fatalf("task create --json: %v: %s", err, out)
	}
	writ(t, "task", "grant", "--id", created.ID, "--action", "write", "--resource", "db/prod/**", "--to", alice, "--socket", socket)
	writ(t, "task", "open", "--id", created.ID, "--socket", socket)

	out = writ(t, "inventory", "--socket", socket)
	for _, want := range []string{
		"IDENTITY", "KIND", "LAST SEEN", "TASKS", "STANDING", "FLAGS",
		build, "workload",
		alice, "person", "never", created.ID, "unseen-30d",
		"open tasks:", "DEADLINE", "rotate the db password",
		"pending requests:\nnone",
		"flags:", "- task " + created.ID + " grant 0 was never used",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("inventory lacks %q:\n%s", want, out)
		}
	}

	out = writ(t, "inventory", "--unseen-days", "7", "--json", "--socket", socket)
	var inv struct {
		Identities []struct {
			SpiffeID string   `json:"spiffe_id"`
			Sources  []string `json:"sources"`
			Flags    []string `json:"flags"`
		} `json:"identities"`
		OpenTasks []struct {
			ID string `json:"id"`
		} `json:"open_tasks"`
		Flags []string `json:"flags"`
	}
	if err := json.Unmarshal([]byte(out), &inv); err != nil {
		t.Fatalf("inventory --json does not parse: %v: %s", err, out)
	}
	if strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Errorf("inventory --json is more than one line: %s", out)
	}
	if len(inv.Identities) != 2 || inv.Identities[0].SpiffeID != build || inv.Identities[1].SpiffeID != alice ||
		strings.Join(inv.Identities[1].Flags, " ") != "unseen-7d" || len(inv.OpenTasks) != 1 || len(inv.Flags) != 1 {
		t.Errorf("inventory --json = %s", out)
	}

	msg := runFails(t, "inventory", "--unseen-days", "0", "--socket", socket)
	if !strings.Contains(msg, "--unseen-days 0 is out of range") {
		t.Errorf("--unseen-days 0: %s", msg)
	}
}

// TestInventoryPendingRequestsTable: pending requests are listed with who
// asked, for what, and whether they have gone stale.
func TestInventoryPendingRequestsTable(t *testing.T) {
	var b bytes.Buffer
	inv := &writv1.Inventory{PendingRequests: []*writv1.PendingRequest{
		{Request: &writv1.AccessRequest{Id: "R-OLD", Chain: []string{"spiffe://inv.test/agent/a"}, Task: "T-1",
			Asks: []string{"write:db/prod/x"}, CreatedAt: 1_700_000_000, PendingUntil: 1_700_007_200}, Stale: true},
		{Request: &writv1.AccessRequest{Id: "R-NEW", Chain: []string{"spiffe://inv.test/agent/b"}, Task: "T-1",
			CreatedAt: 1_700_003_600, PendingUntil: 1_700_010_800}},
	}}
	if err := writeInventory(&b, inv); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(b.String(), "\n")
	var old, young string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "R-OLD"):
			old = l
		case strings.HasPrefix(l, "R-NEW"):
			young = l
		}
	}
	if !strings.Contains(old, "spiffe://inv.test/agent/a") || !strings.Contains(old, "write:db/prod/x") || !strings.HasSuffix(strings.TrimSpace(old), "stale") {
		t.Errorf("the stale request's line: %q\n%s", old, b.String())
	}
	if !strings.HasSuffix(strings.TrimSpace(young), "-") || strings.Contains(young, "stale") {
		t.Errorf("the fresh request's line: %q", young)
	}
}
