package identity

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// goSpiffeIsStrict reports whether go-spiffe was built with its default
// character set. Built with the spiffeid_charset_backcompat tag it accepts
// more than the specification, and agreement is only checked one way.
var goSpiffeIsStrict = func() bool {
	_, err := spiffeid.FromString("spiffe://example.org/~")
	return err != nil
}()

// checkFuzzError checks what every refusal must look like: a *FieldError
// for the given field whose message is one printable line of bounded
// length, whatever bytes the input held, so it is safe for terminals and
// line-oriented logs.
func checkFuzzError(t *testing.T, err error, field string) {
	t.Helper()
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v is %T, want *FieldError", err, err)
	}
	if fe.Field != field {
		t.Fatalf("field = %q, want %q", fe.Field, field)
	}
	msg := err.Error()
	if !utf8.ValidString(msg) {
		t.Fatalf("message is not valid UTF-8: %q", msg)
	}
	for _, r := range msg {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			t.Fatalf("message holds control character %U: %q", r, msg)
		}
	}
	if len(msg) > 1024 {
		t.Fatalf("message is %d bytes: %q", len(msg), msg)
	}
}

func FuzzParseID(f *testing.F) {
	for _, s := range []string{
		"spiffe://example.org",
		"spiffe://example.org/service/web",
		"spiffe://a/b/c.d/-_/..x",
		"spiffe://example.org/",
		"spiffe://example.org//a",
		"spiffe://example.org/./a",
		"spiffe://example.org/a/..",
		"spiffe://Example.org/a",
		"SPIFFE://example.org/a",
		"spiffe://user@example.org/a",
		"spiffe://example.org:443/a",
		"spiffe://example.org/a?q#f",
		"spiffe://example.org/a%2F",
		"spiffe:///a",
		"example.org/a",
		"https://example.org/a",
		"spiffe://example.org/caf\u00e9",
		"spiffe://example.org/\xff",
		"spiffe://" + strings.Repeat("a", MaxTrustDomainLen+1) + "/x",
		"spiffe://example.org/" + strings.Repeat("a", MaxIDLen),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID("spiffe_id", s)
		ref, refErr := spiffeid.FromString(s)
		if err != nil {
			checkFuzzError(t, err, "spiffe_id")
			if !id.IsZero() {
				t.Fatalf("refused %q but returned %v", s, id)
			}
			if refErr == nil && goSpiffeIsStrict && len(s) <= MaxIDLen && len(ref.TrustDomain().Name()) <= MaxTrustDomainLen {
				t.Fatalf("go-spiffe accepts %q within the length limits, ParseID refuses: %v", s, err)
			}
			return
		}
		if refErr != nil {
			t.Fatalf("ParseID accepts %q, go-spiffe refuses: %v", s, refErr)
		}
		if id != ref || id.String() != s {
			t.Fatalf("ParseID(%q) = %q, go-spiffe %q", s, id, ref)
		}
		if len(s) > MaxIDLen || len(id.TrustDomain().Name()) > MaxTrustDomainLen {
			t.Fatalf("accepted %q beyond the length limits", s)
		}
		again, err := ParseID("spiffe_id", id.String())
		if err != nil || again != id {
			t.Fatalf("%q does not re-parse from String(): %v, %v", s, again, err)
		}
		td, err := ParseTrustDomain(id.TrustDomain().Name())
		if err != nil || td != id.TrustDomain() {
			t.Fatalf("trust domain of %q does not parse: %v, %v", s, td, err)
		}
		inTD, err := ParseIDInTrustDomain("spiffe_id", s, td)
		if (err == nil) != (id.Path() != "") || (err == nil && inTD != id) {
			t.Fatalf("ParseIDInTrustDomain(%q) = %v, %v", s, inTD, err)
		}
		_ = KindOf(id)
	})
}

func FuzzParseTrustDomain(f *testing.F) {
	for _, s := range []string{
		"example.org", "a", "trust_domain-1.x", "Example.org", "spiffe://example.org",
		"spiffe://example.org/x", "example.org:443", "a@b", "a/b", " a", "a%41", "caf\u00e9", "\xff",
		strings.Repeat("a", MaxTrustDomainLen+1),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		td, err := ParseTrustDomain(s)
		ref, refErr := spiffeid.TrustDomainFromString(s)
		// go-spiffe also takes "spiffe://name[/path]"; ParseTrustDomain
		// refuses that form on purpose.
		bareName := !strings.Contains(s, ":/")
		if err != nil {
			checkFuzzError(t, err, "trust_domain")
			if !td.IsZero() {
				t.Fatalf("refused %q but returned %v", s, td)
			}
			if refErr == nil && bareName && goSpiffeIsStrict && len(s) <= MaxTrustDomainLen {
				t.Fatalf("go-spiffe accepts %q, ParseTrustDomain refuses: %v", s, err)
			}
			return
		}
		if refErr != nil || ref != td || td.Name() != s {
			t.Fatalf("ParseTrustDomain(%q) = %q; go-spiffe %q, %v", s, td, ref, refErr)
		}
		if len(s) > MaxTrustDomainLen {
			t.Fatalf("accepted %d bytes", len(s))
		}
		again, err := ParseTrustDomain(td.String())
		if err != nil || again != td {
			t.Fatalf("%q does not re-parse from String(): %v", s, err)
		}
		if id, err := ParseID("spiffe_id", td.IDString()+"/x"); err != nil || id.TrustDomain() != td {
			t.Fatalf("an ID in %q does not parse: %v", s, err)
		}
	})
}

func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{
		"unix:uid:1000", "k8s:ns:payments", "a:b", "unix::", ":", "unix:", ":x", "UNIX:x",
		"unix:a\nb", "unix: a", "unix:\xff", "k8s:label:team:\u03c0", "x_y-1:v\u0085",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseSelector(s)
		if err != nil {
			checkFuzzError(t, err, "selector")
			if sel != (Selector{}) {
				t.Fatalf("refused %q but returned %#v", s, sel)
			}
			return
		}
		if sel.String() != s {
			t.Fatalf("ParseSelector(%q).String() = %q", s, sel.String())
		}
		again, err := ParseSelector(sel.String())
		if err != nil || again != sel {
			t.Fatalf("%q does not re-parse from String(): %#v, %v", s, again, err)
		}
		if len(sel.Type) < 1 || len(sel.Type) > MaxSelectorTypeLen || strings.Contains(sel.Type, ":") {
			t.Fatalf("accepted type %q", sel.Type)
		}
		if len(sel.Value) < 1 || len(sel.Value) > MaxSelectorValueLen || !utf8.ValidString(sel.Value) {
			t.Fatalf("accepted value %q", sel.Value)
		}
		if !NewSelectorSet([]Selector{sel}).ContainsAll([]Selector{sel}) {
			t.Fatalf("set of %#v does not contain it", sel)
		}
		r := Rule{
			SPIFFEID:  spiffeid.RequireFromString("spiffe://example.org/w"),
			ParentID:  spiffeid.RequireFromString("spiffe://example.org/n"),
			Selectors: []Selector{sel},
		}
		if err := r.Validate(spiffeid.RequireTrustDomainFromString("example.org"), Limits{}); err != nil {
			t.Fatalf("a rule refuses selector %q accepted alone: %v", s, err)
		}
	})
}

func FuzzParseTTL(f *testing.F) {
	for _, tc := range []struct {
		s     string
		limit int64
	}{
		{"3600", 0}, {"90s", 0}, {"1h30m", int64(24 * time.Hour)}, {"0", 0}, {"-1s", 0}, {"1.5s", 0},
		{"25h", int64(24 * time.Hour)}, {"9223372036", 0}, {"9223372037", 0}, {"99999999999999999999", 0},
		{"2562047h47m16s", 0}, {"1e3s", 0}, {"", 0}, {"+1s", -1},
	} {
		f.Add(tc.s, tc.limit)
	}
	f.Fuzz(func(t *testing.T, s string, limitNanos int64) {
		limit := time.Duration(limitNanos)
		d, err := ParseTTL("x509_ttl", s, limit)
		if err != nil {
			checkFuzzError(t, err, "x509_ttl")
			if d != 0 {
				t.Fatalf("refused %q but returned %v", s, d)
			}
			return
		}
		if d <= 0 || d%time.Second != 0 || (limit > 0 && d > limit) {
			t.Fatalf("ParseTTL(%q, %v) = %v", s, limit, d)
		}
		for _, again := range []string{d.String(), formatDuration(d), strconv.FormatInt(int64(d/time.Second), 10)} {
			if got, err := ParseTTL("x509_ttl", again, limit); err != nil || got != d {
				t.Fatalf("%v does not re-parse from %q: %v, %v", d, again, got, err)
			}
		}
	})
}

func FuzzValidateDNSNames(f *testing.F) {
	for _, s := range []string{
		"web.example.org", "*.Example.org", "*", "a.*.b", "10.0.0.1", "::1", "a..b", "-a.b", "a.b.",
		"caf\u00e9.org", "a_b.org", "x.123", "localhost", strings.Repeat("a", 64) + ".org",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		names, err := ValidateDNSNames("dns_names", []string{s})
		if err != nil {
			checkFuzzError(t, err, "dns_names[0]")
			if names != nil {
				t.Fatalf("refused %q but returned %q", s, names)
			}
			return
		}
		name := names[0]
		if len(names) != 1 || name != strings.ToLower(s) || len(name) > MaxDNSNameLen {
			t.Fatalf("%q normalised to %q", s, names)
		}
		again, err := ValidateDNSNames("dns_names", names)
		if err != nil || again[0] != name {
			t.Fatalf("canonical %q is not a fixed point: %q, %v", name, again, err)
		}
	})
}
