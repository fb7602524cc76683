package httpproxy

import (
	"net/url"
	"strings"
	"testing"

	"writ.dev/writ/task"
)

func FuzzParseConfig(f *testing.F) {
	f.Add(sampleConfig)
	f.Add("upstream: https://orders:8443\nupstream_id: spiffe://example.org/orders\naudience: orders\nroutes: [{prefix: /, resource: http/all}]\n")
	f.Add("routes: [{path: \"/{a}/{b...}\", resource: \"x/{a}/{b}\"}]\n")
	f.Add("limits: {caller_header_ttl: 1h}\n")
	f.Add("{{{")
	f.Fuzz(func(t *testing.T, in string) {
		c, err := ParseConfig(strings.NewReader(in))
		if err != nil {
			return
		}
		c.Defaults()
		if err := c.Validate(); err != nil {
			if err.Error() == "" {
				t.Fatal("empty validation error")
			}
			return
		}
		// A valid config builds a mapper whose every answer is a request
		// the server would accept.
		comp, err := c.compile()
		if err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{"/", "/orders/1", "/a/b/c", "/static/x"} {
			p, _ := parsePath(path)
			r, err := comp.mapper.mapRequest("GET", p)
			if err != nil {
				continue
			}
			if task.CheckResourceName(r.Resource) != nil || task.CheckAction(r.Action) != nil {
				t.Fatalf("config %q maps %s to an invalid request %+v", in, path, r)
			}
		}
	})
}

// FuzzMapping compiles a route from a fuzzed template and resource and
// matches a fuzzed request path against it.
func FuzzMapping(f *testing.F) {
	f.Add("/orders/{id}", "", "http/orders/{id}", "/orders/42")
	f.Add("/files/{rest...}", "", "http/files/{rest}", "/files/a/b/")
	f.Add("", "/static", "http/static", "/static/x/../y")
	f.Add("/{a}/{b}", "", "r/{b}/{a}", "/x/%2e%2e")
	f.Add("/a", "", "x", "/a%2fb")
	f.Fuzz(func(t *testing.T, path, prefix, resource, reqPath string) {
		m, err := compileMapping(nil, []Route{{Path: path, Prefix: prefix, Resource: resource}})
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		p, err := parsePath(reqPath)
		if err != nil {
			return
		}
		r, err := m.mapRequest("GET", p)
		if err != nil {
			return
		}
		if err := task.CheckResourceName(r.Resource); err != nil {
			t.Fatalf("route %q/%q -> %q maps %q to an invalid resource: %v", path, prefix, resource, reqPath, err)
		}
		if r.Action != "read" {
			t.Fatalf("GET mapped to %q", r.Action)
		}
	})
}

// FuzzParsePath checks that an accepted path has no part an upstream could
// read as another path, and that its clean form is a fixed point.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"/", "/a/b/", "/a/%2e%2e/b", "/a%2fb", "/caf%C3%A9", "/a;b", "//a", "/%25", "/a%20b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		p, err := parsePath(in)
		if err != nil {
			if !strings.Contains(err.Error(), "bad request path") || len(err.Error()) > 400 {
				t.Fatalf("error %q", err)
			}
			return
		}
		for _, s := range p.segs {
			if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/\\%;") {
				t.Fatalf("%q: segment %q accepted", in, s)
			}
		}
		again, err := parsePath(p.escaped)
		if err != nil || again.escaped != p.escaped || strings.Join(again.segs, "/") != strings.Join(p.segs, "/") {
			t.Fatalf("%q -> %q is not a fixed point: %q, %v", in, p.escaped, again.escaped, err)
		}
		u, err := url.Parse(p.escaped)
		if err != nil || u.EscapedPath() != p.escaped {
			t.Fatalf("%q -> %q does not survive url.Parse: %v", in, p.escaped, err)
		}
	})
}
