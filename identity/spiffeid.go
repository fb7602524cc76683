package identity

import (
	"fmt"
	"strings"
	"writ.dev/writ/internal/quote"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Limits from the SPIFFE-ID specification. go-spiffe does not enforce them,
// but other implementations may refuse longer values, so an identity writ
// issues must fit within them to be usable everywhere.
const (
	MaxTrustDomainLen = 255
	MaxIDLen          = 2048
)

const (
	spiffeScheme = "spiffe://"

	trustDomainAllowed = "allowed: lowercase letters a-z, digits 0-9, '.', '-' and '_'"
	pathAllowed        = "path segments allow letters A-Z and a-z, digits 0-9, '.', '-' and '_'"
	idExample          = "e.g. spiffe://example.org/service/web"
)

// ParseTrustDomain parses a bare trust domain name such as "example.org".
//
// The "spiffe://example.org" form is refused with a hint rather than
// accepted: a trust domain appears in config files and flags next to SPIFFE
// IDs, and accepting both forms would let a mistyped ID (with a path) be
// silently cut down to its trust domain. The field is "trust_domain".
func ParseTrustDomain(s string) (spiffeid.TrustDomain, error) {
	const field = "trust_domain"
	if problem := checkTrustDomainName(s); problem != "" {
		return spiffeid.TrustDomain{}, fieldErr(field, problem)
	}
	td, err := spiffeid.TrustDomainFromString(s)
	if err != nil {
		// Not reached while the checks above are at least as strict as
		// go-spiffe; kept so a future go-spiffe rule still yields a FieldError.
		return spiffeid.TrustDomain{}, fieldErr(field, fmt.Sprintf("%s: %v; %s", quote.String(s), err, trustDomainAllowed))
	}
	return td, nil
}

func checkTrustDomainName(s string) string {
	switch {
	case s == "":
		return `is required; give a trust domain name, e.g. "example.org"`
	case strings.TrimSpace(s) != s:
		return quote.String(s) + " has leading or trailing whitespace; remove it"
	}
	if i := strings.Index(s, "://"); i >= 0 {
		rest := s[i+3:]
		name, _, _ := strings.Cut(rest, "/")
		if strings.EqualFold(s[:i], "spiffe") && name != "" && checkTrustDomainChars(s, name, i+3) == "" && len(name) <= MaxTrustDomainLen {
			return fmt.Sprintf("%s has a scheme; give the bare trust domain name: %q", quote.String(s), name)
		}
		return quote.String(s) + ` has a scheme; give the bare trust domain name, e.g. "example.org" rather than "spiffe://example.org"`
	}
	if len(s) > MaxTrustDomainLen {
		return fmt.Sprintf("%s is %d bytes; a trust domain name is at most %d", quote.String(s), len(s), MaxTrustDomainLen)
	}
	if problem := checkTrustDomainChars(s, s, 0); problem != "" {
		if lower := strings.ToLower(s); lower != s && checkTrustDomainChars(lower, lower, 0) == "" {
			return fmt.Sprintf("%s must be lowercase; use %q", quote.String(s), lower)
		}
		return quote.String(s) + ": " + problem
	}
	return ""
}

// checkTrustDomainChars reports the first character of name that a trust
// domain may not hold. name starts at byte offset in whole, the string the
// operator gave, so positions in the message match what they typed.
func checkTrustDomainChars(whole, name string, offset int) string {
	// Userinfo is reported before anything else in it ("user:pw@host" is
	// not a port problem).
	if i := strings.IndexByte(name, '@'); i >= 0 {
		return fmt.Sprintf("'@' at byte %d: userinfo is not allowed in a trust domain; %s", offset+i, trustDomainAllowed)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if isTrustDomainChar(c) {
			continue
		}
		at := offset + i
		switch {
		case c >= 'A' && c <= 'Z':
			return fmt.Sprintf("uppercase %s at byte %d: a trust domain is lowercase; %s", quote.RuneAt(whole, at), at, trustDomainAllowed)
		case c == ':':
			return fmt.Sprintf("':' at byte %d: a port is not allowed in a trust domain; %s", at, trustDomainAllowed)
		case c == '/':
			return fmt.Sprintf("'/' at byte %d: a trust domain has no path; %s", at, trustDomainAllowed)
		case c == '%':
			return fmt.Sprintf("'%%' at byte %d: percent-encoding is not allowed in a trust domain; %s", at, trustDomainAllowed)
		default:
			return fmt.Sprintf("character %s at byte %d is not allowed in a trust domain; %s", quote.RuneAt(whole, at), at, trustDomainAllowed)
		}
	}
	return ""
}

func isTrustDomainChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_'
}

func isPathChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_'
}

// ParseID parses a full SPIFFE ID such as "spiffe://example.org/service/web"
// given in field. A trust domain's own ID ("spiffe://example.org", no path)
// is a valid SPIFFE ID and is accepted; ParseIDInTrustDomain refuses it.
//
// The value is not normalised: an ID that differs from its canonical form
// (an uppercase trust domain, a trailing slash) is refused with the canonical
// form in the message, because silently rewriting an identity would make the
// stored rule differ from what the operator reviewed.
func ParseID(field, s string) (spiffeid.ID, error) {
	if problem := checkID(s); problem != "" {
		return spiffeid.ID{}, fieldErr(field, problem)
	}
	id, err := spiffeid.FromString(s)
	if err != nil {
		// Not reached while checkID is at least as strict as go-spiffe.
		return spiffeid.ID{}, fieldErr(field, fmt.Sprintf("%s: %v; %s", quote.String(s), err, idExample))
	}
	return id, nil
}

// ParseIDInTrustDomain parses a SPIFFE ID that must belong to td and name
// something inside it (have a path): the trust domain's own ID identifies no
// workload, and an ID of another trust domain cannot be issued by this one.
func ParseIDInTrustDomain(field, s string, td spiffeid.TrustDomain) (spiffeid.ID, error) {
	id, err := ParseID(field, s)
	if err != nil {
		return spiffeid.ID{}, err
	}
	if err := checkInTrustDomain(field, id, td, true); err != nil {
		return spiffeid.ID{}, err
	}
	return id, nil
}

// checkInTrustDomain checks that id is in td and, if needPath, that it names
// something inside td rather than td itself.
func checkInTrustDomain(field string, id spiffeid.ID, td spiffeid.TrustDomain, needPath bool) *FieldError {
	switch {
	case td.IsZero():
		return fieldErr(field, "cannot be checked: no trust domain is configured")
	case !id.MemberOf(td):
		return fieldErr(field, fmt.Sprintf("%s is in trust domain %q; it must be in %q, e.g. %s/service/web",
			quote.String(id.String()), id.TrustDomain().Name(), td.Name(), td.IDString()))
	case needPath && id.Path() == "":
		return fieldErr(field, fmt.Sprintf("%s has no path; name something inside the trust domain, e.g. %s/service/web",
			quote.String(id.String()), td.IDString()))
	}
	return nil
}

// checkID returns what is wrong with s as a SPIFFE ID, or "" if nothing is.
func checkID(s string) string {
	switch {
	case s == "":
		return "is required; give a SPIFFE ID, " + idExample
	case len(s) > MaxIDLen:
		return fmt.Sprintf("%s is %d bytes; a SPIFFE ID is at most %d", quote.String(s), len(s), MaxIDLen)
	case strings.TrimSpace(s) != s:
		return quote.String(s) + " has leading or trailing whitespace; remove it"
	}
	if !strings.HasPrefix(s, spiffeScheme) {
		return quote.String(s) + " " + schemeProblem(s)
	}

	rest := s[len(spiffeScheme):]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, path := rest[:end], rest[end:]
	offset := len(spiffeScheme)
	switch {
	case authority == "":
		return quote.String(s) + " has no trust domain; expected spiffe://<trust domain>/<path>, " + idExample
	case len(authority) > MaxTrustDomainLen:
		return fmt.Sprintf("%s has a trust domain of %d bytes; at most %d are allowed", quote.String(s), len(authority), MaxTrustDomainLen)
	}
	if problem := checkTrustDomainChars(s, authority, offset); problem != "" {
		lower := strings.ToLower(authority)
		if lower != authority && checkTrustDomainChars(lower, lower, 0) == "" && checkPath(s, path, offset+end) == "" {
			return fmt.Sprintf("%s: the trust domain must be lowercase; use %q", quote.String(s), spiffeScheme+lower+path)
		}
		return quote.String(s) + ": " + problem
	}
	if problem := checkPath(s, path, offset+end); problem != "" {
		return quote.String(s) + ": " + problem
	}
	return ""
}

func schemeProblem(s string) string {
	if i := strings.Index(s, "://"); i >= 0 {
		scheme := s[:i]
		if strings.EqualFold(scheme, "spiffe") {
			return fmt.Sprintf("has an uppercase scheme; use %s", quote.String(spiffeScheme+s[i+3:]))
		}
		return fmt.Sprintf("has scheme %s; a SPIFFE ID starts with %q, %s", quote.String(scheme), spiffeScheme, idExample)
	}
	if len(s) >= len("spiffe:") && strings.EqualFold(s[:len("spiffe:")], "spiffe:") {
		return fmt.Sprintf("does not start with %q (two slashes), %s", spiffeScheme, idExample)
	}
	if len(s)+len(spiffeScheme) <= MaxIDLen && checkID(spiffeScheme+s) == "" {
		return fmt.Sprintf("has no scheme; did you mean %s?", quote.String(spiffeScheme+s))
	}
	return fmt.Sprintf("has no scheme; a SPIFFE ID starts with %q, %s", spiffeScheme, idExample)
}

// checkPath checks the path part of an ID, which starts at byte offset of s.
func checkPath(s, path string, offset int) string {
	if path == "" {
		return ""
	}
	// The caller split the path off at the first '/', '?' or '#', so a path
	// that does not start with '/' starts with a query or a fragment.
	if path[0] != '/' {
		return badPathChar(s, offset)
	}
	segStart := 0
	for i := 1; i <= len(path); i++ {
		if i < len(path) && path[i] != '/' {
			if isPathChar(path[i]) {
				continue
			}
			return badPathChar(s, offset+i)
		}
		// path[segStart] is the '/' opening the segment that ends at i.
		segment := path[segStart+1 : i]
		at := offset + segStart
		switch {
		case segment == "" && i == len(path):
			return fmt.Sprintf("trailing '/' at byte %d; remove it", at)
		case segment == "":
			return fmt.Sprintf("empty path segment (\"//\") at byte %d; separate segments with a single '/'", at)
		case segment == "." || segment == "..":
			return fmt.Sprintf("path segment %s at byte %d is not allowed; dot segments have no meaning in a SPIFFE ID", quote.String(segment), at+1)
		}
		segStart = i
	}
	return ""
}

func badPathChar(s string, at int) string {
	switch s[at] {
	case '?':
		return fmt.Sprintf("'?' at byte %d starts a query, which a SPIFFE ID may not have; %s", at, pathAllowed)
	case '#':
		return fmt.Sprintf("'#' at byte %d starts a fragment, which a SPIFFE ID may not have; %s", at, pathAllowed)
	case '%':
		return fmt.Sprintf("'%%' at byte %d: percent-encoding is not allowed; %s", at, pathAllowed)
	default:
		return fmt.Sprintf("character %s at byte %d is not allowed; %s", quote.RuneAt(s, at), at, pathAllowed)
	}
}
