package identity

import (
	"fmt"
	"strings"
	"writ.dev/writ/internal/quote"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// LockKind is what a lock's target names. The store keeps it as its string
// value; everything that decides with a lock uses these constants.
type LockKind string

const (
	LockSPIFFEID   LockKind = "spiffe-id"   // exactly one SPIFFE ID
	LockIDPrefix   LockKind = "id-prefix"   // a SPIFFE ID and everything below it, by whole path segments
	LockNode       LockKind = "node"        // a node's SPIFFE ID
	LockAgent      LockKind = "agent"       // an agent's SPIFFE ID
	LockJoinMethod LockKind = "join-method" // a node attestation method by name
	LockTask       LockKind = "task"        // a task: its grants are dead, and nobody acts in it, while the lock holds
)

// LockKinds lists every lock kind, in the order help texts give them.
func LockKinds() []LockKind {
	return []LockKind{LockSPIFFEID, LockIDPrefix, LockNode, LockAgent, LockJoinMethod, LockTask}
}

// NamesID reports whether a target of kind k names SPIFFE IDs (its value is
// an ID), as opposed to a join method or a task.
func (k LockKind) NamesID() bool {
	switch k {
	case LockSPIFFEID, LockIDPrefix, LockNode, LockAgent:
		return true
	}
	return false
}

// ParseLockKind parses a lock kind given in field.
func ParseLockKind(field, s string) (LockKind, error) {
	names := make([]string, 0, len(LockKinds()))
	for _, k := range LockKinds() {
		if string(k) == s {
			return k, nil
		}
		names = append(names, string(k))
	}
	if s == "" {
		return "", fieldErr(field, "is required: one of "+strings.Join(names, ", "))
	}
	return "", fieldErr(field, fmt.Sprintf("%s is not a lock target: use one of %s", quote.String(s), strings.Join(names, ", ")))
}

// LockCoversID reports whether a lock target of kind and value stops
// issuance for id. spiffe-id, node and agent targets name one ID exactly;
// an id-prefix target names an ID and everything below it by whole path
// segments (spiffe://td/ci covers spiffe://td/ci/x, not spiffe://td/cicd).
// Other kinds (join-method, task) never cover an ID. The server and the
// agent both decide with it, so a locked identity is neither issued nor
// served.
func LockCoversID(kind LockKind, value string, id spiffeid.ID) bool {
	s := id.String()
	switch kind {
	case LockSPIFFEID, LockNode, LockAgent:
		return s == value
	case LockIDPrefix:
		return s == value || strings.HasPrefix(s, value+"/")
	default:
		return false
	}
}
