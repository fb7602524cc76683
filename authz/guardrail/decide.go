package guardrail

import (
	"fmt"
	"iter"
	"slices"

	cedar "github.com/cedar-policy/cedar-go"
)

// Decision is the outcome of judging one request.
type Decision struct {
	// Allowed is the verdict: no forbid matched, and either some permit
	// matched or the set has no permit policies at all.
	Allowed bool
	// Forbidden is true when some forbid policy matched.
	Forbidden bool
	// Permitted is true when some permit policy matched, whether or not
	// a forbid overrode it.
	Permitted bool
	// Policies are the @ids that decided, sorted: the matching forbids
	// when forbidden, otherwise the matching permits.
	Policies []string
	// Errors describe policies that failed to evaluate and were skipped,
	// naming each policy's @id and position.
	Errors []string
}

// Decide judges r against the policies whose scopes can match its action
// and resource. Forbid wins. A set without permit policies allows whatever
// it does not forbid, because guardrails bound privileges rather than
// grant them; a set with any permit policy denies what no permit matches.
func (s *Set) Decide(r Request) Decision {
	req, ents := toCedar(r)
	forbidden := s.evaluate(&s.forbids, req, ents)
	d := Decision{Forbidden: len(forbidden.Reasons) > 0}
	d.Errors = appendErrors(d.Errors, forbidden.Errors)
	permitted := cedar.Diagnostic{}
	if s.anyPermit {
		permitted = s.evaluate(&s.permits, req, ents)
		d.Errors = appendErrors(d.Errors, permitted.Errors)
	}
	d.Permitted = len(permitted.Reasons) > 0
	d.Allowed = !d.Forbidden && (d.Permitted || !s.anyPermit)
	if d.Forbidden {
		d.Policies = policyNames(forbidden.Reasons)
	} else {
		d.Policies = policyNames(permitted.Reasons)
	}
	return d
}

// evaluate runs Cedar over the candidates of one effect. Because all of
// them share that effect, the diagnostic's reasons are exactly the
// policies that matched.
func (s *Set) evaluate(ix *index, req cedar.Request, ents *requestEntities) cedar.Diagnostic {
	c := candidates{set: s, ix: ix, action: string(req.Action.ID), resource: string(req.Resource.ID)}
	_, diag := cedar.Authorize(&c, ents, req)
	s.evaluated.Add(c.n)
	return diag
}

// candidates presents the policies an index selects as a cedar
// PolicyIterator, without collecting them first.
type candidates struct {
	set              *Set
	ix               *index
	action, resource string
	n                int64
}

func (c *candidates) All() iter.Seq2[cedar.PolicyID, *cedar.Policy] {
	return func(yield func(cedar.PolicyID, *cedar.Policy) bool) {
		c.ix.each(c.action, c.resource, func(i int) bool {
			c.n++
			e := &c.set.policies[i]
			return yield(e.id, e.policy)
		})
	}
}

func policyNames(reasons []cedar.DiagnosticReason) []string {
	if len(reasons) == 0 {
		return nil
	}
	names := make([]string, len(reasons))
	for i, r := range reasons {
		names[i] = string(r.PolicyID)
	}
	slices.Sort(names)
	return names
}

func appendErrors(dst []string, errs []cedar.DiagnosticError) []string {
	for _, e := range errs {
		dst = append(dst, fmt.Sprintf("policy %q at %s: %s", e.PolicyID, position(e.Position), e.Message))
	}
	return dst
}
