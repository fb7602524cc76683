package identity

import (
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// LockCoversID reports whether a lock target of kind and value stops
// issuance for id. spiffe-id, node and agent targets name one ID exactly;
// an id-prefix target names an ID and everything below it by whole path
// segments (spiffe://td/ci covers spiffe://td/ci/x, not spiffe://td/cicd).
// Other kinds (join-method) never cover an ID. The server and the agent
// both decide with it, so a locked identity is neither issued nor served.
func LockCoversID(kind, value string, id spiffeid.ID) bool {
	s := id.String()
	switch kind {
	case "spiffe-id", "node", "agent":
		return s == value
	case "id-prefix":
		return s == value || strings.HasPrefix(s, value+"/")
	default:
		return false
	}
}
