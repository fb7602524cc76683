package identity

import (
	"errors"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// wantFieldError fails unless err is a *FieldError for field whose message
// contains every one of want.
func wantFieldError(t *testing.T, err error, field string, want ...string) {
	t.Helper()
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error = %v (%T), want a *FieldError for %q", err, err, field)
	}
	if fe.Field != field {
		t.Errorf("field = %q, want %q (error: %v)", fe.Field, field, err)
	}
	for _, w := range want {
		if !strings.Contains(fe.Msg, w) {
			t.Errorf("message %q does not contain %q", fe.Msg, w)
		}
	}
	if got := err.Error(); !strings.HasPrefix(got, field+": ") {
		t.Errorf("Error() = %q, want it to start with %q", got, field+": ")
	}
}

func TestParseTrustDomain(t *testing.T) {
	valid := []string{
		"example.org",
		"a",
		"0",
		"trust_domain-1.example",
		"xn--caf-dma.example",
		"localhost",
		strings.Repeat("a", MaxTrustDomainLen),
	}
	for _, s := range valid {
		td, err := ParseTrustDomain(s)
		if err != nil {
			t.Errorf("ParseTrustDomain(%q) = %v, want ok", s, err)
			continue
		}
		if td.Name() != s {
			t.Errorf("ParseTrustDomain(%q).Name() = %q", s, td.Name())
		}
		if want, err := spiffeid.TrustDomainFromString(s); err != nil || want != td {
			t.Errorf("go-spiffe disagrees on %q: %v, %v", s, want, err)
		}
	}

	invalid := []struct {
		in   string
		want []string
	}{
		{"", []string{"required"}},
		{" example.org", []string{"whitespace"}},
		{"example.org\n", []string{"whitespace"}},
		{"Example.org", []string{"lowercase", `"example.org"`}},
		{"EXAMPLE.ORG", []string{`use "example.org"`}},
		{"spiffe://example.org", []string{"scheme", `"example.org"`}},
		{"spiffe://example.org/path", []string{"scheme", `"example.org"`}},
		{"SPIFFE://example.org", []string{"scheme", `"example.org"`}},
		{"https://example.org", []string{"scheme", "bare trust domain name"}},
		{"spiffe://", []string{"scheme"}},
		{"example.org:8443", []string{"port", "byte 11"}},
		{"user@example.org", []string{"userinfo"}},
		{"user:pw@example.org", []string{"userinfo"}},
		{"example.org/path", []string{"no path"}},
		{"exa%41mple.org", []string{"percent"}},
		{"exa mple.org", []string{"' '", "allowed: lowercase letters"}},
		{"example.org?x", []string{"'?'"}},
		{"café.example", []string{"'é'", "byte 3"}},
		{"ex\xffample", []string{`'\xff'`}},
		{"ex~ample", []string{"'~'"}},
		{strings.Repeat("a", MaxTrustDomainLen+1), []string{"256 bytes", "at most 255"}},
	}
	for _, tc := range invalid {
		td, err := ParseTrustDomain(tc.in)
		if err == nil {
			t.Errorf("ParseTrustDomain(%q) = %v, want error", tc.in, td)
			continue
		}
		wantFieldError(t, err, "trust_domain", tc.want...)
	}
}

func TestParseID(t *testing.T) {
	long := "spiffe://example.org/" + strings.Repeat("a", MaxIDLen-len("spiffe://example.org/"))
	valid := []string{
		"spiffe://example.org",
		"spiffe://example.org/service",
		"spiffe://example.org/service/web",
		"spiffe://a/b",
		"spiffe://trust_domain-1.example/Path/With.Dots/a-b_c/0",
		"spiffe://example.org/.a",
		"spiffe://example.org/..a",
		"spiffe://example.org/...",
		"spiffe://example.org/a.",
		"spiffe://" + strings.Repeat("t", MaxTrustDomainLen) + "/x",
		long,
	}
	for _, s := range valid {
		id, err := ParseID("spiffe_id", s)
		if err != nil {
			t.Errorf("ParseID(%q) = %v, want ok", s, err)
			continue
		}
		if id.String() != s {
			t.Errorf("ParseID(%q).String() = %q", s, id.String())
		}
		if want, err := spiffeid.FromString(s); err != nil || want != id {
			t.Errorf("go-spiffe disagrees on %q: %v, %v", s, want, err)
		}
	}

	invalid := []struct {
		in   string
		want []string
	}{
		{"", []string{"required", "spiffe://"}},
		{" spiffe://example.org/x", []string{"whitespace"}},
		{"spiffe://example.org/x\t", []string{"whitespace"}},
		{"example.org/web", []string{"no scheme", `did you mean "spiffe://example.org/web"`}},
		{"/web", []string{"no scheme", "spiffe://example.org/service/web"}},
		{"https://example.org/web", []string{`scheme "https"`, `"spiffe://"`}},
		{"SPIFFE://example.org/web", []string{"uppercase scheme", `"spiffe://example.org/web"`}},
		{"Spiffe://example.org/web", []string{"uppercase scheme"}},
		{"spiffe:/example.org/web", []string{"two slashes"}},
		{"spiffe:example.org/web", []string{"two slashes"}},
		{"spiffe://", []string{"no trust domain"}},
		{"spiffe:///web", []string{"no trust domain"}},
		{"spiffe://Example.org/Web", []string{"lowercase", `"spiffe://example.org/Web"`}},
		{"spiffe://EXAMPLE.org/a//b", []string{"uppercase 'E'"}},
		{"spiffe://user@example.org/web", []string{"userinfo"}},
		{"spiffe://user:pw@example.org/web", []string{"userinfo"}},
		{"spiffe://example.org:8443/web", []string{"port", "byte 20"}},
		{"spiffe://exa mple.org/web", []string{"' '", "trust domain"}},
		{"spiffe://exa%41mple.org/web", []string{"percent"}},
		{"spiffe://ex~ample.org/web", []string{"'~'"}},
		{"spiffe://example.org/", []string{"trailing '/'"}},
		{"spiffe://example.org/web/", []string{"trailing '/'"}},
		{"spiffe://example.org//web", []string{"empty path segment"}},
		{"spiffe://example.org/a//b", []string{"empty path segment", "byte 22"}},
		{"spiffe://example.org/.", []string{`"."`, "dot segments"}},
		{"spiffe://example.org/..", []string{`".."`}},
		{"spiffe://example.org/a/./b", []string{`"."`}},
		{"spiffe://example.org/a/../b", []string{`".."`}},
		{"spiffe://example.org/web?x=1", []string{"query"}},
		{"spiffe://example.org?x=1", []string{"query"}},
		{"spiffe://example.org/web#frag", []string{"fragment"}},
		{"spiffe://example.org#frag", []string{"fragment"}},
		{"spiffe://example.org/a%2Fb", []string{"percent"}},
		{"spiffe://example.org/a b", []string{"' '", "path segments allow"}},
		{"spiffe://example.org/a:b", []string{"':'"}},
		{"spiffe://example.org/a@b", []string{"'@'"}},
		{"spiffe://example.org/a~b", []string{"'~'"}},
		{"spiffe://example.org/café", []string{"'é'"}},
		{"spiffe://example.org/a\x00", []string{`'\x00'`}},
		{"spiffe://example.org/a\xff", []string{`'\xff'`}},
		{"spiffe://example.org/a\\b", []string{`'\\'`}},
		{"spiffe://" + strings.Repeat("t", MaxTrustDomainLen+1) + "/x", []string{"256 bytes", "at most 255"}},
		{long + "a", []string{"2049 bytes", "at most 2048"}},
	}
	for _, tc := range invalid {
		id, err := ParseID("parent_id", tc.in)
		if err == nil {
			t.Errorf("ParseID(%q) = %v, want error", tc.in, id)
			continue
		}
		wantFieldError(t, err, "parent_id", tc.want...)
		if !id.IsZero() {
			t.Errorf("ParseID(%q) returned %v with its error", tc.in, id)
		}
	}
}

func TestParseIDLongInputIsTruncatedInMessage(t *testing.T) {
	in := "spiffe://example.org/" + strings.Repeat("a", 3000)
	_, err := ParseID("spiffe_id", in)
	if err == nil {
		t.Fatal("want error")
	}
	if len(err.Error()) > 300 {
		t.Errorf("message is %d bytes, want the input truncated: %s", len(err.Error()), err)
	}
	wantFieldError(t, err, "spiffe_id", "3021 bytes")
}

func TestParseIDInTrustDomain(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	id, err := ParseIDInTrustDomain("spiffe_id", "spiffe://example.org/web", td)
	if err != nil || id.String() != "spiffe://example.org/web" {
		t.Fatalf("= %v, %v", id, err)
	}

	for _, tc := range []struct {
		in   string
		td   spiffeid.TrustDomain
		want []string
	}{
		{"spiffe://other.org/web", td, []string{`trust domain "other.org"`, `must be in "example.org"`}},
		{"spiffe://example.org", td, []string{"no path", "spiffe://example.org/service/web"}},
		{"spiffe://example.org/", td, []string{"trailing"}},
		{"spiffe://example.org/web", spiffeid.TrustDomain{}, []string{"no trust domain is configured"}},
	} {
		_, err := ParseIDInTrustDomain("spiffe_id", tc.in, tc.td)
		if err == nil {
			t.Errorf("%q in %q: want error", tc.in, tc.td)
			continue
		}
		wantFieldError(t, err, "spiffe_id", tc.want...)
	}
}

func TestFieldError(t *testing.T) {
	e := &FieldError{Field: "selectors[1]", Msg: "is bad"}
	if got := e.Error(); got != "selectors[1]: is bad" {
		t.Errorf("Error() = %q", got)
	}
	if got := e.Within("entries[3]").Error(); got != "entries[3].selectors[1]: is bad" {
		t.Errorf("Within = %q", got)
	}
	if got := e.Within("").Error(); got != "selectors[1]: is bad" {
		t.Errorf("Within(\"\") = %q", got)
	}
	if e.Field != "selectors[1]" {
		t.Errorf("Within changed the receiver: %q", e.Field)
	}
}
