package guardrail

import (
	"encoding/json"
	"fmt"

	cedar "github.com/cedar-policy/cedar-go"
)

// The entity types a guardrail request is made of.
const (
	identityType = "writ::Identity"
	actionType   = "writ::Action"
	resourceType = "writ::Resource"
)

// resourceOp says how a policy's scope constrains the resource.
type resourceOp int

const (
	anyResource   resourceOp = iota // resource
	exactResource                   // resource == R
	underResource                   // resource in R: R itself or anything below it
)

// scope is what the index needs from a policy's scope: the actions it can
// apply to (nil for all) and the resources.
type scope struct {
	actions  []string
	op       resourceOp
	resource string
}

// The JSON policy format (https://docs.cedarpolicy.com/policies/json-format.html)
// is cedar-go's stable way to expose a policy's scope.
type jsonPolicy struct {
	Principal jsonScope `json:"principal"`
	Action    jsonScope `json:"action"`
	Resource  jsonScope `json:"resource"`
}

type jsonScope struct {
	Op         string       `json:"op"`
	Entity     *jsonEntity  `json:"entity"`
	Entities   []jsonEntity `json:"entities"`
	EntityType string       `json:"entity_type"`
	In         *struct {
		Entity *jsonEntity `json:"entity"`
	} `json:"in"`
}

type jsonEntity struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// scopeOf reads a policy's scope. It refuses scopes that name entity types
// a guardrail request never contains: such a policy could never apply, and
// is almost always a missing "writ::" namespace.
func scopeOf(p *cedar.Policy) (scope, error) {
	b, err := p.MarshalJSON()
	if err != nil {
		return scope{}, fmt.Errorf("reading scope: %w", err)
	}
	var jp jsonPolicy
	if err := json.Unmarshal(b, &jp); err != nil {
		return scope{}, fmt.Errorf("reading scope: %w", err)
	}
	if err := checkTypes("principal", identityType, jp.Principal); err != nil {
		return scope{}, err
	}
	if err := checkTypes("action", actionType, jp.Action); err != nil {
		return scope{}, err
	}
	if err := checkTypes("resource", resourceType, jp.Resource); err != nil {
		return scope{}, err
	}
	sc := scope{actions: actionsOf(jp.Action)}
	sc.op, sc.resource = resourceOf(jp.Resource)
	return sc, nil
}

// checkTypes refuses a scope naming any entity type other than want, or
// naming no entity where its operator needs one (a template slot).
func checkTypes(role, want string, s jsonScope) error {
	if (s.Op == "==" || s.Op == "in") && s.Entity == nil && s.Entities == nil || s.In != nil && s.In.Entity == nil {
		return fmt.Errorf("%s scope has no entity; guardrails must be complete policies, not templates", role)
	}
	types := []string{s.EntityType}
	if s.Entity != nil {
		types = append(types, s.Entity.Type)
	}
	if s.In != nil {
		types = append(types, s.In.Entity.Type)
	}
	for _, e := range s.Entities {
		types = append(types, e.Type)
	}
	for _, t := range types {
		if t != "" && t != want {
			return fmt.Errorf("%s scope names type %s, but guardrail %ss are always %s; write %s::\"...\"", role, t, role, want, want)
		}
	}
	return nil
}

// actionsOf returns the actions a scope allows, nil meaning all. Actions
// have no parents, so `action in A` means the same as `action == A`.
func actionsOf(s jsonScope) []string {
	switch {
	case s.Op == "All":
		return nil
	case s.Entity != nil:
		return []string{s.Entity.ID}
	}
	actions := make([]string, 0, len(s.Entities))
	for _, e := range s.Entities {
		actions = append(actions, e.ID)
	}
	return actions
}

// resourceOf returns how a scope constrains the resource. `resource is
// writ::Resource` is unconstrained, since every resource has that type.
func resourceOf(s jsonScope) (resourceOp, string) {
	switch {
	case s.Op == "==":
		return exactResource, s.Entity.ID
	case s.Op == "in":
		return underResource, s.Entity.ID
	case s.In != nil:
		return underResource, s.In.Entity.ID
	}
	return anyResource, ""
}
