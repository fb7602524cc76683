package authz

import (
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/identity"
	"writ.dev/writ/task"
)

var t0 = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

const (
	ceo      = "spiffe://td/person/example.com/ceo"
	intern   = "spiffe://td/person/example.com/intern"
	engineer = "spiffe://td/person/example.com/eng"
	bot      = "spiffe://td/agent/payroll-bot/1"
	runner   = "spiffe://td/ci/runner"
	web      = "spiffe://td/ns/web/sa/api"
)

func pat(t testing.TB, s string) task.Pattern {
	t.Helper()
	p, err := task.ParsePattern(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func res(t testing.TB, s string) task.ResourcePattern {
	t.Helper()
	r, err := task.ParseResourcePattern(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func grant(t testing.TB, actions, resources string, to ...string) task.Grant {
	g := task.Grant{Actions: strings.Split(actions, ",")}
	for _, r := range strings.Split(resources, ",") {
		g.Resources = append(g.Resources, res(t, r))
	}
	for _, p := range to {
		g.To = append(g.To, pat(t, p))
	}
	return g
}

// openTask returns a validated task, opened at t0, with the given members.
func openTask(t testing.TB, id string, members []string, grants ...task.Grant) task.Task {
	t.Helper()
	tk := task.Task{ID: id, Title: id, Reason: "test", Owner: spiffeid.RequireFromString(ceo),
		Grants: grants, Deadline: t0.Add(time.Hour), State: task.StateDraft}
	for _, m := range members {
		tk.Members = append(tk.Members, task.Member{Pattern: pat(t, m)})
	}
	if err := tk.Validate(spiffeid.RequireTrustDomainFromString("td")); err != nil {
		t.Fatalf("task %s: %v", id, err)
	}
	if err := tk.Open(t0); err != nil {
		t.Fatal(err)
	}
	return tk
}

// world is the payroll scenario: the payroll bot's instances work for the
// CEO in T-payroll; an engineer and the CI runner deploy in T-deploy, where
// only the engineer may deploy; the intern has an unrelated task; the web
// workload has a standing grant.
func world(t testing.TB) Snapshot {
	return Snapshot{
		Tasks: []task.Task{
			openTask(t, "T-payroll", []string{ceo, "spiffe://td/agent/payroll-bot/*"},
				grant(t, "read", "hr/salaries", ceo, "spiffe://td/agent/payroll-bot/*")),
			openTask(t, "T-deploy", []string{engineer, runner},
				grant(t, "deploy", "k8s/prod/ns/*", engineer),
				grant(t, "read", "git/**", engineer, runner)),
			openTask(t, "T-intern", []string{intern}, grant(t, "read", "wiki/**", intern)),
			openTask(t, "T-ceo-other", []string{ceo}, grant(t, "*", "hr/**", ceo)),
		},
		Standing: []task.StandingGrant{
			{ID: "S-web", Subject: pat(t, "spiffe://td/ns/web/sa/*"), Actions: []string{"read"}, Resources: []task.ResourcePattern{res(t, "db/prod/*")}},
			{ID: "S-runner", Subject: pat(t, "spiffe://td/ci/*"), Actions: []string{"deploy"}, Resources: []task.ResourcePattern{res(t, "k8s/prod/**")}},
		},
	}
}

func ids(ss ...string) []spiffeid.ID {
	out := make([]spiffeid.ID, len(ss))
	for i, s := range ss {
		out[i] = spiffeid.RequireFromString(s)
	}
	return out
}

type guard struct{ why string }

func (g guard) Forbid(Request) (bool, string) { return g.why != "", g.why }

func TestDecide(t *testing.T) {
	tests := []struct {
		name     string
		snap     func(*testing.T, *Snapshot)
		chain    []string
		action   string
		resource string
		guard    Guardrail
		opts     []Option
		deniedAt int    // -1 when allowed or denied as a whole
		allow    bool   // want allowed
		want     string // substring of the reason, or of the coverage when allowed
	}{
		{name: "agent reads salaries for the CEO in the payroll task", chain: []string{bot, ceo}, action: "read", resource: "hr/salaries",
			allow: true, deniedAt: -1, want: "T-payroll"},
		{name: "agent acting for the intern is denied, naming the intern", chain: []string{bot, intern}, action: "read", resource: "hr/salaries",
			deniedAt: 1, want: "person " + intern + " holds no grant for read on hr/salaries in any open task"},
		{name: "agent alone holds no write", chain: []string{bot, ceo}, action: "write", resource: "hr/salaries",
			deniedAt: 0, want: "agent " + bot + " holds no grant for write on hr/salaries"},
		{name: "CEO's grant in another task does not combine with the agent's", chain: []string{bot, ceo}, action: "read", resource: "hr/bonus",
			deniedAt: 0, want: "agent " + bot + " holds no grant for read on hr/bonus"},
		{name: "grants in different tasks do not combine", snap: func(t *testing.T, s *Snapshot) {
			s.Tasks = append(s.Tasks, openTask(t, "T-bot-only", []string{bot}, grant(t, "read", "hr/bonus", bot)))
		}, chain: []string{bot, ceo}, action: "read", resource: "hr/bonus",
			deniedAt: 1, want: "person " + ceo + " holds no grant for read on hr/bonus in task T-bot-only, which covers agent " + bot + "; every identity"},
		{name: "person alone uses own grant", chain: []string{ceo}, action: "write", resource: "hr/salaries",
			allow: true, deniedAt: -1, want: "T-ceo-other"},
		{name: "engineer deploys", chain: []string{engineer}, action: "deploy", resource: "k8s/prod/ns/web",
			allow: true, deniedAt: -1, want: "T-deploy"},
		{name: "CI runner cannot use the engineer's grant", chain: []string{runner, engineer}, action: "deploy", resource: "k8s/prod/ns/web",
			deniedAt: 0, want: "workload " + runner + " holds no grant for deploy on k8s/prod/ns/web in any open task; standing grant S-runner does not apply"},
		{name: "CI runner and engineer share a grant", chain: []string{runner, engineer}, action: "read", resource: "git/writ/main",
			allow: true, deniedAt: -1, want: "T-deploy"},
		{name: "workload with standing grant", chain: []string{web}, action: "read", resource: "db/prod/orders",
			allow: true, deniedAt: -1, want: "S-web"},
		{name: "workload chain covered link by link", chain: []string{runner, web}, action: "read", resource: "git/x",
			deniedAt: 1, want: "workload " + web + " holds no grant for read on git/x"},
		{name: "workload without grant", chain: []string{web}, action: "write", resource: "db/prod/orders",
			deniedAt: 0, want: "holds no grant for write on db/prod/orders in any open task"},
		{name: "standing grant never covers a person", snap: func(t *testing.T, s *Snapshot) {
			// Not validated: the index must still refuse it for a person.
			s.Standing = append(s.Standing, task.StandingGrant{ID: "S-bad", Subject: pat(t, "spiffe://td/**"), Actions: []string{"*"}, Resources: []task.ResourcePattern{res(t, "**")}})
		}, chain: []string{intern}, action: "read", resource: "hr/salaries", deniedAt: 0, want: "holds no grant"},
		{name: "closed task", snap: func(t *testing.T, s *Snapshot) {
			if err := s.Tasks[0].Close(t0.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
		}, chain: []string{bot, ceo}, action: "read", resource: "hr/salaries", deniedAt: 0, want: "task T-payroll is closed"},
		{name: "expired task", snap: func(t *testing.T, s *Snapshot) {
			if err := s.Tasks[0].Expire(s.Tasks[0].Deadline); err != nil {
				t.Fatal(err)
			}
		}, chain: []string{bot, ceo}, action: "read", resource: "hr/salaries", deniedAt: 0, want: "task T-payroll expired at"},
		{name: "deadline passes after the index is built", chain: []string{bot, ceo}, action: "read", resource: "hr/salaries", deniedAt: 0,
			want: "task T-payroll passed its deadline"},
		{name: "locked task", snap: func(t *testing.T, s *Snapshot) {
			s.Locks = append(s.Locks, Lock{Kind: identity.LockTask, Value: "T-payroll", ID: "L-7", Reason: "incident 42"})
		}, chain: []string{bot, ceo}, action: "read", resource: "hr/salaries", deniedAt: 0, want: "task T-payroll is locked by lock L-7: incident 42"},
		{name: "locked identity", snap: func(t *testing.T, s *Snapshot) {
			s.Locks = append(s.Locks, Lock{Kind: identity.LockSPIFFEID, Value: ceo, ID: "L-1", Reason: "laptop stolen"})
		}, chain: []string{bot, ceo}, action: "read", resource: "hr/salaries", deniedAt: 1, want: "person " + ceo + " is locked by lock L-1: laptop stolen"},
		{name: "id-prefix lock by whole segments", snap: func(t *testing.T, s *Snapshot) {
			s.Locks = append(s.Locks, Lock{Kind: identity.LockIDPrefix, Value: "spiffe://td/agent/payroll-bot", ID: "L-2", Reason: "prompt injection"})
		}, chain: []string{bot, ceo}, action: "read", resource: "hr/salaries", deniedAt: 0, want: "is locked by lock L-2: prompt injection"},
		{name: "id-prefix lock does not cover a sibling", snap: func(t *testing.T, s *Snapshot) {
			s.Locks = append(s.Locks, Lock{Kind: identity.LockIDPrefix, Value: "spiffe://td/agent/payroll", ID: "L-3", Reason: "x"})
		}, chain: []string{bot, ceo}, action: "read", resource: "hr/salaries", allow: true, deniedAt: -1, want: "T-payroll"},
		{name: "guardrail forbids", chain: []string{bot, ceo}, action: "read", resource: "hr/salaries", guard: guard{"no agents on payroll on Sundays"},
			deniedAt: -1, want: "guardrail: no agents on payroll on Sundays"},
		{name: "guardrail allows", chain: []string{bot, ceo}, action: "read", resource: "hr/salaries", guard: guard{},
			allow: true, deniedAt: -1, want: "T-payroll"},
		{name: "chain too long", chain: []string{bot, bot, bot, ceo}, action: "read", resource: "hr/salaries",
			deniedAt: 3, want: "the chain has 4 identities; at most 3"},
		{name: "chain limit configurable", chain: []string{bot, ceo}, action: "read", resource: "hr/salaries", opts: []Option{WithMaxChain(1)},
			deniedAt: 1, want: "at most 1"},
		{name: "empty chain", action: "read", resource: "hr/salaries", deniedAt: -1, want: "no chain"},
		{name: "wildcard action in a request", chain: []string{ceo}, action: "*", resource: "hr/salaries", deniedAt: -1, want: "action '*' is not allowed"},
		{name: "wildcard resource in a request", chain: []string{ceo}, action: "read", resource: "hr/*", deniedAt: -1, want: "wildcards belong in grants"},
		{name: "resource wildcard one segment", chain: []string{engineer}, action: "deploy", resource: "k8s/prod/ns/web/pod",
			deniedAt: 0, want: "holds no grant for deploy on k8s/prod/ns/web/pod"},
		{name: "resource ** needs a segment", chain: []string{engineer, runner}, action: "read", resource: "git",
			deniedAt: 0, want: "holds no grant for read on git"},
		{name: "** member matches deeper IDs", snap: func(t *testing.T, s *Snapshot) {
			s.Tasks = append(s.Tasks, openTask(t, "T-people", []string{"spiffe://td/person/example.com/**"},
				grant(t, "read", "wiki/**", "spiffe://td/person/example.com/**")))
		}, chain: []string{"spiffe://td/person/example.com/team/ann"}, action: "read", resource: "wiki/a/b", allow: true, deniedAt: -1, want: "T-people"},
		{name: "** member needs a segment", snap: func(t *testing.T, s *Snapshot) {
			s.Tasks = append(s.Tasks, openTask(t, "T-people", []string{"spiffe://td/person/example.com/**"},
				grant(t, "read", "wiki/**", "spiffe://td/person/example.com/**")))
		}, chain: []string{"spiffe://td/person/example.com"}, action: "read", resource: "wiki/a", deniedAt: 0, want: "holds no grant"},
		{name: "pattern by whole segments", chain: []string{"spiffe://td/agent/payroll-bot2/1", ceo}, action: "read", resource: "hr/salaries",
			deniedAt: 0, want: "agent spiffe://td/agent/payroll-bot2/1 holds no grant"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := world(t)
			if tt.snap != nil {
				tt.snap(t, &s)
			}
			at := t0.Add(30 * time.Minute)
			if strings.Contains(tt.name, "deadline passes") {
				at = t0.Add(2 * time.Hour)
			}
			ix := NewIndex(s, t0.Add(30*time.Minute), tt.opts...)
			d := ix.Decide(Request{Chain: ids(tt.chain...), Action: tt.action, Resource: tt.resource, Time: at}, tt.guard)
			checkDecision(t, d, tt.allow, tt.deniedAt, tt.want, len(tt.chain))
		})
	}
}

func checkDecision(t *testing.T, d Decision, allow bool, deniedAt int, want string, chainLen int) {
	t.Helper()
	if d.Allow != allow || d.DeniedAt != deniedAt {
		t.Fatalf("decision = %+v, want allow=%v denied_at=%d", d, allow, deniedAt)
	}
	if !allow {
		if !strings.Contains(d.Reason, want) || d.Covered != nil {
			t.Fatalf("reason = %q, want …%s…", d.Reason, want)
		}
		return
	}
	if d.Reason != "" || len(d.Covered) != chainLen {
		t.Fatalf("allowed decision = %+v", d)
	}
	for i, c := range d.Covered {
		if c.Index != i || (c.TaskID+c.StandingID) != want && !strings.Contains(c.TaskID+c.StandingID, want) {
			t.Fatalf("covered[%d] = %+v, want %s", i, c, want)
		}
	}
}

func TestDecideExplainsCoverage(t *testing.T) {
	ix := NewIndex(world(t), t0)
	d := ix.Decide(Request{Chain: ids(bot, ceo), Action: "read", Resource: "hr/salaries"}, nil)
	want := []Coverage{
		{Index: 0, Link: Link{ids(bot)[0]}, TaskID: "T-payroll", Grant: 0},
		{Index: 1, Link: Link{ids(ceo)[0]}, TaskID: "T-payroll", Grant: 0},
	}
	if !d.Allow || len(d.Covered) != 2 || d.Covered[0] != want[0] || d.Covered[1] != want[1] {
		t.Fatalf("decision = %+v, want covered %+v", d, want)
	}
	d = ix.Decide(Request{Chain: ids(web), Action: "read", Resource: "db/prod/orders"}, nil)
	if !d.Allow || !d.Covered[0].Standing || d.Covered[0].StandingID != "S-web" || d.Covered[0].Link.Kind() != "workload" {
		t.Fatalf("decision = %+v, want standing grant S-web", d)
	}
}

func TestCloseDeniesAtOnce(t *testing.T) {
	s := world(t)
	req := Request{Chain: ids(bot, ceo), Action: "read", Resource: "hr/salaries", Time: t0.Add(time.Minute)}
	if d := NewIndex(s, t0).Decide(req, nil); !d.Allow {
		t.Fatalf("before close: %+v", d)
	}
	if err := s.Tasks[0].Close(t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	d := NewIndex(s, t0.Add(time.Minute)).Decide(req, nil)
	if d.Allow || !strings.Contains(d.Reason, "task T-payroll is closed") {
		t.Fatalf("after close: %+v", d)
	}
}

func TestTaskNotYetStarted(t *testing.T) {
	s := world(t)
	s.Tasks[0].NotBefore = t0.Add(10 * time.Minute)
	ix := NewIndex(s, t0)
	req := Request{Chain: ids(bot, ceo), Action: "read", Resource: "hr/salaries"}
	if d := ix.Decide(req, nil); d.Allow || !strings.Contains(d.Reason, "task T-payroll starts at") {
		t.Fatalf("before not_before: %+v", d)
	}
	req.Time = t0.Add(10 * time.Minute)
	if d := ix.Decide(req, nil); !d.Allow {
		t.Fatalf("at not_before: %+v", d)
	}
}

func TestWorkloadCoveredByTaskGrant(t *testing.T) {
	s := world(t)
	s.Tasks = append(s.Tasks, openTask(t, "T-migrate", []string{"spiffe://td/ns/*/sa/migrator"}, grant(t, "write", "db/prod/*", "spiffe://td/ns/*/sa/migrator")))
	ix := NewIndex(s, t0)
	d := ix.Decide(Request{Chain: ids("spiffe://td/ns/billing/sa/migrator"), Action: "write", Resource: "db/prod/orders"}, nil)
	if !d.Allow || d.Covered[0].TaskID != "T-migrate" {
		t.Fatalf("decision = %+v", d)
	}
}

func TestAnyActionGrant(t *testing.T) {
	ix := NewIndex(world(t), t0)
	for _, action := range []string{"read", "write", "delete"} {
		if d := ix.Decide(Request{Chain: ids(ceo), Action: action, Resource: "hr/bonus/2026"}, nil); !d.Allow {
			t.Errorf("%s: %+v", action, d)
		}
	}
}

// TestGrantExpires: a grant with its own expiry counts until then and not
// after, within the same Index (no rebuild), and the denial names the grant
// and when it expired; the task's other grants are untouched.
func TestGrantExpires(t *testing.T) {
	s := world(t)
	joined := grant(t, "write", "db/prod/payments", ceo)
	joined.ExpiresAt = t0.Add(10 * time.Minute)
	s.Tasks[0].Grants = append(s.Tasks[0].Grants, joined)
	ix := NewIndex(s, t0)
	write := Request{Chain: ids(ceo), Action: "write", Resource: "db/prod/payments", Time: t0.Add(10*time.Minute - time.Second)}
	checkDecision(t, ix.Decide(write, nil), true, -1, "T-payroll", 1)
	write.Time = t0.Add(10 * time.Minute)
	checkDecision(t, ix.Decide(write, nil), false, 0, "grant 1 (write on db/prod/payments) on task T-payroll expired at 2026-03-01T09:10:00Z", 0)
	read := Request{Chain: ids(bot, ceo), Action: "read", Resource: "hr/salaries", Time: t0.Add(30 * time.Minute)}
	checkDecision(t, ix.Decide(read, nil), true, -1, "T-payroll", 2)
}

// TestGrantOnAccessClock: a grant on an access clock the snapshot records
// as not started reports its clock when it allows, lapses unused at its
// ExpiresAt, and once the clock started (told through WithFirstUse, no
// rebuild) counts its access time from that first use instead.
func TestGrantOnAccessClock(t *testing.T) {
	s := world(t)
	joined := grant(t, "write", "db/prod/payments", ceo)
	joined.Clock, joined.AccessTTL, joined.ExpiresAt = "R-1", 5*time.Minute, t0.Add(30*time.Minute)
	s.Tasks[0].Grants = append(s.Tasks[0].Grants, joined)
	write := Request{Chain: ids(ceo), Action: "write", Resource: "db/prod/payments", Time: t0.Add(20 * time.Minute)}

	unused := NewIndex(s, t0)
	d := unused.Decide(write, nil)
	checkDecision(t, d, true, -1, "T-payroll", 1)
	if d.Covered[0].Clock != "R-1" {
		t.Fatalf("coverage %+v: want the clock R-1 to start", d.Covered[0])
	}
	write.Time = t0.Add(30 * time.Minute)
	checkDecision(t, unused.Decide(write, nil), false, 0, "grant 1 (write on db/prod/payments) on task T-payroll lapsed unused at 2026-03-01T09:30:00Z", 0)

	started := NewIndex(s, t0, WithFirstUse(func(clock string) (time.Time, bool) {
		return t0.Add(28 * time.Minute), clock == "R-1"
	}))
	write.Time = t0.Add(32 * time.Minute) // past the unused lapse, within the access time
	checkDecision(t, started.Decide(write, nil), true, -1, "T-payroll", 1)
	write.Time = t0.Add(33 * time.Minute)
	checkDecision(t, started.Decide(write, nil), false, 0, "grant 1 (write on db/prod/payments) on task T-payroll expired at 2026-03-01T09:33:00Z", 0)

	s.Tasks[0].Grants[1].FirstUsedAt = t0.Add(28 * time.Minute)
	s.Tasks[0].Grants[1].ExpiresAt = t0.Add(33 * time.Minute)
	stored := NewIndex(s, t0)
	write.Time = t0.Add(32 * time.Minute)
	if d := stored.Decide(write, nil); !d.Allow || d.Covered[0].Clock != "" {
		t.Fatalf("a clock the store records as started: %+v", d)
	}
}

// TestWatchedLock: a task lock narrowed to watched grants stops only those;
// the task's other grants still allow, and the denial names the grant and
// the watchers missing.
func TestWatchedLock(t *testing.T) {
	s := world(t)
	joined := grant(t, "write", "db/prod/payments", ceo)
	joined.Watched = true
	s.Tasks[0].Grants = append(s.Tasks[0].Grants, joined)
	s.Locks = append(s.Locks, Lock{Kind: identity.LockTask, Value: "T-payroll", ID: "dual-control", Reason: "0 of 1 watchers present (x)", Watched: true})
	ix := NewIndex(s, t0)
	checkDecision(t, ix.Decide(Request{Chain: ids(ceo), Action: "write", Resource: "db/prod/payments"}, nil), false, 0,
		"grant 1 (write on db/prod/payments) on task T-payroll is under dual control: 0 of 1 watchers present (x)", 0)
	checkDecision(t, ix.Decide(Request{Chain: ids(bot, ceo), Action: "read", Resource: "hr/salaries"}, nil), true, -1, "T-payroll", 2)
}
