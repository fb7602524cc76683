package guardrail

import (
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"testing"
)

func FuzzLoad(f *testing.F) {
	f.Add(forbidPolicies)
	f.Add(`@id("a") permit(principal, action in [writ::Action::"a"], resource == writ::Resource::"x/y");`)
	f.Add(`@id("a") forbid(principal is writ::Identity in writ::Identity::"i", action, resource is writ::Resource in writ::Resource::"r") unless { context.facts.x like "a*" };`)
	f.Add("forbid(principal, action, resource")
	f.Add(`@id("a") forbid(principal, action, resource); @id("a") forbid(principal, action, resource);`)
	f.Fuzz(func(t *testing.T, text string) {
		s, err := Load(map[string][]byte{"fuzz.cedar": []byte(text)})
		if err != nil {
			if s != nil || !strings.HasPrefix(err.Error(), "guardrail: ") {
				t.Fatalf("Load: set %v, error %q: want a nil set and a guardrail error", s, err)
			}
			return
		}
		s.Decide(req(agent, "write", "db/prod/payments", person, agent))
	})
}

func FuzzDecide(f *testing.F) {
	s := load(f, map[string]string{
		"forbid.cedar": forbidPolicies,
		"permit.cedar": `@id("read-reports") permit(principal, action == writ::Action::"read", resource in writ::Resource::"reports");`,
	})
	f.Add("write", "db/prod/payments", "10.0.0.1", "tpm", "verified", "spiffe://example.org/agent/a")
	f.Add("", "", "", "", "", "")
	f.Add("read", "//a//b/", "::ffff:10.0.0.1", "x", "", "spiffe://example.org/person/a")
	f.Add("deploy", "prod/", "[fe80::1%eth0]:80", "", "", "spiffe://td/writ/agent/n")
	f.Fuzz(func(t *testing.T, action, resource, addr, factKey, factValue, principal string) {
		r := req(agent, action, resource, person)
		r.Context.SourceAddress = addr
		r.Context.Facts = map[string]string{factKey: factValue}
		if id, err := spiffeid.FromString(principal); err == nil {
			r.Principal = id
			r.Context.Chain = append(r.Context.Chain, id)
		}
		d := s.Decide(r)
		if d.Allowed && d.Forbidden {
			t.Fatalf("%+v: allowed and forbidden at once", d)
		}
	})
}
