// Package x509pop is the x509pop join method: a node proves it holds the
// private key of a certificate issued by a CA the server trusts, by signing
// a fresh nonce the server chose.
//
// The exchange is one round trip. The server calls Verifier.NewChallenge and
// sends the nonce; the node answers with its certificate chain and Sign's
// signature; the server calls Verifier.Verify. Each nonce is accepted once
// and for ChallengeTTL only, so a recorded response is worthless to anyone
// who replays it, and the signed message carries a writ-specific prefix
// (see Sign) so a signature made here can never be passed off as one made
// for another protocol that uses the same key, nor the other way round.
//
// The agent ID is built from the certificate with the node_id template, and
// the selectors ("x509pop:fingerprint:…", "x509pop:ca:fingerprint:…",
// "x509pop:subject:cn:…", "x509pop:san:dns:…") let registration rules pick
// nodes by certificate, by issuing CA, or by name.
package x509pop

import (
	"errors"
	"fmt"
	"strings"
	"writ.dev/writ/internal/quote"

	"writ.dev/writ/identity"
)

// SelectorType is the type of every selector this join method produces.
const SelectorType = "x509pop"

// DefaultNodeID is the node_id template used when none is configured. The
// certificate's fingerprint is always a valid path segment and differs for
// every certificate, so no two nodes can end up with the same agent ID.
const DefaultNodeID = "/node/x509pop/{{fingerprint}}"

// Placeholders a node_id template may use, each as a whole path segment.
const (
	placeholderFingerprint = "fingerprint"
	placeholderSubjectCN   = "subject_cn"
	placeholderSerial      = "serial"
)

const placeholderHelp = "use {{fingerprint}}, {{subject_cn}} or {{serial}}"

// Config is the server side: the CAs whose certificates may join, and how
// agent IDs are made.
type Config struct {
	BundleFile string `yaml:"bundle_file"` // PEM CA certificates
	NodeID     string `yaml:"node_id"`     // template for the agent ID path; default DefaultNodeID
}

// Validate checks the config without reading the bundle file, so a config
// can be checked on a machine that does not hold it; LoadVerifier reads it.
// Errors name the YAML key.
func (c *Config) Validate() error {
	_, err := c.check()
	return err
}

// check validates c and returns the parsed node_id template, so that
// LoadVerifier does not parse it twice.
func (c *Config) check() (nodeIDTemplate, error) {
	var errs []error
	if c.BundleFile == "" {
		errs = append(errs, fieldErr("bundle_file", "is required: a PEM file of the CA certificates whose node certificates may join"))
	}
	tmpl, err := parseNodeID(c.nodeID())
	errs = append(errs, err)
	return tmpl, errors.Join(errs...)
}

func (c *Config) nodeID() string {
	if c.NodeID == "" {
		return DefaultNodeID
	}
	return c.NodeID
}

// nodeIDTemplate is a parsed node_id: one entry per path segment, either a
// literal or a placeholder name.
type nodeIDTemplate []templateSegment

type templateSegment struct {
	literal     string
	placeholder string
}

// parseNodeID parses a node_id template. Every placeholder must fill a
// whole path segment so that the value it stands for can be checked as one
// segment; a template without placeholders is refused because it would give
// every node the same agent ID.
func parseNodeID(s string) (nodeIDTemplate, error) {
	if !strings.HasPrefix(s, "/") {
		return nil, fieldErr("node_id", fmt.Sprintf("%s must start with '/', e.g. %q", quote.String(s), DefaultNodeID))
	}
	var tmpl nodeIDTemplate
	hasPlaceholder := false
	for i, seg := range strings.Split(s[1:], "/") {
		ts, problem := parseSegment(seg)
		if problem != "" {
			return nil, fieldErr("node_id", fmt.Sprintf("%s: path segment %d %s", quote.String(s), i+1, problem))
		}
		hasPlaceholder = hasPlaceholder || ts.placeholder != ""
		tmpl = append(tmpl, ts)
	}
	if !hasPlaceholder {
		return nil, fieldErr("node_id", fmt.Sprintf("%s has no placeholder, so every node would get the same agent ID; %s, e.g. %q",
			quote.String(s), placeholderHelp, DefaultNodeID))
	}
	return tmpl, nil
}

// parseSegment reads one template segment, or says what is wrong with it.
func parseSegment(seg string) (templateSegment, string) {
	inner, isPlaceholder := strings.CutPrefix(seg, "{{")
	inner, closed := strings.CutSuffix(inner, "}}")
	switch {
	case isPlaceholder && closed:
		switch inner {
		case placeholderFingerprint, placeholderSubjectCN, placeholderSerial:
			return templateSegment{placeholder: inner}, ""
		}
		return templateSegment{}, fmt.Sprintf("is unknown placeholder %s; %s", quote.String(seg), placeholderHelp)
	case strings.Contains(seg, "{{") || strings.Contains(seg, "}}"):
		return templateSegment{}, fmt.Sprintf("%s mixes a placeholder with text; a placeholder must be a whole path segment", quote.String(seg))
	}
	if problem := segmentProblem(seg); problem != "" {
		return templateSegment{}, problem
	}
	return templateSegment{literal: seg}, ""
}

// render fills the template from the certificate's values. A value that is
// not a valid path segment is refused, never escaped: an escaped value would
// be an agent ID the operator never wrote a rule for, and a value holding
// '/' or ".." could otherwise land the node in another part of the ID space.
func (t nodeIDTemplate) render(values map[string]string) (string, error) {
	var b strings.Builder
	for _, seg := range t {
		v := seg.literal
		if seg.placeholder != "" {
			v = values[seg.placeholder]
			if problem := segmentProblem(v); problem != "" {
				return "", fmt.Errorf("x509pop: cannot fill {{%s}} in node_id: the node certificate's %s %s %s; "+
					"use {{%s}} in node_id, or issue the certificate with a value of 1 or more of a-z A-Z 0-9 . - _",
					seg.placeholder, seg.placeholder, quote.String(v), problem, placeholderFingerprint)
			}
		}
		b.WriteString("/")
		b.WriteString(v)
	}
	return b.String(), nil
}

// segmentProblem says why v cannot be one SPIFFE ID path segment, or "".
func segmentProblem(v string) string {
	switch v {
	case "":
		return "is empty"
	case ".", "..":
		return "is a dot segment, which has no meaning in a SPIFFE ID"
	}
	for i, r := range v {
		switch {
		case r == '/':
			return fmt.Sprintf("contains '/' at byte %d, which would split it into several path segments", i)
		case r >= 0x80 || !isPathChar(byte(r)):
			return fmt.Sprintf("contains %q at byte %d; only a-z A-Z 0-9 . - _ are allowed", r, i)
		}
	}
	return ""
}

func isPathChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_'
}

func fieldErr(field, msg string) *identity.FieldError {
	return &identity.FieldError{Field: field, Msg: msg}
}
