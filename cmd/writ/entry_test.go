package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var batchNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

const goodBatchYAML = `# two rules for the web service
entries:
  - spiffe_id: spiffe://example.org/service/web
    parent_id: spiffe://example.org/writ/agent/node-1
    selectors: ["unix:uid:1000", "unix:gid:1000"]
    x509_ttl: 1h
    jwt_ttl: 300
    dns_names: [web.example.org, www.example.org]
    hint: external
    expires_at: 2030-01-02T15:04:05Z
  - id: db-rule
    spiffe_id: spiffe://example.org/service/db
    parent_id: spiffe://example.org/writ/agent/node-2
    selectors:
      - k8s:ns:payments
    x509_ttl: "90m"
    expires_at: ~
`

func TestParseBatchGoodYAML(t *testing.T) {
	entries, err := parseBatch([]byte(goodBatchYAML), batchNow)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("got %d entries, want 2", len(entries))
	}
	e := entries[0]
	if e.GetSpiffeId() != "spiffe://example.org/service/web" || e.GetParentId() != "spiffe://example.org/writ/agent/node-1" {
		t.Errorf("IDs = %q, %q", e.GetSpiffeId(), e.GetParentId())
	}
	if got := strings.Join(formatSelectors(e.GetSelectors()), ","); got != "unix:uid:1000,unix:gid:1000" {
		t.Errorf("selectors = %s", got)
	}
	if e.GetX509TtlSeconds() != 3600 || e.GetJwtTtlSeconds() != 300 {
		t.Errorf("TTLs = %d, %d; want 3600, 300", e.GetX509TtlSeconds(), e.GetJwtTtlSeconds())
	}
	if strings.Join(e.GetDnsNames(), ",") != "web.example.org,www.example.org" || e.GetHint() != "external" {
		t.Errorf("dns = %v, hint = %q", e.GetDnsNames(), e.GetHint())
	}
	if want := time.Date(2030, 1, 2, 15, 4, 5, 0, time.UTC).Unix(); e.GetExpiresAt() != want {
		t.Errorf("expires_at = %d, want %d", e.GetExpiresAt(), want)
	}
	e = entries[1]
	if e.GetId() != "db-rule" || e.GetX509TtlSeconds() != 5400 || e.GetJwtTtlSeconds() != 0 || e.GetExpiresAt() != 0 {
		t.Errorf("second entry = %v", e)
	}
}

// TestParseBatchParentSelectors: a rule naming its parents by node
// selectors is sent with them and without a parent_id.
func TestParseBatchParentSelectors(t *testing.T) {
	entries, err := parseBatch([]byte(batchDoc(2, func(i int) string {
		if i == 1 {
			return "  - spiffe_id: spiffe://example.org/deployer\n    parent_selectors: [\"github:repository:acme/api\"]\n    selectors: [\"unix:uid:1\"]\n"
		}
		return ""
	})), batchNow)
	if err != nil {
		t.Fatal(err)
	}
	e := entries[1]
	if e.GetParentId() != "" || strings.Join(formatSelectors(e.GetParentSelectors()), ",") != "github:repository:acme/api" {
		t.Errorf("entry = %v", e)
	}
	if entries[0].GetParentId() != "spiffe://example.org/n" || len(entries[0].GetParentSelectors()) != 0 {
		t.Errorf("entry with parent_id = %v", entries[0])
	}
}

func TestParseBatchGoodJSON(t *testing.T) {
	// JSON is read by the same decoder; tabs as indentation must work.
	const doc = "{\n\t\"entries\": [\n\t\t{\"spiffe_id\": \"spiffe://example.org/a\", \"parent_id\": \"spiffe://example.org/n\",\n" +
		"\t\t \"selectors\": [\"unix:uid:1\"], \"x509_ttl\": 3600, \"jwt_ttl\": \"5m\"}\n\t]\n}\n"
	entries, err := parseBatch([]byte(doc), batchNow)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].GetX509TtlSeconds() != 3600 || entries[0].GetJwtTtlSeconds() != 300 {
		t.Fatalf("entries = %v", entries)
	}
}

// batchDoc builds a file of n valid entries and lets edit change one of them.
func batchDoc(n int, edit func(i int) string) string {
	var b strings.Builder
	b.WriteString("entries:\n")
	for i := 0; i < n; i++ {
		if s := edit(i); s != "" {
			b.WriteString(s)
			continue
		}
		fmt.Fprintf(&b, "  - spiffe_id: spiffe://example.org/w/%d\n    parent_id: spiffe://example.org/n\n    selectors: [\"unix:uid:%d\"]\n", i, i)
	}
	return b.String()
}

func TestParseBatchErrors(t *testing.T) {
	none := func(int) string { return "" }
	at := func(idx int, s string) func(int) string {
		return func(i int) string {
			if i == idx {
				return s
			}
			return ""
		}
	}
	tests := []struct {
		name string
		doc  string
		want []string // substrings of the error
	}{
		{"unknown key", batchDoc(5, at(3, "  - spiffe_id: spiffe://example.org/w\n    parent_id: spiffe://example.org/n\n    selectorz: [\"unix:uid:1\"]\n")),
			[]string{"entries[3].selectorz", "unknown field", "selectors", "line 13"}},
		{"misspelled key with dash", batchDoc(2, at(1, "  - spiffe-id: spiffe://example.org/w\n")),
			[]string{"entries[1].spiffe-id", "did you mean spiffe_id"}},
		{"bad selector at entries[2]", batchDoc(4, at(2, "  - spiffe_id: spiffe://example.org/w\n    parent_id: spiffe://example.org/n\n    selectors:\n      - unix:uid:1\n      - unix\n")),
			[]string{"entries[2].selectors[1]", "has no ':'", "line 12"}},
		{"bad TTL", batchDoc(3, at(0, "  - spiffe_id: spiffe://example.org/w\n    parent_id: spiffe://example.org/n\n    selectors: [\"unix:uid:1\"]\n    x509_ttl: 1 hour\n")),
			[]string{"entries[0].x509_ttl", `"1 hour"`}},
		{"negative TTL", batchDoc(1, at(0, "  - spiffe_id: spiffe://example.org/w\n    parent_id: spiffe://example.org/n\n    selectors: [\"unix:uid:1\"]\n    jwt_ttl: -5m\n")),
			[]string{"entries[0].jwt_ttl", "not positive"}},
		{"bad SPIFFE ID", batchDoc(2, at(1, "  - spiffe_id: http://example.org/w\n    parent_id: spiffe://example.org/n\n    selectors: [\"unix:uid:1\"]\n")),
			[]string{"entries[1].spiffe_id"}},
		{"missing parent", batchDoc(2, at(1, "  - spiffe_id: spiffe://example.org/w\n    selectors: [\"unix:uid:1\"]\n")),
			[]string{"entries[1]", "no parent_id or parent_selectors"}},
		{"no selectors", batchDoc(2, at(1, "  - spiffe_id: spiffe://example.org/w\n    parent_id: spiffe://example.org/n\n    selectors: []\n")),
			[]string{"entries[1].selectors", "at least one"}},
		{"selectors not a list", batchDoc(1, at(0, "  - spiffe_id: spiffe://example.org/w\n    parent_id: spiffe://example.org/n\n    selectors: unix:uid:1\n")),
			[]string{"entries[0].selectors", "should be a list"}},
		{"duplicate key", batchDoc(1, at(0, "  - spiffe_id: spiffe://example.org/w\n    parent_id: spiffe://example.org/n\n    hint: a\n    selectors: [\"unix:uid:1\"]\n    hint: b\n")),
			[]string{"entries[0].hint", "twice", "line 4"}},
		{"expiry in the past", batchDoc(1, at(0, "  - spiffe_id: spiffe://example.org/w\n    parent_id: spiffe://example.org/n\n    selectors: [\"unix:uid:1\"]\n    expires_at: 2020-01-01T00:00:00Z\n")),
			[]string{"entries[0].expires_at", "in the past"}},
		{"expiry not RFC 3339", batchDoc(1, at(0, "  - spiffe_id: spiffe://example.org/w\n    parent_id: spiffe://example.org/n\n    selectors: [\"unix:uid:1\"]\n    expires_at: tomorrow\n")),
			[]string{"entries[0].expires_at", "RFC 3339"}},
		{"entry not a mapping", batchDoc(2, at(1, "  - spiffe://example.org/w\n")),
			[]string{"entries[1]", "an entry is a mapping"}},
		{"unknown top-level key", "entries: []\nentires: []\n", []string{"entires", "unknown field"}},
		{"no entries key", "{}\n", []string{"no entries list"}},
		{"empty entries", "entries: []\n", []string{"entries", "empty"}},
		{"empty file", "", []string{"empty"}},
		{"comment only", "# nothing\n", []string{"empty"}},
		{"top level is a list", "- a\n", []string{"should be a mapping"}},
		{"two documents", batchDoc(1, none) + "---\nentries: []\n", []string{"second YAML document", "line 5"}},
		{"syntax error", "entries: [\n", []string{"yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries, err := parseBatch([]byte(tt.doc), batchNow)
			if err == nil {
				t.Fatalf("no error; parsed %d entries", len(entries))
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseBatchTooMany(t *testing.T) {
	// The count is checked before any entry, so empty entries suffice.
	doc := "entries:\n" + strings.Repeat("- {}\n", maxBatchEntries+1)
	_, err := parseBatch([]byte(doc), batchNow)
	if err == nil {
		t.Fatal("a file of more than the maximum entries was accepted")
	}
	for _, w := range []string{"100001 entries", "split"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

func TestParseBatchLimitBoundary(t *testing.T) {
	none := func(int) string { return "" }
	if entries, err := parseBatchLimit([]byte(batchDoc(3, none)), batchNow, 3); err != nil || len(entries) != 3 {
		t.Errorf("at the limit: %d entries, %v", len(entries), err)
	}
	if _, err := parseBatchLimit([]byte(batchDoc(4, none)), batchNow, 3); err == nil || !strings.Contains(err.Error(), "4 entries, more than the 3") {
		t.Errorf("over the limit: %v", err)
	}
}

// runNoServer runs a command that must fail or finish before contacting a
// server; the socket it is given does not exist.
func runNoServer(t *testing.T, run func(context.Context, []string, io.Writer, io.Writer) error, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	sock := filepath.Join(t.TempDir(), "absent.sock")
	err = run(context.Background(), append(args, "--socket", sock), &out, &errOut)
	if err != nil && strings.Contains(err.Error(), "no writ server socket") {
		t.Fatalf("%v: reached the dial step; want an error before it", args)
	}
	return out.String(), errOut.String(), err
}

func TestEntryFlagErrors(t *testing.T) {
	future := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	valid := []string{"--spiffe-id", "spiffe://example.org/w", "--parent-id", "spiffe://example.org/n", "--selector", "unix:uid:1"}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"create missing all", []string{"create"}, []string{"missing --spiffe-id, --parent-id (or --parent-selector), --selector", "usage: writ entry create", "--help"}},
		{"create bad parent selector", []string{"create", "--spiffe-id", "spiffe://example.org/w", "--parent-selector", "GitHub:repository:a/b", "--selector", "unix:uid:1"}, []string{"parent-selector:", "lowercase"}},
		{"update parent selector and clear", []string{"update", "--id", "x", "--parent-selector", "github:ref:main", "--clear-parent-selectors"}, []string{"--clear-parent-selectors, not both"}},
		{"update parent id and clear", []string{"update", "--id", "x", "--parent-id", "spiffe://example.org/n", "--clear-parent-id"}, []string{"--clear-parent-id, not both"}},
		{"create missing selector", []string{"create", "--spiffe-id", "spiffe://example.org/w", "--parent-id", "spiffe://example.org/n"}, []string{"missing --selector"}},
		{"create bad spiffe id", []string{"create", "--spiffe-id", "example.org/w", "--parent-id", "spiffe://example.org/n", "--selector", "unix:uid:1"}, []string{"spiffe-id:"}},
		{"create bad selector", []string{"create", "--spiffe-id", "spiffe://example.org/w", "--parent-id", "spiffe://example.org/n", "--selector", "Unix:uid:1"}, []string{"selector:", "lowercase"}},
		{"create bad ttl", append(append([]string{"create"}, valid...), "--x509-ttl", "soon"), []string{"x509-ttl:", `"soon"`}},
		{"create both expiries", append(append([]string{"create"}, valid...), "--expires-at", future, "--expires-in", "1h"), []string{"--expires-at or --expires-in, not both"}},
		{"create past expiry", append(append([]string{"create"}, valid...), "--expires-at", "2001-01-01T00:00:00Z"), []string{"expires-at:", "in the past"}},
		{"create file with field flags", []string{"create", "--file", "x.yaml", "--hint", "h"}, []string{"--hint cannot be combined with --file"}},
		{"create unknown flag", []string{"create", "--bogus"}, []string{"flag provided but not defined: -bogus", "usage: writ entry create"}},
		{"create positional", []string{"create", "spiffe://example.org/w"}, []string{`unexpected argument "spiffe://example.org/w"`}},
		{"create missing file", []string{"create", "--file", "/nonexistent/batch.yaml"}, []string{"cannot read batch file", "/nonexistent/batch.yaml"}},
		{"update no id", []string{"update", "--hint", "x"}, []string{"missing --id"}},
		{"update nothing", []string{"update", "--id", "x"}, []string{"nothing to change", "--clear-dns"}},
		{"update dns and clear", []string{"update", "--id", "x", "--dns", "a.example", "--clear-dns"}, []string{"--dns or --clear-dns"}},
		{"update expiry and clear", []string{"update", "--id", "x", "--expires-in", "1h", "--clear-expiry"}, []string{"--clear-expiry, not both"}},
		{"update bad ttl", []string{"update", "--id", "x", "--jwt-ttl", "0"}, []string{"jwt-ttl:", "not positive"}},
		{"delete no id", []string{"delete"}, []string{"missing --id", "usage: writ entry delete --id ID"}},
		{"show no id", []string{"show", "--json"}, []string{"missing --id"}},
		{"show empty id", []string{"show", "--id", ""}, []string{"missing --id"}},
		{"list bad selector", []string{"list", "--selector", "nocolon"}, []string{"selector:"}},
		{"list bad parent", []string{"list", "--parent-id", "spiffe://"}, []string{"parent-id:"}},
		{"no subcommand", nil, []string{"a command is needed", "create, update, delete, show or list"}},
		{"unknown subcommand", []string{"remove"}, []string{`unknown command "remove"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.args == nil {
				err = runEntry(context.Background(), nil, &bytes.Buffer{}, &bytes.Buffer{})
			} else {
				_, _, err = runNoServer(t, runEntry, tt.args...)
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestEntryCreateFileErrorSendsNothing(t *testing.T) {
	// The socket is absent: reaching it would be a different error than the
	// parse error, so this shows the file is checked before dialling.
	stdin = strings.NewReader(batchDoc(4, func(i int) string {
		if i == 2 {
			return "  - spiffe_id: spiffe://example.org/w\n    parent_id: spiffe://example.org/n\n    selectors: [\"unix\"]\n"
		}
		return ""
	}))
	t.Cleanup(func() { stdin = os.Stdin })
	_, _, err := runNoServer(t, runEntry, "create", "--file", "-")
	if err == nil || !strings.Contains(err.Error(), "standard input: line 10: entries[2].selectors[0]:") || !strings.Contains(err.Error(), "nothing was created") {
		t.Fatalf("err = %v", err)
	}
}
