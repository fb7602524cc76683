package guardrail

import (
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const forbidPolicies = `
@id("agent-prod-write-needs-person")
forbid(principal, action == writ::Action::"write", resource in writ::Resource::"db/prod")
when { principal.kind == "agent" && !context.person_in_chain };

@id("no-night-deploys")
forbid(principal, action == writ::Action::"deploy", resource)
when { context.hour < 6 || context.hour >= 22 };

@id("no-weekend-deploys")
forbid(principal, action == writ::Action::"deploy", resource)
when { context.weekday == "sat" || context.weekday == "sun" };

@id("prod-from-office-only")
forbid(principal, action, resource in writ::Resource::"db/prod")
when { context has source_ip && !context.source_ip.isInRange(ip("10.0.0.0/8")) };

@id("unattested-nodes-no-secrets")
forbid(principal, action == writ::Action::"read", resource in writ::Resource::"secrets")
when { principal.kind == "node" && !(context.facts has tpm && context.facts.tpm == "verified") };

@id("no-deploy-grants-to-workloads-on-prod")
forbid(principal, action == writ::Action::"deploy", resource in writ::Resource::"prod")
when { context.granting && principal.kind == "workload" };

@id("freeze-until-2026")
forbid(principal, action == writ::Action::"delete", resource)
when { context.time < datetime("2026-01-01") };
`

var (
	agent    = spiffeid.RequireFromString("spiffe://example.org/agent/claude")
	person   = spiffeid.RequireFromString("spiffe://example.org/person/ada")
	node     = spiffeid.RequireFromString("spiffe://example.org/node/n1")
	workload = spiffeid.RequireFromString("spiffe://example.org/billing/api")
	// tuesdayNoon is a working hour on a working day.
	tuesdayNoon = time.Date(2025, 6, 10, 12, 0, 0, 0, time.UTC)
)

func load(t testing.TB, files map[string]string) *Set {
	t.Helper()
	b := make(map[string][]byte, len(files))
	for k, v := range files {
		b[k] = []byte(v)
	}
	s, err := Load(b)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return s
}

func req(p spiffeid.ID, action, resource string, chain ...spiffeid.ID) Request {
	return Request{
		Principal: p, Action: action, Resource: resource,
		Context: Context{Time: tuesdayNoon, SourceAddress: "10.1.2.3", Chain: chain},
	}
}

func TestForbids(t *testing.T) {
	s := load(t, map[string]string{"forbid.cedar": forbidPolicies})
	if s.Len() != 7 {
		t.Fatalf("Len = %d, want 7", s.Len())
	}
	at := func(r Request, when time.Time) Request { r.Context.Time = when; return r }
	from := func(r Request, addr string) Request { r.Context.SourceAddress = addr; return r }
	facts := func(r Request, f map[string]string) Request { r.Context.Facts = f; return r }
	granting := func(r Request) Request { r.Context.Granting = true; return r }
	tests := []struct {
		name   string
		r      Request
		policy string // "" when allowed
	}{
		{"agent alone writes prod", req(agent, "write", "db/prod/payments", agent), "agent-prod-write-needs-person"},
		{"agent writes prod root", req(agent, "write", "db/prod", agent), "agent-prod-write-needs-person"},
		{"agent with person writes prod", req(agent, "write", "db/prod/payments", person, agent), ""},
		{"agent writes staging", req(agent, "write", "db/staging/payments", agent), ""},
		{"prefix is not a parent", req(agent, "write", "db/production", agent), ""},
		{"agent reads prod", req(agent, "read", "db/prod/payments", agent), ""},
		{"person writes prod", req(person, "write", "db/prod/payments", person), ""},
		{"deploy at 3am", at(req(person, "deploy", "svc/api"), tuesdayNoon.Add(-9*time.Hour)), "no-night-deploys"},
		{"deploy at noon", req(person, "deploy", "svc/api"), ""},
		{"deploy on saturday", at(req(person, "deploy", "svc/api"), tuesdayNoon.AddDate(0, 0, 4)), "no-weekend-deploys"},
		{"prod from outside", from(req(person, "read", "db/prod/x"), "203.0.113.9"), "prod-from-office-only"},
		{"prod from outside with port", from(req(person, "read", "db/prod/x"), "203.0.113.9:443"), "prod-from-office-only"},
		{"prod from office with port", from(req(person, "read", "db/prod/x"), "10.9.9.9:443"), ""},
		{"prod without source", from(req(person, "read", "db/prod/x"), "not an address"), ""},
		{"unattested node reads secrets", req(node, "read", "secrets/db"), "unattested-nodes-no-secrets"},
		{"attested node reads secrets", facts(req(node, "read", "secrets/db"), map[string]string{"tpm": "verified"}), ""},
		{"grant deploy on prod to workload", granting(req(workload, "deploy", "prod/api")), "no-deploy-grants-to-workloads-on-prod"},
		{"workload uses deploy on prod", req(workload, "deploy", "prod/api"), ""},
		{"grant deploy on prod to person", granting(req(person, "deploy", "prod/api")), ""},
		{"delete during freeze", req(person, "delete", "svc/api"), "freeze-until-2026"},
		{"delete after freeze", at(req(person, "delete", "svc/api"), time.Date(2026, 3, 3, 12, 0, 0, 0, time.UTC)), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := s.Decide(tt.r)
			if len(d.Errors) > 0 {
				t.Fatalf("errors: %v", d.Errors)
			}
			if tt.policy == "" {
				if !d.Allowed || d.Forbidden || d.Policies != nil {
					t.Fatalf("got %+v, want allowed by a forbid-only set", d)
				}
				return
			}
			if d.Allowed || !d.Forbidden || !slices.Equal(d.Policies, []string{tt.policy}) {
				t.Fatalf("got %+v, want forbidden by %q", d, tt.policy)
			}
		})
	}
}

func TestPermitPresentDeniesUnmatched(t *testing.T) {
	s := load(t, map[string]string{
		"permit.cedar": `
@id("read-reports")
permit(principal, action == writ::Action::"read", resource in writ::Resource::"reports");
@id("no-agent-reads-hr-reports")
forbid(principal, action, resource in writ::Resource::"reports/hr") when { principal.kind == "agent" };`,
	})
	tests := []struct {
		name                          string
		r                             Request
		allowed, permitted, forbidden bool
		policies                      []string
	}{
		{"permit matches", req(agent, "read", "reports/q3"), true, true, false, []string{"read-reports"}},
		{"no permit matches", req(agent, "write", "reports/q3"), false, false, false, nil},
		{"outside the hierarchy", req(agent, "read", "reportsx"), false, false, false, nil},
		{"forbid beats permit", req(agent, "read", "reports/hr/salaries"), false, true, true, []string{"no-agent-reads-hr-reports"}},
		{"forbid does not apply", req(person, "read", "reports/hr/salaries"), true, true, false, []string{"read-reports"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := s.Decide(tt.r)
			if d.Allowed != tt.allowed || d.Permitted != tt.permitted || d.Forbidden != tt.forbidden || !slices.Equal(d.Policies, tt.policies) {
				t.Fatalf("got %+v", d)
			}
		})
	}
}

func TestEmptySetAllows(t *testing.T) {
	s := load(t, nil)
	if d := s.Decide(req(agent, "write", "db/prod")); !d.Allowed {
		t.Fatalf("empty set: got %+v, want allowed", d)
	}
}

func TestPermitMatchingNothingStillDenies(t *testing.T) {
	s := load(t, map[string]string{"p.cedar": `@id("nothing") permit(principal, action in [], resource);`})
	if d := s.Decide(req(agent, "read", "x")); d.Allowed {
		t.Fatalf("got %+v, want denied: a set with a permit policy is default-deny", d)
	}
}

func TestEvaluationErrorsAreReported(t *testing.T) {
	s := load(t, map[string]string{"e.cedar": `@id("bad-ip") forbid(principal, action, resource) when { context.source_ip.isInRange(ip("10.0.0.0/8")) };`})
	r := req(person, "read", "x")
	r.Context.SourceAddress = ""
	d := s.Decide(r)
	if !d.Allowed || len(d.Errors) != 1 {
		t.Fatalf("got %+v, want allowed with one error (Cedar skips policies that fail)", d)
	}
	if want := `policy "bad-ip" at e.cedar:1:`; len(d.Errors[0]) < len(want) || d.Errors[0][:len(want)] != want {
		t.Fatalf("error %q does not start with %q", d.Errors[0], want)
	}
}

func TestZeroTimeMeansNow(t *testing.T) {
	s := load(t, map[string]string{"t.cedar": `@id("past") forbid(principal, action, resource) when { context.time > datetime("2020-01-01") };`})
	if d := s.Decide(Request{Principal: person, Action: "read", Resource: "x"}); !d.Forbidden {
		t.Fatalf("got %+v, want the zero time to be taken as now", d)
	}
}

func TestConcurrentDecide(t *testing.T) {
	s := load(t, map[string]string{"forbid.cedar": forbidPolicies})
	done := make(chan bool)
	for range 4 {
		go func() {
			for range 100 {
				if d := s.Decide(req(agent, "write", "db/prod/payments", agent)); !d.Forbidden {
					t.Errorf("got %+v, want forbidden", d)
				}
			}
			done <- true
		}()
	}
	for range 4 {
		<-done
	}
}
