package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"writ.dev/writ/audit"
)

// TestAuditKeysOutIsBounded: the bundle named by --out is read within the
// same bound as one given to verify, so a wrong path (a device, a log)
// is refused before anything is read into memory whole or any server is
// asked.
func TestAuditKeysOutIsBounded(t *testing.T) {
	out := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(out, bytes.Repeat([]byte(" "), audit.MaxKeyBundleSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	err := auditKeys(context.Background(), []string{"--out", out, "--socket", filepath.Join(t.TempDir(), "none.sock")}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("--out naming a file over %d bytes: got %v, want a too-large error", audit.MaxKeyBundleSize, err)
	}
}
