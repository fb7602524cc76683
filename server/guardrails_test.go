package server

import (
	"crypto/sha256"
	"encoding/hex"
	"time"

	"google.golang.org/grpc/codes"
	"writ.dev/writ/audit"

	"os"
	"path/filepath"
	"strings"
	"testing"
	writv1 "writ.dev/writ/api/writ/v1"
)

// TestLoadGuardrailsBoundsFiles: a path naming a device or a huge file is
// refused with a clear error rather than read whole into memory (the
// server at start and 'writ policy validate' both load through here).
func TestLoadGuardrailsBoundsFiles(t *testing.T) {
	dir := t.TempDir()
	policy := "@id(\"a\")\nforbid (principal, action, resource);\n"
	small := filepath.Join(dir, "small.cedar")
	if err := os.WriteFile(small, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadGuardrails([]string{small}); err != nil {
		t.Fatalf("a small policy file: %v", err)
	}
	// Valid Cedar, only padded past the bound: refused for its size alone.
	big := filepath.Join(dir, "big.cedar")
	if err := os.WriteFile(big, []byte(strings.Repeat(" ", maxGuardrailFileBytes)+policy), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadGuardrails([]string{big}); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Fatalf("a policy file over %d bytes: got %v, want a too-large error", maxGuardrailFileBytes, err)
	}
	if _, err := os.Stat(os.DevNull); err == nil {
		if _, err := LoadGuardrails([]string{os.DevNull}); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("%s: got %v, want a not-a-regular-file error", os.DevNull, err)
		}
	}
}

// TestGuardrailOnArguments: a tool call's arguments reach the guardrails
// as context.arguments, so a guardrail forbids create_issue on one repo
// while the task allows it on others; bad arguments are refused with a
// clear error and decide nothing.
func TestGuardrailOnArguments(t *testing.T) {
	cfg := testConfig(t)
	policy := filepath.Join(cfg.DataDir, "args.cedar")
	if err := os.WriteFile(policy, []byte(`@id("no-issues-on-prod")
forbid(principal, action == writ::Action::"call", resource == writ::Resource::"mcp/github/tool/create_issue")
when { context has arguments && context.arguments has repo && context.arguments.repo == "acme/prod" };
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Guardrails.Files = []string{policy}
	srv := startServer(t, cfg)
	admin := adminConn(t, srv)
	openTask(t, writv1.NewTaskServiceClient(admin), "triage", []string{bot, ceo},
		&writv1.Grant{Actions: []string{"call"}, Resources: []string{"mcp/github/tool/**"}, To: []string{bot, ceo}})
	decide := writv1.NewDecisionServiceClient(admin)
	call := func(args string) (*writv1.CheckResponse, error) {
		return decide.Check(t.Context(), &writv1.CheckRequest{Action: "call", Resource: "mcp/github/tool/create_issue",
			Chain: []string{bot, ceo}, ArgumentsJson: args})
	}
	for _, tc := range []struct {
		args  string
		allow bool
	}{{"", true}, {`{"repo":"acme/dev","title":"flaky test"}`, true}, {`{"repo":"acme/prod","title":"x"}`, false}} {
		r, err := call(tc.args)
		if err != nil {
			t.Fatalf("%s: %v", tc.args, err)
		}
		if r.GetAllow() != tc.allow || (!tc.allow && !strings.Contains(r.GetReason(), "no-issues-on-prod")) {
			t.Fatalf("%s: %v, want allow %v", tc.args, r, tc.allow)
		}
	}
	// The decision events carry the arguments' hash, not the arguments.
	sum := sha256.Sum256([]byte(`{"repo":"acme/prod","title":"x"}`))
	eventually(t, 10*time.Second, "the decision event with the arguments' hash", func() bool {
		for _, ev := range readEvents(t, writv1.NewAuditServiceClient(admin)) {
			if ev.Type == audit.EventDecision && strings.Contains(string(ev.Details), hex.EncodeToString(sum[:])) {
				return !strings.Contains(string(ev.Details), "acme/prod")
			}
		}
		return false
	})
	for _, tc := range []struct{ args, want string }{
		{`["acme/prod"]`, "want a JSON object"},
		{`{"repo":"acme/prod","repo":"acme/dev"}`, "given twice"},
		{`{"a":` + strings.Repeat("[", 20) + strings.Repeat("]", 20) + `}`, "nested more than 16"},
		{`{"a":"` + strings.Repeat("x", 70<<10) + `"}`, "more than the 65536"},
	} {
		_, err := call(tc.args)
		wantCode(t, err, codes.InvalidArgument, tc.want)
	}
}
