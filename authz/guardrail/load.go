package guardrail

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"

	cedar "github.com/cedar-policy/cedar-go"
)

// idAnnotation is the annotation that names a policy. Decisions report
// policies by it, so it must be present and unique.
const idAnnotation = "id"

// Set is a compiled, indexed, immutable set of guardrails. It is safe for
// concurrent use.
type Set struct {
	policies []entry
	forbids  index
	permits  index

	// anyPermit is whether Cedar's default-deny applies to this set.
	anyPermit bool

	// evaluated counts the policies handed to Cedar across all decisions.
	// It is how the tests prove that the index prunes.
	evaluated atomic.Int64
}

// entry is one compiled policy under its @id.
type entry struct {
	id     cedar.PolicyID
	policy *cedar.Policy
}

// Load parses and checks policy files, given as file name to Cedar text.
// Every policy must carry an @id("...") annotation unique across all files,
// and its scope may name only writ::Identity, writ::Action and
// writ::Resource, since no other entity can appear in a request. Errors
// name the file, line and column.
func Load(files map[string][]byte) (*Set, error) {
	s := &Set{forbids: newIndex(), permits: newIndex()}
	seen := make(map[cedar.PolicyID]cedar.Position)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if err := s.loadFile(name, files[name], seen); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Len returns the number of policies in the set.
func (s *Set) Len() int { return len(s.policies) }

func (s *Set) loadFile(name string, text []byte, seen map[cedar.PolicyID]cedar.Position) error {
	list, err := cedar.NewPolicyListFromBytes(name, text)
	if err != nil {
		return parseError(name, err)
	}
	for _, p := range list {
		if err := s.add(p, seen); err != nil {
			return err
		}
	}
	return nil
}

func (s *Set) add(p *cedar.Policy, seen map[cedar.PolicyID]cedar.Position) error {
	id, err := policyID(p, seen)
	if err != nil {
		return err
	}
	sc, err := scopeOf(p)
	if err != nil {
		return fmt.Errorf("guardrail: %s: policy %q: %w", position(p.Position()), id, err)
	}
	seen[id] = p.Position()
	n := len(s.policies)
	s.policies = append(s.policies, entry{id: id, policy: p})
	if p.Effect() == cedar.Forbid {
		s.forbids.add(n, sc)
	} else {
		s.permits.add(n, sc)
		s.anyPermit = true
	}
	return nil
}

// policyID returns the policy's @id, refusing a missing, empty or reused one.
func policyID(p *cedar.Policy, seen map[cedar.PolicyID]cedar.Position) (cedar.PolicyID, error) {
	pos := position(p.Position())
	v, ok := p.Annotations()[idAnnotation]
	if !ok || v == "" {
		return "", fmt.Errorf("guardrail: %s: policy has no @id annotation; add @id(\"...\") with a name unique across all guardrail files so decisions can name it", pos)
	}
	id := cedar.PolicyID(v)
	if prev, dup := seen[id]; dup {
		return "", fmt.Errorf("guardrail: %s: @id %q is already used by the policy at %s; give each policy its own @id", pos, v, position(prev))
	}
	return id, nil
}

// parseError rewrites cedar-go's "<input>" placeholder into the file name,
// so the message points at file:line:column.
func parseError(name string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "parser error: ")
	if strings.Contains(msg, "<input>") {
		return fmt.Errorf("guardrail: %s", strings.Replace(msg, "<input>", name, 1))
	}
	return fmt.Errorf("guardrail: %s: %s", name, msg)
}

func position(p cedar.Position) string {
	return fmt.Sprintf("%s:%d:%d", p.Filename, p.Line, p.Column)
}
