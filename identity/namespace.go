package identity

import (
	"fmt"
	"strings"
	"writ.dev/writ/internal/quote"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Namespace is a first path segment writ gives a fixed meaning to. The
// reserved ones are handed out by one code path only, so an identity rule
// or an administrator's mint can never produce an ID in them: a workload
// holding a server's ID could impersonate it to every agent, and one holding
// a person's ID would act with that person's tasks.
type Namespace string

const (
	// NamespaceWrit holds writ's own servers (/writ/server/SERVER_ID),
	// node agents (/writ/agent/...) and audit signer (/writ/audit).
	NamespaceWrit Namespace = "writ"
	// NamespacePerson holds people, /person/DOMAIN/LOCAL, issued only by
	// sign-in (PersonID).
	NamespacePerson Namespace = "person"
)

// reservedNamespaces are the namespaces no rule and no minted SVID may use.
var reservedNamespaces = []Namespace{NamespaceWrit, NamespacePerson}

// Path returns "/ns".
func (ns Namespace) Path() string { return "/" + string(ns) }

// Contains reports whether id is ns's own ID or below it, by whole segments
// (spiffe://td/writ/x is in writ, spiffe://td/writer is not).
func (ns Namespace) Contains(id spiffeid.ID) bool {
	p := id.Path()
	return p == ns.Path() || strings.HasPrefix(p, ns.Path()+"/")
}

// Reserved reports whether ns is handed out only by writ itself.
func (ns Namespace) Reserved() bool {
	for _, r := range reservedNamespaces {
		if ns == r {
			return true
		}
	}
	return false
}

// ReservedNamespaceOf returns the reserved namespace id is in, if any.
func ReservedNamespaceOf(id spiffeid.ID) (Namespace, bool) {
	for _, ns := range reservedNamespaces {
		if ns.Contains(id) {
			return ns, true
		}
	}
	return "", false
}

// CheckNotReserved refuses an ID in a reserved namespace, for identity
// rules and administrators' mints: only sign-in issues people's IDs, and
// only writ names its servers and agents. field names the input.
func CheckNotReserved(field string, id spiffeid.ID) error {
	ns, reserved := ReservedNamespaceOf(id)
	if !reserved {
		// SPIFFE paths are case-sensitive, but people and tools reading an
		// audit trail or comparing IDs loosely are not: /Person/erin must
		// not pass for erin, nor /WRIT/server/x for a server.
		for _, r := range reservedNamespaces {
			if p := asciiLower(id.Path()); p == r.Path() || strings.HasPrefix(p, r.Path()+"/") {
				return fieldErr(field, fmt.Sprintf("%s differs from the reserved %s/ only in case; choose another path",
					quote.String(id.String()), r.Path()))
			}
		}
		return nil
	}
	why := "writ's own servers and agents"
	if ns == NamespacePerson {
		why = "people, who get their identity only by signing in (writ login)"
	}
	return fieldErr(field, fmt.Sprintf("%s is under %s/, which is reserved for %s; choose another path",
		quote.String(id.String()), ns.Path(), why))
}

// Paths in the writ namespace. Built here only, so a server's ID and the
// check that an ID is a server's cannot drift apart.
const (
	serverSegment = "server"
	agentSegment  = "agent"
	auditSegment  = "audit"
)

// ServerID returns the ID of server serverID of td:
// spiffe://TD/writ/server/SERVER_ID.
func ServerID(td spiffeid.TrustDomain, serverID string) (spiffeid.ID, error) {
	return spiffeid.FromSegments(td, string(NamespaceWrit), serverSegment, serverID)
}

// ServerPathPrefix is the path every server ID starts with, "/writ/server/".
func ServerPathPrefix() string { return NamespaceWrit.Path() + "/" + serverSegment + "/" }

// IsServerID reports whether id names one of writ's servers.
func IsServerID(id spiffeid.ID) bool {
	return strings.HasPrefix(id.Path(), ServerPathPrefix()) && len(id.Path()) > len(ServerPathPrefix())
}

// AgentID returns the ID of a node agent of td below /writ/agent, e.g.
// AgentID(td, "join-token", id) is spiffe://TD/writ/agent/join-token/ID.
func AgentID(td spiffeid.TrustDomain, segments ...string) (spiffeid.ID, error) {
	return spiffeid.FromSegments(td, append([]string{string(NamespaceWrit), agentSegment}, segments...)...)
}

// agentPathPrefix is where writ's node agents get their own identities.
// They are named under "writ" rather than "node" so that an operator's
// /node/... rules and writ's own agent IDs cannot collide.
var agentPathPrefix = NamespaceWrit.Path() + "/" + agentSegment

// AuditOrigin returns the checkpoint origin of a trust domain's audit log,
// TD/writ/audit: in the writ namespace so no workload's name can be it.
func AuditOrigin(trustDomain string) string {
	return trustDomain + NamespaceWrit.Path() + "/" + auditSegment
}

// PersonID returns the SPIFFE ID of the person with the email address
// local@domain: spiffe://TD/person/DOMAIN/LOCAL, with both parts
// lowercased (ASCII). It is the one rule for a person's ID: sign-in, the
// token endpoint and every other place that names a person from an email
// use it, so "Erin@Example.com" and "erin@example.com" are one person and a
// lock on one covers the other. Email local parts are case-sensitive in
// theory (RFC 5321) but not at any identity provider writ signs people in
// with, and two people told apart by case only would be a trap.
//
// The address is split at its last '@'. Each part must be a valid SPIFFE
// path segment once lowercased (letters, digits, '.', '-', '_'; not "." or
// ".."); an address with other characters is refused, not rewritten, since
// rewriting could map two addresses to one person. field names the input.
func PersonID(field string, td spiffeid.TrustDomain, email string) (spiffeid.ID, error) {
	local, domain, err := PersonEmailParts(field, email)
	if err != nil {
		return spiffeid.ID{}, err
	}
	id, err := spiffeid.FromSegments(td, string(NamespacePerson), domain, local)
	if err != nil {
		return spiffeid.ID{}, fieldErr(field, fmt.Sprintf("%s: %v", quote.String(email), err))
	}
	return id, nil
}

// PersonEmailParts splits email as PersonID does and returns its local
// part and domain in the form a person's ID holds them (lowercase), or a
// *FieldError for field. Sign-in's facts (email_local, email_domain) come
// from it, so rules over them see what the ID says.
func PersonEmailParts(field, email string) (local, domain string, err error) {
	const allowed = "a person's email local part and domain allow letters, digits, '.', '-' and '_'"
	at := strings.LastIndexByte(email, '@')
	if at <= 0 || at == len(email)-1 {
		return "", "", fieldErr(field, quote.String(email)+" is not an email address (local@domain)")
	}
	if len(email) > MaxIDLen/2 {
		return "", "", fieldErr(field, fmt.Sprintf("%s is %d bytes; an email address is at most %d", quote.String(email), len(email), MaxIDLen/2))
	}
	// Only ASCII letters are folded: Unicode folding maps other letters
	// onto them (the Kelvin sign onto 'k', 'İ' onto 'i'), which would give
	// another mailbox this person's ID.
	local, domain = asciiLower(email[:at]), asciiLower(email[at+1:])
	for _, part := range []string{local, domain} {
		if part == "." || part == ".." {
			return "", "", fieldErr(field, quote.String(email)+": "+allowed)
		}
		for i := 0; i < len(part); i++ {
			if !isPathChar(part[i]) {
				return "", "", fieldErr(field, fmt.Sprintf("%s: character %s is not allowed; %s", quote.String(email), quote.RuneAt(part, i), allowed))
			}
		}
	}
	return local, domain, nil
}

// asciiLower lowercases A-Z and leaves every other byte as it is, for the
// character rule to judge.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}

// CheckPersonCase refuses an ID in the person namespace that is not
// lowercase: PersonID never issues one, so a lock or a task member naming
// it would name nobody while the person it was meant for goes free. The
// error gives the canonical form.
func CheckPersonCase(field string, id spiffeid.ID) error {
	if !NamespacePerson.Contains(id) {
		return nil
	}
	if lower := strings.ToLower(id.Path()); lower != id.Path() {
		return fieldErr(field, fmt.Sprintf("%s: person IDs are lowercase (sign-in lowercases the email); use %s",
			quote.String(id.String()), quote.String(id.TrustDomain().IDString()+lower)))
	}
	return nil
}
