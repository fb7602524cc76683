package audit

import (
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
	"go/types"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// eventTypes reads every Event* constant of types.go from its source, so a
// constant added there is checked without being listed again here.
func eventTypes(t *testing.T) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "types.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	pkg, err := (&types.Config{Importer: nil, Error: func(error) {}}).Check("audit", fset, []*ast.File{f}, nil)
	if pkg == nil {
		t.Fatalf("type-checking types.go: %v", err)
	}
	out := map[string]string{}
	for _, name := range pkg.Scope().Names() {
		c, ok := pkg.Scope().Lookup(name).(*types.Const)
		if !ok || !strings.HasPrefix(name, "Event") || c.Val().Kind() != constant.String {
			continue
		}
		out[name] = constant.StringVal(c.Val())
	}
	if len(out) == 0 {
		t.Fatal("no Event* constants found in types.go")
	}
	return out
}

// readmeEventTypes is the README's list of event types: the types named at
// the start of each item under its "Event types" heading.
func readmeEventTypes(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n#### Event types\n")
	if !ok {
		t.Fatal(`README.md has no "#### Event types" section`)
	}
	if i := strings.Index(section, "\n#"); i >= 0 {
		section = section[:i]
	}
	lead := regexp.MustCompile("^- ((?:`[^`]+`,?\\s*)+)")
	name := regexp.MustCompile("`([^`]+)`")
	var out []string
	// Items may wrap: join continuation lines to their item first.
	for _, item := range strings.Split(strings.ReplaceAll(section, "\n  ", " "), "\n") {
		m := lead.FindStringSubmatch(item)
		if m == nil {
			continue
		}
		for _, n := range name.FindAllStringSubmatch(m[1], -1) {
			out = append(out, n[1])
		}
	}
	return out
}

var eventTypeForm = regexp.MustCompile(`^[a-z]+(\.[a-z0-9]+)*$`)

// TestEventTypesAreTheContract checks every event type constant is unique,
// lowercase words joined by dots, and in README.md's list, and that the
// list names no type the code does not write.
func TestEventTypesAreTheContract(t *testing.T) {
	consts := eventTypes(t)
	byValue := map[string]string{}
	for name, v := range consts {
		if other, ok := byValue[v]; ok {
			t.Errorf("%s and %s are both %q: each event type must be its own", name, other, v)
		}
		byValue[v] = name
		if !eventTypeForm.MatchString(v) {
			t.Errorf("%s = %q: an event type is lowercase words joined by dots", name, v)
		}
	}
	documented := readmeEventTypes(t)
	var missing []string
	for name, v := range consts {
		if !slices.Contains(documented, v) {
			missing = append(missing, name+" ("+v+")")
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		t.Errorf("README.md's list of event types lacks %s", strings.Join(missing, ", "))
	}
	for _, v := range documented {
		if _, ok := byValue[v]; !ok {
			t.Errorf("README.md lists event type %q, which no constant in types.go defines", v)
		}
	}
}

// TestKindsMapToEventTypes checks the kind mappings give the constants,
// and nothing (which Encode refuses) for a kind or step they do not know.
func TestKindsMapToEventTypes(t *testing.T) {
	for _, c := range []struct{ kind, mint, refused string }{
		{KindX509, EventSVIDX509Mint, EventSVIDX509Refused},
		{KindJWT, EventSVIDJWTMint, EventSVIDJWTRefused},
		{"X509", "", ""},
		{"", "", ""},
	} {
		if mint, refused := SVIDEvents(c.kind); mint != c.mint || refused != c.refused {
			t.Errorf("SVIDEvents(%q) = %q, %q; want %q, %q", c.kind, mint, refused, c.mint, c.refused)
		}
	}
	want := map[string][]string{
		KindX509: {EventCAX509Prepare, EventCAX509Activate, EventCAX509Taint, EventCAX509Revoke, EventCAX509Publish},
		KindJWT:  {EventCAJWTPrepare, EventCAJWTActivate, EventCAJWTTaint, EventCAJWTRevoke, EventCAJWTPublish},
	}
	steps := []CAStep{CAPrepare, CAActivate, CATaint, CARevoke, CAPublish}
	for kind, types := range want {
		for i, step := range steps {
			if got := CAEvent(kind, step); got != types[i] {
				t.Errorf("CAEvent(%q, %v) = %q, want %q", kind, step, got, types[i])
			}
			if got := types[i]; !strings.HasSuffix(got, "."+step.String()) {
				t.Errorf("%v names %q, whose last word is not the step's", step, got)
			}
		}
		if got := CAEvent(kind, CAStep(0)); got != "" {
			t.Errorf("CAEvent(%q, 0) = %q, want none", kind, got)
		}
	}
	if got := CAEvent("x.509", CAPrepare); got != "" {
		t.Errorf(`CAEvent("x.509", CAPrepare) = %q, want none`, got)
	}
	if _, err := Make(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), CAEvent("x.509", CAPrepare), "", "", nil); err == nil {
		t.Error("an event of an unknown kind's type was encoded; want it refused")
	}
}
