package task

import (
	"fmt"
	"strings"
	"writ.dev/writ/internal/quote"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/identity"
)

// MaxPatternSegments caps the path segments of a Pattern; real identities
// have a handful, and a cap keeps matching cheap.
const MaxPatternSegments = 32

const (
	spiffeScheme     = "spiffe://"
	patternExample   = "e.g. spiffe://example.org/agent/payroll-bot/* or spiffe://example.org/person/example.com/**"
	patternWildcards = "a wildcard is a whole segment: '*' for exactly one segment, '**' (last segment only) for one or more"
	patternChars     = "path segments allow letters A-Z and a-z, digits 0-9, '.', '-' and '_'"
)

// Pattern matches SPIFFE IDs of one trust domain by whole path segments: a
// literal segment matches itself, "*" matches exactly one segment and "**",
// allowed only as the last segment, matches one or more. Matching by
// segments rather than by string prefix is what keeps spiffe://td/ci from
// matching spiffe://td/cicd.
//
// The zero Pattern matches nothing. Build one with ParsePattern or
// PatternOf; the fields are unexported so that every Pattern is valid.
type Pattern struct {
	td   spiffeid.TrustDomain
	segs []string
	text string
}

// ParsePattern parses a pattern such as "spiffe://example.org/ci/*". The
// text must be in canonical form (lowercase trust domain, no empty or dot
// segments); it is refused rather than rewritten, so the stored pattern is
// the one the operator reviewed. A pattern must have a path: the trust
// domain's own ID names no member.
func ParsePattern(s string) (Pattern, error) {
	td, path, err := splitPattern(s)
	if err != nil {
		return Pattern{}, err
	}
	segs := strings.Split(path, "/")
	if len(segs) > MaxPatternSegments {
		return Pattern{}, fmt.Errorf("%s has %d path segments; at most %d are allowed", quote.String(s), len(segs), MaxPatternSegments)
	}
	for i, seg := range segs {
		if problem := checkPatternSegment(seg, i == len(segs)-1); problem != "" {
			return Pattern{}, fmt.Errorf("%s: path segment %d %s", quote.String(s), i+1, problem)
		}
	}
	if problem := personCase(td, segs); problem != "" {
		return Pattern{}, fmt.Errorf("%s: %s", quote.String(s), problem)
	}
	return Pattern{td: td, segs: segs, text: s}, nil
}

// personCase refuses a pattern under /person/ with an uppercase letter:
// people's IDs are lowercase (identity.PersonID), so such a member would
// name nobody, and a task meant for erin would silently leave her out.
func personCase(td spiffeid.TrustDomain, segs []string) string {
	if segs[0] != string(identity.NamespacePerson) {
		return ""
	}
	path := strings.Join(segs, "/")
	if lower := strings.ToLower(path); lower != path {
		return fmt.Sprintf("person IDs are lowercase (sign-in lowercases the email); use %s", quote.String(td.IDString()+"/"+lower))
	}
	return ""
}

// splitPattern checks the scheme and trust domain of s and returns the path
// without its leading '/'.
func splitPattern(s string) (spiffeid.TrustDomain, string, error) {
	switch {
	case s == "":
		return spiffeid.TrustDomain{}, "", fmt.Errorf("pattern is empty; give a SPIFFE ID pattern, %s", patternExample)
	case len(s) > identity.MaxIDLen:
		return spiffeid.TrustDomain{}, "", fmt.Errorf("%s is %d bytes; a pattern is at most %d", quote.String(s), len(s), identity.MaxIDLen)
	case !strings.HasPrefix(s, spiffeScheme):
		return spiffeid.TrustDomain{}, "", fmt.Errorf("%s does not start with %q; %s", quote.String(s), spiffeScheme, patternExample)
	}
	authority, path, hasPath := strings.Cut(s[len(spiffeScheme):], "/")
	td, err := identity.ParseTrustDomain(authority)
	if err != nil {
		msg := err.Error()
		if fe, ok := err.(*identity.FieldError); ok {
			msg = fe.Msg
		}
		return spiffeid.TrustDomain{}, "", fmt.Errorf("%s: trust domain %s", quote.String(s), msg)
	}
	if !hasPath {
		return spiffeid.TrustDomain{}, "", fmt.Errorf("%s has no path; a pattern names identities inside the trust domain, %s", quote.String(s), patternExample)
	}
	return td, path, nil
}

// checkPatternSegment returns what is wrong with one path segment, or "".
func checkPatternSegment(seg string, last bool) string {
	switch {
	case seg == "" && last:
		return "is empty (a trailing '/'); remove the '/'"
	case seg == "":
		return "is empty (\"//\"); separate segments with a single '/'"
	case seg == "." || seg == "..":
		return quote.String(seg) + " is not allowed; dot segments have no meaning in a SPIFFE ID"
	case seg == "*":
		return ""
	case seg == "**" && !last:
		return "is '**', which is allowed only as the last segment; use '*' for exactly one segment"
	case seg == "**":
		return ""
	case strings.Contains(seg, "*"):
		return quote.String(seg) + " mixes '*' with other characters; " + patternWildcards
	}
	for i := 0; i < len(seg); i++ {
		if !isPathChar(seg[i]) {
			return fmt.Sprintf("%s has character %s, which is not allowed; %s", quote.String(seg), quote.RuneAt(seg, i), patternChars)
		}
	}
	return ""
}

func isPathChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_'
}

// PatternOf returns the pattern matching exactly id. It fails for the zero
// ID and for a trust domain's own ID, which names no member.
func PatternOf(id spiffeid.ID) (Pattern, error) {
	return ParsePattern(id.String())
}

// String returns the pattern as parsed; "" for the zero Pattern.
func (p Pattern) String() string { return p.text }

// IsZero reports whether p is the zero Pattern, which matches nothing.
func (p Pattern) IsZero() bool { return p.text == "" }

// TrustDomain returns the trust domain p matches IDs in.
func (p Pattern) TrustDomain() spiffeid.TrustDomain { return p.td }

// MarshalText returns the pattern's text, so patterns read and write as
// plain strings in JSON and YAML.
func (p Pattern) MarshalText() ([]byte, error) { return []byte(p.text), nil }

// UnmarshalText parses text with ParsePattern.
func (p *Pattern) UnmarshalText(text []byte) error {
	q, err := ParsePattern(string(text))
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// Matches reports whether p matches id. It does not allocate.
func (p Pattern) Matches(id spiffeid.ID) bool {
	if p.text == "" || id.TrustDomain() != p.td {
		return false
	}
	return matchSegments(p.segs, strings.TrimPrefix(id.Path(), "/"))
}

// matchSegments matches a '/'-separated name against pattern segments; it
// is shared by SPIFFE ID and resource patterns so both mean the same by '*'
// and '**'.
func matchSegments(segs []string, name string) bool {
	rest, more := name, name != ""
	for _, seg := range segs {
		if !more {
			return false
		}
		if seg == "**" {
			return true
		}
		var cur string
		cur, rest, more = strings.Cut(rest, "/")
		if seg != "*" && seg != cur {
			return false
		}
	}
	return !more
}

// Covers reports whether every ID that q matches is also matched by p. A
// grant's recipients must be covered by the task's members this way, so a
// grant cannot reach anyone the task does not name.
func (p Pattern) Covers(q Pattern) bool {
	if p.text == "" || q.text == "" || p.td != q.td {
		return false
	}
	for i, seg := range p.segs {
		if i >= len(q.segs) {
			return false
		}
		switch {
		case seg == "**":
			return true
		case q.segs[i] == "**":
			return false
		case seg != "*" && seg != q.segs[i]:
			return false
		}
	}
	return len(p.segs) == len(q.segs)
}

// IsLiteral reports whether p has no wildcard, and so matches exactly the
// ID with its text.
func (p Pattern) IsLiteral() bool { return p.text != "" && p.LiteralPrefix() == p.text }

// LiteralPrefix returns the ID string made of p's segments before its first
// wildcard: "spiffe://td/agent/bot" for "spiffe://td/agent/bot/*", and the
// whole text for a literal pattern. Every ID p matches has it as a prefix
// by whole segments, which lets an index find candidate patterns for an ID
// by looking up the ID's own segment prefixes.
func (p Pattern) LiteralPrefix() string {
	if i := strings.Index(p.text, "/*"); i >= 0 {
		return p.text[:i]
	}
	return p.text
}

// nonWorkloadPrefixes are the path prefixes identity.KindOf gives a kind
// other than workload to.
var nonWorkloadPrefixes = [][]string{{string(identity.NamespacePerson)}, {"agent"}, {"node"}, {string(identity.NamespaceWrit), "agent"}}

// nonWorkloadMatch returns an ID p could match that identity.KindOf would
// not call a workload, or "" if every ID p matches is a workload. The
// example goes into the error, so the operator sees why a pattern that looks
// like a service's is refused.
func (p Pattern) nonWorkloadMatch() string {
	for _, prefix := range nonWorkloadPrefixes {
		if example, ok := p.matchUnder(prefix); ok {
			return example
		}
	}
	return ""
}

// matchUnder reports whether p matches the ID with path prefix or some ID
// below it, and returns one such ID.
func (p Pattern) matchUnder(prefix []string) (string, bool) {
	for i, want := range prefix {
		if i >= len(p.segs) {
			return "", false
		}
		switch p.segs[i] {
		case "**":
			return p.td.IDString() + "/" + strings.Join(prefix, "/"), true
		case "*", want:
		default:
			return "", false
		}
	}
	path := append([]string{}, prefix...)
	for _, seg := range p.segs[len(prefix):] {
		if seg == "*" || seg == "**" {
			seg = "x"
		}
		path = append(path, seg)
	}
	return p.td.IDString() + "/" + strings.Join(path, "/"), true
}
