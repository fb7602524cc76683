package identity

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
	"writ.dev/writ/internal/quote"
)

// Limits on selectors. They bound what one rule costs to store, index and
// match, and keep selector text printable in CLI tables and audit records.
const (
	MaxSelectorTypeLen  = 64
	MaxSelectorValueLen = 1024
)

const selectorExample = `e.g. "unix:uid:1000" or "k8s:ns:payments"`

// Selector is one attested property of a workload or node, such as
// {Type: "unix", Value: "uid:1000"}. Type names the attestor that vouches for
// it; Value is opaque to writ and compared byte for byte.
type Selector struct {
	Type  string
	Value string
}

// String returns "type:value", the form ParseSelector reads.
func (s Selector) String() string {
	return s.Type + ":" + s.Value
}

// ParseSelector parses "type:value". The type ends at the first ':' and the
// value may itself contain ':' ("unix:uid:1000" is type "unix", value
// "uid:1000"), which is why a type may not: that keeps String and
// ParseSelector exact inverses. The field is "selector".
func ParseSelector(s string) (Selector, error) {
	const field = "selector"
	typ, value, found := strings.Cut(s, ":")
	if !found {
		if s == "" {
			return Selector{}, fieldErr(field, "is required; give type:value, "+selectorExample)
		}
		return Selector{}, fieldErr(field, fmt.Sprintf("%s has no ':'; give type:value, %s", quote.String(s), selectorExample))
	}
	sel := Selector{Type: typ, Value: value}
	if problem := checkSelector(sel); problem != "" {
		return Selector{}, fieldErr(field, problem)
	}
	return sel, nil
}

// ValidateSelector checks a selector that arrived as separate type and value
// (for instance from an API message) against the same rules as
// ParseSelector, naming field in the error. Joining the parts and calling
// ParseSelector instead would misread a type containing ':' as part of the
// value.
func ValidateSelector(field string, sel Selector) error {
	if problem := checkSelector(sel); problem != "" {
		return fieldErr(field, problem)
	}
	return nil
}

// checkSelector says what is wrong with sel, or "" if nothing is, whether it
// was parsed from text or arrived as separate type and value fields.
func checkSelector(sel Selector) string {
	if problem := checkSelectorType(sel.Type); problem != "" {
		return quote.String(sel.String()) + ": " + problem
	}
	if problem := checkSelectorValue(sel.Value); problem != "" {
		return quote.String(sel.String()) + ": " + problem
	}
	return ""
}

func checkSelectorType(t string) string {
	const allowed = "a type is 1 to 64 of lowercase letters a-z, digits 0-9, '_' and '-'"
	switch {
	case t == "":
		return "the type before ':' is empty; " + allowed + ", " + selectorExample
	case len(t) > MaxSelectorTypeLen:
		return fmt.Sprintf("the type is %d bytes; %s", len(t), allowed)
	}
	for i := 0; i < len(t); i++ {
		if !isSelectorTypeChar(t[i]) {
			if lower := strings.ToLower(t); lower != t && checkSelectorType(lower) == "" {
				return fmt.Sprintf("the type must be lowercase; use %s", quote.String(lower))
			}
			return fmt.Sprintf("character %s in the type is not allowed; %s", quote.RuneAt(t, i), allowed)
		}
	}
	return ""
}

func isSelectorTypeChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

func checkSelectorValue(v string) string {
	const allowed = "a value is 1 to 1024 bytes of UTF-8 text without control characters"
	switch {
	case v == "":
		return "the value after ':' is empty; " + allowed + ", " + selectorExample
	case len(v) > MaxSelectorValueLen:
		return fmt.Sprintf("the value is %d bytes; %s", len(v), allowed)
	case !utf8.ValidString(v):
		return "the value is not valid UTF-8; " + allowed
	}
	for i, r := range v {
		if unicode.IsControl(r) {
			return fmt.Sprintf("control character %s at byte %d of the value is not allowed; %s", quote.RuneAt(v, i), i, allowed)
		}
	}
	// A value that starts or ends with whitespace is almost always a paste
	// or quoting slip, and a rule carrying it would silently never match.
	first, _ := utf8.DecodeRuneInString(v)
	last, _ := utf8.DecodeLastRuneInString(v)
	if unicode.IsSpace(first) || unicode.IsSpace(last) {
		return "the value starts or ends with whitespace; remove it"
	}
	return ""
}

func compareSelectors(a, b Selector) int {
	if c := cmp.Compare(a.Type, b.Type); c != 0 {
		return c
	}
	return cmp.Compare(a.Value, b.Value)
}

// SortSelectors sorts sels in place by (Type, Value), the canonical order in
// which rules are stored and compared, so two rules with the same selectors
// given in different orders are recognisably the same.
//
// A selector listed twice is an error naming both positions
// ("selectors[3]"), and then sels is left as it was: a duplicate is usually a
// typo for a different selector, and the operator should see their own order.
func SortSelectors(sels []Selector) error { return sortSelectors("selectors", sels) }

// sortSelectors is SortSelectors for a list named field in errors.
func sortSelectors(field string, sels []Selector) error {
	seen := make(map[Selector]int, len(sels))
	for i, sel := range sels {
		if j, dup := seen[sel]; dup {
			return fieldErr(fmt.Sprintf("%s[%d]", field, i),
				fmt.Sprintf("%s repeats %s[%d]; list each selector once", quote.String(sel.String()), field, j))
		}
		seen[sel] = i
	}
	slices.SortFunc(sels, compareSelectors)
	return nil
}

// SelectorSet is the selectors of one workload, built once when the workload
// is attested so that checking every candidate rule against it costs one map
// lookup per rule selector rather than a scan of the workload's selectors.
type SelectorSet map[Selector]struct{}

// NewSelectorSet builds the set of sels; repeated selectors collapse.
func NewSelectorSet(sels []Selector) SelectorSet {
	set := make(SelectorSet, len(sels))
	for _, sel := range sels {
		set[sel] = struct{}{}
	}
	return set
}

// ContainsAll reports whether every one of sels is in s. An empty sels is
// trivially contained; Rule.AppliesTo refuses rules without selectors so that
// this never makes a rule match every workload.
func (s SelectorSet) ContainsAll(sels []Selector) bool {
	for _, sel := range sels {
		if _, ok := s[sel]; !ok {
			return false
		}
	}
	return true
}
