package oidc

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"writ.dev/writ/internal/quote"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/identity"
)

// nodeTemplate is a parsed node_id: path segments, each a sequence of
// literal text and placeholders. A path placeholder ({{fact...}}) is always
// a whole segment, since it may stand for several.
type nodeTemplate struct {
	segments [][]templatePart
}

type templatePart struct {
	literal string
	fact    string // "" for literal text
	path    bool   // {{fact...}}: one or more segments
}

// parseTemplate checks a node_id template: it starts with '/', its literal
// text is made of characters a SPIFFE path segment allows, no segment is
// empty or a dot segment, and every placeholder names one of facts.
func parseTemplate(s string, facts []string) (nodeTemplate, error) {
	if !strings.HasPrefix(s, "/") {
		return nodeTemplate{}, fmt.Errorf("%s does not start with '/'; e.g. /node/github/{{repository...}}/{{run_id}}", quote.String(s))
	}
	var t nodeTemplate
	placeholders := 0
	for i, seg := range strings.Split(s[1:], "/") {
		parts, err := parseSegment(seg, facts)
		if err != nil {
			return nodeTemplate{}, fmt.Errorf("%s: segment %d: %w", quote.String(s), i+1, err)
		}
		for _, p := range parts {
			if p.fact != "" {
				placeholders++
			}
		}
		t.segments = append(t.segments, parts)
	}
	if placeholders == 0 {
		return nodeTemplate{}, fmt.Errorf("%s has no placeholder, so every node would get the same ID; add one such as {{run_id}}", quote.String(s))
	}
	return t, nil
}

func parseSegment(seg string, facts []string) ([]templatePart, error) {
	if seg == "" || seg == "." || seg == ".." {
		return nil, fmt.Errorf("%s is not allowed: path segments are not empty and not '.' or '..'", quote.String(seg))
	}
	var parts []templatePart
	for rest := seg; rest != ""; {
		lit, after, found := strings.Cut(rest, "{{")
		if lit != "" {
			if err := checkLiteral(lit); err != nil {
				return nil, err
			}
			parts = append(parts, templatePart{literal: lit})
		}
		if !found {
			break
		}
		inner, tail, closed := strings.Cut(after, "}}")
		if !closed {
			return nil, fmt.Errorf("%s has '{{' without '}}'", quote.String(seg))
		}
		p, err := parsePlaceholder(inner, facts)
		if err != nil {
			return nil, err
		}
		parts = append(parts, p)
		rest = tail
	}
	for _, p := range parts {
		if p.path && len(parts) > 1 {
			return nil, fmt.Errorf("{{%s...}} stands for whole segments; put it between '/' on its own", p.fact)
		}
	}
	return parts, nil
}

func parsePlaceholder(inner string, facts []string) (templatePart, error) {
	name, isPath := strings.CutSuffix(inner, "...")
	if !slices.Contains(facts, name) {
		return templatePart{}, fmt.Errorf("{{%s}} does not name a fact; facts: %s", inner, strings.Join(facts, ", "))
	}
	return templatePart{fact: name, path: isPath}, nil
}

func checkLiteral(lit string) error {
	for i := 0; i < len(lit); i++ {
		if !isPathChar(lit[i]) {
			return fmt.Errorf("character %s in %s is not allowed; %s", quote.RuneAt(lit, i), quote.String(lit), pathAllowed)
		}
	}
	return nil
}

const pathAllowed = "a SPIFFE ID path segment allows letters A-Z and a-z, digits 0-9, '.', '-' and '_'"

func isPathChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_'
}

// render builds the agent's SPIFFE ID in td from facts. A value that does
// not fit its placeholder is refused, never escaped or split: a changed
// value could make two nodes share an ID, or let a crafted value choose
// another node's ID.
func (t nodeTemplate) render(facts map[string]string, td spiffeid.TrustDomain) (spiffeid.ID, error) {
	var b strings.Builder
	for _, parts := range t.segments {
		b.WriteByte('/')
		seg, err := renderSegment(parts, facts)
		if err != nil {
			return spiffeid.ID{}, err
		}
		b.WriteString(seg)
	}
	return identity.ParseIDInTrustDomain("node_id", td.IDString()+b.String(), td)
}

func renderSegment(parts []templatePart, facts map[string]string) (string, error) {
	var b strings.Builder
	for _, p := range parts {
		if p.fact == "" {
			b.WriteString(p.literal)
			continue
		}
		value, ok := facts[p.fact]
		if !ok {
			return "", fmt.Errorf("node_id needs fact %s, which the token does not have", p.fact)
		}
		if err := checkValue(p, value); err != nil {
			return "", fmt.Errorf("node_id: fact %s %s %w", p.fact, quote.String(value), err)
		}
		b.WriteString(value)
	}
	seg := b.String()
	if seg == "." || seg == ".." {
		return "", fmt.Errorf("node_id: segment %s is a dot segment, which a SPIFFE ID may not have", quote.String(seg))
	}
	return seg, nil
}

// checkValue says why value cannot stand for placeholder p.
func checkValue(p templatePart, value string) error {
	if value == "" {
		return errors.New("is empty, and a SPIFFE ID has no empty path segments")
	}
	if !p.path && strings.Contains(value, "/") {
		return fmt.Errorf("contains '/' but {{%s}} takes one path segment; use {{%s...}} in node_id for a path", p.fact, p.fact)
	}
	for seg := range strings.SplitSeq(value, "/") {
		switch seg {
		case "":
			return errors.New("has an empty path segment (a leading, trailing or double '/')")
		case ".", "..":
			return fmt.Errorf("has the segment %s, which a SPIFFE ID may not have", quote.String(seg))
		}
	}
	for i := 0; i < len(value); i++ {
		if value[i] != '/' && !isPathChar(value[i]) {
			return fmt.Errorf("has character %s at byte %d; %s", quote.RuneAt(value, i), i, pathAllowed)
		}
	}
	return nil
}
