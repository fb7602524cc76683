package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBackupAndRestore backs a running server up, stops it, puts the copy
// in place of its database and starts it again: what was there at the
// backup is back, what came after is not.
func TestBackupAndRestore(t *testing.T) {
	dir := shortTempDir(t)
	data := filepath.Join(dir, "data")
	socket := filepath.Join(data, "admin.sock")
	cfg := filepath.Join(dir, "writ.yaml")
	if err := os.WriteFile(cfg, []byte("listen_address: \"\"\nops_address: \"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	server := []string{"server", "--data-dir", data, "--trust-domain", "backup.test", "--config", cfg}
	backup := filepath.Join(dir, "writ-backup.db")
	keys := filepath.Join(dir, "audit-keys.json")
	t.Run("backup", func(t *testing.T) {
		startCommand(t, socket, server...)
		writ(t, "entry", "create", "--socket", socket, "--spiffe-id", "spiffe://backup.test/before", "--parent-id", "spiffe://backup.test/node", "--selector", "unix:uid:1")
		writ(t, "audit", "keys", "--socket", socket, "--out", keys)
		if out := writ(t, "backup", "--socket", socket, "--out", backup); !strings.Contains(out, backup) {
			t.Fatalf("backup output: %s", out)
		}
		fi, err := os.Stat(backup)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("backup has mode %v, want 0600", fi.Mode().Perm())
		}
		if msg := runFails(t, "backup", "--socket", socket, "--out", backup); !strings.Contains(msg, "exists") {
			t.Errorf("a second backup over the first: %s", msg)
		}
		writ(t, "entry", "create", "--socket", socket, "--spiffe-id", "spiffe://backup.test/after", "--parent-id", "spiffe://backup.test/node", "--selector", "unix:uid:2")
	})
	t.Run("restore", func(t *testing.T) {
		db := filepath.Join(data, "writ.db")
		for _, suffix := range []string{"-wal", "-shm"} {
			if err := os.Remove(db + suffix); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
		}
		if err := os.Rename(backup, db); err != nil {
			t.Fatal(err)
		}
		// The restored log is shorter than what this server last signed:
		// it must refuse to start until the operator sets the head aside,
		// as it would if someone had cut the log behind its back.
		if msg := runFails(t, server...); !strings.Contains(msg, "REFUSING TO START") {
			t.Fatalf("server started on a log shorter than its signed head: %s", msg)
		}
		head := filepath.Join(data, "audit-head")
		if err := os.Rename(head, head+".before-restore"); err != nil {
			t.Fatal(err)
		}
		startCommand(t, socket, server...)
		out := writ(t, "entry", "list", "--socket", socket)
		if !strings.Contains(out, "spiffe://backup.test/before") || strings.Contains(out, "spiffe://backup.test/after") {
			t.Fatalf("entries after restoring the backup:\n%s", out)
		}
		if out := writ(t, "audit", "verify", "--socket", socket, "--keys", keys); !strings.Contains(out, "audit log OK") {
			t.Fatalf("audit verify after restore:\n%s", out)
		}
	})
}
