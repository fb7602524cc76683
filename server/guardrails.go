package server

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"writ.dev/writ/authz"
	"writ.dev/writ/authz/guardrail"
	"writ.dev/writ/task"
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
			data, err := readGuardrailFile(name)
			if err != nil {
				return nil, fmt.Errorf("guardrails: %w", err)
			}
			files[name] = data
		}
	}
	return guardrail.Load(files)
}

// maxGuardrailFileBytes bounds one policy file: far beyond any real policy
// set, and small enough that a mistaken path (a device, a log file) is
// refused instead of read into memory whole.
const maxGuardrailFileBytes = 4 << 20

func readGuardrailFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file: name Cedar policy files or directories of *.cedar", name)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxGuardrailFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxGuardrailFileBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes, too large for a policy file: split it or check the path", name, maxGuardrailFileBytes)
	}
	return data, nil
}

// guardrails adapts a policy set to the decision engine: a request is
// forbidden if the policies refuse it for any identity of its chain, each
// judged as the principal with the whole chain in the context.
type guardrails struct{ set *guardrail.Set }

func (g guardrails) Forbid(req authz.Request) (bool, string) {
	for _, id := range req.Chain {
		d := g.set.Decide(guardrail.Request{
			Principal: id, Action: req.Action, Resource: req.Resource,
			Context: guardrail.Context{Time: req.Time, Chain: req.Chain, SourceAddress: req.SourceAddress, Facts: factsMap(req.Facts[id]),
				Arguments: req.Arguments},
		})
		if !d.Allowed {
			// authz prefixes "guardrail: ", so the reason does not.
			why := "no permit policy allows"
			if d.Forbidden {
				why = "policy " + strings.Join(d.Policies, ", ") + " forbids"
			}
			msg := fmt.Sprintf("%s %s to %s %s", why, authz.Link{ID: id}, req.Action, req.Resource)
			if len(d.Errors) > 0 {
				msg += " (policies that failed to evaluate: " + strings.Join(d.Errors, "; ") + ")"
			}
			return true, msg
		}
	}
	return false, ""
}

// guardGrants asks the guardrails whether a task may make these grants
// live: each action on each resource, for each recipient named by a
// literal ID, is judged with Granting set, so a policy can say that no
// task grants deploy on prod to a workload. A resource pattern is judged
// by its literal prefix (the segments before its first wildcard), which a
// policy on `resource in …` sees as that resource. Recipients given by a
// wildcard pattern are judged by the decisions later, one identity at a
// time.
//
// The chain in the context is the recipient, then the task's other members
// named by literal IDs: at grant time the people a task involves stand for
// the chain its uses will carry, so "no agent writes to prod without a
// person" lets a task of an agent and a person grant the agent that write.
func (s *Server) guardGrants(t *task.Task, grants []task.Grant) error {
	g, ok := s.guardrail.(guardrails)
	if !ok {
		return nil
	}
	var members []spiffeid.ID
	for _, m := range t.Members {
		if m.Pattern.IsLiteral() {
			if id, err := spiffeid.FromString(m.Pattern.String()); err == nil {
				members = append(members, id)
			}
		}
	}
	for i, gr := range grants {
		for _, to := range gr.To {
			if !to.IsLiteral() {
				continue
			}
			id, err := spiffeid.FromString(to.String())
			if err != nil {
				continue
			}
			for _, action := range gr.Actions {
				for _, res := range gr.Resources {
					chain := append([]spiffeid.ID{id}, slices.DeleteFunc(slices.Clone(members), func(m spiffeid.ID) bool { return m == id })...)
					d := g.set.Decide(guardrail.Request{Principal: id, Action: action, Resource: literalResource(res.String()),
						Context: guardrail.Context{Time: s.now(), TaskID: t.ID, Granting: true, Chain: chain}})
					if !d.Allowed {
						return status.Errorf(codes.PermissionDenied, "grants[%d]: a guardrail does not allow task %s to grant %s on %s to %s (%s)",
							i, t.ID, action, res, id, strings.Join(d.Policies, ", "))
					}
				}
			}
		}
	}
	return nil
}

// literalResource is a resource pattern up to its first wildcard.
func literalResource(pattern string) string {
	var out []string
	for _, seg := range strings.Split(pattern, "/") {
		if seg == "*" || seg == "**" {
			break
		}
		out = append(out, seg)
	}
	if len(out) == 0 {
		return pattern
	}
	return strings.Join(out, "/")
}

// factsMap turns type:value selectors into the facts record guardrails
// see: each type once, its values joined by commas when it has several.
func factsMap(sels []string) map[string]string {
	if len(sels) == 0 {
		return nil
	}
	out := make(map[string]string, len(sels))
	for _, sel := range sels {
		typ, value, ok := strings.Cut(sel, ":")
		if !ok {
			continue
		}
		if prev, dup := out[typ]; dup {
			out[typ] = prev + "," + value
		} else {
			out[typ] = value
		}
	}
	return out
}
