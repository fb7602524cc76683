package guardrail

import (
	"strings"
	"testing"
)

const argumentPolicies = `
@id("no-issues-on-prod")
forbid(principal, action == writ::Action::"call", resource == writ::Resource::"mcp/github/tool/create_issue")
when { context has arguments && context.arguments has repo && context.arguments.repo == "acme/prod" };

@id("small-batches")
forbid(principal, action, resource)
when { context has arguments && context.arguments has limit && context.arguments.limit > 100 };

@id("no-force")
forbid(principal, action, resource)
when { context has arguments && context.arguments has opts && context.arguments.opts has force && context.arguments.opts.force };

@id("no-admin-label")
forbid(principal, action, resource)
when { context has arguments && context.arguments has labels && context.arguments.labels.contains("admin") };

@id("low-ratio")
forbid(principal, action, resource)
when { context has arguments && context.arguments has ratio && context.arguments.ratio.greaterThan(decimal("0.5")) };
`

func TestArgumentsInContext(t *testing.T) {
	s := load(t, map[string]string{"args.cedar": argumentPolicies})
	decide := func(args string) Decision {
		t.Helper()
		r := req(agent, "call", "mcp/github/tool/create_issue", agent, person)
		if args != "" {
			a, err := ParseArguments([]byte(args))
			if err != nil {
				t.Fatalf("ParseArguments(%s): %v", args, err)
			}
			r.Context.Arguments = a
		}
		return s.Decide(r)
	}
	for _, tc := range []struct {
		args   string
		forbid string
	}{
		{``, ""},
		{`{}`, ""},
		{`{"repo":"acme/dev","title":"x"}`, ""},
		{`{"repo":"acme/prod","title":"x"}`, "no-issues-on-prod"},
		{`{"repo":null}`, ""},
		{`{"limit":100}`, ""},
		{`{"limit":101}`, "small-batches"},
		{`{"limit":1.01e2}`, "small-batches"},
		{`{"opts":{"force":false}}`, ""},
		{`{"opts":{"force":true}}`, "no-force"},
		{`{"labels":["bug","admin"]}`, "no-admin-label"},
		{`{"labels":["bug",{"a":[1,2.5]}]}`, ""},
		{`{"ratio":0.25}`, ""},
		{`{"ratio":0.75}`, "low-ratio"},
	} {
		d := decide(tc.args)
		if tc.forbid == "" {
			if !d.Allowed || len(d.Errors) > 0 {
				t.Errorf("%s: %+v, want allowed without errors", tc.args, d)
			}
			continue
		}
		if d.Allowed || len(d.Policies) != 1 || d.Policies[0] != tc.forbid {
			t.Errorf("%s: %+v, want forbidden by %s", tc.args, d, tc.forbid)
		}
	}
}

func TestParseArgumentsRefuses(t *testing.T) {
	deep := strings.Repeat(`{"a":`, MaxArgumentsDepth) + `1` + strings.Repeat(`}`, MaxArgumentsDepth)
	if _, err := ParseArguments([]byte(deep)); err != nil {
		t.Fatalf("%d levels: %v", MaxArgumentsDepth, err)
	}
	tooDeep := strings.Repeat(`{"a":`, MaxArgumentsDepth+1) + `1` + strings.Repeat(`}`, MaxArgumentsDepth+1)
	big := `{"a":"` + strings.Repeat("x", MaxArgumentsBytes) + `"}`
	long := strings.Repeat("k", 500)
	for _, tc := range []struct{ in, want string }{
		{``, "not JSON"},
		{`[1]`, "want a JSON object"},
		{`"s"`, "want a JSON object"},
		{`{"a":1`, "not JSON"},
		{`{"a":1}{}`, "text follows"},
		{`{"a":1,"a":2}`, `arguments."a": the key is given twice`},
		{`{"a":null,"a":"x"}`, "given twice"},
		{tooDeep, "nested more than 16 levels"},
		{`{"a":[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}`, "nested more than"},
		{big, "more than the 65536 allowed"},
		{`{"n":1e400}`, "Cedar cannot hold it"},
		{`{"n":0.123456}`, "send it as a string"},
		{`{"` + long + `":1e400}`, "Cedar cannot hold it"},
	} {
		_, err := ParseArguments([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%.40q: %v, want an error saying %q", tc.in, err, tc.want)
			continue
		}
		if len(err.Error()) > 300 {
			t.Errorf("%.40q: the error is %d bytes long: it repeats the input", tc.in, len(err.Error()))
		}
	}
}

func FuzzParseArguments(f *testing.F) {
	s := load(f, map[string]string{"args.cedar": argumentPolicies})
	for _, seed := range []string{`{}`, `{"repo":"acme/prod"}`, `{"a":[1,2.5,{"b":null}],"c":true}`, `{"a":1,"a":2}`, `{"n":-0.0001}`, `{"n":1E3}`, `[`, `{"\u00ff":"\ud800"}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ParseArguments(data)
		if err != nil {
			if a.IsSet() {
				t.Fatal("arguments set beside an error")
			}
			if len(err.Error()) > 400 {
				t.Fatalf("an error of %d bytes repeats the input: %.80q", len(err.Error()), err)
			}
			return
		}
		if !a.IsSet() {
			t.Fatal("parsed arguments are not set")
		}
		r := req(agent, "call", "mcp/github/tool/create_issue", agent)
		r.Context.Arguments = a
		if d := s.Decide(r); d.Allowed && d.Forbidden {
			t.Fatalf("%+v: allowed and forbidden at once", d)
		}
	})
}
