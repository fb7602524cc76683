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

var (
	td = spiffeid.RequireTrustDomainFromString("example.org")
	// t0 is a Monday, 10:00 UTC: inside office hours.
	t0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
)

func id(path string) spiffeid.ID { return spiffeid.RequireFromString("spiffe://example.org/" + path) }

func chain(paths ...string) []spiffeid.ID {
	out := make([]spiffeid.ID, len(paths))
	for i, p := range paths {
		out[i] = id(p)
	}
	return out
}

const (
	alice       = "person/example.com/alice"
	bob         = "person/example.com/bob"
	carol       = "person/example.com/carol"
	sam         = "person/example.com/sam" // security
	aliceHelper = "agent/helper/1"         // acts for alice
	aliceOther  = "agent/notes/7"          // another agent acting for alice
	bobHelper   = "agent/bob-helper/1"     // acts for bob
	secBot      = "agent/sec-bot"          // security's approver bot, acting for nobody
	nightlyJob  = "service/nightly"
)

// scenarioRules is the scenario: a staging read by an agent is
// approved automatically; a prod write needs two people and one of
// security.
const scenarioRules = `
rules:
  - name: staging-read
    match: {actions: [read], resources: [db/staging/**], requester_kind: [agent]}
    auto_approve: {requester_kind: [agent]}
    max_ttl: 1h
  - name: prod-write
    match:
      actions: [write]
      resources: [db/prod/**]
    require:
      - name: people
        from: [spiffe://example.org/person/**]
        count: 2
      - name: security
        from: [spiffe://example.org/person/example.com/sam, spiffe://example.org/agent/sec-bot]
        count: 1
    deny_if:
      - requester_kind: [workload]
    max_ttl: 4h
    pending_ttl: 2h
`

func mustRules(t testing.TB, src string) []Rule {
	t.Helper()
	rules, err := ParseRules([]byte(src), td)
	if err != nil {
		t.Fatalf("ParseRules: %v", err)
	}
	return rules
}

func mustAsk(t testing.TB, s string) Ask {
	t.Helper()
	a, err := ParseAsk("grant", s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// submit builds a join request by requester chain for asks, selects its
// rule and submits it at t0.
func submit(t testing.TB, rules []Rule, requester []spiffeid.ID, asks ...string) (*Request, *Rule) {
	t.Helper()
	r := &Request{ID: "R-1", Kind: KindJoin, Task: "T-1", Chain: requester, Reason: "release 4.2"}
	for _, s := range asks {
		r.Asks = append(r.Asks, mustAsk(t, s))
	}
	rule, err := Select(rules, r, r.Asks, t0)
	if err != nil {
		t.Fatalf("Select: %v", err)
	}
	if err := r.Submit(t0, rule); err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if err := r.Validate(td); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	return r, rule
}

func approve(c []spiffeid.ID) Review {
	return Review{Chain: c, Verdict: Approve, Reason: "looks right", At: t0.Add(time.Minute)}
}

func deny(c []spiffeid.ID) Review {
	return Review{Chain: c, Verdict: Deny, Reason: "not during the freeze", At: t0.Add(time.Minute)}
}

func TestScenarioProdWrite(t *testing.T) {
	rules := mustRules(t, scenarioRules)
	r, rule := submit(t, rules, chain(aliceHelper, alice), "write:db/prod/payments")
	if rule.Name != "prod-write" {
		t.Fatalf("rule = %s, want prod-write", rule.Name)
	}
	now := t0.Add(10 * time.Minute)
	var reviews []Review
	step := func(rv Review, want State, wantIgnored int) Outcome {
		t.Helper()
		reviews = append(reviews, rv)
		out := Evaluate(rule, r, reviews, now)
		if out.State != want || len(out.Ignored) != wantIgnored {
			t.Fatalf("after %s by %v: state %s (%s), %d ignored; want %s, %d ignored", rv.Verdict, rv.Chain, out.State, out.Why, len(out.Ignored), want, wantIgnored)
		}
		return out
	}

	out := step(approve(chain(bob)), StatePending, 0)
	if m := out.Missing(); len(m) != 2 || m[0].Name != "people" || len(m[0].Have) != 1 || m[1].Name != "security" {
		t.Fatalf("one approval: missing %+v, want people 1 of 2 and security 0 of 1", m)
	}
	// Self and same-chain approvals are refused and count for nothing.
	step(approve(chain(aliceHelper, alice)), StatePending, 1)
	step(approve(chain(alice)), StatePending, 2)
	step(approve(chain(aliceOther, alice)), StatePending, 3)
	// bob's agent is bob again.
	out = step(approve(chain(bobHelper, bob)), StatePending, 3)
	if got := out.Groups[0].Have; len(got) != 1 || got[0] != id(bob) {
		t.Fatalf("bob and bob's agent: people has %v, want bob once", got)
	}
	out = step(approve(chain(carol)), StatePending, 3)
	if m := out.Missing(); len(m) != 1 || m[0].Name != "security" {
		t.Fatalf("two people: missing %+v, want security only", m)
	}
	out = step(approve(chain(sam)), StateApproved, 3)
	if !strings.Contains(out.Why, "people 3 of 2") || !strings.Contains(out.Why, "security 1 of 1") {
		t.Fatalf("why = %q", out.Why)
	}
}

func TestScenarioDenialEnds(t *testing.T) {
	rules := mustRules(t, scenarioRules)
	r, rule := submit(t, rules, chain(aliceHelper, alice), "write:db/prod/payments")
	reviews := []Review{approve(chain(bob)), deny(chain(carol)), approve(chain(sam))}
	out := Evaluate(rule, r, reviews, t0.Add(time.Minute))
	if out.State != StateDenied || !strings.Contains(out.Why, "person/example.com/carol") || !strings.Contains(out.Why, "freeze") {
		t.Fatalf("state %s (%s); want denied by carol", out.State, out.Why)
	}
}

func TestDenialFromIneligibleCountsForNothing(t *testing.T) {
	rules := mustRules(t, scenarioRules)
	r, rule := submit(t, rules, chain(aliceHelper, alice), "write:db/prod/payments")
	reviews := []Review{
		deny(chain(nightlyJob)),        // in no group
		deny(chain(alice)),             // in the requester's chain
		deny(chain(aliceOther, alice)), // acts for the requester's principal
		approve(chain(bob)), approve(chain(secBot)),
	}
	out := Evaluate(rule, r, reviews, t0.Add(time.Minute))
	if out.State != StatePending || len(out.Ignored) != 3 {
		t.Fatalf("state %s (%s), %d ignored; want pending with 3 ignored", out.State, out.Why, len(out.Ignored))
	}
	// The security bot approves as itself; people still needs one more.
	if m := out.Missing(); len(m) != 1 || m[0].Name != "people" {
		t.Fatalf("missing %+v, want people only", m)
	}
}

func TestPrincipalInTwoGroupsCountsInBoth(t *testing.T) {
	rules := mustRules(t, scenarioRules)
	r, rule := submit(t, rules, chain(aliceHelper, alice), "write:db/prod/payments")
	out := Evaluate(rule, r, []Review{approve(chain(bob)), approve(chain(sam))}, t0.Add(time.Minute))
	if out.State != StateApproved {
		t.Fatalf("bob and sam (a person of security): %s (%s), want approved", out.State, out.Why)
	}
}

func TestScenarioStagingReadAutoApproved(t *testing.T) {
	rules := mustRules(t, scenarioRules)
	r, rule := submit(t, rules, chain(aliceHelper, alice), "read:db/staging/orders")
	if rule.Name != "staging-read" {
		t.Fatalf("rule = %s", rule.Name)
	}
	if r.TTL != time.Hour {
		t.Fatalf("TTL = %s, want the rule's max_ttl 1h", r.TTL)
	}
	out := Evaluate(rule, r, nil, t0)
	if out.State != StateApproved || !strings.Contains(out.Why, "automatically") {
		t.Fatalf("state %s (%s), want approved automatically", out.State, out.Why)
	}
	if _, err := Eligible(rule, r, chain(bob)); !errors.Is(err, ErrNotEligible) {
		t.Fatalf("Eligible under an auto rule = %v, want ErrNotEligible", err)
	}
	// A person asking for the same matches no rule: it is refused, not
	// left pending with nobody to approve it.
	p := &Request{Kind: KindJoin, Task: "T-1", Chain: chain(bob), Reason: "x", Asks: r.Asks}
	if _, err := Select(rules, p, p.Asks, t0); !errors.Is(err, ErrNoRule) {
		t.Fatalf("Select for a person = %v, want ErrNoRule", err)
	}
}

func TestEligible(t *testing.T) {
	rules := mustRules(t, scenarioRules)
	r, rule := submit(t, rules, chain(aliceHelper, alice), "write:db/prod/payments")
	for _, tc := range []struct {
		name     string
		reviewer []spiffeid.ID
		groups   []int
		problem  string
	}{
		{"the requester", chain(aliceHelper), nil, "made the request"},
		{"the requester acting for alice", chain(aliceHelper, alice), nil, "made the request"},
		{"the principal the requester acts for", chain(alice), nil, "requester's chain"},
		{"an agent acting for alice", chain(aliceOther, alice), nil, "acts for"},
		{"an agent in no group", chain("agent/random"), nil, "in none of rule"},
		{"a workload acting for bob counts as bob", chain(nightlyJob, bob), []int{0}, ""},
		{"bob", chain(bob), []int{0}, ""},
		{"sam is in both groups", chain(sam), []int{0, 1}, ""},
		{"the security bot as itself", chain(secBot), []int{1}, ""},
		{"the security bot acting for carol is carol", chain(secBot, carol), []int{0}, ""},
		{"an empty chain", nil, nil, "empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := Eligible(rule, r, tc.reviewer)
			if tc.problem != "" {
				if !errors.Is(err, ErrNotEligible) || !strings.Contains(err.Error(), tc.problem) {
					t.Fatalf("err = %v, want ErrNotEligible about %q", err, tc.problem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if e.Principal != tc.reviewer[len(tc.reviewer)-1] || len(e.Groups) != len(tc.groups) {
				t.Fatalf("eligibility = %+v, want principal %v groups %v", e, tc.reviewer[len(tc.reviewer)-1], tc.groups)
			}
			for i := range tc.groups {
				if e.Groups[i] != tc.groups[i] {
					t.Fatalf("groups = %v, want %v", e.Groups, tc.groups)
				}
			}
		})
	}
}

// An agent acting for alice asks; alice's own approval and her other
// agents' are refused, and so is an approval from the requesting agent
// acting for someone else.
func TestRequesterActingForAnotherStillRefused(t *testing.T) {
	rules := mustRules(t, scenarioRules)
	r, rule := submit(t, rules, chain(aliceHelper, alice), "write:db/prod/payments")
	if _, err := Eligible(rule, r, chain(aliceHelper, carol)); err == nil {
		t.Fatal("the requesting agent acting for carol was eligible")
	}
}

func TestFirstMatchingRuleApplies(t *testing.T) {
	const broadFirst = `
rules:
  - name: broad
    match: {actions: ['*'], resources: [db/**]}
    require: [{from: [spiffe://example.org/person/**], count: 1}]
  - name: narrow
    match: {actions: [write], resources: [db/prod/payments]}
    require: [{from: [spiffe://example.org/person/**], count: 3}]
`
	const narrowFirst = `
rules:
  - name: narrow
    match: {actions: [write], resources: [db/prod/payments]}
    require: [{from: [spiffe://example.org/person/**], count: 3}]
  - name: broad
    match: {actions: ['*'], resources: [db/**]}
    require: [{from: [spiffe://example.org/person/**], count: 1}]
`
	for src, want := range map[string]string{broadFirst: "broad", narrowFirst: "narrow"} {
		_, rule := submit(t, mustRules(t, src), chain(alice), "write:db/prod/payments")
		if rule.Name != want {
			t.Errorf("rule = %s, want %s (the first that matches)", rule.Name, want)
		}
	}
	// Every ask must be covered by one rule: narrow does not cover the
	// second ask, so broad applies.
	_, rule := submit(t, mustRules(t, narrowFirst), chain(alice), "write:db/prod/payments", "read:db/prod/users")
	if rule.Name != "broad" {
		t.Errorf("rule for two asks = %s, want broad", rule.Name)
	}
}

func TestAutoApproveFallsThroughWhenItsConditionFails(t *testing.T) {
	const src = `
rules:
  - name: office-hours
    match: {actions: [read], resources: [db/staging/**]}
    auto_approve: {within_hours: {days: [mon, tue, wed, thu, fri], from: "08:00", to: "18:00"}}
  - name: after-hours
    match: {actions: [read], resources: [db/staging/**]}
    require: [{from: [spiffe://example.org/person/**], count: 1}]
`
	rules := mustRules(t, src)
	r := &Request{Kind: KindJoin, Task: "T-1", Chain: chain(aliceHelper), Reason: "x", Asks: []Ask{mustAsk(t, "read:db/staging/orders")}}
	for at, want := range map[time.Time]string{
		t0:                         "office-hours",
		t0.Add(9 * time.Hour):      "after-hours", // 19:00
		t0.Add(5 * 24 * time.Hour): "after-hours", // Saturday
	} {
		rule, err := Select(rules, r, r.Asks, at)
		if err != nil || rule.Name != want {
			t.Errorf("at %s: rule %v, %v; want %s", at, rule, err, want)
		}
	}
}

func TestDenyIf(t *testing.T) {
	const src = `
rules:
  - name: prod
    match: {actions: [write], resources: [db/prod/**]}
    require: [{from: [spiffe://example.org/person/**], count: 1}]
    deny_if:
      - {requester_kind: [workload]}
      - {outside_hours: {days: [mon, tue, wed, thu, fri], from: "08:00", to: "18:00", zone: UTC}}
      - {ttl_over: 2h}
      - {requester_kind: [agent], acting_for_person: false}
    max_ttl: 8h
`
	rules := mustRules(t, src)
	for _, tc := range []struct {
		name  string
		chain []spiffeid.ID
		at    time.Time
		ttl   time.Duration
		deny  string
	}{
		{"a person in hours", chain(alice), t0, time.Hour, ""},
		{"an agent for a person", chain(aliceHelper, alice), t0, time.Hour, ""},
		{"a workload", chain(nightlyJob), t0, time.Hour, "workload"},
		{"at night", chain(alice), t0.Add(12 * time.Hour), time.Hour, "outside"},
		{"too long", chain(alice), t0, 3 * time.Hour, "longer than 2h"},
		{"an agent alone", chain(aliceHelper), t0, time.Hour, "acts for no person"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Request{ID: "R", Kind: KindJoin, Task: "T", Chain: tc.chain, Reason: "x", TTL: tc.ttl, Asks: []Ask{mustAsk(t, "write:db/prod/x")}}
			rule, err := Select(rules, r, r.Asks, tc.at)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Submit(tc.at, rule); err != nil {
				t.Fatal(err)
			}
			out := Evaluate(rule, r, []Review{approve(chain(bob))}, tc.at)
			if tc.deny == "" {
				if out.State != StateApproved {
					t.Fatalf("state %s (%s), want approved", out.State, out.Why)
				}
				return
			}
			if out.State != StateDenied || !strings.Contains(out.Why, tc.deny) {
				t.Fatalf("state %s (%s), want denied for %q", out.State, out.Why, tc.deny)
			}
		})
	}
}

func TestEvaluateExpiresAndKeepsFinalState(t *testing.T) {
	rules := mustRules(t, scenarioRules)
	r, rule := submit(t, rules, chain(aliceHelper, alice), "write:db/prod/payments")
	out := Evaluate(rule, r, []Review{approve(chain(bob))}, r.PendingUntil)
	if out.State != StateExpired {
		t.Fatalf("at PendingUntil: %s, want expired", out.State)
	}
	if err := r.Cancel(t0.Add(time.Minute), chain(alice)); err != nil {
		t.Fatal(err)
	}
	out = Evaluate(rule, r, []Review{approve(chain(bob)), approve(chain(carol)), approve(chain(sam))}, t0.Add(time.Minute))
	if out.State != StateCancelled {
		t.Fatalf("cancelled request evaluated to %s", out.State)
	}
}

func TestResourceCovers(t *testing.T) {
	for _, tc := range []struct {
		p, q string
		want bool
	}{
		{"db/**", "db/prod/payments", true},
		{"db/**", "db/prod/*", true},
		{"db/**", "db/**", true},
		{"db/*", "db/prod", true},
		{"db/*", "db/*", true},
		{"db/*", "db/**", false},
		{"db/*", "db/prod/payments", false},
		{"db/prod/*", "db/*/payments", false},
		{"db/prod/payments", "db/prod/payments", true},
		{"db/prod/payments", "db/prod", false},
		{"db/prod", "db/prod/payments", false},
		{"db/**", "db", false},
		{"*", "db", true},
		{"*", "db/x", false},
		{"**", "a/b/c", true},
		{"a/*/c", "a/b/c", true},
		{"a/*/c", "a/b/d", false},
		{"a/*/c", "a/*/c", true},
		{"a/b/c", "a/*/c", false},
	} {
		p, _ := task.ParseResourcePattern(tc.p)
		q, _ := task.ParseResourcePattern(tc.q)
		if got := resourceCovers(p, q); got != tc.want {
			t.Errorf("%s covers %s = %v, want %v", tc.p, tc.q, got, tc.want)
		}
	}
}

func TestReviewsAfterTheDecisionOrExpiryCountForNothing(t *testing.T) {
	rules := mustRules(t, scenarioRules)
	r, rule := submit(t, rules, chain(aliceHelper, alice), "write:db/prod/payments")
	decided := []Review{approve(chain(bob)), approve(chain(sam)), deny(chain(carol))}
	if out := Evaluate(rule, r, decided, t0.Add(time.Minute)); out.State != StateApproved {
		t.Fatalf("a denial after the deciding approval: %s (%s), want approved", out.State, out.Why)
	}
	late := deny(chain(carol))
	late.At = r.PendingUntil
	out := Evaluate(rule, r, []Review{approve(chain(bob)), late}, t0.Add(time.Minute))
	if out.State != StatePending || len(out.Ignored) != 1 || !strings.Contains(out.Ignored[0].Why, "after the request expired") {
		t.Fatalf("a denial after expiry: %s (%s), ignored %+v; want pending with it ignored", out.State, out.Why, out.Ignored)
	}
}

func TestReviewValidate(t *testing.T) {
	ok := approve(chain(bobHelper, bob))
	ok.Reason = ""
	if err := ok.Validate(td); err != nil {
		t.Fatalf("approval without a reason: %v", err)
	}
	for field, rv := range map[string]Review{
		"chain":    {Verdict: Approve},
		"chain[1]": {Chain: chain(bob, bob), Verdict: Approve},
		"verdict":  {Chain: chain(bob), Verdict: "maybe"},
		"reason":   {Chain: chain(bob), Verdict: Deny},
	} {
		err := rv.Validate(td)
		var fe *identity.FieldError
		if !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("Validate = %v, want a %s field error", err, field)
		}
	}
}

func TestGroupString(t *testing.T) {
	rules := mustRules(t, scenarioRules)
	if got, want := rules[1].Require[0].String(), "people: 2 of spiffe://example.org/person/**"; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
}

func TestDualControlPresent(t *testing.T) {
	rules := mustRules(t, `
rules:
  - name: crown
    match: {actions: [write], resources: [vault/**]}
    require: [{from: [spiffe://example.org/person/**], count: 1}]
    dual_control: {watchers: [spiffe://example.org/person/**, spiffe://example.org/agent/sec-bot], count: 2, on_leave: pause}
`)
	dc := rules[0].DualControl
	r := &Request{Chain: chain(aliceHelper, alice)}
	for _, tc := range []struct {
		name     string
		watchers [][]spiffeid.ID
		count    int
	}{
		{"two people", [][]spiffeid.ID{chain(bob), chain(carol)}, 2},
		{"bob and bob's agent are one", [][]spiffeid.ID{chain(bob), chain(bobHelper, bob)}, 1},
		{"the requester's chain never watches", [][]spiffeid.ID{chain(alice), chain(aliceOther, alice), chain(aliceHelper, bob)}, 0},
		{"a bot as itself", [][]spiffeid.ID{chain(secBot), chain(carol)}, 2},
		{"someone not named", [][]spiffeid.ID{chain(nightlyJob), chain(carol)}, 1},
	} {
		present, live := dc.Present(r, tc.watchers)
		if len(present) != tc.count || live != (tc.count >= 2) {
			t.Errorf("%s: present %v live %v, want %d present", tc.name, present, live, tc.count)
		}
	}
}
