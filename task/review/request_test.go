package review

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/identity"
	"writ.dev/writ/task"
)

func validJoin(t testing.TB) Request {
	return Request{
		ID: "R-1", Kind: KindJoin, Task: "T-1",
		Asks:   []Ask{mustAsk(t, "write:db/prod/payments"), mustAsk(t, "read:host:5432")},
		Chain:  chain(aliceHelper, alice),
		Reason: "fix the payment retry bug",
	}
}

func TestParseAsk(t *testing.T) {
	a, err := ParseAsk("grant", "read:db/staging/host:5432")
	if err != nil || a.Action != "read" || a.Resource.String() != "db/staging/host:5432" {
		t.Fatalf("ParseAsk = %+v, %v", a, err)
	}
	for s, want := range map[string]string{
		"read":           "not action:resource",
		"*:db/prod":      "'*' is not allowed",
		":db/prod":       "action is empty",
		"read:/db":       "starts with '/'",
		"read:db//x":     "empty",
		"re ad:db/prod":  "not allowed",
		"read:db/\x1b[m": "not allowed",
	} {
		_, err := ParseAsk("grant", s)
		var fe *identity.FieldError
		if !errors.As(err, &fe) || fe.Field != "grant" || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseAsk(%q) = %v, want a grant field error about %q", s, err, want)
		}
		if err != nil && strings.ContainsRune(err.Error(), 0x1b) {
			t.Errorf("error echoes an escape: %q", err)
		}
	}
}

func TestAsksOfTask(t *testing.T) {
	res := func(s string) task.ResourcePattern { p, _ := task.ParseResourcePattern(s); return p }
	tk := &task.Task{Grants: []task.Grant{
		{Actions: []string{"read", "write"}, Resources: []task.ResourcePattern{res("db/prod/a"), res("db/prod/b")}},
		{Actions: []string{"deploy"}, Resources: []task.ResourcePattern{res("k8s/prod/**")}},
	}}
	var got []string
	for _, a := range AsksOfTask(tk) {
		got = append(got, a.String())
	}
	want := "read:db/prod/a read:db/prod/b write:db/prod/a write:db/prod/b deploy:k8s/prod/**"
	if strings.Join(got, " ") != want {
		t.Fatalf("AsksOfTask = %v, want %s", got, want)
	}
}

func TestValidateRequest(t *testing.T) {
	r := validJoin(t)
	if err := r.Validate(td); err != nil {
		t.Fatalf("valid join: %v", err)
	}
	open := Request{Kind: KindOpen, Task: "T-1", Chain: chain(bob), Reason: "deploy 4.2"}
	if err := open.Submit(t0, &Rule{Name: "r", MaxTTL: time.Hour, PendingTTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if err := open.Validate(td); err != nil {
		t.Fatalf("valid open: %v", err)
	}
	if err := open.Deny(t0.Add(time.Minute), "no"); err != nil {
		t.Fatal(err)
	}
	if err := open.Validate(td); err != nil {
		t.Fatalf("valid denied open: %v", err)
	}
	other := spiffeid.RequireFromString("spiffe://other.org/person/x/y")
	for _, tc := range []struct {
		field  string
		mutate func(*Request)
	}{
		{"id", func(r *Request) { r.ID = "a/b" }},
		{"task", func(r *Request) { r.Task = "" }},
		{"kind", func(r *Request) { r.Kind = "grab" }},
		{"asks", func(r *Request) { r.Asks = nil }},
		{"asks", func(r *Request) { r.Kind = KindOpen }},
		{"asks[1]", func(r *Request) { r.Asks[1] = r.Asks[0] }},
		{"asks[0]", func(r *Request) { r.Asks[0].Action = "*" }},
		{"asks[0]", func(r *Request) { r.Asks[0].Resource = task.ResourcePattern{} }},
		{"chain", func(r *Request) { r.Chain = nil }},
		{"chain", func(r *Request) { r.Chain = make([]spiffeid.ID, MaxChain+1) }},
		{"chain[1]", func(r *Request) { r.Chain[1] = r.Chain[0] }},
		{"chain[1]", func(r *Request) { r.Chain[1] = other }},
		{"chain[0]", func(r *Request) { r.Chain[0] = td.ID() }},
		{"reason", func(r *Request) { r.Reason = "" }},
		{"reason", func(r *Request) { r.Reason = "a\nb" }},
		{"reason", func(r *Request) { r.Reason = strings.Repeat("x", MaxReasonLen+1) }},
		{"ttl", func(r *Request) { r.TTL = 1500 * time.Millisecond }},
		{"state", func(r *Request) { r.State = "maybe" }},
		{"rule", func(r *Request) { r.State = StatePending }},
		{"pending_until", func(r *Request) { r.State, r.Rule, r.CreatedAt = StatePending, "r", t0 }},
		{"decided_at", func(r *Request) {
			r.State, r.Rule, r.CreatedAt, r.PendingUntil = StateApproved, "r", t0, t0.Add(time.Hour)
		}},
	} {
		r := validJoin(t)
		tc.mutate(&r)
		err := r.Validate(td)
		var fe *identity.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%s: Validate = %v, want a %s field error", tc.field, err, tc.field)
		}
	}
}

func TestRequestTransitions(t *testing.T) {
	rule := &Rule{Name: "r", MaxTTL: 4 * time.Hour, PendingTTL: time.Hour}

	r := validJoin(t)
	r.TTL = 5 * time.Hour
	if err := r.Submit(t0, rule); err == nil || !strings.Contains(err.Error(), "longer than the 4h") {
		t.Fatalf("Submit with TTL over max_ttl = %v", err)
	}
	r.TTL = 0
	if err := r.Submit(t0, rule); err != nil {
		t.Fatal(err)
	}
	if r.State != StatePending || r.TTL != 4*time.Hour || r.Rule != "r" || !r.PendingUntil.Equal(t0.Add(time.Hour)) {
		t.Fatalf("after Submit: %+v", r)
	}
	if err := r.Submit(t0, rule); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("second Submit = %v", err)
	}
	if err := r.Expire(t0.Add(time.Minute)); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("Expire before PendingUntil = %v", err)
	}
	if err := r.Approve(t0.Add(time.Hour), "x"); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("Approve at PendingUntil = %v", err)
	}
	if err := r.Approve(t0.Add(time.Minute), "two people"); err != nil {
		t.Fatal(err)
	}
	for name, op := range map[string]func() error{
		"approve": func() error { return r.Approve(t0.Add(2*time.Minute), "x") },
		"deny":    func() error { return r.Deny(t0.Add(2*time.Minute), "x") },
		"cancel":  func() error { return r.Cancel(t0.Add(2*time.Minute), chain(alice)) },
		"expire":  func() error { return r.Expire(t0.Add(2 * time.Hour)) },
	} {
		if err := op(); !errors.Is(err, ErrIllegalTransition) {
			t.Errorf("%s after approval = %v, want ErrIllegalTransition", name, err)
		}
	}
	if r.State != StateApproved || r.Outcome != "two people" {
		t.Fatalf("approved request changed: %+v", r)
	}

	r = validJoin(t)
	if err := r.Submit(t0, rule); err != nil {
		t.Fatal(err)
	}
	if err := r.Cancel(t0, chain(bob)); !errors.Is(err, ErrNotRequester) {
		t.Fatalf("Cancel by bob = %v, want ErrNotRequester", err)
	}
	// alice may cancel what her agent asked for her.
	if err := r.Cancel(t0, chain(alice)); err != nil || r.State != StateCancelled {
		t.Fatalf("Cancel by alice = %v, state %s", err, r.State)
	}

	r = validJoin(t)
	if err := r.Submit(t0, rule); err != nil {
		t.Fatal(err)
	}
	if err := r.Expire(t0.Add(3 * time.Hour)); err != nil || r.State != StateExpired || !r.DecidedAt.Equal(r.PendingUntil) {
		t.Fatalf("Expire = %v, %+v", err, r)
	}
	if err := r.Deny(t0, "x"); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("Deny after expiry = %v", err)
	}
}
