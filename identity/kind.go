package identity

import (
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Kind is the kind of thing an identity names. It is derived from the ID's
// path by convention, never stored beside it, so an identity cannot claim
// one kind in its certificate and another in writ's records. Policy may look
// at the kind; no code path serves one kind only, because people, machines
// and agents get the same identities and the same certificates.
type Kind string

const (
	KindWorkload Kind = "workload"
	KindPerson   Kind = "person"
	KindAgent    Kind = "agent"
	KindNode     Kind = "node"
)

// KindOf returns the kind of id from its first path segment:
// /person/... is a person, /agent/... an AI agent, /node/... and writ's own
// node agents (/writ/agent/...) are nodes, and everything else is a
// workload. Segments are matched exactly (case-sensitive, as SPIFFE paths
// are), so /Person/x and /personal/x are workloads.
func KindOf(id spiffeid.ID) Kind {
	path := id.Path()
	if path == agentPathPrefix || strings.HasPrefix(path, agentPathPrefix+"/") {
		return KindNode
	}
	first := path
	if first != "" {
		first = first[1:]
	}
	if i := strings.IndexByte(first, '/'); i >= 0 {
		first = first[:i]
	}
	switch first {
	case string(NamespacePerson):
		return KindPerson
	case "agent":
		return KindAgent
	case "node":
		return KindNode
	}
	return KindWorkload
}
