package identity

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"writ.dev/writ/internal/quote"

	"go.yaml.in/yaml/v3"
)

// RuleFileFields are the keys a rule in a rule file may have, in the order
// help and errors list them: the API's entry field names, with TTLs as
// durations and the expiry as an RFC 3339 time.
var RuleFileFields = []string{"id", "spiffe_id", "parent_id", "parent_selectors", "selectors", "x509_ttl", "jwt_ttl", "dns_names", "hint", "expires_at"}

// RuleFileError is a problem at a place in a rule file.
type RuleFileError struct {
	Line int
	Path string // e.g. entries[3].selectors[0]; empty for the document itself
	Msg  string
}

func (e *RuleFileError) Error() string {
	loc := fmt.Sprintf("line %d: ", e.Line)
	if e.Path == "" {
		return loc + e.Msg
	}
	return loc + e.Path + ": " + e.Msg
}

// ParseRuleFile parses a rule file: a YAML (or JSON, which YAML contains)
// document {entries: [...]} of at most limit rules. Keys are checked
// against the known fields by hand rather than by the YAML decoder's strict
// mode, because the decoder's errors do not say which entry they are
// about, and in a file of thousands of entries the index is what the user
// needs. Every rule is checked before anything is returned; the server
// still validates them against its trust domain and limits.
//
// now is the time expiries must lie after: a rule that has already expired
// would be stored and never apply.
func ParseRuleFile(data []byte, now time.Time, limit int) ([]Rule, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the file is empty; it should hold a document like {entries: [{spiffe_id: ..., parent_id: ..., selectors: [...]}]} (or parent_selectors: [...] in place of parent_id)")
		}
		return nil, err
	}
	var more yaml.Node
	switch err := dec.Decode(&more); {
	case err == nil:
		return nil, &RuleFileError{Line: more.Line, Msg: "a second YAML document starts here; put all entries in one document's entries list"}
	case !errors.Is(err, io.EOF):
		return nil, err
	}

	root := deref(&doc)
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = deref(root.Content[0])
	}
	if root.Kind != yaml.MappingNode {
		return nil, &RuleFileError{Line: root.Line, Msg: fmt.Sprintf("the document is %s; it should be a mapping with the key entries", describeNode(root))}
	}
	var list *yaml.Node
	err := eachField(root, "", []string{"entries"}, func(key string, value *yaml.Node) error {
		list = value
		return nil
	})
	if err != nil {
		return nil, err
	}
	if list == nil || isNull(list) {
		return nil, &RuleFileError{Line: root.Line, Msg: "there is no entries list; nothing to create"}
	}
	if list.Kind != yaml.SequenceNode {
		return nil, &RuleFileError{Line: list.Line, Path: "entries", Msg: fmt.Sprintf("is %s; it should be a list of entries", describeNode(list))}
	}
	if len(list.Content) == 0 {
		return nil, &RuleFileError{Line: list.Line, Path: "entries", Msg: "is empty; nothing to create"}
	}
	if n := len(list.Content); n > limit {
		return nil, fmt.Errorf("the file has %d entries, more than the %d the server stores in one call; split it into files of at most %d entries (each file is stored all or nothing)", n, limit, limit)
	}
	rules := make([]Rule, len(list.Content))
	for i, item := range list.Content {
		r, err := parseRuleFileEntry(fmt.Sprintf("entries[%d]", i), deref(item), now)
		if err != nil {
			return nil, err
		}
		rules[i] = r
	}
	return rules, nil
}

// ParseExpiresAt parses an RFC 3339 time that must lie after now: a rule
// that has already expired would be stored and never apply.
func ParseExpiresAt(field, s string, now time.Time) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fieldErr(field, quote.String(s)+" is not an RFC 3339 time; give e.g. 2030-01-02T15:04:05Z or 2030-01-02T16:04:05+01:00")
	}
	if !t.After(now) {
		return time.Time{}, fieldErr(field, t.UTC().Format(time.RFC3339)+" is in the past; give a later time, or leave it out for a rule that never expires")
	}
	return t.Truncate(time.Second), nil
}

func parseRuleFileEntry(path string, n *yaml.Node, now time.Time) (Rule, error) {
	var r Rule
	if n.Kind != yaml.MappingNode {
		return r, &RuleFileError{Line: n.Line, Path: path, Msg: fmt.Sprintf("is %s; an entry is a mapping with the keys %s", describeNode(n), strings.Join(RuleFileFields, ", "))}
	}
	var spiffeIDSeen, parentIDSeen bool
	var selectorsLine, parentSelectorsLine int
	err := eachField(n, path, RuleFileFields, func(key string, v *yaml.Node) error {
		field := path + "." + key
		// fail places a problem reported for field (or a part of it).
		fail := func(line int, err error) error {
			var fe *FieldError
			if errors.As(err, &fe) {
				return &RuleFileError{Line: line, Path: fe.Field, Msg: fe.Msg}
			}
			return &RuleFileError{Line: line, Path: field, Msg: err.Error()}
		}
		switch key {
		case "selectors", "parent_selectors", "dns_names":
			items, lines, err := stringSeq(field, v)
			if err != nil {
				return err
			}
			if key == "dns_names" {
				r.DNSNames = items
				return nil
			}
			sels := make([]Selector, len(items))
			for i, s := range items {
				sel, err := ParseSelector(s)
				if err != nil {
					msg := err.Error()
					var fe *FieldError
					if errors.As(err, &fe) {
						msg = fe.Msg
					}
					return fail(lines[i], fieldErr(fmt.Sprintf("%s[%d]", field, i), msg))
				}
				sels[i] = sel
			}
			if key == "parent_selectors" {
				parentSelectorsLine = v.Line
				r.ParentSelectors = sels
				return nil
			}
			selectorsLine = v.Line
			r.Selectors = sels
			return nil
		}
		s, err := scalarString(field, v)
		if err != nil {
			return err
		}
		switch key {
		case "id":
			r.ID = s
		case "spiffe_id":
			spiffeIDSeen = true
			if r.SPIFFEID, err = ParseID(field, s); err != nil {
				return fail(v.Line, err)
			}
		case "parent_id":
			parentIDSeen = true
			if r.ParentID, err = ParseID(field, s); err != nil {
				return fail(v.Line, err)
			}
		case "x509_ttl", "jwt_ttl":
			if s == "" {
				return nil // unset: the server default
			}
			// No upper limit here: the server knows its own and says so.
			d, err := ParseTTL(field, s, 0)
			if err != nil {
				return fail(v.Line, err)
			}
			if key == "x509_ttl" {
				r.X509TTL = d
			} else {
				r.JWTTTL = d
			}
		case "hint":
			r.Hint = s
		case "expires_at":
			if s == "" {
				return nil // unset: never expires
			}
			if r.ExpiresAt, err = ParseExpiresAt(field, s, now); err != nil {
				return fail(v.Line, err)
			}
		}
		return nil
	})
	if err != nil {
		return Rule{}, err
	}
	switch {
	case !spiffeIDSeen:
		return Rule{}, &RuleFileError{Line: n.Line, Path: path, Msg: "has no spiffe_id; give the SPIFFE ID the rule hands out"}
	case !parentIDSeen && len(r.ParentSelectors) == 0:
		line := n.Line
		if parentSelectorsLine != 0 {
			line = parentSelectorsLine
		}
		return Rule{}, &RuleFileError{Line: line, Path: path, Msg: `has no parent_id or parent_selectors; give the SPIFFE ID of the node or agent that may hand it out, or node selectors all its agents have, e.g. parent_selectors: ["github:repository:acme/api"]`}
	case len(r.Selectors) == 0:
		line := n.Line
		if selectorsLine != 0 {
			line = selectorsLine
		}
		return Rule{}, &RuleFileError{Line: line, Path: path + ".selectors", Msg: `is missing or empty; give at least one selector, e.g. ["unix:uid:1000"]`}
	}
	return r, nil
}

// eachField calls fn for every key of mapping n in order, refusing keys not
// in known and keys given twice.
func eachField(n *yaml.Node, path string, known []string, fn func(key string, value *yaml.Node) error) error {
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), deref(n.Content[i+1])
		where := func(key string) string {
			if path == "" {
				return key
			}
			return path + "." + key
		}
		if k.Kind != yaml.ScalarNode {
			return &RuleFileError{Line: k.Line, Path: path, Msg: fmt.Sprintf("has %s as a key; keys are field names: %s", describeNode(k), strings.Join(known, ", "))}
		}
		key := k.Value
		if !slices.Contains(known, key) {
			msg := "unknown field; the fields are " + strings.Join(known, ", ")
			if guess := closeField(key, known); guess != "" {
				msg = fmt.Sprintf("unknown field, did you mean %s? The fields are %s", guess, strings.Join(known, ", "))
			}
			return &RuleFileError{Line: k.Line, Path: where(quoteIfOdd(key)), Msg: msg}
		}
		if first, dup := seen[key]; dup {
			return &RuleFileError{Line: k.Line, Path: where(key), Msg: fmt.Sprintf("is given twice (first on line %d); keep one", first)}
		}
		seen[key] = k.Line
		if err := fn(key, v); err != nil {
			return err
		}
	}
	return nil
}

// closeField guesses the known field meant by key: same letters ignoring
// case and the -/_ difference between flags and file keys.
func closeField(key string, known []string) string {
	if len(key) > 64 {
		return "" // no field name is this long; skip the work
	}
	norm := func(s string) string {
		return strings.ReplaceAll(strings.ToLower(s), "-", "_")
	}
	for _, k := range known {
		if norm(key) == k || norm(key) == strings.TrimSuffix(k, "s") || norm(key)+"s" == k {
			return k
		}
	}
	return ""
}

// quoteIfOdd quotes a key that would be confusing in a field path (empty,
// long, or with spaces, dots or control characters), bounded like every
// echo of input.
func quoteIfOdd(key string) string {
	if key == "" || len(key) > quote.DefaultMax || strings.ContainsAny(key, " .[]\"\t\r\n") || strings.ContainsFunc(key, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return quote.String(key)
	}
	return key
}

// scalarString reads a scalar as the text that was written, so that a TTL
// of 3600 or an unquoted timestamp reach the parsers unchanged. null reads
// as "".
func scalarString(field string, n *yaml.Node) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", &RuleFileError{Line: n.Line, Path: field, Msg: fmt.Sprintf("is %s; it should be a single value", describeNode(n))}
	}
	if isNull(n) {
		return "", nil
	}
	return n.Value, nil
}

// stringSeq reads a list of scalars and the line of each.
func stringSeq(field string, n *yaml.Node) ([]string, []int, error) {
	if isNull(n) {
		return nil, nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, nil, &RuleFileError{Line: n.Line, Path: field, Msg: fmt.Sprintf(`is %s; it should be a list, e.g. ["a", "b"]`, describeNode(n))}
	}
	out := make([]string, len(n.Content))
	lines := make([]int, len(n.Content))
	for i, item := range n.Content {
		item = deref(item)
		s, err := scalarString(fmt.Sprintf("%s[%d]", field, i), item)
		if err != nil {
			return nil, nil, err
		}
		out[i], lines[i] = s, item.Line
	}
	return out, lines, nil
}

func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "empty"
		}
		return "the value " + quote.String(n.Value)
	case yaml.DocumentNode:
		return "a document"
	}
	return "something else"
}
