package server

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"writ.dev/writ/authz"
	"writ.dev/writ/authz/guardrail"
)

// GuardrailsConfig names the Cedar policy files that bound what any request
// may do, whatever the tasks grant.
type GuardrailsConfig struct {
	// Files are Cedar policy files; a directory means every *.cedar in it.
	Files []string `yaml:"files"`
}

// LoadGuardrails reads and compiles the policy files; errors name the file
// and position. `writ policy validate` uses it too.
func LoadGuardrails(paths []string) (*guardrail.Set, error) {
	files := map[string][]byte{}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("guardrails: %w", err)
		}
		names := []string{p}
		if fi.IsDir() {
			if names, err = filepath.Glob(filepath.Join(p, "*.cedar")); err != nil {
				return nil, err
			}
		}
		for _, name := range names {
			data, err := os.ReadFile(name)
			if err != nil {
				return nil, fmt.Errorf("guardrails: %w", err)
			}
			files[name] = data
		}
	}
	return guardrail.Load(files)
}

// guardrails adapts a policy set to the decision engine: a request is
// forbidden if the policies refuse it for any identity of its chain, each
// judged as the principal with the whole chain in the context.
type guardrails struct{ set *guardrail.Set }

func (g guardrails) Forbid(req authz.Request) (bool, string) {
	for _, id := range req.Chain {
		d := g.set.Decide(guardrail.Request{
			Principal: id, Action: req.Action, Resource: req.Resource,
			Context: guardrail.Context{Time: req.Time, Chain: req.Chain},
		})
		if !d.Allowed {
			why := "no permit policy allows it"
			if d.Forbidden {
				why = "forbidden by " + strings.Join(d.Policies, ", ")
			}
			msg := fmt.Sprintf("guardrail: %s for %s %s on %s", why, id, req.Action, req.Resource)
			if len(d.Errors) > 0 {
				msg += " (policies that failed to evaluate: " + strings.Join(d.Errors, "; ") + ")"
			}
			return true, msg
		}
	}
	return false, ""
}
