package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"writ.dev/writ/audit"
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

// serverRefuses runs `writ server` expecting it to refuse to start, and
// returns what it said.
func serverRefuses(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr syncBuffer
	if code := run(ctx, args, &stdout, &stderr); code == 0 {
		t.Fatalf("writ %v started (or ran until stopped) over a rewritten audit log: %s", args, stderr.String())
	}
	if ctx.Err() != nil {
		t.Fatalf("writ %v ran until the test stopped it instead of refusing: %s", args, stderr.String())
	}
	t.Logf("server refused: %s", stderr.String())
	return stderr.String()
}

// auditServer starts a server for audit tests, makes a dozen events and
// exports the trusted key bundle.
type auditServer struct {
	dir, data, socket, keys string
	args                    []string
	stop                    func()
}

func newAuditServer(t *testing.T) *auditServer {
	t.Helper()
	dir := shortTempDir(t)
	a := &auditServer{dir: dir, data: filepath.Join(dir, "data"), keys: filepath.Join(dir, "keys.json")}
	a.socket = filepath.Join(a.data, "admin.sock")
	cfg := filepath.Join(dir, "writ.yaml")
	if err := os.WriteFile(cfg, []byte("listen_address: \"\"\nops_address: \"\"\naudit:\n  checkpoint_interval: 1h\n  checkpoint_events: 1000000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a.args = []string{"server", "--data-dir", a.data, "--trust-domain", "audit.test", "--config", cfg}
	a.stop = startStoppable(t, a.socket, a.args...)
	for i := range 6 {
		writ(t, "entry", "create", "--socket", a.socket, "--spiffe-id", fmt.Sprintf("spiffe://audit.test/w%d", i),
			"--parent-id", "spiffe://audit.test/node", "--selector", fmt.Sprintf("unix:uid:%d", i))
		writ(t, "svid", "mint", "--socket", a.socket, "--jwt", "--spiffe-id", fmt.Sprintf("spiffe://audit.test/w%d", i), "--audience", "x")
	}
	writ(t, "audit", "keys", "--socket", a.socket, "--out", a.keys)
	if fi, err := os.Stat(a.keys); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key bundle: %v, %v", fi, err)
	}
	return a
}

func logSize(t *testing.T, db *sql.DB) int64 {
	t.Helper()
	var size int64
	if err := db.QueryRow(`SELECT size FROM audit_head`).Scan(&size); err != nil {
		t.Fatal(err)
	}
	return size
}

// TestAuditVerifyCatchesTampering changes the stored log behind the
// server's back in each way an intruder could and checks that
// `writ audit verify` fails and names the spot, and passes again once the
// log is restored.
func TestAuditVerifyCatchesTampering(t *testing.T) {
	a := newAuditServer(t)
	dir, data, socket := a.dir, a.data, a.socket
	ref := filepath.Join(dir, "kept.jsonl")
	writ(t, "audit", "export", "--socket", socket, "--out", ref)
	if fi, err := os.Stat(ref); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("export file: %v, %v", fi, err)
	}
	ok := writ(t, "audit", "verify", "--socket", socket, "--keys", a.keys, "--checkpoints", ref)
	wantIn(t, "verify of an intact log", ok, "audit log OK")
	bundle, err := os.ReadFile(a.keys)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := audit.ParseKeys(bundle, a.keys)
	if err != nil || len(kb.Keys) != 1 {
		t.Fatalf("the exported bundle: %+v, %v", kb, err)
	}
	vkey := filepath.Join(dir, "server.vkey")
	if err := os.WriteFile(vkey, []byte(kb.Keys[0].VerifierKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wantIn(t, "verify with a bare --key file", writ(t, "audit", "verify", "--socket", socket, "--key", vkey), "audit log OK")
	tail := writ(t, "audit", "tail", "--socket", socket, "-n", "3")
	wantIn(t, "tail", tail, audit.EventSVIDJWTMint, "spiffe://audit.test/w5")
	wantIn(t, "verify without trusted keys", verifyFails(t, "--socket", socket), "NOT VERIFIED", "no trusted audit keys", "--keys")

	db := openDB(t, filepath.Join(data, "writ.db"))
	size := logSize(t, db)
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
		wantIn(t, "verify", verifyFails(t, "--socket", socket, "--keys", a.keys), fmt.Sprintf("event %d", k))
		wantIn(t, "verify against the export", verifyFails(t, "--socket", socket, "--keys", a.keys, "--checkpoints", ref), fmt.Sprintf("event %d was changed", k))
	})
	t.Run("newest event changed", func(t *testing.T) {
		// The newest event is covered only by the checkpoint of its own
		// commit; that is enough.
		var last []byte
		if err := db.QueryRow(`SELECT event FROM audit_events WHERE idx = ?`, size-1).Scan(&last); err != nil {
			t.Fatal(err)
		}
		changed := bytes.Clone(last)
		changed[len(changed)/2] ^= 0x01
		exec1(t, db, `UPDATE audit_events SET event = ? WHERE idx = ?`, changed, size-1)
		defer exec1(t, db, `UPDATE audit_events SET event = ? WHERE idx = ?`, last, size-1)
		wantIn(t, "verify", verifyFails(t, "--socket", socket, "--keys", a.keys), fmt.Sprintf("event %d", size-1))
	})
	t.Run("newest event changed and its checkpoint deleted", func(t *testing.T) {
		var last []byte
		if err := db.QueryRow(`SELECT event FROM audit_events WHERE idx = ?`, size-1).Scan(&last); err != nil {
			t.Fatal(err)
		}
		rows, err := db.Query(`SELECT server_id, size, note, created_at FROM audit_checkpoints WHERE size >= ?`, size)
		if err != nil {
			t.Fatal(err)
		}
		type cp struct {
			server    string
			size      int64
			note      []byte
			createdAt int64
		}
		var saved []cp
		for rows.Next() {
			var c cp
			if err := rows.Scan(&c.server, &c.size, &c.note, &c.createdAt); err != nil {
				t.Fatal(err)
			}
			saved = append(saved, c)
		}
		rows.Close()
		changed := bytes.Clone(last)
		changed[len(changed)/2] ^= 0x01
		exec1(t, db, `UPDATE audit_events SET event = ? WHERE idx = ?`, changed, size-1)
		exec1(t, db, `DELETE FROM audit_checkpoints WHERE size >= ?`, size)
		defer func() {
			exec1(t, db, `UPDATE audit_events SET event = ? WHERE idx = ?`, last, size-1)
			for _, c := range saved {
				exec1(t, db, `INSERT INTO audit_checkpoints (server_id, size, note, created_at) VALUES (?, ?, ?, ?)`, c.server, c.size, c.note, c.createdAt)
			}
		}()
		got := verifyFails(t, "--socket", socket, "--keys", a.keys)
		wantIn(t, "verify", got, fmt.Sprintf("%d", size-1), "not covered")
	})
	t.Run("one event deleted", func(t *testing.T) {
		exec1(t, db, `DELETE FROM audit_events WHERE idx = ?`, k)
		defer exec1(t, db, `INSERT INTO audit_events (idx, event) VALUES (?, ?)`, k, original)
		wantIn(t, "verify", verifyFails(t, "--socket", socket, "--keys", a.keys), fmt.Sprintf("no event %d", k), fmt.Sprintf("event %d", k))
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
		wantIn(t, "verify", verifyFails(t, "--socket", socket, "--keys", a.keys), "shorter than signed", fmt.Sprintf("covers %d events", size))
	})
	t.Run("restored", func(t *testing.T) {
		wantIn(t, "verify after restoring", writ(t, "audit", "verify", "--socket", socket, "--keys", a.keys, "--checkpoints", ref), "audit log OK")
	})

	// The thorough intruder: cut the tail and remove every checkpoint that
	// covered it. The checkpoints of an export kept outside witness the
	// truncation; and the server's own tree head in its data dir says how
	// far the log went, so it refuses to start again over it.
	cut := size - 3
	exec1(t, db, `DELETE FROM audit_events WHERE idx >= ?`, cut)
	exec1(t, db, `DELETE FROM audit_hashes WHERE idx >= ?`, tlog.StoredHashIndex(0, cut))
	exec1(t, db, `UPDATE audit_head SET size = ?`, cut)
	exec1(t, db, `DELETE FROM audit_checkpoints WHERE size > ?`, cut)
	wantIn(t, "verify of the cut log against the kept export", verifyFails(t, "--socket", socket, "--keys", a.keys, "--checkpoints", ref),
		"shorter than signed", fmt.Sprintf("covers %d events but the log has %d", size, cut))
	a.stop()
	wantIn(t, "restart over a cut log", serverRefuses(t, a.args...), "REFUSING TO START", fmt.Sprintf("fewer than the %d", size))
}

// TestAuditRewrittenWithAttackerKey: with write access to the database
// alone, an intruder rewrites an event, rehashes the tree, deletes the
// checkpoints, adds an audit key of their own and signs the new history
// with it, under the running server. Verify with the real keys fails;
// verify with no keys does not say OK; an export kept earlier names the
// change; the running server refuses further changes rather than sign over
// the rewritten log, and refuses to start again over it.
func TestAuditRewrittenWithAttackerKey(t *testing.T) {
	a := newAuditServer(t)
	ref := filepath.Join(a.dir, "kept.jsonl")
	writ(t, "audit", "export", "--socket", a.socket, "--out", ref)

	db := openDB(t, filepath.Join(a.data, "writ.db"))
	var serverID string
	if err := db.QueryRow(`SELECT server_id FROM audit_keys LIMIT 1`).Scan(&serverID); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query(`SELECT event FROM audit_events ORDER BY idx`)
	if err != nil {
		t.Fatal(err)
	}
	var leaves [][]byte
	for rows.Next() {
		var ev []byte
		if err := rows.Scan(&ev); err != nil {
			t.Fatal(err)
		}
		leaves = append(leaves, ev)
	}
	rows.Close()
	const k = 5
	leaves[k] = bytes.Replace(leaves[k], []byte("audit.test/w"), []byte("audit.test/x"), 1)
	exec1(t, db, `UPDATE audit_events SET event = ? WHERE idx = ?`, leaves[k], k)
	var tree audit.Hashes
	for _, l := range leaves {
		if _, err := tree.Append(l); err != nil {
			t.Fatal(err)
		}
	}
	exec1(t, db, `DELETE FROM audit_hashes`)
	for i, h := range tree.Stored() {
		exec1(t, db, `INSERT INTO audit_hashes (idx, hash) VALUES (?, ?)`, i, h[:])
	}
	root, err := tree.Root()
	if err != nil {
		t.Fatal(err)
	}
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	name := "audit.test/writ/server/" + serverID + "/audit-0badc0de"
	signer, err := audit.NewSigner(name, priv)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := audit.SignCheckpoint(audit.Checkpoint{Origin: "audit.test/writ/audit", Size: tree.Size(), Root: root}, signer)
	if err != nil {
		t.Fatal(err)
	}
	exec1(t, db, `DELETE FROM audit_checkpoints`)
	exec1(t, db, `INSERT INTO audit_keys (name, server_id, public_key, created_at) VALUES (?, ?, ?, ?)`, name, serverID, []byte(priv.Public().(ed25519.PublicKey)), time.Now().Unix())
	exec1(t, db, `INSERT INTO audit_checkpoints (server_id, size, note, created_at) VALUES (?, ?, ?, ?)`, serverID, tree.Size(), msg, time.Now().Unix())

	socket := a.socket
	got := verifyFails(t, "--socket", socket, "--keys", a.keys)
	wantIn(t, "verify with the real keys", got, "FAILED", "not trusted here", "none of the 17 events is covered")
	wantIn(t, "verify with no keys", verifyFails(t, "--socket", socket), "NOT VERIFIED")
	wantIn(t, "verify against the kept export", verifyFails(t, "--socket", socket, "--keys", a.keys, "--checkpoints", ref), fmt.Sprintf("event %d was changed", k))
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"entry", "create", "--socket", socket, "--spiffe-id", "spiffe://audit.test/after",
		"--parent-id", "spiffe://audit.test/node", "--selector", "unix:uid:77"}, &stdout, &stderr); code == 0 {
		t.Fatal("the server accepted a change over a rewritten audit log")
	}
	t.Logf("change over the rewritten log: %s", stderr.String())
	a.stop()
	wantIn(t, "restart over the rewritten log", serverRefuses(t, a.args...), "REFUSING TO START", "does not extend the tree head", fmt.Sprintf("size %d", tree.Size()))
}

// TestAuditExportFollow: the feed a SIEM keeps carries each new event and
// the signed checkpoint of its commit, so the copy alone verifies with the
// key bundle and can later witness a truncation.
func TestAuditExportFollow(t *testing.T) {
	a := newAuditServer(t)
	var o, e bytes.Buffer
	if code := run(context.Background(), []string{"audit", "export", "--follow", "--out", filepath.Join(a.dir, "x"), "--socket", a.socket}, &o, &e); code == 0 {
		t.Fatal("export accepted --follow with --out")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var feed, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"audit", "export", "--follow", "--socket", a.socket}, &feed, &stderr)
	}()
	// Wait for the initial export before making news.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(feed.String(), `"checkpoint"`) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	writ(t, "entry", "create", "--socket", a.socket, "--spiffe-id", "spiffe://audit.test/later",
		"--parent-id", "spiffe://audit.test/node", "--selector", "unix:uid:4242")
	db := openDB(t, filepath.Join(a.data, "writ.db"))
	size := logSize(t, db)
	var exp *audit.Export
	for time.Now().Before(deadline) {
		e, err := audit.ReadExport(strings.NewReader(feed.String()), "feed")
		if err == nil && e.Len() == size && len(e.Checkpoints) > 0 {
			if n, _ := audit.PeekSize(e.Checkpoints[len(e.Checkpoints)-1].Note); n == size {
				exp = e
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("export --follow exited %d: %s", code, stderr.String())
	}
	if exp == nil {
		t.Fatalf("the feed never carried event %d and its checkpoint: %s", size-1, feed.String())
	}
	data, err := os.ReadFile(a.keys)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := audit.ParseKeys(data, a.keys)
	if err != nil {
		t.Fatal(err)
	}
	vs, err := kb.Verifiers()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(context.Background(), exp, exp.Checkpoints, vs); err != nil {
		t.Fatalf("the feed does not verify on its own: %v", err)
	}
}
