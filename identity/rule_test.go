package identity

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	testTD     = spiffeid.RequireTrustDomainFromString("example.org")
	testAgent  = spiffeid.RequireFromString("spiffe://example.org/writ/agent/join/n1")
	testLimits = Limits{MaxX509TTL: 24 * time.Hour, MaxJWTTTL: time.Hour}
)

func validRule() Rule {
	return Rule{
		ID:        "rule-1",
		SPIFFEID:  spiffeid.RequireFromString("spiffe://example.org/service/web"),
		ParentID:  testAgent,
		Selectors: []Selector{{"unix", "uid:1000"}, {"k8s", "ns:web"}},
		X509TTL:   time.Hour,
		JWTTTL:    5 * time.Minute,
		DNSNames:  []string{"web.example.org", "*.Web.Example.org"},
		Hint:      "internal",
		ExpiresAt: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
		CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
	}
}

func TestValidateNormalizes(t *testing.T) {
	r := validRule()
	callerSelectors := r.Selectors
	callerNames := r.DNSNames
	if err := r.Validate(testTD, testLimits); err != nil {
		t.Fatal(err)
	}
	if want := []Selector{{"k8s", "ns:web"}, {"unix", "uid:1000"}}; !slices.Equal(r.Selectors, want) {
		t.Errorf("selectors = %v, want %v", r.Selectors, want)
	}
	if want := []string{"*.web.example.org", "web.example.org"}; !slices.Equal(r.DNSNames, want) {
		t.Errorf("dns names = %v, want %v", r.DNSNames, want)
	}
	if callerSelectors[0] != (Selector{"unix", "uid:1000"}) || callerNames[1] != "*.Web.Example.org" {
		t.Error("Validate reordered or rewrote the caller's slices")
	}

	// Canonical form is a fixed point.
	again := r
	if err := again.Validate(testTD, testLimits); err != nil || !reflect.DeepEqual(again, r) {
		t.Errorf("second Validate = %v, changed %v to %v", err, r, again)
	}
}

func TestValidateMinimalRule(t *testing.T) {
	r := Rule{
		SPIFFEID:  spiffeid.RequireFromString("spiffe://example.org/desktop/alice"),
		ParentID:  spiffeid.RequireFromString("spiffe://example.org/node/laptop-7"),
		Selectors: []Selector{{"unix", "uid:1000"}},
	}
	if err := r.Validate(testTD, Limits{}); err != nil {
		t.Fatal(err)
	}
	if r.DNSNames != nil {
		t.Errorf("dns names = %#v, want nil", r.DNSNames)
	}
}

func TestValidateAcceptsEdges(t *testing.T) {
	for name, edit := range map[string]func(*Rule){
		"ttls exactly at the limits": func(r *Rule) { r.X509TTL, r.JWTTTL = 24*time.Hour, time.Hour },
		"zero ttls":                  func(r *Rule) { r.X509TTL, r.JWTTTL = 0, 0 },
		"64 selectors":               func(r *Rule) { r.Selectors = manySelectors(MaxSelectorsPerRule) },
		"32 dns names":               func(r *Rule) { r.DNSNames = manyNames(MaxDNSNamesPerRule) },
		"no id":                      func(r *Rule) { r.ID = "" },
		"id of 128":                  func(r *Rule) { r.ID = strings.Repeat("A", MaxRuleIDLen) },
		"id with dots":               func(r *Rule) { r.ID = "a.b_c-D.9" },
		"hint of 128 runes":          func(r *Rule) { r.Hint = strings.Repeat("é", MaxHintLen) },
		"empty hint":                 func(r *Rule) { r.Hint = "" },
		"never expires":              func(r *Rule) { r.ExpiresAt = time.Time{} },
		"no created_at":              func(r *Rule) { r.CreatedAt, r.ExpiresAt = time.Time{}, time.Unix(1, 0) },
		"parent is trust domain":     func(r *Rule) { r.ParentID = testTD.ID() },
		"253-character dns name":     func(r *Rule) { r.DNSNames = []string{dnsNameOfLen(253)} },
		"single-label dns name":      func(r *Rule) { r.DNSNames = []string{"localhost"} },
		"63-character label":         func(r *Rule) { r.DNSNames = []string{strings.Repeat("a", 63) + ".org"} },
		"digits and hyphens":         func(r *Rule) { r.DNSNames = []string{"1-a.b2.xn--p1ai"} },
		"writ-prefixed spiffe_id":    func(r *Rule) { r.SPIFFEID = spiffeid.RequireFromString("spiffe://example.org/writer/x") },
		"selector value with ':'":    func(r *Rule) { r.Selectors = []Selector{{"unix", "path:/a:b"}} },
		"selectors of one type":      func(r *Rule) { r.Selectors = []Selector{{"unix", "uid:1"}, {"unix", "gid:1"}} },
		"selector value with utf8":   func(r *Rule) { r.Selectors = []Selector{{"k8s", "label:team:π"}} },
	} {
		r := validRule()
		edit(&r)
		if err := r.Validate(testTD, testLimits); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	r := validRule()
	r.X509TTL, r.JWTTTL = 1000*time.Hour, 1000*time.Hour
	if err := r.Validate(testTD, Limits{}); err != nil {
		t.Errorf("zero limits cap nothing: %v", err)
	}
}

func TestValidateErrors(t *testing.T) {
	other := spiffeid.RequireFromString("spiffe://other.org/service/web")
	tests := []struct {
		name  string
		edit  func(*Rule)
		field string
		want  []string
	}{
		{"id too long", func(r *Rule) { r.ID = strings.Repeat("a", MaxRuleIDLen+1) }, "id", []string{"129 bytes"}},
		{"id bad char", func(r *Rule) { r.ID = "rule/1" }, "id", []string{"'/'", "letters, digits"}},
		{"id space", func(r *Rule) { r.ID = "rule 1" }, "id", []string{"' '"}},
		{"id dot", func(r *Rule) { r.ID = "." }, "id", []string{`"."`}},
		{"id dotdot", func(r *Rule) { r.ID = ".." }, "id", []string{`".."`}},

		{"spiffe_id missing", func(r *Rule) { r.SPIFFEID = spiffeid.ID{} }, "spiffe_id", []string{"required"}},
		{"spiffe_id other td", func(r *Rule) { r.SPIFFEID = other }, "spiffe_id", []string{`"other.org"`, `"example.org"`}},
		{"spiffe_id no path", func(r *Rule) { r.SPIFFEID = testTD.ID() }, "spiffe_id", []string{"no path"}},
		{"spiffe_id too long", func(r *Rule) { r.SPIFFEID = longID() }, "spiffe_id", []string{"at most 2048"}},
		{"spiffe_id reserved", func(r *Rule) {
			r.SPIFFEID = spiffeid.RequireFromString("spiffe://example.org/writ/agent/x")
		}, "spiffe_id", []string{"reserved"}},
		{"spiffe_id of a person", func(r *Rule) {
			r.SPIFFEID = spiffeid.RequireFromString("spiffe://example.org/person/example.com/erin")
		}, "spiffe_id", []string{"reserved", "/person/", "sign"}},
		{"spiffe_id of a server", func(r *Rule) {
			r.SPIFFEID = spiffeid.RequireFromString("spiffe://example.org/writ/server/s1")
		}, "spiffe_id", []string{"reserved", "/writ/"}},
		{"spiffe_id reserved root", func(r *Rule) {
			r.SPIFFEID = spiffeid.RequireFromString("spiffe://example.org/writ")
		}, "spiffe_id", []string{"reserved"}},

		{"parent_id missing", func(r *Rule) { r.ParentID = spiffeid.ID{} }, "parent_id", []string{"required"}},
		{"parent_id other td", func(r *Rule) { r.ParentID = other }, "parent_id", []string{`"other.org"`}},
		{"parent_id too long", func(r *Rule) { r.ParentID = longID() }, "parent_id", []string{"at most 2048"}},
		{"parent is self", func(r *Rule) { r.ParentID = r.SPIFFEID }, "parent_id", []string{"spiffe_id"}},
		{"neither parent_id nor parent_selectors", func(r *Rule) { r.ParentID, r.ParentSelectors = spiffeid.ID{}, nil }, "parent_id", []string{"required unless parent_selectors"}},
		{"bad parent selector", func(r *Rule) {
			r.ParentSelectors = []Selector{{"github", "repository:acme/api"}, {"GitHub", "ref:x"}}
		}, "parent_selectors[1]", []string{"lowercase"}},
		{"duplicate parent selector", func(r *Rule) {
			r.ParentSelectors = []Selector{{"github", "repository:acme/api"}, {"github", "repository:acme/api"}}
		}, "parent_selectors[1]", []string{"parent_selectors[0]"}},
		{"too many parent selectors", func(r *Rule) { r.ParentSelectors = manySelectors(MaxSelectorsPerRule + 1) }, "parent_selectors", []string{"at most 64"}},

		{"no selectors", func(r *Rule) { r.Selectors = nil }, "selectors", []string{"at least one"}},
		{"too many selectors", func(r *Rule) { r.Selectors = manySelectors(MaxSelectorsPerRule + 1) }, "selectors", []string{"65 selectors", "at most 64"}},
		{"bad selector type", func(r *Rule) { r.Selectors[1] = Selector{"K8S", "ns:web"} }, "selectors[1]", []string{"lowercase"}},
		{"empty selector type", func(r *Rule) { r.Selectors[0] = Selector{"", "uid:1"} }, "selectors[0]", []string{"type"}},
		{"empty selector value", func(r *Rule) { r.Selectors[1] = Selector{"k8s", ""} }, "selectors[1]", []string{"value", "empty"}},
		{"control in selector", func(r *Rule) { r.Selectors = append(r.Selectors, Selector{"k8s", "a\x1bb"}) }, "selectors[2]", []string{"control"}},
		{"duplicate selector", func(r *Rule) { r.Selectors = append(r.Selectors, Selector{"unix", "uid:1000"}) }, "selectors[2]", []string{"selectors[0]"}},

		{"x509_ttl negative", func(r *Rule) { r.X509TTL = -time.Second }, "x509_ttl", []string{"negative", "0 for the server default"}},
		{"x509_ttl fraction", func(r *Rule) { r.X509TTL = 1500 * time.Millisecond }, "x509_ttl", []string{"whole number of seconds"}},
		{"x509_ttl over limit", func(r *Rule) { r.X509TTL = 25 * time.Hour }, "x509_ttl", []string{"25h", "maximum 24h"}},
		{"jwt_ttl negative", func(r *Rule) { r.JWTTTL = -time.Minute }, "jwt_ttl", []string{"negative"}},
		{"jwt_ttl fraction", func(r *Rule) { r.JWTTTL = time.Nanosecond }, "jwt_ttl", []string{"whole number of seconds"}},
		{"jwt_ttl over limit", func(r *Rule) { r.JWTTTL = time.Hour + time.Second }, "jwt_ttl", []string{"maximum 1h"}},

		{"too many dns names", func(r *Rule) { r.DNSNames = manyNames(MaxDNSNamesPerRule + 1) }, "dns_names", []string{"33 names"}},
		{"empty dns name", func(r *Rule) { r.DNSNames = []string{""} }, "dns_names[0]", []string{"empty"}},
		{"dns name space", func(r *Rule) { r.DNSNames = []string{"a.org", " b.org"} }, "dns_names[1]", []string{"whitespace"}},
		{"dns name underscore", func(r *Rule) { r.DNSNames = []string{"a_b.org"} }, "dns_names[0]", []string{"'_'"}},
		{"dns name non-ascii", func(r *Rule) { r.DNSNames = []string{"café.org"} }, "dns_names[0]", []string{"xn--"}},
		{"dns name ipv4", func(r *Rule) { r.DNSNames = []string{"10.0.0.1"} }, "dns_names[0]", []string{"IP address"}},
		{"dns name ipv6", func(r *Rule) { r.DNSNames = []string{"::1"} }, "dns_names[0]", []string{"IP address"}},
		{"dns name numeric tld", func(r *Rule) { r.DNSNames = []string{"a.123"} }, "dns_names[0]", []string{"all-digit"}},
		{"dns name trailing dot", func(r *Rule) { r.DNSNames = []string{"a.org."} }, "dns_names[0]", []string{"trailing dot"}},
		{"dns name empty label", func(r *Rule) { r.DNSNames = []string{"a..org"} }, "dns_names[0]", []string{"empty label"}},
		{"dns name leading dot", func(r *Rule) { r.DNSNames = []string{".a.org"} }, "dns_names[0]", []string{"empty label"}},
		{"dns name leading hyphen", func(r *Rule) { r.DNSNames = []string{"-a.org"} }, "dns_names[0]", []string{`"-a"`}},
		{"dns name trailing hyphen", func(r *Rule) { r.DNSNames = []string{"a-.org"} }, "dns_names[0]", []string{`"a-"`}},
		{"dns label too long", func(r *Rule) { r.DNSNames = []string{strings.Repeat("a", 64) + ".org"} }, "dns_names[0]", []string{"64 characters"}},
		{"dns name too long", func(r *Rule) { r.DNSNames = []string{dnsNameOfLen(254)} }, "dns_names[0]", []string{"254 characters"}},
		{"bare wildcard", func(r *Rule) { r.DNSNames = []string{"*"} }, "dns_names[0]", []string{"only a wildcard"}},
		{"inner wildcard", func(r *Rule) { r.DNSNames = []string{"a.*.org"} }, "dns_names[0]", []string{"whole first label"}},
		{"partial wildcard", func(r *Rule) { r.DNSNames = []string{"w*.org"} }, "dns_names[0]", []string{"whole first label"}},
		{"double wildcard", func(r *Rule) { r.DNSNames = []string{"*.*.org"} }, "dns_names[0]", []string{"whole first label"}},
		{"duplicate dns name", func(r *Rule) { r.DNSNames = []string{"a.org", "b.org", "A.ORG"} }, "dns_names[2]", []string{"dns_names[0]", "case-insensitive"}},

		{"hint too long", func(r *Rule) { r.Hint = strings.Repeat("h", MaxHintLen+1) }, "hint", []string{"129 characters"}},
		{"hint newline", func(r *Rule) { r.Hint = "a\nb" }, "hint", []string{"unprintable", `'\n'`}},
		{"hint tab", func(r *Rule) { r.Hint = "a\tb" }, "hint", []string{"unprintable"}},
		{"hint bidi control", func(r *Rule) { r.Hint = "a\u202eb" }, "hint", []string{"unprintable"}},
		{"hint invalid utf8", func(r *Rule) { r.Hint = "a\xffb" }, "hint", []string{"UTF-8"}},

		{"expires before 1970", func(r *Rule) { r.CreatedAt, r.ExpiresAt = time.Time{}, time.Unix(-1, 0) }, "expires_at", []string{"out of range"}},
		{"expires after 9999", func(r *Rule) { r.ExpiresAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, "expires_at", []string{"out of range"}},
		{"expires before created", func(r *Rule) { r.ExpiresAt = r.CreatedAt.Add(-time.Hour) }, "expires_at", []string{"not after", "creation"}},
		{"expires at created", func(r *Rule) { r.ExpiresAt = r.CreatedAt }, "expires_at", []string{"not after"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := validRule()
			tc.edit(&r)
			before := r
			before.Selectors = slices.Clone(r.Selectors)
			before.DNSNames = slices.Clone(r.DNSNames)
			before.ParentSelectors = slices.Clone(r.ParentSelectors)
			err := r.Validate(testTD, testLimits)
			if err == nil {
				t.Fatalf("Validate accepted %+v", r)
			}
			wantFieldError(t, err, tc.field, tc.want...)
			if !reflect.DeepEqual(r, before) {
				t.Errorf("Validate changed a rule it refused:\n got %+v\nwant %+v", r, before)
			}
		})
	}
}

func TestValidateWithoutTrustDomain(t *testing.T) {
	r := validRule()
	wantFieldError(t, r.Validate(spiffeid.TrustDomain{}, Limits{}), "spiffe_id", "no trust domain")
}

func TestAppliesTo(t *testing.T) {
	now := time.Date(2027, 6, 1, 12, 0, 0, 0, time.UTC)
	rule := validRule()
	if err := rule.Validate(testTD, testLimits); err != nil {
		t.Fatal(err)
	}
	workload := NewSelectorSet([]Selector{{"unix", "uid:1000"}, {"k8s", "ns:web"}})
	withExtra := NewSelectorSet([]Selector{{"unix", "uid:1000"}, {"unix", "gid:50"}, {"k8s", "ns:web"}, {"k8s", "sa:default"}})
	missingOne := NewSelectorSet([]Selector{{"unix", "uid:1000"}, {"unix", "gid:50"}})
	otherAgent := spiffeid.RequireFromString("spiffe://example.org/writ/agent/join/n2")
	sameNameOtherTD := spiffeid.RequireFromString("spiffe://other.org/writ/agent/join/n1")

	noSelectors := rule
	noSelectors.Selectors = nil
	noParent := rule
	noParent.ParentID = spiffeid.ID{}
	neverExpires := rule
	neverExpires.ExpiresAt = time.Time{}
	bySelectors := rule
	bySelectors.ParentID = spiffeid.ID{}
	bySelectors.ParentSelectors = []Selector{{"github", "repository:acme/api"}, {"github", "ref:refs/heads/main"}}
	if err := bySelectors.Validate(testTD, testLimits); err != nil {
		t.Fatal(err)
	}
	run := NewSelectorSet([]Selector{{"github", "repository:acme/api"}, {"github", "ref:refs/heads/main"}, {"github", "run_id:7"}})
	otherRepo := NewSelectorSet([]Selector{{"github", "repository:acme/web"}, {"github", "ref:refs/heads/main"}})
	both := bySelectors
	both.ParentID = testAgent

	for _, tc := range []struct {
		name     string
		rule     Rule
		agent    spiffeid.ID
		node     SelectorSet
		workload SelectorSet
		now      time.Time
		want     bool
	}{
		{"exact selectors", rule, testAgent, nil, workload, now, true},
		{"extra workload selectors", rule, testAgent, nil, withExtra, now, true},
		{"missing one selector", rule, testAgent, nil, missingOne, now, false},
		{"no workload selectors", rule, testAgent, nil, NewSelectorSet(nil), now, false},
		{"nil workload set", rule, testAgent, nil, nil, now, false},
		{"other parent", rule, otherAgent, nil, workload, now, false},
		{"parent path in other trust domain", rule, sameNameOtherTD, nil, workload, now, false},
		{"zero agent", rule, spiffeid.ID{}, nil, workload, now, false},
		{"just before expiry", rule, testAgent, nil, workload, rule.ExpiresAt.Add(-time.Nanosecond), true},
		{"at expiry", rule, testAgent, nil, workload, rule.ExpiresAt, false},
		{"expired", rule, testAgent, nil, workload, rule.ExpiresAt.Add(time.Hour), false},
		{"never expires", neverExpires, testAgent, nil, workload, time.Date(9000, 1, 1, 0, 0, 0, 0, time.UTC), true},
		{"rule without selectors fails closed", noSelectors, testAgent, nil, workload, now, false},
		{"rule without parent fails closed", noParent, spiffeid.ID{}, nil, workload, now, false},
		{"rule without parent, agent without node selectors", noParent, testAgent, NewSelectorSet(nil), workload, now, false},
		{"parent selectors all among the node's", bySelectors, otherAgent, run, workload, now, true},
		{"parent selectors, node lacks one", bySelectors, otherAgent, otherRepo, workload, now, false},
		{"parent selectors, node has none", bySelectors, otherAgent, nil, workload, now, false},
		{"parent selectors match, workload does not", bySelectors, otherAgent, run, missingOne, now, false},
		{"both: by ID", both, testAgent, nil, workload, now, true},
		{"both: by selectors", both, otherAgent, run, workload, now, true},
	} {
		if got := tc.rule.AppliesTo(tc.agent, tc.node, tc.workload, tc.now); got != tc.want {
			t.Errorf("%s: AppliesTo = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func manySelectors(n int) []Selector {
	sels := make([]Selector, n)
	for i := range sels {
		sels[i] = Selector{"k8s", fmt.Sprintf("label:n:%d", i)}
	}
	return sels
}

func manyNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("h%d.example.org", i)
	}
	return names
}

// dnsNameOfLen returns a valid DNS name of exactly n characters.
func dnsNameOfLen(n int) string {
	var b strings.Builder
	for b.Len() < n {
		label := min(63, n-b.Len())
		if b.Len() > 0 {
			b.WriteByte('.')
			label = min(63, n-b.Len())
		}
		b.WriteString(strings.Repeat("a", label))
	}
	return b.String()
}

// longID is valid for go-spiffe but longer than the specification allows.
func longID() spiffeid.ID {
	return spiffeid.RequireFromString("spiffe://example.org/" + strings.Repeat("a", MaxIDLen))
}

func TestValidateDNSNames(t *testing.T) {
	in := []string{"Web.Example.org", "*.api.example.org", "localhost"}
	got, err := ValidateDNSNames("dns_names", in)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"*.api.example.org", "localhost", "web.example.org"}; !slices.Equal(got, want) {
		t.Errorf("= %v, want %v", got, want)
	}
	if in[0] != "Web.Example.org" {
		t.Error("input slice modified")
	}
	if got, err := ValidateDNSNames("dns_names", nil); err != nil || got != nil {
		t.Errorf("nil = %v, %v", got, err)
	}
	_, err = ValidateDNSNames("san", []string{"a.org", "A.org"})
	wantFieldError(t, err, "san[1]", "san[0]")
	_, err = ValidateDNSNames("san", manyNames(MaxDNSNamesPerRule+1))
	wantFieldError(t, err, "san", "at most 32")
}

// TestValidateParentSelectors: a rule may name its parents by node
// selectors instead of an ID; they are put in canonical order.
func TestValidateParentSelectors(t *testing.T) {
	r := validRule()
	r.ParentID = spiffeid.ID{}
	r.ParentSelectors = []Selector{{"github", "ref:refs/heads/main"}, {"github", "repository:acme/api"}}
	if err := r.Validate(testTD, testLimits); err != nil {
		t.Fatalf("a rule with parent selectors and no parent ID: %v", err)
	}
	want := []Selector{{"github", "ref:refs/heads/main"}, {"github", "repository:acme/api"}}
	if !slices.Equal(r.ParentSelectors, want) {
		t.Errorf("parent selectors %v, want sorted %v", r.ParentSelectors, want)
	}
	r.ParentSelectors = []Selector{{"github", "repository:acme/api"}, {"github", "ref:refs/heads/main"}}
	if err := r.Validate(testTD, testLimits); err != nil || !slices.Equal(r.ParentSelectors, want) {
		t.Errorf("reordered: %v, %v; want %v", r.ParentSelectors, err, want)
	}
}
