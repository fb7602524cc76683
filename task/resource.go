package task

import (
	"fmt"
	"strings"
	"writ.dev/writ/internal/quote"
)

// Limits on resource names and patterns, and on actions.
const (
	MaxResourceLen      = 512
	MaxResourceSegments = 32
	MaxActionLen        = 64
)

const (
	resourceExample = "e.g. db/prod/payments, k8s/prod/ns/web or mcp/github/tool/create_issue"
	resourceChars   = "resource segments allow letters A-Z and a-z, digits 0-9, '.', '_', '-', ':' and '@'"
	actionAllowed   = "an action is 1 to 64 of letters, digits, '.', '_', '-' and ':' (e.g. read, write, deploy), or '*' for any action"
	// AnyAction in a grant's actions matches every action.
	AnyAction = "*"
)

// ResourcePattern matches hierarchical resource names such as
// "db/prod/payments" by whole '/'-separated segments: a literal segment
// matches itself, "*" exactly one segment and "**", allowed only as the last
// segment, one or more. Segments hold letters, digits and '.', '_', '-',
// ':' and '@' (enough for host:port, user@realm and tool names) and are
// never empty, "." or "..": resource names are often mapped onto paths and
// URLs, where those would mean something else.
//
// The zero ResourcePattern matches nothing.
type ResourcePattern struct {
	segs []string
	text string
}

// ParseResourcePattern parses a resource pattern such as "db/prod/*" or
// "mcp/github/**".
func ParseResourcePattern(s string) (ResourcePattern, error) {
	if err := checkResource(s, true); err != nil {
		return ResourcePattern{}, err
	}
	return ResourcePattern{segs: strings.Split(s, "/"), text: s}, nil
}

// CheckResourceName checks a resource name as a request gives it: like a
// pattern, but without wildcards, so that a request for "db/*" is not taken
// to mean every database. It does not allocate for a valid name, since
// every decision calls it.
func CheckResourceName(name string) error {
	return checkResource(name, false)
}

func checkResource(s string, wildcards bool) error {
	what := "resource name"
	if wildcards {
		what = "resource pattern"
	}
	switch {
	case s == "":
		return fmt.Errorf("%s is empty; give one, %s", what, resourceExample)
	case len(s) > MaxResourceLen:
		return fmt.Errorf("%s %s is %d bytes; at most %d are allowed", what, quote.String(s), len(s), MaxResourceLen)
	case s[0] == '/':
		return fmt.Errorf("%s %s starts with '/'; resource names are relative, %s", what, quote.String(s), resourceExample)
	}
	if n := strings.Count(s, "/") + 1; n > MaxResourceSegments {
		return fmt.Errorf("%s %s has %d segments; at most %d are allowed", what, quote.String(s), n, MaxResourceSegments)
	}
	rest, more := s, true
	for i := 1; more; i++ {
		var seg string
		seg, rest, more = strings.Cut(rest, "/")
		if problem := checkResourceSegment(seg, !more, wildcards); problem != "" {
			return fmt.Errorf("%s %s: segment %d %s", what, quote.String(s), i, problem)
		}
	}
	return nil
}

func checkResourceSegment(seg string, last, wildcards bool) string {
	switch {
	case seg == "" && last:
		return "is empty (a trailing '/'); remove the '/'"
	case seg == "":
		return "is empty (\"//\"); separate segments with a single '/'"
	case seg == "." || seg == "..":
		return quote.String(seg) + " is not allowed; dot segments would mean something else where names become paths"
	case !wildcards && strings.Contains(seg, "*"):
		return quote.String(seg) + " has '*'; a request names one resource, and wildcards belong in grants"
	case seg == "*":
		return ""
	case seg == "**" && !last:
		return "is '**', which is allowed only as the last segment; use '*' for exactly one segment"
	case seg == "**":
		return ""
	case strings.Contains(seg, "*"):
		return quote.String(seg) + " mixes '*' with other characters; a wildcard is a whole segment: '*' for exactly one segment, '**' (last segment only) for one or more"
	}
	for i := 0; i < len(seg); i++ {
		if !isResourceChar(seg[i]) {
			return fmt.Sprintf("%s has character %s, which is not allowed; %s", quote.String(seg), quote.RuneAt(seg, i), resourceChars)
		}
	}
	return ""
}

func isResourceChar(c byte) bool {
	return isPathChar(c) || c == ':' || c == '@'
}

// String returns the pattern as parsed; "" for the zero ResourcePattern.
func (r ResourcePattern) String() string { return r.text }

// IsZero reports whether r is the zero ResourcePattern, which matches
// nothing.
func (r ResourcePattern) IsZero() bool { return r.text == "" }

// MarshalText returns the pattern's text.
func (r ResourcePattern) MarshalText() ([]byte, error) { return []byte(r.text), nil }

// UnmarshalText parses text with ParseResourcePattern.
func (r *ResourcePattern) UnmarshalText(text []byte) error {
	q, err := ParseResourcePattern(string(text))
	if err != nil {
		return err
	}
	*r = q
	return nil
}

// Matches reports whether r matches the resource name. It does not
// allocate; it expects a name CheckResourceName accepts.
func (r ResourcePattern) Matches(name string) bool {
	return r.text != "" && matchSegments(r.segs, name)
}

// CheckAction checks an action as a request gives it; "*" is refused there,
// since a request asks for one thing.
func CheckAction(action string) error {
	if action == AnyAction {
		return fmt.Errorf("action '*' is not allowed in a request; name the one action wanted, e.g. read")
	}
	return checkAction(action)
}

func checkAction(action string) error {
	switch {
	case action == "":
		return fmt.Errorf("action is empty; %s", actionAllowed)
	case action == AnyAction:
		return nil
	case len(action) > MaxActionLen:
		return fmt.Errorf("action %s is %d bytes; %s", quote.String(action), len(action), actionAllowed)
	}
	for i := 0; i < len(action); i++ {
		if c := action[i]; !isPathChar(c) && c != ':' {
			return fmt.Errorf("action %s: character %s is not allowed; %s", quote.String(action), quote.RuneAt(action, i), actionAllowed)
		}
	}
	return nil
}
