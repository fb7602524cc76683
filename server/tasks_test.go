package server

import (
	"context"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
	"writ.dev/writ/authz"
	"writ.dev/writ/store"
	"writ.dev/writ/task"
)

const (
	alice    = "spiffe://" + testTD + "/person/example.com/alice"
	ciRunner = "spiffe://" + testTD + "/ci/*"
)

// draftTask is a task ready to create: one member, no grants yet.
func draftTask() *writv1.Task {
	return &writv1.Task{
		Title:    "deploy 4.2 to prod",
		Reason:   "release 4.2 fixes the payment retry bug",
		Ticket:   "CHG-7",
		Owner:    alice,
		Members:  []string{alice},
		Deadline: time.Now().Add(time.Hour).Unix(),
	}
}

func deployGrant(to ...string) *writv1.Grant {
	return &writv1.Grant{Actions: []string{"deploy"}, Resources: []string{"k8s/prod/**"}, To: to}
}

// taskEvents returns the types of the task and standing grant events in the
// audit log, in order.
func taskEvents(t *testing.T, ac writv1.AuditServiceClient) []string {
	t.Helper()
	var out []string
	for _, typ := range typesOf(readEvents(t, ac)) {
		if strings.HasPrefix(typ, "task.") || strings.HasPrefix(typ, "grant.") {
			out = append(out, typ)
		}
	}
	return out
}

func TestTaskLifecycle(t *testing.T) {
	srv := startServer(t, testConfig(t))
	cc := adminConn(t, srv)
	tc := writv1.NewTaskServiceClient(cc)
	ctx := context.Background()

	created, err := tc.CreateTask(ctx, &writv1.CreateTaskRequest{Task: draftTask()})
	if err != nil {
		t.Fatalf("CreateTask: %v", err)
	}
	if !strings.HasPrefix(created.Id, "T-") || created.State != "draft" || created.Revision == 0 || created.CreatedAt == 0 || created.Owner != alice {
		t.Fatalf("created = %v", created)
	}
	// Opening needs a grant: a draft may lack one, an open task may not.
	_, err = tc.OpenTask(ctx, &writv1.TaskTransitionRequest{Id: created.Id})
	wantCode(t, err, codes.FailedPrecondition, "grants")

	added, err := tc.AddMembers(ctx, &writv1.AddMembersRequest{Id: created.Id, Members: []string{ciRunner}, Revision: created.Revision})
	if err != nil {
		t.Fatalf("AddMembers: %v", err)
	}
	if !slices.Equal(added.Members, []string{alice, ciRunner}) || added.Revision <= created.Revision {
		t.Fatalf("after AddMembers: %v", added)
	}
	granted, err := tc.AddGrant(ctx, &writv1.AddGrantRequest{Id: created.Id, Grant: deployGrant(ciRunner)})
	if err != nil {
		t.Fatalf("AddGrant: %v", err)
	}
	if len(granted.Grants) != 1 || granted.Grants[0].To[0] != ciRunner || granted.Revision <= added.Revision {
		t.Fatalf("after AddGrant: %v", granted)
	}

	opened, err := tc.OpenTask(ctx, &writv1.TaskTransitionRequest{Id: created.Id, Revision: granted.Revision})
	if err != nil {
		t.Fatalf("OpenTask: %v", err)
	}
	if opened.State != "open" || opened.OpenedAt == 0 || opened.Revision <= granted.Revision {
		t.Fatalf("opened = %v", opened)
	}
	// Adding to an open task is allowed and takes effect at once.
	live, err := tc.AddGrant(ctx, &writv1.AddGrantRequest{Id: created.Id, Grant: &writv1.Grant{Actions: []string{"read"}, Resources: []string{"db/prod/payments"}, To: []string{alice}}})
	if err != nil || live.State != "open" || len(live.Grants) != 2 {
		t.Fatalf("AddGrant to an open task = %v, %v", live, err)
	}
	list, err := tc.ListTasks(ctx, &writv1.ListTasksRequest{States: []string{"open"}})
	if err != nil || len(list.Tasks) != 1 || list.Tasks[0].Id != created.Id {
		t.Fatalf("ListTasks(open) = %v, %v", list.GetTasks(), err)
	}

	closed, err := tc.CloseTask(ctx, &writv1.TaskTransitionRequest{Id: created.Id})
	if err != nil {
		t.Fatalf("CloseTask: %v", err)
	}
	if closed.State != "closed" || closed.ClosedAt == 0 {
		t.Fatalf("closed = %v", closed)
	}
	got, err := tc.GetTask(ctx, &writv1.GetTaskRequest{Id: created.Id})
	if err != nil || got.State != "closed" || got.Revision != closed.Revision || got.Ticket != "CHG-7" {
		t.Fatalf("GetTask = %v, %v", got, err)
	}
	// An ended task takes no more changes and cannot be reopened.
	_, err = tc.AddMembers(ctx, &writv1.AddMembersRequest{Id: created.Id, Members: []string{"spiffe://" + testTD + "/agent/bot"}})
	wantCode(t, err, codes.FailedPrecondition, "closed")
	_, err = tc.OpenTask(ctx, &writv1.TaskTransitionRequest{Id: created.Id})
	wantCode(t, err, codes.FailedPrecondition, "closed")
	_, err = tc.GetTask(ctx, &writv1.GetTaskRequest{Id: "T-none"})
	wantCode(t, err, codes.NotFound, "T-none")

	want := []string{audit.EventTaskCreate, audit.EventTaskMemberAdd, audit.EventTaskGrantAdd, audit.EventTaskOpen, audit.EventTaskGrantAdd, audit.EventTaskClose}
	if got := taskEvents(t, writv1.NewAuditServiceClient(cc)); !slices.Equal(got, want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
}

func TestTaskRefusals(t *testing.T) {
	srv := startServer(t, testConfig(t))
	cc := adminConn(t, srv)
	tc := writv1.NewTaskServiceClient(cc)
	ctx := context.Background()
	with := func(change func(*writv1.Task)) *writv1.Task {
		pt := draftTask()
		change(pt)
		return pt
	}
	cases := []struct {
		name      string
		task      *writv1.Task
		field     string
		rationale string
	}{
		{"missing deadline", with(func(pt *writv1.Task) { pt.Deadline = 0 }), "task.deadline", "every task ends"},
		{"deadline in the past", with(func(pt *writv1.Task) { pt.Deadline = time.Now().Add(-time.Minute).Unix() }), "task.deadline", "in the past"},
		{"deadline too far", with(func(pt *writv1.Task) { pt.Deadline = time.Now().Add(31 * 24 * time.Hour).Unix() }), "task.deadline", "30 days"},
		{"no owner", with(func(pt *writv1.Task) { pt.Owner = "" }), "task.owner", "local administrator"},
		{"grant to a non-member", with(func(pt *writv1.Task) { pt.Grants = []*writv1.Grant{deployGrant(ciRunner)} }), "task.grants[0].to[0]", "not a member"},
		{"bad member pattern", with(func(pt *writv1.Task) { pt.Members = []string{"spiffe://" + testTD + "/ci*"} }), "task.members[0]", "mixes '*'"},
		{"member outside the trust domain", with(func(pt *writv1.Task) { pt.Members = []string{"spiffe://other.test/ci"} }), "task.members[0]", "trust domain"},
		{"bad resource", with(func(pt *writv1.Task) {
			pt.Grants = []*writv1.Grant{{Actions: []string{"read"}, Resources: []string{"/db/prod"}, To: []string{alice}}}
		}), "task.grants[0].resources[0]", "starts with '/'"},
		{"state set", with(func(pt *writv1.Task) { pt.State = "open" }), "task.state", "draft"},
		{"person member not lowercase", with(func(pt *writv1.Task) {
			pt.Members = append(pt.Members, "spiffe://"+testTD+"/person/example.com/ERIN")
		}), "task.members[1]", "person IDs are lowercase"},
		{"person owner not lowercase", with(func(pt *writv1.Task) { pt.Owner = "spiffe://" + testTD + "/person/example.com/Alice" }), "task.owner", "person IDs are lowercase"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := tc.CreateTask(ctx, &writv1.CreateTaskRequest{Task: c.task})
			wantCode(t, err, codes.InvalidArgument, c.field+": ")
			wantCode(t, err, codes.InvalidArgument, c.rationale)
		})
	}
	if list, err := tc.ListTasks(ctx, &writv1.ListTasksRequest{}); err != nil || len(list.Tasks) != 0 {
		t.Fatalf("refused creates stored tasks: %v, %v", list.GetTasks(), err)
	}

	created, err := tc.CreateTask(ctx, &writv1.CreateTaskRequest{Task: draftTask()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = tc.AddGrant(ctx, &writv1.AddGrantRequest{Id: created.Id, Grant: deployGrant(ciRunner)})
	wantCode(t, err, codes.InvalidArgument, "grant.to[0]: ")
	_, err = tc.AddGrant(ctx, &writv1.AddGrantRequest{Id: created.Id, Grant: &writv1.Grant{Actions: []string{"read"}, Resources: []string{"db/*x"}, To: []string{alice}}})
	wantCode(t, err, codes.InvalidArgument, "grant.resources[0]: ")
	_, err = tc.AddMembers(ctx, &writv1.AddMembersRequest{Id: created.Id, Members: []string{ciRunner, "spiffe://" + testTD + "/a//b"}})
	wantCode(t, err, codes.InvalidArgument, "members[1]: ")
	_, err = tc.AddMembers(ctx, &writv1.AddMembersRequest{Id: created.Id, Members: []string{alice}})
	wantCode(t, err, codes.InvalidArgument, "members[0]: ")
	_, err = tc.ListTasks(ctx, &writv1.ListTasksRequest{States: []string{"done"}})
	wantCode(t, err, codes.InvalidArgument, "states[0]")
	if got, err := tc.GetTask(ctx, &writv1.GetTaskRequest{Id: created.Id}); err != nil || got.Revision != created.Revision {
		t.Fatalf("refused changes wrote the task: %v, %v", got, err)
	}

	// A stale revision is refused for the caller to look again.
	if _, err := tc.AddMembers(ctx, &writv1.AddMembersRequest{Id: created.Id, Members: []string{ciRunner}, Revision: created.Revision}); err != nil {
		t.Fatal(err)
	}
	_, err = tc.AddGrant(ctx, &writv1.AddGrantRequest{Id: created.Id, Grant: deployGrant(ciRunner), Revision: created.Revision})
	wantCode(t, err, codes.Aborted, "read it again and retry")
	_, err = tc.OpenTask(ctx, &writv1.TaskTransitionRequest{Id: created.Id, Revision: created.Revision})
	wantCode(t, err, codes.Aborted, "read it again and retry")
}

func TestTaskStandingGrants(t *testing.T) {
	srv := startServer(t, testConfig(t))
	cc := adminConn(t, srv)
	tc := writv1.NewTaskServiceClient(cc)
	ctx := context.Background()

	put, err := tc.PutStandingGrant(ctx, &writv1.StandingGrant{Subject: "spiffe://" + testTD + "/svc/billing/*", Actions: []string{"read"}, Resources: []string{"db/prod/payments"}})
	if err != nil {
		t.Fatalf("PutStandingGrant: %v", err)
	}
	if put.Id == "" || put.Subject != "spiffe://"+testTD+"/svc/billing/*" {
		t.Fatalf("put = %v", put)
	}
	for _, c := range []struct{ subject, field, why string }{
		{alice, "subject", "standing grants are only for workloads"},
		{"spiffe://" + testTD + "/*/x", "subject", "standing grants are only for workloads"},
		{"spiffe://" + testTD + "/svc/**/x", "subject", "only as the last segment"},
	} {
		_, err := tc.PutStandingGrant(ctx, &writv1.StandingGrant{Subject: c.subject, Actions: []string{"read"}, Resources: []string{"db/x"}})
		wantCode(t, err, codes.InvalidArgument, c.field+": ")
		wantCode(t, err, codes.InvalidArgument, c.why)
	}
	_, err = tc.PutStandingGrant(ctx, &writv1.StandingGrant{Subject: "spiffe://" + testTD + "/svc/x", Actions: []string{"read"}, Resources: []string{"db//x"}})
	wantCode(t, err, codes.InvalidArgument, "resources[0]: ")

	list, err := tc.ListStandingGrants(ctx, &writv1.ListStandingGrantsRequest{})
	if err != nil || len(list.Grants) != 1 || list.Grants[0].Id != put.Id {
		t.Fatalf("ListStandingGrants = %v, %v", list.GetGrants(), err)
	}
	deleted, err := tc.DeleteStandingGrant(ctx, &writv1.DeleteStandingGrantRequest{Id: put.Id})
	if err != nil || deleted.Subject != put.Subject {
		t.Fatalf("DeleteStandingGrant = %v, %v", deleted, err)
	}
	_, err = tc.DeleteStandingGrant(ctx, &writv1.DeleteStandingGrantRequest{Id: put.Id})
	wantCode(t, err, codes.NotFound, put.Id)
	if list, err := tc.ListStandingGrants(ctx, &writv1.ListStandingGrantsRequest{}); err != nil || len(list.Grants) != 0 {
		t.Fatalf("after delete: %v, %v", list.GetGrants(), err)
	}
	want := []string{audit.EventStandingGrantPut, audit.EventStandingGrantDelete}
	if got := taskEvents(t, writv1.NewAuditServiceClient(cc)); !slices.Equal(got, want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
}

// TestTaskExpiry moves the server's clock past an open task's deadline:
// the task reads as expired and can be neither opened nor closed.
func TestTaskExpiry(t *testing.T) {
	var skip atomic.Int64
	cfg := testConfig(t)
	ctx := context.Background()
	srv, err := New(ctx, cfg, Options{Logger: quietLogger(), Version: "test", Now: func() time.Time {
		return time.Now().Add(time.Duration(skip.Load()))
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	tc := writv1.NewTaskServiceClient(adminConn(t, srv))

	pt := draftTask()
	pt.Grants = []*writv1.Grant{deployGrant(alice)}
	created, err := tc.CreateTask(ctx, &writv1.CreateTaskRequest{Task: pt})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tc.OpenTask(ctx, &writv1.TaskTransitionRequest{Id: created.Id}); err != nil {
		t.Fatal(err)
	}
	skip.Store(int64(2 * time.Hour))

	got, err := tc.GetTask(ctx, &writv1.GetTaskRequest{Id: created.Id})
	if err != nil || got.State != "expired" || got.ClosedAt != created.Deadline {
		t.Fatalf("GetTask after the deadline = %v, %v", got, err)
	}
	list, err := tc.ListTasks(ctx, &writv1.ListTasksRequest{States: []string{"expired"}})
	if err != nil || len(list.Tasks) != 1 {
		t.Fatalf("ListTasks(expired) = %v, %v", list.GetTasks(), err)
	}
	if list, err := tc.ListTasks(ctx, &writv1.ListTasksRequest{States: []string{"open"}}); err != nil || len(list.Tasks) != 0 {
		t.Fatalf("ListTasks(open) lists an expired task: %v, %v", list.GetTasks(), err)
	}
	_, err = tc.OpenTask(ctx, &writv1.TaskTransitionRequest{Id: created.Id})
	wantCode(t, err, codes.FailedPrecondition, "expired")
	_, err = tc.CloseTask(ctx, &writv1.TaskTransitionRequest{Id: created.Id})
	wantCode(t, err, codes.FailedPrecondition, "expired")
	_, err = tc.AddMembers(ctx, &writv1.AddMembersRequest{Id: created.Id, Members: []string{ciRunner}})
	wantCode(t, err, codes.FailedPrecondition, "expired")
}

// TestTaskConcurrentUpdates adds members from taskUpdateAttempts writers at
// once, naming no revision: each loses a race only to another's commit, so
// every one of them gets through on a retry and no member is lost.
func TestTaskConcurrentUpdates(t *testing.T) {
	srv := startServer(t, testConfig(t))
	tc := writv1.NewTaskServiceClient(adminConn(t, srv))
	ctx := context.Background()
	created, err := tc.CreateTask(ctx, &writv1.CreateTaskRequest{Task: draftTask()})
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, taskUpdateAttempts)
	for i := range taskUpdateAttempts {
		go func() {
			_, err := tc.AddMembers(ctx, &writv1.AddMembersRequest{Id: created.Id, Members: []string{"spiffe://" + testTD + "/ci/runner-" + strconv.Itoa(i)}})
			errs <- err
		}()
	}
	for range taskUpdateAttempts {
		if err := <-errs; err != nil {
			t.Errorf("AddMembers: %v", err)
		}
	}
	got, err := tc.GetTask(ctx, &writv1.GetTaskRequest{Id: created.Id})
	if err != nil || len(got.Members) != 1+taskUpdateAttempts {
		t.Fatalf("members after concurrent adds = %v, %v", got.GetMembers(), err)
	}
}

// TestDecisionIndexKeepsOnlyRecentlyEndedTasks: the index holds the tasks
// still to end and those ended within endedTaskMemory (to name them in
// denials), and reads no task that ended before, whether it was closed or
// left open past its deadline.
func TestDecisionIndexKeepsOnlyRecentlyEndedTasks(t *testing.T) {
	var skip atomic.Int64
	ctx := context.Background()
	srv, err := New(ctx, testConfig(t), Options{Logger: quietLogger(), Version: "test", Now: func() time.Time {
		return time.Now().Add(time.Duration(skip.Load()))
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	tc := writv1.NewTaskServiceClient(adminConn(t, srv))
	open := func() string {
		pt := draftTask()
		pt.Grants = []*writv1.Grant{deployGrant(alice)}
		created, err := tc.CreateTask(ctx, &writv1.CreateTaskRequest{Task: pt})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tc.OpenTask(ctx, &writv1.TaskTransitionRequest{Id: created.Id}); err != nil {
			t.Fatal(err)
		}
		return created.Id
	}
	leftOpen, closed := open(), open()
	if _, err := tc.CloseTask(ctx, &writv1.TaskTransitionRequest{Id: closed}); err != nil {
		t.Fatal(err)
	}
	indexed := func() []string {
		t.Helper()
		snap := lockedSnapshot(t, srv)
		var ids []string
		for _, tk := range snap.Tasks {
			ids = append(ids, tk.ID)
		}
		slices.Sort(ids)
		return ids
	}
	both := []string{leftOpen, closed}
	slices.Sort(both)
	if got := indexed(); !slices.Equal(got, both) {
		t.Fatalf("indexed %v, want %v", got, both)
	}
	// Past the deadline, both have ended but within the memory.
	skip.Store(int64(2 * time.Hour))
	if got := indexed(); !slices.Equal(got, both) {
		t.Fatalf("2h later: indexed %v, want %v", got, both)
	}
	// The closed task left the memory; the other ended at its deadline.
	skip.Store(int64(24*time.Hour + 30*time.Minute))
	if got := indexed(); !slices.Equal(got, []string{leftOpen}) {
		t.Fatalf("24h30m later: indexed %v, want [%s]", got, leftOpen)
	}
	skip.Store(int64(26 * time.Hour))
	if got := indexed(); len(got) != 0 {
		t.Fatalf("26h later, both ended over a day ago: indexed %v", got)
	}
}

// lockedSnapshot takes a decision snapshot as refresh does, under its lock
// (the background refresher may be taking one).
func lockedSnapshot(t testing.TB, srv *Server) authz.Snapshot {
	t.Helper()
	srv.decisions.refreshMu.Lock()
	defer srv.decisions.refreshMu.Unlock()
	snap, err := srv.decisions.snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// TestDecisionSnapshotDecodesOnlyChangedTasks: a rebuild reuses the tasks
// it decoded before when their stored documents are unchanged, and decodes
// again those that changed, so the index sees every change.
func TestDecisionSnapshotDecodesOnlyChangedTasks(t *testing.T) {
	srv := startServer(t, testConfig(t))
	tc := writv1.NewTaskServiceClient(adminConn(t, srv))
	ctx := context.Background()
	var ids []string
	for range 2 {
		pt := draftTask()
		pt.Grants = []*writv1.Grant{deployGrant(alice)}
		created, err := tc.CreateTask(ctx, &writv1.CreateTaskRequest{Task: pt})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tc.OpenTask(ctx, &writv1.TaskTransitionRequest{Id: created.Id}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, created.Id)
	}
	byID := func(snap authz.Snapshot) map[string]task.Task {
		out := map[string]task.Task{}
		for _, tk := range snap.Tasks {
			out[tk.ID] = tk
		}
		return out
	}
	first := byID(lockedSnapshot(t, srv))
	if _, err := tc.CloseTask(ctx, &writv1.TaskTransitionRequest{Id: ids[1]}); err != nil {
		t.Fatal(err)
	}
	second := byID(lockedSnapshot(t, srv))
	kept, changed := ids[0], ids[1]
	if &first[kept].Grants[0] != &second[kept].Grants[0] {
		t.Errorf("task %s, unchanged, was decoded again", kept)
	}
	if second[changed].State != task.StateClosed || &first[changed].Grants[0] == &second[changed].Grants[0] {
		t.Errorf("task %s, closed, reads %s from the earlier decoding", changed, second[changed].State)
	}
	// What is reused is what decoding gives.
	for _, id := range ids {
		rec, err := srv.store.GetTask(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		fresh, err := taskFromRecord(rec)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(fresh, second[id]) {
			t.Errorf("task %s: snapshot %+v, decoded %+v", id, second[id], fresh)
		}
	}
}

// TestStoredGrantExpiry: a task document written before grants could
// expire (no expires_at) still decodes, and its grants last until the task
// ends; a grant's expiry survives the store, and a grant without one is
// written as before.
func TestStoredGrantExpiry(t *testing.T) {
	opened := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	old := `{"id":"T-old","title":"old","reason":"written before grant expiry","owner":"` + ceo + `","members":["` + ceo + `"],` +
		`"grants":[{"actions":["read"],"resources":["hr/salaries"],"to":["` + ceo + `"]}],` +
		`"deadline":"2026-03-01T17:00:00Z","state":"open","created_at":"2026-03-01T08:00:00Z","opened_at":"2026-03-01T09:00:00Z"}`
	tk, err := taskFromRecord(store.TaskRecord{ID: "T-old", Doc: []byte(old)})
	if err != nil {
		t.Fatal(err)
	}
	if len(tk.Grants) != 1 || !tk.Grants[0].ExpiresAt.IsZero() {
		t.Fatalf("grants of an old document = %+v", tk.Grants)
	}
	ix := authz.NewIndex(authz.Snapshot{Tasks: []task.Task{tk}}, opened)
	chain := []spiffeid.ID{spiffeid.RequireFromString(ceo)}
	if d := ix.Decide(authz.Request{Chain: chain, Action: "read", Resource: "hr/salaries", Time: opened.Add(8*time.Hour - time.Second)}, nil); !d.Allow {
		t.Fatalf("an old grant before the deadline: %+v", d)
	}
	if d := ix.Decide(authz.Request{Chain: chain, Action: "read", Resource: "hr/salaries", Time: opened.Add(8 * time.Hour)}, nil); d.Allow || !strings.Contains(d.Reason, "deadline") {
		t.Fatalf("an old grant at the deadline: %+v", d)
	}

	rec, err := taskRecord(&tk)
	if err != nil || strings.Contains(string(rec.Doc), "expires_at") {
		t.Fatalf("a grant without expiry is written as %s, %v", rec.Doc, err)
	}
	tk.Grants[0].ExpiresAt = opened.Add(time.Hour)
	if rec, err = taskRecord(&tk); err != nil {
		t.Fatal(err)
	}
	back, err := taskFromRecord(rec)
	if err != nil || !back.Grants[0].ExpiresAt.Equal(opened.Add(time.Hour)) {
		t.Fatalf("expiry after the store = %+v, %v", back.Grants, err)
	}
}

// TestGrantExpiryNotSetByCallers: expires_at is the server's to set (on the
// grants an approved join adds); a caller setting it is told so, and
// nothing changes.
func TestGrantExpiryNotSetByCallers(t *testing.T) {
	srv := startServer(t, testConfig(t))
	tasks := writv1.NewTaskServiceClient(adminConn(t, srv))
	_, err := tasks.CreateTask(t.Context(), &writv1.CreateTaskRequest{Task: &writv1.Task{Title: "t", Reason: "r", Owner: ceo, Members: []string{ceo},
		Grants:   []*writv1.Grant{{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}, ExpiresAt: time.Now().Add(time.Hour).Unix()}},
		Deadline: time.Now().Add(2 * time.Hour).Unix()}})
	wantCode(t, err, codes.InvalidArgument, "grants[0].expires_at")
	list, err := tasks.ListTasks(t.Context(), &writv1.ListTasksRequest{})
	if err != nil || len(list.GetTasks()) != 0 {
		t.Fatalf("tasks after a refused create = %v, %v", list, err)
	}
}

// TestDecisionIndexUpdatedAsBuilt: the index a server keeps up to date
// after task changes (updated, not rebuilt) decides as one built from
// scratch over the same snapshot, with the same reasons: the task named
// by a denial is the same.
func TestDecisionIndexUpdatedAsBuilt(t *testing.T) {
	srv := startServer(t, testConfig(t))
	tc := writv1.NewTaskServiceClient(adminConn(t, srv))
	ctx := context.Background()
	var ids []string
	for range 3 {
		pt := draftTask()
		pt.Grants = []*writv1.Grant{deployGrant(alice)}
		created, err := tc.CreateTask(ctx, &writv1.CreateTaskRequest{Task: pt})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tc.OpenTask(ctx, &writv1.TaskTransitionRequest{Id: created.Id}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, created.Id)
	}
	req := authz.Request{Chain: []spiffeid.ID{spiffeid.RequireFromString(alice)}, Action: "deploy", Resource: "k8s/prod/api"}
	compare := func(step string) {
		t.Helper()
		if err := srv.decisions.refresh(ctx, true); err != nil {
			t.Fatal(err)
		}
		got := srv.decisions.ix.Load().Decide(req, nil)
		want := authz.NewIndex(lockedSnapshot(t, srv), srv.now()).Decide(req, nil)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: the server's index decides %+v; built afresh %+v", step, got, want)
		}
	}
	compare("all open")
	for _, id := range ids {
		if _, err := tc.CloseTask(ctx, &writv1.TaskTransitionRequest{Id: id}); err != nil {
			t.Fatal(err)
		}
		compare("closed " + id)
	}
	if d := srv.decisions.ix.Load().Decide(req, nil); d.Allow || !strings.Contains(d.Reason, "is closed") {
		t.Fatalf("after closing every task: %+v; want a denial naming a closed task", d)
	}
}
