package rotation

import (
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/audit"
	"writ.dev/writ/identity"
	"writ.dev/writ/store"
)

// ServerActor is how a server's own actions (rotations, publications) are
// named in the audit log: its SPIFFE ID, spiffe://TD/writ/server/ID.
func ServerActor(td spiffeid.TrustDomain, serverID string) string {
	id, err := identity.ServerID(td, serverID)
	if err != nil {
		return "writ-server:" + serverID
	}
	return id.String()
}

// authorityEvent encodes the audit event of a change to an authority.
func authorityEvent(at time.Time, typ, actor, subject string, details any) (store.AuditEvent, error) {
	return audit.Make(at, typ, actor, subject, details)
}
