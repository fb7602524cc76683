package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPolicyValidateFile: `writ policy validate FILE` as the README writes
// it compiles the file, and a broken policy is reported with its position.
func TestPolicyValidateFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "guard.cedar")
	if err := os.WriteFile(good, []byte(`@id("no-unaccompanied-agent-writes")
forbid(principal, action == writ::Action::"write", resource in writ::Resource::"db/prod")
when { principal.kind == "agent" && !context.person_in_chain };
`), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"policy", "validate", good}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "1 policies OK") {
		t.Fatalf("policy validate FILE: exit %d, %q %q", code, out.String(), errOut.String())
	}
	bad := filepath.Join(dir, "bad.cedar")
	if err := os.WriteFile(bad, []byte("forbid(principal, action, resource) when { ;\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errOut.Reset()
	if code := run(context.Background(), []string{"policy", "validate", good, bad}, &out, &errOut); code == 0 || !strings.Contains(errOut.String(), "bad.cedar") {
		t.Fatalf("broken policy: exit %d, %q", code, errOut.String())
	}
	errOut.Reset()
	if code := run(context.Background(), []string{"policy", "validate"}, &out, &errOut); code == 0 || !strings.Contains(errOut.String(), "name at least one policy file") {
		t.Fatalf("no file: exit %d, %q", code, errOut.String())
	}
}
