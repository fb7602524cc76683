package guardrail

import (
	"net/netip"
	"time"

	cedar "github.com/cedar-policy/cedar-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/identity"
)

// Request is what a guardrail judges: one identity of a request's chain, or
// a grant being made.
type Request struct {
	// Principal becomes writ::Identity::"spiffe://..." with attributes
	// kind, trust_domain and path.
	Principal spiffeid.ID
	// Action becomes writ::Action::"<Action>".
	Action string
	// Resource is a hierarchical name such as "db/prod/payments"; it
	// becomes writ::Resource::"db/prod/payments" with its prefixes as
	// parents.
	Resource string
	Context  Context
}

// Context is the request's context record.
type Context struct {
	// Time becomes context.time (a datetime), context.hour (0-23, UTC)
	// and context.weekday ("mon".."sun"). The zero Time means now, so a
	// caller cannot slip past a time-of-day guardrail by leaving it out.
	Time time.Time
	// SourceAddress becomes context.source_ip when it is an IP address
	// (with or without a port); otherwise context has no source_ip.
	SourceAddress string
	// Facts are attestation facts, as the record context.facts.
	Facts map[string]string
	// Chain is the request's whole identity chain. It becomes
	// context.chain_kinds (the set of kinds), context.person_in_chain and
	// context.chain_length.
	Chain []spiffeid.ID
	// TaskID becomes context.task, "" when there is no task.
	TaskID string
	// Granting is true when a task is granting Action rather than using
	// it; it becomes context.granting.
	Granting bool
	// Arguments, when set, become the record context.arguments.
	Arguments Arguments
}

// contextFields is the most fields a context record has, to size its map once.
const contextFields = 12

var weekdays = [7]cedar.String{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// requestEntities holds the only entities a guardrail request refers to.
// It stands in for an entity map, which would cost a map per decision.
type requestEntities struct {
	principal, action, resource cedar.Entity
}

func (e *requestEntities) Get(uid cedar.EntityUID) (cedar.Entity, bool) {
	switch uid {
	case e.principal.UID:
		return e.principal, true
	case e.action.UID:
		return e.action, true
	case e.resource.UID:
		return e.resource, true
	}
	return cedar.Entity{}, false
}

// toCedar turns r into a Cedar request and its entities.
func toCedar(r Request) (cedar.Request, *requestEntities) {
	ents := &requestEntities{
		principal: principalEntity(r.Principal),
		action:    cedar.Entity{UID: cedar.NewEntityUID(actionType, cedar.String(r.Action))},
		resource:  resourceEntity(r.Resource),
	}
	req := cedar.Request{
		Principal: ents.principal.UID,
		Action:    ents.action.UID,
		Resource:  ents.resource.UID,
		Context:   contextRecord(r.Context),
	}
	return req, ents
}

func principalEntity(id spiffeid.ID) cedar.Entity {
	return cedar.Entity{
		UID: cedar.NewEntityUID(identityType, cedar.String(id.String())),
		Attributes: cedar.NewRecord(cedar.RecordMap{
			"kind":         cedar.String(identity.KindOf(id)),
			"trust_domain": cedar.String(id.TrustDomain().Name()),
			"path":         cedar.String(id.Path()),
		}),
	}
}

func resourceEntity(name string) cedar.Entity {
	var parents []cedar.EntityUID
	ancestors(name, func(a string) bool {
		parents = append(parents, cedar.NewEntityUID(resourceType, cedar.String(a)))
		return true
	})
	return cedar.Entity{
		UID:     cedar.NewEntityUID(resourceType, cedar.String(name)),
		Parents: cedar.NewEntityUIDSet(parents...),
	}
}

func contextRecord(c Context) cedar.Record {
	t := c.Time
	if t.IsZero() {
		t = time.Now()
	}
	t = t.UTC()
	m := make(cedar.RecordMap, contextFields)
	m["time"] = cedar.NewDatetime(t)
	m["hour"] = cedar.Long(t.Hour())
	m["weekday"] = weekdays[t.Weekday()]
	m["facts"] = factsRecord(c.Facts)
	m["task"] = cedar.String(c.TaskID)
	m["granting"] = cedar.Boolean(c.Granting)
	if ip, ok := sourceIP(c.SourceAddress); ok {
		m["source_ip"] = ip
	}
	if c.Arguments.set {
		m["arguments"] = c.Arguments.rec
	}
	addChain(m, c.Chain)
	return cedar.NewRecord(m)
}

// sourceIP parses a source address, with or without a port.
func sourceIP(s string) (cedar.IPAddr, bool) {
	addr, err := netip.ParseAddr(s)
	if err != nil {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return cedar.IPAddr{}, false
		}
		addr = ap.Addr()
	}
	addr = addr.WithZone("").Unmap()
	return cedar.IPAddr(netip.PrefixFrom(addr, addr.BitLen())), true
}

func factsRecord(facts map[string]string) cedar.Record {
	m := make(cedar.RecordMap, len(facts))
	for k, v := range facts {
		m[cedar.String(k)] = cedar.String(v)
	}
	return cedar.NewRecord(m)
}

// addChain adds what policies need to know about the chain as a whole.
func addChain(m cedar.RecordMap, chain []spiffeid.ID) {
	kinds := make([]cedar.Value, 0, len(chain))
	person := false
	for _, id := range chain {
		k := identity.KindOf(id)
		person = person || k == identity.KindPerson
		kinds = append(kinds, cedar.String(k))
	}
	m["chain_kinds"] = cedar.NewSet(kinds...)
	m["person_in_chain"] = cedar.Boolean(person)
	m["chain_length"] = cedar.Long(len(chain))
}
