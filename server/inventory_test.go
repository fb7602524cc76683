package server

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
	"writ.dev/writ/store"
)

// TestInventory builds a trust domain without agents through the API and
// reads its inventory: where each identity is known from, its kind, tasks
// and standing grants; an identity only a rule names is flagged unseen; a
// wildcard grant used on one resource is flagged wider than its use, and a
// grant nobody used is flagged unused.
func TestInventory(t *testing.T) {
	srv := startServer(t, testConfig(t))
	admin := adminConn(t, srv)
	ctx := t.Context()
	tasks := writv1.NewTaskServiceClient(admin)
	decide := writv1.NewDecisionServiceClient(admin)
	const (
		web   = "spiffe://" + testTD + "/svc/web"
		batch = "spiffe://" + testTD + "/svc/batch"
	)

	mintSVID(t, srv, web)
	signIn(t, srv, ceo)
	if _, err := writv1.NewEntryServiceClient(admin).CreateEntries(ctx, &writv1.CreateEntriesRequest{Entries: []*writv1.Entry{
		entry("/svc/batch", "/node/n1", "unix:uid:1000"),
	}}); err != nil {
		t.Fatal(err)
	}
	hr := openTask(t, tasks, "answer the CEO's question about payroll", []string{ceo, bot},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"hr/**"}, To: []string{ceo, bot}},
		&writv1.Grant{Actions: []string{"write"}, Resources: []string{"hr/reports"}, To: []string{ceo}})
	sg, err := tasks.PutStandingGrant(ctx, &writv1.StandingGrant{Subject: web, Actions: []string{"read"}, Resources: []string{"db/prod/orders"}})
	if err != nil {
		t.Fatal(err)
	}
	// A standing grant for a person is refused by the API; one stored
	// around it is what the flag is for.
	rogue := putRawStandingGrant(t, srv, "S-rogue", ceo)

	for range 2 {
		if r := check(t, decide, "read", "hr/salaries", bot, ceo); !r.GetAllow() {
			t.Fatalf("read hr/salaries for the CEO: %v", r)
		}
	}
	if r := check(t, decide, "read", "hr/salaries", bot, intern); r.GetAllow() {
		t.Fatalf("the intern was allowed: %v", r)
	}
	if r := check(t, decide, "write", "hr/salaries", bot, ceo); r.GetAllow() {
		t.Fatalf("write on hr/salaries was allowed: %v", r)
	}
	eventually(t, 5*time.Second, "decision events in the audit log", func() bool { return decisionEvents(t, srv) == 4 })

	api := writv1.NewInventoryServiceClient(admin)
	inv, err := api.GetInventory(ctx, &writv1.GetInventoryRequest{UnseenDays: 1})
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		kind, sources, tasks, standing, flags string
		seen                                  bool
	}
	wants := map[string]want{
		batch:  {kind: "workload", sources: "rule", flags: "unseen-1d"},
		web:    {kind: "workload", sources: "standing_grant audit", standing: sg.GetId(), seen: true},
		ceo:    {kind: "person", sources: "task standing_grant audit", tasks: hr.GetId(), standing: rogue, flags: "standing-grant-held-by-person", seen: true},
		intern: {kind: "person", sources: "audit", seen: true},
		bot:    {kind: "agent", sources: "task audit", tasks: hr.GetId(), seen: true},
	}
	var ids []string
	for _, got := range inv.GetIdentities() {
		ids = append(ids, got.GetSpiffeId())
		w, ok := wants[got.GetSpiffeId()]
		if !ok {
			continue
		}
		delete(wants, got.GetSpiffeId())
		if got.GetKind() != w.kind || strings.Join(got.GetSources(), " ") != w.sources || strings.Join(got.GetTasks(), " ") != w.tasks ||
			strings.Join(got.GetStandingGrants(), " ") != w.standing || strings.Join(got.GetFlags(), " ") != w.flags || (got.GetLastSeen() != 0) != w.seen {
			t.Errorf("%s = %v, want %+v", got.GetSpiffeId(), got, w)
		}
	}
	if len(wants) > 0 {
		t.Errorf("identities missing from the inventory: %v", wants)
	}
	if !slices.IsSorted(ids) {
		t.Errorf("identities are not sorted by SPIFFE ID: %v", ids)
	}
	if len(inv.GetOpenTasks()) != 1 || inv.GetOpenTasks()[0].GetId() != hr.GetId() || len(inv.GetOpenTasks()[0].GetGrants()) != 2 {
		t.Errorf("open tasks = %v", inv.GetOpenTasks())
	}
	wantFlags := []string{
		"task " + hr.GetId() + " grant 0 is wider than what was used: it allows resources [hr/**] but only hr/salaries were used",
		"task " + hr.GetId() + " grant 1 was never used: no allowed decision matched its actions [write], resources [hr/reports] and recipients",
	}
	if !slices.Equal(inv.GetFlags(), wantFlags) {
		t.Errorf("flags =\n%s\nwant\n%s", strings.Join(inv.GetFlags(), "\n"), strings.Join(wantFlags, "\n"))
	}

	_, err = api.GetInventory(ctx, &writv1.GetInventoryRequest{UnseenDays: -1})
	wantCode(t, err, codes.InvalidArgument, "unseen_days")
}

// decisionEvents counts the decision events in the audit log. Decisions
// are recorded in the background, so a test waits for them this way.
func decisionEvents(t *testing.T, srv *Server) int {
	t.Helper()
	recs, err := srv.store.ReadAudit(t.Context(), 0, maxAuditPage)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range recs {
		ev, err := audit.DecodeEvent(r.Event)
		if err != nil {
			t.Fatalf("audit event %d: %v", r.Index, err)
		}
		if ev.Type == audit.EventDecision {
			n++
		}
	}
	return n
}

// putRawStandingGrant stores a standing grant for subject straight into
// the store, past the validation that would refuse it, and returns its ID.
func putRawStandingGrant(t *testing.T, srv *Server, id, subject string) string {
	t.Helper()
	doc, err := json.Marshal(map[string]any{"id": id, "subject": subject, "actions": []string{"read"}, "resources": []string{"hr/salaries"}})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := srv.event(context.Background(), audit.EventStandingGrantPut, id, json.RawMessage(doc))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.store.PutStandingGrant(context.Background(), store.StandingGrantRecord{ID: id, Doc: doc}, ev); err != nil {
		t.Fatal(err)
	}
	return id
}
