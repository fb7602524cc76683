package task

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/identity"
)

var (
	td = spiffeid.RequireTrustDomainFromString("td")
	t0 = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
)

// payrollTask is a valid draft: the CEO and the payroll bot's instances
// read salaries, and only the CEO may also write them.
func payrollTask(t testing.TB) Task {
	return Task{
		ID:     "T-1",
		Title:  "answer the CEO's question about payroll",
		Reason: "quarterly review",
		Owner:  spiffeid.RequireFromString("spiffe://td/person/example.com/ceo"),
		Members: []Member{
			{Pattern: mustPattern(t, "spiffe://td/person/example.com/ceo")},
			{Pattern: mustPattern(t, "spiffe://td/agent/payroll-bot/*")},
		},
		Grants: []Grant{
			{Actions: []string{"read"}, Resources: []ResourcePattern{mustResource(t, "hr/salaries")},
				To: []Pattern{mustPattern(t, "spiffe://td/person/example.com/ceo"), mustPattern(t, "spiffe://td/agent/payroll-bot/*")}},
			{Actions: []string{"write"}, Resources: []ResourcePattern{mustResource(t, "hr/salaries")},
				To: []Pattern{mustPattern(t, "spiffe://td/person/example.com/ceo")}},
		},
		Deadline:  t0.Add(4 * time.Hour),
		State:     StateDraft,
		CreatedAt: t0,
	}
}

func TestValidateAcceptsPayrollTask(t *testing.T) {
	tk := payrollTask(t)
	if err := tk.Validate(td); err != nil {
		t.Fatal(err)
	}
}

func TestValidateErrors(t *testing.T) {
	tests := []struct {
		name, field, want string
		edit              func(*Task)
	}{
		{"bad id", "id", "not allowed", func(tk *Task) { tk.ID = "T 1" }},
		{"no title", "title", "is required", func(tk *Task) { tk.Title = "" }},
		{"long title", "title", "201 characters", func(tk *Task) { tk.Title = strings.Repeat("x", 201) }},
		{"no reason", "reason", "is required", func(tk *Task) { tk.Reason = "" }},
		{"control in ticket", "ticket", "unprintable", func(tk *Task) { tk.Ticket = "JIRA-1\x1b[2J" }},
		{"no owner", "owner", "is required", func(tk *Task) { tk.Owner = spiffeid.ID{} }},
		{"foreign owner", "owner", "not in trust domain", func(tk *Task) { tk.Owner = spiffeid.RequireFromString("spiffe://other/person/x") }},
		{"no members", "members", "at least one member", func(tk *Task) { tk.Members = nil }},
		{"zero member", "members[1]", "is required", func(tk *Task) { tk.Members[1] = Member{} }},
		{"foreign member", "members[1]", `in trust domain "other"`, func(tk *Task) {
			tk.Members[1] = Member{Pattern: mustPattern(t, "spiffe://other/agent/x")}
		}},
		{"duplicate member", "members[1]", "repeats members[0]", func(tk *Task) { tk.Members[1] = tk.Members[0] }},
		{"no grants", "grants", "at least one grant", func(tk *Task) { tk.Grants = nil }},
		{"no actions", "grants[0].actions", "at least one action", func(tk *Task) { tk.Grants[0].Actions = nil }},
		{"bad action", "grants[1].actions[0]", "not allowed", func(tk *Task) { tk.Grants[1].Actions = []string{"wr ite"} }},
		{"repeated action", "grants[0].actions[1]", "repeats grants[0].actions[0]", func(tk *Task) { tk.Grants[0].Actions = []string{"read", "read"} }},
		{"star with others", "grants[0].actions[1]", "'*' already covers", func(tk *Task) { tk.Grants[0].Actions = []string{"read", "*"} }},
		{"no resources", "grants[0].resources", "at least one resource", func(tk *Task) { tk.Grants[0].Resources = nil }},
		{"zero resource", "grants[0].resources[0]", "is empty", func(tk *Task) { tk.Grants[0].Resources = []ResourcePattern{{}} }},
		{"no recipients", "grants[1].to", "never to the whole task", func(tk *Task) { tk.Grants[1].To = nil }},
		{"recipient not a member", "grants[1].to[0]", "is not a member of the task", func(tk *Task) {
			tk.Grants[1].To = []Pattern{mustPattern(t, "spiffe://td/person/example.com/intern")}
		}},
		{"recipient wider than member", "grants[0].to[1]", "is not a member of the task", func(tk *Task) {
			tk.Grants[0].To[1] = mustPattern(t, "spiffe://td/agent/payroll-bot/**")
		}},
		{"no deadline", "deadline", "is required", func(tk *Task) { tk.Deadline = time.Time{} }},
		{"deadline before not_before", "deadline", "is not after not_before", func(tk *Task) { tk.NotBefore = tk.Deadline }},
		{"unknown state", "state", "is not a task state", func(tk *Task) { tk.State = "paused" }},
		{"open without opened_at", "opened_at", "is required", func(tk *Task) { tk.State = StateOpen }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tk := payrollTask(t)
			tt.edit(&tk)
			err := tk.Validate(td)
			var fe *identity.FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field || !strings.Contains(fe.Msg, tt.want) {
				t.Fatalf("Validate = %v, want %s: …%s…", err, tt.field, tt.want)
			}
		})
	}
}

func TestValidateRecipientCoveredByWildcardMember(t *testing.T) {
	tk := payrollTask(t)
	tk.Grants[0].To[1] = mustPattern(t, "spiffe://td/agent/payroll-bot/7")
	if err := tk.Validate(td); err != nil {
		t.Fatal(err)
	}
}

func TestTransitions(t *testing.T) {
	tk := payrollTask(t)
	if tk.Live(t0) {
		t.Fatal("a draft task is live")
	}
	if err := tk.Close(t0); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("Close(draft) = %v, want ErrIllegalTransition", err)
	}
	if err := tk.Open(t0); err != nil {
		t.Fatal(err)
	}
	if !tk.Live(t0) || !tk.Live(tk.Deadline.Add(-time.Nanosecond)) || tk.Live(tk.Deadline) {
		t.Fatal("an open task is live exactly within [NotBefore, Deadline)")
	}
	if err := tk.Validate(td); err != nil {
		t.Fatalf("Validate after Open: %v", err)
	}
	if err := tk.Open(t0); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("Open(open) = %v, want ErrIllegalTransition", err)
	}
	if err := tk.Expire(t0); !errors.Is(err, ErrIllegalTransition) || !strings.Contains(err.Error(), "before its deadline") {
		t.Fatalf("Expire before the deadline = %v", err)
	}
	if err := tk.Close(t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if tk.Live(t0.Add(time.Hour)) || tk.ClosedAt != t0.Add(time.Hour) {
		t.Fatalf("closed task: live=%v closed_at=%v", tk.Live(t0.Add(time.Hour)), tk.ClosedAt)
	}
	err := tk.Open(t0)
	if !errors.Is(err, ErrIllegalTransition) || !strings.Contains(err.Error(), `task "T-1": it is closed`) {
		t.Fatalf("Open(closed) = %v", err)
	}
	if got := tk.NotLiveReason(t0); got != "task T-1 is closed" {
		t.Fatalf("NotLiveReason = %q", got)
	}
}

func TestExpire(t *testing.T) {
	tk := payrollTask(t)
	if err := tk.Open(t0); err != nil {
		t.Fatal(err)
	}
	if err := tk.Expire(tk.Deadline.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if tk.State != StateExpired || tk.ClosedAt != tk.Deadline {
		t.Fatalf("state %s, closed_at %v", tk.State, tk.ClosedAt)
	}
	if err := tk.Close(tk.Deadline); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("Close(expired) = %v", err)
	}
	if got := tk.NotLiveReason(t0); !strings.Contains(got, "expired at") {
		t.Fatalf("NotLiveReason = %q", got)
	}
}

func TestOpenRefusesPassedDeadline(t *testing.T) {
	tk := payrollTask(t)
	if err := tk.Open(tk.Deadline); err == nil || !strings.Contains(err.Error(), "has passed") {
		t.Fatalf("Open after the deadline = %v", err)
	}
	if tk.State != StateDraft {
		t.Fatal("a failed Open changed the state")
	}
}

func TestNotBefore(t *testing.T) {
	tk := payrollTask(t)
	tk.NotBefore = t0.Add(time.Hour)
	if err := tk.Open(t0); err != nil {
		t.Fatal(err)
	}
	if tk.Live(t0) || !tk.Live(tk.NotBefore) {
		t.Fatal("an open task is live from NotBefore, not before")
	}
	if got := tk.NotLiveReason(t0); !strings.Contains(got, "starts at") {
		t.Fatalf("NotLiveReason = %q", got)
	}
}

func TestStandingGrantValidate(t *testing.T) {
	ok := []string{"spiffe://td/ns/web/sa/api", "spiffe://td/ns/*/sa/*", "spiffe://td/ci/**", "spiffe://td/writ/server", "spiffe://td/personal/x"}
	for _, s := range ok {
		g := StandingGrant{ID: "S-1", Subject: mustPattern(t, s), Actions: []string{"read"}, Resources: []ResourcePattern{mustResource(t, "db/prod/*")}}
		if err := g.Validate(td); err != nil {
			t.Errorf("Validate(%s): %v", s, err)
		}
	}
	refused := map[string]string{
		"spiffe://td/person/example.com/ceo": "spiffe://td/person/example.com/ceo, whose kind is person",
		"spiffe://td/agent/bot":              "whose kind is agent",
		"spiffe://td/node/n1":                "whose kind is node",
		"spiffe://td/writ/agent/n1":          "whose kind is node",
		"spiffe://td/*/x":                    "spiffe://td/person/x, whose kind is person",
		"spiffe://td/**":                     "spiffe://td/person, whose kind is person",
		"spiffe://td/writ/*":                 "spiffe://td/writ/agent, whose kind is node",
	}
	for s, want := range refused {
		g := StandingGrant{ID: "S-1", Subject: mustPattern(t, s), Actions: []string{"read"}, Resources: []ResourcePattern{mustResource(t, "db/prod/*")}}
		err := g.Validate(td)
		var fe *identity.FieldError
		if !errors.As(err, &fe) || fe.Field != "subject" || !strings.Contains(fe.Msg, want) || !strings.Contains(fe.Msg, "only for workloads") {
			t.Errorf("Validate(%s) = %v, want subject: …%s…", s, err, want)
		}
	}
}

func TestStandingGrantCovers(t *testing.T) {
	g := StandingGrant{ID: "S-1", Subject: mustPattern(t, "spiffe://td/**"), Actions: []string{"*"}, Resources: []ResourcePattern{mustResource(t, "db/**")}}
	if !g.Covers(spiffeid.RequireFromString("spiffe://td/ns/web"), "read", "db/prod") {
		t.Error("a standing grant does not cover a matching workload")
	}
	if g.Covers(spiffeid.RequireFromString("spiffe://td/person/x"), "read", "db/prod") {
		t.Error("an unvalidated standing grant covers a person")
	}
}

// TestGrantExpired: a grant without an expiry never expires by itself; one
// with an expiry stops at that instant.
func TestGrantExpired(t *testing.T) {
	at := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	var g Grant
	if g.Expired(at.Add(1000 * time.Hour)) {
		t.Fatal("a grant without expires_at expired")
	}
	g.ExpiresAt = at
	if g.Expired(at.Add(-time.Second)) || !g.Expired(at) {
		t.Fatalf("Expired around %s is wrong", at)
	}
}
