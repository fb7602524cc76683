package writ_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const module = "writ.dev/writ"

// Layers, lowest first. A package may import packages of its own layer or
// below, never above: the domain knows nothing of transport, and nothing
// but commands wires services together. A package is placed by the longest
// prefix of its path below the module that is listed here; a new top-level
// package fails the test until it is given a layer.
var layers = []struct {
	name     string
	prefixes []string
}{
	{"foundation", []string{"identity", "store", "audit", "keystore", "internal"}},
	{"domain", []string{"task", "authz", "ca", "attest", "delegation", "person"}},
	{"transport", []string{"api"}},
	{"service", []string{"server", "agent", "gateway"}},
	{"command", []string{"cmd", "bench", "examples"}},
}

// selfContained packages import nothing of writ's but what is under their
// own path and the stdlibOnly leaves: they are what everything else is
// built on.
var selfContained = []string{"identity", "store", "internal"}

// stdlibOnly packages import only the standard library, however
// indirectly: the agent and the CLI use them, and they stay leaves.
var stdlibOnly = []string{"internal/pemfile", "internal/quote"}

// clientSide packages run on every node: whatever they pull in, however
// indirectly, ships and runs there, so the server's state and its log stay out.
var clientSide = []string{"agent"}

var serverSide = []string{"store", "audit", "server", "ca/rotation"}

// allowed lists deliberate exceptions as "importer -> imported" with the
// reason it is deliberate. Keep it short: each entry is a debt.
var allowed = map[string]string{
	// The conformance suite is test support, imported only by the engines'
	// tests: it checks the tree hashes each engine keeps against the audit
	// package's, and seals commits with a real checkpoint signer.
	"store/storetest -> audit": "conformance suite checks engines against audit's hashing",
}

func TestLayers(t *testing.T) {
	graph := listImports(t, "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", "./...")
	if len(graph) < 10 {
		t.Fatalf("go list found %d packages; the test is not looking at the module", len(graph))
	}
	for _, v := range layerViolations(graph) {
		t.Error(v)
	}
}

// TestClientSidePullsNoServerPackage follows imports transitively: a
// direct-import check would miss the agent reaching the store through a
// package it shares with the server.
func TestClientSidePullsNoServerPackage(t *testing.T) {
	for _, pkg := range clientSide {
		deps := listImports(t, "{{.ImportPath}}{{range .Deps}} {{.}}{{end}}", "./"+pkg+"/...")
		if len(deps) == 0 {
			t.Fatalf("go list found no package under %s", pkg)
		}
		for _, v := range clientSideViolations(deps) {
			t.Error(v)
		}
	}
}

func TestStdlibOnly(t *testing.T) {
	for _, pkg := range stdlibOnly {
		out := goList(t, "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./"+pkg)
		for _, dep := range strings.Fields(out) {
			if dep != module+"/"+pkg {
				t.Errorf("%s pulls in %s: it must import the standard library only", pkg, dep)
			}
		}
	}
}

// TestRulesCatchViolations feeds the rules a graph that breaks each of them,
// so a rule that stopped matching anything would be noticed.
func TestRulesCatchViolations(t *testing.T) {
	graph := map[string][]string{
		"identity":            {"store"},
		"store/sqlite":        {"store", "store/internal/sqlstore", "audit"},
		"task":                {"identity", "server"},
		"authz":               {"task", "identity"},
		"ca":                  {"api/writ/v1"},
		"server":              {"agent", "store/sqlite", "api/writ/v1"},
		"agent":               {"identity", "api/writ/v1"},
		"cmd/writ":            {"server", "agent"},
		"newthing":            nil,
		"attest/node/x509pop": {"identity"},
		"internal/pemfile":    {"ca"},
		"keystore":            {"internal/atomicfile"},
	}
	got := layerViolations(graph)
	for _, want := range []string{
		"identity imports store",
		"store/sqlite imports audit",
		"task (domain) imports server (service)",
		"ca (domain) imports api/writ/v1 (transport)",
		"server imports agent",
		"newthing has no layer",
		"internal/pemfile imports ca",
	} {
		if !slices.ContainsFunc(got, func(v string) bool { return strings.HasPrefix(v, want) }) {
			t.Errorf("no violation reported for %q; got:\n%s", want, strings.Join(got, "\n"))
		}
	}
	if len(got) != 7 {
		t.Errorf("got %d violations, want 7:\n%s", len(got), strings.Join(got, "\n"))
	}
	deps := map[string][]string{"agent": {"identity", "ca", "store", "internal/pemfile"}}
	if v := clientSideViolations(deps); len(v) != 1 || !strings.HasPrefix(v[0], "agent pulls in store") {
		t.Errorf("clientSideViolations = %q, want agent pulling in store", v)
	}
}

// listImports runs go list over patterns and returns, per package of the
// module (path below the module), the packages of the module it names.
func listImports(t *testing.T, format string, patterns ...string) map[string][]string {
	t.Helper()
	out := goList(t, append([]string{"-f", format}, patterns...)...)
	graph := map[string][]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		pkg, ok := local(fields[0])
		if !ok {
			continue
		}
		graph[pkg] = []string{}
		for _, imp := range fields[1:] {
			if p, ok := local(imp); ok {
				graph[pkg] = append(graph[pkg], p)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return graph
}

func goList(t *testing.T, args ...string) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goTool, append([]string{"list"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return string(out)
}

func local(path string) (string, bool) {
	return strings.CutPrefix(path, module+"/")
}

func under(pkg, prefix string) bool {
	return pkg == prefix || strings.HasPrefix(pkg, prefix+"/")
}

// layerOf returns the index in layers of pkg's layer, or -1.
func layerOf(pkg string) int {
	best, bestLen := -1, -1
	for i, l := range layers {
		for _, p := range l.prefixes {
			if under(pkg, p) && len(p) > bestLen {
				best, bestLen = i, len(p)
			}
		}
	}
	return best
}

func topLevel(pkg string) string {
	top, _, _ := strings.Cut(pkg, "/")
	return top
}

func layerViolations(graph map[string][]string) []string {
	var out []string
	pkgs := make([]string, 0, len(graph))
	for p := range graph {
		pkgs = append(pkgs, p)
	}
	slices.Sort(pkgs)
	for _, pkg := range pkgs {
		from := layerOf(pkg)
		if from < 0 {
			out = append(out, fmt.Sprintf("%s has no layer: add its top-level directory to layers in layers_test.go", pkg))
			continue
		}
		for _, imp := range graph[pkg] {
			edge := pkg + " -> " + imp
			if _, ok := allowed[edge]; ok {
				continue
			}
			if self := selfContainedRoot(pkg); self != "" && !under(imp, self) && !slices.Contains(stdlibOnly, imp) {
				out = append(out, fmt.Sprintf("%s imports %s: %s imports nothing of writ's outside itself", pkg, imp, self))
				continue
			}
			to := layerOf(imp)
			switch {
			case to > from:
				out = append(out, fmt.Sprintf("%s (%s) imports %s (%s): a layer may only import its own or lower layers",
					pkg, layers[from].name, imp, layers[to].name))
			case to == from && layers[from].name == "service" && topLevel(pkg) != topLevel(imp):
				out = append(out, fmt.Sprintf("%s imports %s: services do not import one another; share through a lower layer", pkg, imp))
			}
		}
	}
	return out
}

func selfContainedRoot(pkg string) string {
	for _, s := range selfContained {
		if under(pkg, s) {
			return s
		}
	}
	return ""
}

func clientSideViolations(deps map[string][]string) []string {
	var out []string
	pkgs := make([]string, 0, len(deps))
	for p := range deps {
		pkgs = append(pkgs, p)
	}
	slices.Sort(pkgs)
	for _, pkg := range pkgs {
		for _, dep := range deps[pkg] {
			for _, s := range serverSide {
				if under(dep, s) {
					out = append(out, fmt.Sprintf("%s pulls in %s: client-side code must not depend on server-side packages (%s)",
						pkg, dep, strings.Join(serverSide, ", ")))
				}
			}
		}
	}
	return out
}
