package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
