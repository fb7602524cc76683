package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// startStoppable runs `writ server` like startCommand but returns a stop
// function, so a test can restart the server on the same data dir.
func startStoppable(t *testing.T, socket string, args ...string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stderr := &syncBuffer{}
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, &syncBuffer{}, stderr) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("server did not stop within 20s")
		}
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case code := <-done:
			t.Fatalf("%v exited with %d: %s", args, code, stderr.String())
		default:
		}
		if c, err := net.Dial("unix", socket); err == nil {
			c.Close()
			return stop
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%v: admin socket never came up: %s", args, stderr.String())
	return nil
}

// openDB opens the server's SQLite file the way an intruder on the host
// would: directly, behind the server's back.
func openDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func exec1(t *testing.T, db *sql.DB, query string, args ...any) {
	t.Helper()
	if _, err := db.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// verifyFails runs `writ audit verify` expecting failure and returns stderr.
func verifyFails(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), append([]string{"audit", "verify"}, args...), &stdout, &stderr); code == 0 {
		t.Fatalf("writ audit verify %v passed on a tampered log: %s", args, stdout.String())
	}
	t.Logf("writ audit verify %v: %s", args, stderr.String())
	return stderr.String()
}

func wantIn(t *testing.T, what, got string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(got, p) {
			t.Fatalf("%s: %q does not say %q", what, got, p)
		}
	}
}

// TestAuditVerifyCatchesTampering changes the stored log behind the
// server's back in each way an intruder could and checks that
// `writ audit verify` fails and names the spot, and passes again once the
// log is restored.
func TestAuditVerifyCatchesTampering(t *testing.T) {
	dir := shortTempDir(t)
	data := filepath.Join(dir, "data")
	socket := filepath.Join(data, "admin.sock")
	cfg := filepath.Join(dir, "writ.yaml")
	// Checkpoints only when asked, so the test decides what is signed.
	if err := os.WriteFile(cfg, []byte("listen_address: \"\"\nops_address: \"\"\naudit:\n  checkpoint_interval: 1h\n  checkpoint_events: 1000000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	serverArgs := []string{"server", "--data-dir", data, "--trust-domain", "audit.test", "--config", cfg}
	stop := startStoppable(t, socket, serverArgs...)
	for i := range 6 {
		writ(t, "entry", "create", "--socket", socket, "--spiffe-id", fmt.Sprintf("spiffe://audit.test/w%d", i),
			"--parent-id", "spiffe://audit.test/node", "--selector", fmt.Sprintf("unix:uid:%d", i))
		writ(t, "svid", "mint", "--socket", socket, "--jwt", "--spiffe-id", fmt.Sprintf("spiffe://audit.test/w%d", i), "--audience", "x")
	}
	ref := filepath.Join(dir, "kept.jsonl")
	writ(t, "audit", "export", "--socket", socket, "--out", ref)
	if fi, err := os.Stat(ref); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("export file: %v, %v", fi, err)
	}
	ok := writ(t, "audit", "verify", "--socket", socket, "--checkpoints", ref)
	wantIn(t, "verify of an intact log", ok, "audit log OK")
	tail := writ(t, "audit", "tail", "--socket", socket, "-n", "3")
	wantIn(t, "tail", tail, "svid.jwt.mint", "spiffe://audit.test/w5")

	db := openDB(t, filepath.Join(data, "writ.db"))
	var size int64
	if err := db.QueryRow(`SELECT size FROM audit_head`).Scan(&size); err != nil {
		t.Fatal(err)
	}
	const k = 7 // an event in the middle
	var original []byte
	if err := db.QueryRow(`SELECT event FROM audit_events WHERE idx = ?`, k).Scan(&original); err != nil {
		t.Fatal(err)
	}

	t.Run("one byte changed", func(t *testing.T) {
		changed := bytes.Clone(original)
		changed[len(changed)/2] ^= 0x01
		exec1(t, db, `UPDATE audit_events SET event = ? WHERE idx = ?`, changed, k)
		defer exec1(t, db, `UPDATE audit_events SET event = ? WHERE idx = ?`, original, k)
		wantIn(t, "verify", verifyFails(t, "--socket", socket), fmt.Sprintf("event %d", k))
		wantIn(t, "verify against the export", verifyFails(t, "--socket", socket, "--checkpoints", ref), fmt.Sprintf("event %d was changed", k))
	})
	t.Run("one event deleted", func(t *testing.T) {
		exec1(t, db, `DELETE FROM audit_events WHERE idx = ?`, k)
		defer exec1(t, db, `INSERT INTO audit_events (idx, event) VALUES (?, ?)`, k, original)
		wantIn(t, "verify", verifyFails(t, "--socket", socket), fmt.Sprintf("no event %d", k), fmt.Sprintf("event %d", k))
	})
	t.Run("tail cut", func(t *testing.T) {
		var last []byte
		if err := db.QueryRow(`SELECT event FROM audit_events WHERE idx = ?`, size-1).Scan(&last); err != nil {
			t.Fatal(err)
		}
		// A careful intruder moves the head back too.
		exec1(t, db, `DELETE FROM audit_events WHERE idx = ?`, size-1)
		exec1(t, db, `UPDATE audit_head SET size = ?`, size-1)
		defer func() {
			exec1(t, db, `INSERT INTO audit_events (idx, event) VALUES (?, ?)`, size-1, last)
			exec1(t, db, `UPDATE audit_head SET size = ?`, size)
		}()
		wantIn(t, "verify", verifyFails(t, "--socket", socket), "shorter than signed", fmt.Sprintf("covers %d events", size))
	})
	t.Run("restored", func(t *testing.T) {
		wantIn(t, "verify after restoring", writ(t, "audit", "verify", "--socket", socket, "--checkpoints", ref), "audit log OK")
	})

	// The thorough intruder: cut the tail, remove every checkpoint that
	// covered it and let the server carry on, signing the rewritten
	// history. The log is consistent with its own new checkpoints; only the
	// export kept outside shows it was rewritten.
	stop()
	cut := size - 3
	exec1(t, db, `DELETE FROM audit_events WHERE idx >= ?`, cut)
	exec1(t, db, `DELETE FROM audit_hashes WHERE idx >= ?`, tlog.StoredHashIndex(0, cut))
	exec1(t, db, `UPDATE audit_head SET size = ?`, cut)
	exec1(t, db, `DELETE FROM audit_checkpoints`)
	startStoppable(t, socket, serverArgs...)
	writ(t, "entry", "create", "--socket", socket, "--spiffe-id", "spiffe://audit.test/innocent",
		"--parent-id", "spiffe://audit.test/node", "--selector", "unix:uid:99")
	writ(t, "audit", "export", "--socket", socket, "--out", filepath.Join(dir, "new.jsonl"))
	wantIn(t, "verify of the rewritten log on its own", writ(t, "audit", "verify", "--socket", socket), "audit log OK")
	wantIn(t, "verify of the rewritten log against the kept export", verifyFails(t, "--socket", socket, "--checkpoints", ref),
		fmt.Sprintf("event %d", cut))
}
