package httpproxy

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"writ.dev/writ/gateway"
	"writ.dev/writ/internal/quote"
	"writ.dev/writ/task"
)

// Route maps request paths to a resource. Exactly one of Path and Prefix
// is set.
type Route struct {
	// Path is a template matched against the whole path, segment by
	// segment: a literal segment matches itself, "{name}" any one segment,
	// and "{name...}", only as the last segment, one or more. E.g.
	// "/orders/{id}" or "/files/{rest...}".
	Path string `yaml:"path,omitempty"`
	// Prefix matches a path equal to it or below it by whole segments:
	// "/static" matches "/static", "/static/" and "/static/a/b", never
	// "/statics".
	Prefix string `yaml:"prefix,omitempty"`
	// Methods, when set, limits the route to these methods; a request
	// with another method goes on to the next route.
	Methods []string `yaml:"methods,omitempty"`
	// Action, when set, is the action for every request the route
	// matches, instead of the one its method maps to (POST
	// /orders/{id}/refund as "refund", say).
	Action string `yaml:"action,omitempty"`
	// Resource is the writ resource the request is decided on, with
	// "{name}" replaced by what the path's variable of that name matched,
	// e.g. "http/orders/{id}".
	Resource string `yaml:"resource"`
}

// DefaultActions maps HTTP methods to actions when Config.Actions does not
// say otherwise. A method in neither is refused.
var DefaultActions = map[string]string{
	http.MethodGet:     "read",
	http.MethodHead:    "read",
	http.MethodOptions: "read",
	http.MethodPost:    "write",
	http.MethodPut:     "write",
	http.MethodPatch:   "write",
	http.MethodDelete:  "delete",
}

// Limits of the mapping, which is written by hand and read at start.
const (
	maxRoutes    = 1024
	maxTemplate  = 1024
	maxMethodLen = 32
)

type mapper struct {
	actions map[string]string
	routes  []route
}

type route struct {
	text     string   // the Path or Prefix as written, for messages
	prefix   bool     // a Prefix route: segs is the prefix
	segs     []string // literal segments, or "" where a variable is
	vars     []string // variable names by segment, "" for literals
	rest     string   // the "{name...}" variable, if any
	methods  []string
	action   string
	resource []resourcePart
}

// resourcePart is a literal piece of a resource template, or a variable.
type resourcePart struct {
	lit, varName string
}

// errNoRoute and errNoMethod are the mapping's refusals of a request.
var (
	errNoRoute  = errors.New("not served through this gateway")
	errNoMethod = errors.New("method not allowed")
)

func compileMapping(actions map[string]string, routes []Route) (*mapper, error) {
	m := &mapper{actions: make(map[string]string, len(DefaultActions)+len(actions))}
	for k, v := range DefaultActions {
		m.actions[k] = v
	}
	for method, action := range actions {
		if err := checkMethod(method); err != nil {
			return nil, fmt.Errorf("actions: %w", err)
		}
		if action == "" {
			// An empty action removes the method: requests with it are refused.
			delete(m.actions, method)
			continue
		}
		if err := task.CheckAction(action); err != nil {
			return nil, fmt.Errorf("actions[%s]: %w", method, err)
		}
		m.actions[method] = action
	}
	if len(routes) == 0 {
		return nil, errors.New("routes: none given; add at least one, e.g. {path: \"/orders/{id}\", resource: \"http/orders/{id}\"}")
	}
	if len(routes) > maxRoutes {
		return nil, fmt.Errorf("routes: %d given; at most %d are allowed", len(routes), maxRoutes)
	}
	for i, r := range routes {
		c, err := compileRoute(r)
		if err != nil {
			return nil, fmt.Errorf("routes[%d].%w", i, err)
		}
		m.routes = append(m.routes, c)
	}
	return m, nil
}

func checkMethod(method string) error {
	if method == "" || len(method) > maxMethodLen {
		return fmt.Errorf("method %s must be 1 to %d characters", quote.String(method), maxMethodLen)
	}
	for i := 0; i < len(method); i++ {
		if c := method[i]; c < 'A' || c > 'Z' {
			return fmt.Errorf("method %s: write methods in capitals A-Z, e.g. GET", quote.String(method))
		}
	}
	return nil
}

// compileRoute returns errors starting with the field's name, for
// compileMapping to prefix with the route's index.
func compileRoute(r Route) (route, error) {
	var c route
	text, field := r.Path, "path"
	switch {
	case r.Path != "" && r.Prefix != "":
		return c, errors.New("path: give either path or prefix, not both")
	case r.Path == "" && r.Prefix == "":
		return c, errors.New("path: give a path template (\"/orders/{id}\") or a prefix (\"/static\")")
	case r.Prefix != "":
		// "/static/" is read as "/static": a prefix matches whole
		// segments either way.
		text, field, c.prefix = r.Prefix, "prefix", true
		if len(text) > 1 {
			text = strings.TrimSuffix(text, "/")
		}
	}
	c.text = text
	switch {
	case len(text) > maxTemplate:
		return c, fmt.Errorf("%s: %d bytes; at most %d are allowed", field, len(text), maxTemplate)
	case text[0] != '/':
		return c, fmt.Errorf("%s: %s does not start with '/'", field, quote.String(text))
	}
	if text != "/" {
		seen := map[string]bool{}
		parts := strings.Split(text[1:], "/")
		for i, seg := range parts {
			name, rest, isVar := templateVar(seg)
			switch {
			case isVar && c.prefix:
				return c, fmt.Errorf("prefix: %s: a prefix holds no variables; use path with {name...} to name the rest", quote.String(text))
			case isVar && !validVarName(name):
				return c, fmt.Errorf("%s: %s: variable %s: names are letters, digits and '_', starting with a letter", field, quote.String(text), quote.String(seg))
			case isVar && seen[name]:
				return c, fmt.Errorf("%s: %s: variable %s appears twice", field, quote.String(text), quote.String(name))
			case rest && i != len(parts)-1:
				return c, fmt.Errorf("%s: %s: %s may only be the last segment", field, quote.String(text), quote.String(seg))
			case isVar:
				seen[name] = true
				if rest {
					c.rest = name
					continue
				}
				c.segs = append(c.segs, "")
				c.vars = append(c.vars, name)
			default:
				if problem := segmentProblem(seg); problem != "" {
					return c, fmt.Errorf("%s: %s: segment %d %s", field, quote.String(text), i+1, problem)
				}
				if strings.ContainsAny(seg, "{}") {
					return c, fmt.Errorf("%s: %s: segment %s: a variable is a whole segment, \"{name}\"", field, quote.String(text), quote.String(seg))
				}
				c.segs = append(c.segs, seg)
				c.vars = append(c.vars, "")
			}
		}
	}
	for _, m := range r.Methods {
		if err := checkMethod(m); err != nil {
			return c, fmt.Errorf("methods: %w", err)
		}
	}
	c.methods = r.Methods
	if r.Action != "" {
		if err := task.CheckAction(r.Action); err != nil {
			return c, fmt.Errorf("action: %w", err)
		}
		c.action = r.Action
	}
	var err error
	if c.resource, err = compileResource(r.Resource, c); err != nil {
		return c, fmt.Errorf("resource: %w", err)
	}
	return c, nil
}

// templateVar reports whether seg is "{name}" or "{name...}".
func templateVar(seg string) (name string, rest, ok bool) {
	if len(seg) < 2 || seg[0] != '{' || seg[len(seg)-1] != '}' {
		return "", false, false
	}
	name = seg[1 : len(seg)-1]
	if n, found := strings.CutSuffix(name, "..."); found {
		return n, true, true
	}
	return name, false, true
}

func validVarName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (i == 0 || !(c >= '0' && c <= '9' || c == '_')) {
			return false
		}
	}
	return true
}

// compileResource splits a resource template into literals and variables
// and checks it by filling every variable with a sample segment, so a
// template that can only ever produce invalid names is refused at start.
func compileResource(tmpl string, r route) ([]resourcePart, error) {
	if tmpl == "" {
		return nil, errors.New("empty; name the resource the route's requests are decided on, e.g. \"http/orders/{id}\"")
	}
	var parts []resourcePart
	var sample strings.Builder
	for rest := tmpl; rest != ""; {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			if strings.IndexByte(rest, '}') >= 0 {
				return nil, fmt.Errorf("%s has a '}' without '{'", quote.String(tmpl))
			}
			parts = append(parts, resourcePart{lit: rest})
			sample.WriteString(rest)
			break
		}
		if open > 0 {
			if strings.IndexByte(rest[:open], '}') >= 0 {
				return nil, fmt.Errorf("%s has a '}' without '{'", quote.String(tmpl))
			}
			parts = append(parts, resourcePart{lit: rest[:open]})
			sample.WriteString(rest[:open])
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return nil, fmt.Errorf("%s has a '{' without '}'", quote.String(tmpl))
		}
		name := rest[open+1 : open+end]
		if !r.hasVar(name) {
			return nil, fmt.Errorf("%s uses %s, which the route's path does not define", quote.String(tmpl), quote.Max("{"+name+"}", 40))
		}
		parts = append(parts, resourcePart{varName: name})
		sample.WriteString("x")
		rest = rest[open+end+1:]
	}
	if err := task.CheckResourceName(sample.String()); err != nil {
		return nil, fmt.Errorf("%s does not make a valid resource name: %w", quote.String(tmpl), err)
	}
	return parts, nil
}

func (r route) hasVar(name string) bool {
	if name == "" {
		return false
	}
	if name == r.rest {
		return true
	}
	for _, v := range r.vars {
		if v == name {
			return true
		}
	}
	return false
}

// match reports whether the route matches p and, if so, returns the
// resource name it maps p to. A variable's value that cannot be part of a
// resource name makes the route not match: the request is refused rather
// than decided on a name the caller shaped.
func (r route) match(p cleanPath) (string, bool) {
	if r.prefix {
		if len(p.segs) < len(r.segs) {
			return "", false
		}
		for i, s := range r.segs {
			if p.segs[i] != s {
				return "", false
			}
		}
		return r.resource[0].lit, true
	}
	switch {
	case r.rest == "" && (len(p.segs) != len(r.segs) || p.trailing):
		return "", false
	case r.rest != "" && len(p.segs) <= len(r.segs):
		return "", false
	}
	for i, s := range r.segs {
		if r.vars[i] == "" && p.segs[i] != s {
			return "", false
		}
	}
	var b strings.Builder
	for _, part := range r.resource {
		if part.varName == "" {
			b.WriteString(part.lit)
			continue
		}
		if part.varName == r.rest {
			b.WriteString(strings.Join(p.segs[len(r.segs):], "/"))
			continue
		}
		for i, v := range r.vars {
			if v == part.varName {
				b.WriteString(p.segs[i])
				break
			}
		}
	}
	name := b.String()
	if task.CheckResourceName(name) != nil {
		return "", false
	}
	return name, true
}

func (r route) allows(method string) bool {
	if len(r.methods) == 0 {
		return true
	}
	for _, m := range r.methods {
		if m == method {
			return true
		}
	}
	return false
}

// mapRequest returns the writ request for method on p: the first route
// that matches both decides the resource.
func (m *mapper) mapRequest(method string, p cleanPath) (gateway.Request, error) {
	pathMatched := false
	for _, r := range m.routes {
		name, ok := r.match(p)
		if !ok {
			continue
		}
		if !r.allows(method) {
			pathMatched = true
			continue
		}
		action := r.action
		if action == "" {
			if action = m.actions[method]; action == "" {
				return gateway.Request{}, fmt.Errorf("%w: %s is not mapped to an action here", errNoMethod, quote.Max(method, 40))
			}
		}
		return gateway.Request{Action: action, Resource: name}, nil
	}
	if pathMatched {
		return gateway.Request{}, fmt.Errorf("%w: no route allows %s on %s", errNoMethod, quote.Max(method, 40), quote.String(p.escaped))
	}
	return gateway.Request{}, fmt.Errorf("%w: no route maps %s to a resource", errNoRoute, quote.String(p.escaped))
}
