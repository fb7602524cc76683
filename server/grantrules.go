package server

import (
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/authz"
)

// Resources that stand for the server's own records, so that reading
// them (or closing tasks) away from the admin socket is a privilege a
// task grants like any other: nobody holds it standing, a person asks for
// it, reviewers approve it, and it ends with the task. The web console
// reaches these records only this way.
const (
	ResourceAudit     = "writ/audit"
	ResourceTasks     = "writ/tasks"
	ResourceInventory = "writ/inventory"

	ActionRead  = "read"
	ActionClose = "close"
)

// adminOrGranted allows local administrators, and members of the trust
// domain whom the decision index allows action on resource now (a live
// task's grant or a standing grant), exactly as Check would answer.
func adminOrGranted(action, resource string) rule {
	return func(s *Server, c Caller) error {
		if c.Local != nil {
			return admin(s, c)
		}
		if !isMember(s.td, c.ID) {
			return fmt.Errorf("%s is not a member of trust domain %s", c, s.td)
		}
		ix := s.decisions.ix.Load()
		if ix == nil {
			return fmt.Errorf("the decision index is not loaded yet: retry shortly")
		}
		chain := []spiffeid.ID{c.ID}
		d := ix.Decide(authz.Request{Chain: chain, Action: action, Resource: resource, Time: s.now(), Facts: s.decisions.facts(chain)}, s.guardrail)
		if !d.Allow {
			return fmt.Errorf("%s may not call this: it is for local administrators, and for identities a live task grants %s on %s (%s); ask for it with 'writ request'",
				c, action, resource, d.Reason)
		}
		return nil
	}
}
