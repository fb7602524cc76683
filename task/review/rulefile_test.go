package review

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
	// Zones are named in the tests; the embedded database makes them
	// pass on machines without one, in the test binary only.
	_ "time/tzdata"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestParseRulesScenario(t *testing.T) {
	rules := mustRules(t, scenarioRules)
	if len(rules) != 2 {
		t.Fatalf("%d rules", len(rules))
	}
	s, p := rules[0], rules[1]
	if s.Name != "staging-read" || s.AutoApprove == nil || len(s.AutoApprove.RequesterKinds) != 1 || s.MaxTTL != time.Hour || s.PendingTTL != DefaultPendingTTL || s.Line != 3 {
		t.Fatalf("staging rule = %+v", s)
	}
	if p.Name != "prod-write" || len(p.Require) != 2 || p.Require[0].Count != 2 || p.Require[1].Name != "security" ||
		len(p.Require[1].From) != 2 || len(p.DenyIf) != 1 || p.MaxTTL != 4*time.Hour || p.PendingTTL != 2*time.Hour || p.AutoApprove != nil {
		t.Fatalf("prod rule = %+v", p)
	}
}

func TestParseRulesDefaultsAndDualControl(t *testing.T) {
	rules := mustRules(t, `
rules:
  - name: crown-jewels
    match: {actions: ['*'], resources: [vault/root/**], requester: [spiffe://example.org/person/**]}
    require: [{from: [spiffe://example.org/person/**], count: 2}]
    dual_control:
      watchers: [spiffe://example.org/person/example.com/sam, spiffe://example.org/person/example.com/carol]
      count: 1
      on_leave: terminate
  - name: windows
    match: {actions: [read], resources: [db/**]}
    auto_approve:
      within_hours: {from: "00:00", to: "24:00", zone: Europe/Paris}
    pending_ttl: 3600
    access_clock: first_use
`)
	r := rules[0]
	if r.AccessClock != ClockApproval || rules[1].AccessClock != ClockFirstUse {
		t.Fatalf("access clocks %q, %q: want approval by default, first_use as given", r.AccessClock, rules[1].AccessClock)
	}
	if r.MaxTTL != DefaultMaxTTL || r.PendingTTL != DefaultPendingTTL {
		t.Fatalf("defaults: max_ttl %s, pending_ttl %s", r.MaxTTL, r.PendingTTL)
	}
	dc := r.DualControl
	if dc == nil || len(dc.Watchers) != 2 || dc.Count != 1 || dc.OnLeave != OnLeaveTerminate || dc.Heartbeat != DefaultHeartbeat {
		t.Fatalf("dual_control = %+v", dc)
	}
	w := rules[1].AutoApprove.WithinHours
	if w == nil || w.Zone.String() != "Europe/Paris" || w.From != 0 || w.To != 24*60 || w.Days != [7]bool{true, true, true, true, true, true, true} {
		t.Fatalf("window = %+v", w)
	}
	if rules[1].PendingTTL != time.Hour {
		t.Fatalf("pending_ttl 3600 = %s", rules[1].PendingTTL)
	}
	// 23:30 UTC on Sunday is 00:30 on Monday in Paris: inside; the window
	// is judged in its zone.
	if !w.Contains(time.Date(2026, 3, 1, 23, 30, 0, 0, time.UTC)) {
		t.Fatal("window does not contain Monday 00:30 Paris")
	}
}

func TestWindowDaysAndZone(t *testing.T) {
	rules := mustRules(t, `
rules:
  - name: r
    match: {actions: [read], resources: [db/**]}
    deny_if: [{outside_hours: {days: [mon, fri], from: "08:00", to: "18:00"}}]
    require: [{from: [spiffe://example.org/person/**], count: 1}]
`)
	w := rules[0].DenyIf[0].OutsideHours
	for at, in := range map[time.Time]bool{
		t0:                         true,  // Monday 10:00
		t0.Add(-2*time.Hour - 1):   false, // Monday 07:59:59
		t0.Add(8 * time.Hour):      false, // Monday 18:00
		t0.Add(24 * time.Hour):     false, // Tuesday
		t0.Add(4*24*time.Hour + 1): true,  // Friday
	} {
		if w.Contains(at) != in {
			t.Errorf("Contains(%s) = %v, want %v", at, !in, in)
		}
	}
}

func TestParseRulesRefuses(t *testing.T) {
	const head = "rules:\n  - name: r\n    match: {actions: [read], resources: [db/**]}\n"
	const req = "    require: [{from: [spiffe://example.org/person/**], count: 1}]\n"
	for _, tc := range []struct {
		name, src string
		line      int
		want      string
	}{
		{"empty", "", 0, "empty"},
		{"not yaml", "rules: [", 0, "not valid YAML"},
		{"second document", head + req + "---\nrules: []\n", 5, "second YAML document"},
		{"not a mapping", "- a\n", 1, "should be a mapping"},
		{"unknown top key", "rule: []\n", 1, `"rule": unknown key`},
		{"no rules", "rules:\n", 1, "no rules list"},
		{"empty rules", "rules: []\n", 1, "rules: is empty"},
		{"unknown rule key", head + req + "    requires: []\n", 5, `rules[0]."requires": unknown key`},
		{"unknown match key", "rules:\n  - name: r\n    match: {actions: [read], resource: [db/**]}\n" + req, 3, `match."resource": unknown key`},
		{"unknown condition key", head + req + "    deny_if:\n      - {requester_kinds: [agent]}\n", 6, `deny_if[0]."requester_kinds": unknown key`},
		{"unknown window key", head + req + "    deny_if: [{outside_hours: {from: \"08:00\", until: \"18:00\"}}]\n", 5, `"until": unknown key`},
		{"unknown dual key", head + req + "    dual_control: {watchers: [spiffe://example.org/person/**], count: 1, on_leave: pause, hearbeat: 2s}\n", 5, `"hearbeat": unknown key`},
		{"bad access clock", head + req + "    access_clock: first-use\n", 5, `"first-use" is not an access clock; use approval`},
		{"access clock list", head + req + "    access_clock: [first_use]\n", 5, "access_clock"},
		{"odd key is quoted", head + req + "    \"a\\x1bb\": 1\n", 5, `"a\x1bb": unknown key`},
		{"duplicate key", head + req + "    max_ttl: 1h\n    max_ttl: 2h\n", 6, "given twice (first on line 5)"},
		{"no name", "rules:\n  - match: {actions: [read], resources: [db/**]}\n" + req, 2, "has no name"},
		{"bad name", "rules:\n  - name: a b\n    match: {actions: [read], resources: [db/**]}\n" + req, 2, "not allowed"},
		{"duplicate rule name", head + req + head[len("rules:\n"):] + req, 5, "also the name of rules[0] (line 2)"},
		{"no match", "rules:\n  - name: r\n" + req, 2, "has no match"},
		{"no actions", "rules:\n  - name: r\n    match: {resources: [db/**]}\n" + req, 3, "actions: is required"},
		{"no resources", "rules:\n  - name: r\n    match: {actions: [read]}\n" + req, 3, "resources: is required"},
		{"bad action", "rules:\n  - name: r\n    match: {actions: [re/ad], resources: [db/**]}\n" + req, 3, "not allowed"},
		{"repeated action", "rules:\n  - name: r\n    match: {actions: [read, read], resources: [db/**]}\n" + req, 3, "repeats"},
		{"bad resource", "rules:\n  - name: r\n    match: {actions: [read], resources: [db/**/x]}\n" + req, 3, "only as the last segment"},
		{"bad kind", "rules:\n  - name: r\n    match: {actions: [read], resources: [db/**], requester_kind: [robot]}\n" + req, 3, "not an identity kind"},
		{"other trust domain", "rules:\n  - name: r\n    match: {actions: [read], resources: [db/**]}\n    require: [{from: [spiffe://other.org/person/**], count: 1}]\n", 4, `patterns must be in "example.org"`},
		{"bad pattern", "rules:\n  - name: r\n    match: {actions: [read], resources: [db/**]}\n    require: [{from: [spiffe://example.org/person/a*], count: 1}]\n", 4, "mixes '*'"},
		{"neither require nor auto", head, 2, "neither require nor auto_approve"},
		{"auto with require", head + req + "    auto_approve: {}\n", 5, "auto_approve: is given with require (line 4)"},
		{"auto null", head + "    auto_approve:\n", 4, "should be a mapping"},
		{"group without from", head + "    require: [{count: 1}]\n", 4, "from: is required"},
		{"group without count", head + "    require: [{from: [spiffe://example.org/person/**]}]\n", 4, "count: is required"},
		{"zero count", head + "    require: [{from: [spiffe://example.org/person/**], count: 0}]\n", 4, "not a whole number from 1"},
		{"count too big", head + "    require: [{from: [spiffe://example.org/person/**], count: 65}]\n", 4, "not a whole number from 1 to 64"},
		{"count not a number", head + "    require: [{from: [spiffe://example.org/person/**], count: two}]\n", 4, "not a whole number"},
		{"count over literals", head + "    require:\n      - from: [spiffe://example.org/person/x/a, spiffe://example.org/person/x/b]\n        count: 3\n", 6, "names only 2 identities"},
		{"repeated group name", head + "    require: [{name: g, from: [spiffe://example.org/person/**], count: 1}, {name: g, from: [spiffe://example.org/agent/**], count: 1}]\n", 4, "repeats"},
		{"empty deny_if condition", head + req + "    deny_if: [{}]\n", 5, "would deny every request"},
		{"bool not true/false", head + req + "    deny_if: [{acting_for_person: yes}]\n", 5, "not true or false"},
		{"window without to", head + req + "    deny_if: [{outside_hours: {from: \"08:00\"}}]\n", 5, "needs from and to"},
		{"window backwards", head + req + "    deny_if: [{outside_hours: {from: \"18:00\", to: \"08:00\"}}]\n", 5, "never spans midnight"},
		{"bad clock", head + req + "    deny_if: [{outside_hours: {from: \"8am\", to: \"18:00\"}}]\n", 5, "not a time of day"},
		{"bad day", head + req + "    deny_if: [{outside_hours: {days: [monday], from: \"08:00\", to: \"18:00\"}}]\n", 5, "not a day"},
		{"zone traversal", head + req + "    deny_if: [{outside_hours: {from: \"08:00\", to: \"18:00\", zone: ../../etc/passwd}}]\n", 5, "not a time zone name"},
		{"unknown zone", head + req + "    deny_if: [{outside_hours: {from: \"08:00\", to: \"18:00\", zone: Mars/Olympus}}]\n", 5, "not a time zone this server knows"},
		{"local zone", head + req + "    deny_if: [{outside_hours: {from: \"08:00\", to: \"18:00\", zone: Local}}]\n", 5, "server's settings"},
		{"bad ttl", head + req + "    max_ttl: soon\n", 5, "max_ttl"},
		{"ttl over bound", head + req + "    pending_ttl: 800h\n", 5, "longer than the maximum"},
		{"dual without on_leave", head + req + "    dual_control: {watchers: [spiffe://example.org/person/**], count: 1}\n", 5, "on_leave: is required"},
		{"dual bad on_leave", head + req + "    dual_control: {watchers: [spiffe://example.org/person/**], count: 1, on_leave: ignore}\n", 5, "use pause"},
		{"dual bad heartbeat", head + req + "    dual_control: {watchers: [spiffe://example.org/person/**], count: 1, on_leave: pause, heartbeat: 100ms}\n", 5, "whole number of seconds"},
		{"dual count over literals", head + req + "    dual_control: {watchers: [spiffe://example.org/person/x/a], count: 2, on_leave: pause}\n", 5, "names only 1"},
		{"anchor", head + req + "    deny_if: &d [{requester_kind: [agent]}]\n", 5, "anchors and aliases"},
		{"list where a value is", head + req + "    max_ttl: [1h]\n", 5, "should be a single value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rules, err := ParseRules([]byte(tc.src), td)
			if err == nil {
				t.Fatalf("accepted: %+v", rules)
			}
			if rules != nil {
				t.Fatal("returned rules with an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			var re *RulesError
			if tc.line != 0 && (!errors.As(err, &re) || re.Line != tc.line) {
				t.Fatalf("err = %v, want line %d", err, tc.line)
			}
			checkMessage(t, err)
		})
	}
}

func TestParseRulesBounds(t *testing.T) {
	big := "rules:\n" + strings.Repeat("# padding\n", MaxRulesFileSize/10+1)
	if _, err := ParseRules([]byte(big), td); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("oversized file: %v", err)
	}
	var b strings.Builder
	b.WriteString("rules:\n")
	for range MaxRules + 1 {
		b.WriteString("  - {name: r, match: {actions: [read], resources: [db]}, auto_approve: {}}\n")
	}
	if _, err := ParseRules([]byte(b.String()), td); err == nil || !strings.Contains(err.Error(), "at most 256") {
		t.Fatalf("too many rules: %v", err)
	}
	if _, err := ParseRules([]byte(scenarioRules), spiffeid.TrustDomain{}); err == nil || !strings.Contains(err.Error(), "no trust domain") {
		t.Fatalf("no trust domain: %v", err)
	}
}

// checkMessage checks what every refusal must look like: one printable
// line of bounded length, whatever the file held.
func checkMessage(t *testing.T, err error) {
	t.Helper()
	msg := err.Error()
	if !utf8.ValidString(msg) {
		t.Fatalf("message is not valid UTF-8: %q", msg)
	}
	for _, r := range msg {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			t.Fatalf("message holds control character %U: %q", r, msg)
		}
	}
	if len(msg) > 2048 {
		t.Fatalf("message is %d bytes: %q", len(msg), msg)
	}
}

func FuzzParseRules(f *testing.F) {
	f.Add([]byte(scenarioRules))
	f.Add([]byte("rules:\n  - name: r\n    match: {actions: [read], resources: [db/**]}\n    auto_approve: {within_hours: {days: [mon], from: \"08:00\", to: \"18:00\", zone: UTC}}\n"))
	f.Add([]byte("rules: [{name: a, match: {actions: ['*'], resources: [x]}, require: [{from: [spiffe://example.org/a], count: 1}], dual_control: {watchers: [spiffe://example.org/b/**], count: 1, on_leave: pause, heartbeat: 2s}}]"))
	f.Add([]byte("rules: [{name: a, match: {actions: [read], resources: [x/**]}, auto_approve: {}, access_clock: first_use, pending_ttl: 2h}]"))
	f.Add([]byte("rules: &a [*a]"))
	f.Add([]byte("rules:\n  - {name: r, deny_if: [{ttl_over: 1h, acting_for_person: false}]}\n"))
	f.Add([]byte("\xff: \x1b"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rules, err := ParseRules(data, td)
		if err != nil {
			if rules != nil {
				t.Fatal("returned rules with an error")
			}
			checkMessage(t, err)
			return
		}
		if len(rules) == 0 || len(rules) > MaxRules {
			t.Fatalf("%d rules accepted", len(rules))
		}
		names := map[string]bool{}
		for _, r := range rules {
			if names[r.Name] {
				t.Fatalf("duplicate name %q accepted", r.Name)
			}
			names[r.Name] = true
			if (r.AutoApprove == nil) == (len(r.Require) == 0) {
				t.Fatalf("rule %q: require and auto_approve are not exclusive", r.Name)
			}
			if len(r.Actions) == 0 || len(r.Resources) == 0 {
				t.Fatalf("rule %q matches nothing", r.Name)
			}
			if r.MaxTTL <= 0 || r.MaxTTL > MaxMaxTTL || r.PendingTTL <= 0 || r.PendingTTL > MaxPendingTTL {
				t.Fatalf("rule %q: ttls %s %s", r.Name, r.MaxTTL, r.PendingTTL)
			}
			for _, g := range r.Require {
				if g.Count < 1 || g.Count > MaxCount || len(g.From) == 0 {
					t.Fatalf("rule %q: group %+v", r.Name, g)
				}
				for _, p := range g.From {
					if p.TrustDomain() != td {
						t.Fatalf("pattern %s outside the trust domain", p)
					}
				}
			}
			if dc := r.DualControl; dc != nil && (dc.Count < 1 || len(dc.Watchers) == 0 || (dc.OnLeave != OnLeavePause && dc.OnLeave != OnLeaveTerminate) || dc.Heartbeat < MinHeartbeat) {
				t.Fatalf("rule %q: dual control %+v", r.Name, dc)
			}
			// Evaluating a request under any accepted rule must not panic.
			req := &Request{Kind: KindJoin, Task: "T", Chain: chain(aliceHelper, alice), Reason: "x", Asks: []Ask{{Action: "read", Resource: r.Resources[0]}}, CreatedAt: t0}
			req.State, req.TTL, req.PendingUntil = StatePending, r.MaxTTL, t0.Add(r.PendingTTL)
			Evaluate(&r, req, []Review{approve(chain(bob)), deny(chain(carol))}, t0)
			// A rule's own first resource is covered by the rule, so
			// selection finds this rule or an earlier one.
			if req.Asks[0].Action = "read"; slices.Contains(r.Actions, "read") || slices.Contains(r.Actions, "*") {
				if _, err := Select(rules, req, req.Asks, t0); err != nil && r.AutoApprove == nil && len(r.RequesterKinds) == 0 && len(r.Requesters) == 0 {
					t.Fatalf("rule %q does not cover its own resource %s: %v", r.Name, r.Resources[0], err)
				}
			}
		}
	})
}

// The example in the package documentation is a valid rules file.
func TestDocExampleParses(t *testing.T) {
	src, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	var example []string
	in := false
	for _, line := range strings.Split(string(src), "\n") {
		switch {
		case line == "//\trules:":
			in = true
		case in && !strings.HasPrefix(line, "//\t"):
			in = false
		}
		if in {
			example = append(example, strings.TrimPrefix(line, "//\t"))
		}
	}
	if len(example) < 10 {
		t.Fatalf("found %d lines of example in doc.go", len(example))
	}
	rules := mustRules(t, strings.Join(example, "\n"))
	if len(rules) != 2 || rules[1].DualControl == nil || len(rules[1].DenyIf) != 2 {
		t.Fatalf("doc example parsed to %+v", rules)
	}
}
