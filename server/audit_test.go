package server

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/grpc/codes"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
)

// readEvents returns every audit event the server hands out, decoded.
func readEvents(t *testing.T, api writv1.AuditServiceClient) []audit.Event {
	t.Helper()
	resp, err := api.ReadEvents(t.Context(), &writv1.ReadAuditEventsRequest{Limit: maxAuditPage})
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Event
	for i, e := range resp.GetEvents() {
		if e.GetIndex() != int64(i) {
			t.Fatalf("event %d has index %d", i, e.GetIndex())
		}
		ev, err := audit.DecodeEvent(e.GetEvent())
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		out = append(out, ev)
	}
	// Events recorded in the background (decisions) may land between the
	// size and the read: more events than the size is fine, fewer is not.
	if int64(len(out)) < resp.GetSize() {
		t.Fatalf("%d events read, size %d", len(out), resp.GetSize())
	}
	return out
}

func typesOf(evs []audit.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

// TestEveryChangeAndIssuanceIsAudited runs each kind of change and
// issuance through the API and finds its event, by the right actor, in the
// log; refused operations leave a refusal event, failed ones nothing.
func TestEveryChangeAndIssuanceIsAudited(t *testing.T) {
	srv := startServer(t, testConfig(t))
	cc := adminConn(t, srv)
	api := writv1.NewAuditServiceClient(cc)
	ctx := t.Context()

	startup := readEvents(t, api)
	for _, typ := range []string{audit.EventAuditKeyPublish, audit.EventCAX509Activate, audit.EventCAJWTActivate} {
		if !slices.Contains(typesOf(startup), typ) {
			t.Errorf("startup events %v lack %s", typesOf(startup), typ)
		}
	}
	n := len(startup)

	entries := writv1.NewEntryServiceClient(cc)
	created, err := entries.CreateEntries(ctx, &writv1.CreateEntriesRequest{Entries: []*writv1.Entry{
		entry("/a", "/node", "unix:uid:1"),
		entry("/b", "/node", "unix:uid:2"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	a := created.GetEntries()[0]
	a.Hint = "changed"
	if _, err := entries.UpdateEntry(ctx, &writv1.UpdateEntryRequest{Entry: a}); err != nil {
		t.Fatal(err)
	}
	if _, err := entries.DeleteEntry(ctx, &writv1.DeleteEntryRequest{Id: created.GetEntries()[1].GetId()}); err != nil {
		t.Fatal(err)
	}
	// A failing change leaves nothing.
	_, err = entries.DeleteEntry(ctx, &writv1.DeleteEntryRequest{Id: "no-such-entry"})
	wantCode(t, err, codes.NotFound, "")

	svids := writv1.NewSVIDServiceClient(cc)
	_, csr := newCSR(t)
	if _, err := svids.MintX509SVID(ctx, &writv1.MintX509SVIDRequest{SpiffeId: "spiffe://" + testTD + "/x", Csr: csr}); err != nil {
		t.Fatal(err)
	}
	if _, err := svids.MintJWTSVID(ctx, &writv1.MintJWTSVIDRequest{SpiffeId: "spiffe://" + testTD + "/x", Audience: []string{"aud"}}); err != nil {
		t.Fatal(err)
	}
	lock := createLock(t, cc, "spiffe-id", "spiffe://"+testTD+"/x", "INC-1", "")
	_, err = svids.MintJWTSVID(ctx, &writv1.MintJWTSVIDRequest{SpiffeId: "spiffe://" + testTD + "/x", Audience: []string{"aud"}})
	wantCode(t, err, codes.PermissionDenied, "locked")
	if _, err := writv1.NewLockServiceClient(cc).DeleteLock(ctx, &writv1.DeleteLockRequest{Id: lock.GetId()}); err != nil {
		t.Fatal(err)
	}

	evs := readEvents(t, api)[n:]
	want := []string{audit.EventEntryCreate, audit.EventEntryCreate, audit.EventEntryUpdate, audit.EventEntryDelete, audit.EventSVIDX509Mint, audit.EventSVIDJWTMint, audit.EventLockCreate, audit.EventSVIDJWTRefused, audit.EventLockDelete}
	if got := typesOf(evs); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	uid := "uid:"
	for _, e := range evs {
		if !strings.HasPrefix(e.Actor, uid) {
			t.Errorf("%s event has actor %q, want the local administrator's uid", e.Type, e.Actor)
		}
	}
	if evs[0].Subject != created.GetEntries()[0].GetId() || evs[3].Subject != created.GetEntries()[1].GetId() {
		t.Errorf("entry events name %q and %q, want the entries' IDs", evs[0].Subject, evs[3].Subject)
	}
	if evs[4].Subject != "spiffe://"+testTD+"/x" || !strings.Contains(string(evs[4].Details), `"serial"`) {
		t.Errorf("mint event: %+v", evs[4])
	}
	if evs[6].Subject != lock.GetId() || !strings.Contains(string(evs[6].Details), "INC-1") {
		t.Errorf("lock event: %+v", evs[6])
	}
}

// TestAuditCheckpointsVerify has the server sign a checkpoint and checks it
// with the published key, then verifies the log as an outside reader.
func TestAuditCheckpointsVerify(t *testing.T) {
	cfg := testConfig(t)
	cfg.Audit.CheckpointInterval = Duration{time.Hour}
	srv := startServer(t, cfg)
	cc := adminConn(t, srv)
	api := writv1.NewAuditServiceClient(cc)
	ctx := t.Context()

	cp, err := api.SignCheckpoint(ctx, &writv1.SignAuditCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	again, err := api.SignCheckpoint(ctx, &writv1.SignAuditCheckpointRequest{})
	if err != nil || again.GetSize() != cp.GetSize() {
		t.Fatalf("second checkpoint with nothing new: %v, %v; want the same size %d", again, err, cp.GetSize())
	}
	got, err := api.GetCheckpoints(ctx, &writv1.GetAuditCheckpointsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// The first seal of a run is kept beside the newest.
	if len(got.GetKeys()) != 1 || len(got.GetCheckpoints()) != 2 {
		t.Fatalf("keys %d, checkpoints %d; want 1 and 2", len(got.GetKeys()), len(got.GetCheckpoints()))
	}
	newest := got.GetCheckpoints()[len(got.GetCheckpoints())-1]
	k := got.GetKeys()[0]
	v, err := note.NewVerifier(k.GetVerifierKey())
	if err != nil {
		t.Fatalf("verifier key %q: %v", k.GetVerifierKey(), err)
	}
	c, err := audit.ParseCheckpoint(newest.GetNote(), note.VerifierList(v))
	if err != nil {
		t.Fatal(err)
	}
	if c.Origin != AuditOrigin(testTD) || c.Size != cp.GetSize() {
		t.Fatalf("checkpoint %+v", c)
	}

	evs, err := api.ReadEvents(ctx, &writv1.ReadAuditEventsRequest{Limit: maxAuditPage})
	if err != nil {
		t.Fatal(err)
	}
	var leaves audit.Leaves
	for _, e := range evs.GetEvents() {
		leaves = append(leaves, e.GetEvent())
	}
	pv, err := audit.NewVerifier(k.GetName(), ed25519.PublicKey(k.GetPublicKey()))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(ctx, leaves, []audit.SignedCheckpoint{{Note: newest.GetNote()}}, note.VerifierList(pv))
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if rep.Verified != int64(len(leaves)) {
		t.Fatalf("verified %d of %d events", rep.Verified, len(leaves))
	}

	// Stored hashes are served in tlog's numbering.
	hs, err := api.ReadHashes(ctx, &writv1.ReadAuditHashesRequest{Indexes: []int64{0}})
	if err != nil || len(hs.GetHashes()) != 1 || len(hs.GetHashes()[0]) != 32 {
		t.Fatalf("ReadHashes: %v, %v", hs, err)
	}
	_, err = api.ReadHashes(ctx, &writv1.ReadAuditHashesRequest{Indexes: []int64{-1}})
	wantCode(t, err, codes.InvalidArgument, "negative")
	_, err = api.ReadEvents(ctx, &writv1.ReadAuditEventsRequest{Limit: maxAuditPage + 1})
	wantCode(t, err, codes.InvalidArgument, "limit")
}

// TestClockSkewStopsIssuance puts the server's clock beyond the bound from
// the store's: it reports not ready and refuses to issue.
func TestClockSkewStopsIssuance(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxClockSkew = Duration{time.Minute}
	var offset atomic.Int64
	srv, err := New(t.Context(), cfg, Options{Logger: quietLogger(), Now: func() time.Time {
		return time.Now().Add(time.Duration(offset.Load()))
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	cc := adminConn(t, srv)
	svids := writv1.NewSVIDServiceClient(cc)
	mint := func() error {
		_, err := svids.MintJWTSVID(t.Context(), &writv1.MintJWTSVIDRequest{SpiffeId: "spiffe://" + testTD + "/x", Audience: []string{"a"}})
		return err
	}
	if err := mint(); err != nil {
		t.Fatal(err)
	}
	offset.Store(int64(-2 * time.Minute))
	if err := srv.clock.check(t.Context()); err != nil {
		t.Fatal(err)
	}
	wantCode(t, mint(), codes.Unavailable, "max_clock_skew")
	if err := srv.ready(t.Context()); err == nil || !strings.Contains(err.Error(), "clock") {
		t.Fatalf("ready with a skewed clock: %v", err)
	}
	offset.Store(0)
	if err := srv.clock.check(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := mint(); err != nil {
		t.Fatalf("after the clock recovered: %v", err)
	}
}

// TestEveryCommitIsSealed: without anyone asking for a checkpoint, the
// log's last event is always covered by a checkpoint this server signed in
// the same transaction, verifiable with the key the server names from its
// own keystore; superseded checkpoints do not pile up; and the last head is
// kept in the data dir, private to the server.
func TestEveryCommitIsSealed(t *testing.T) {
	cfg := testConfig(t)
	cfg.Audit.CheckpointInterval = Duration{time.Hour}
	cfg.Audit.CheckpointEvents = 1000
	srv := startServer(t, cfg)
	cc := adminConn(t, srv)
	api := writv1.NewAuditServiceClient(cc)
	entries := writv1.NewEntryServiceClient(cc)
	ctx := t.Context()
	for i := range 5 {
		if _, err := entries.CreateEntries(ctx, &writv1.CreateEntriesRequest{Entries: []*writv1.Entry{{
			SpiffeId: fmt.Sprintf("spiffe://%s/w%d", testTD, i), ParentId: "spiffe://" + testTD + "/node",
			Selectors: []*writv1.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", i)}}}}}); err != nil {
			t.Fatal(err)
		}
		got, err := api.GetCheckpoints(ctx, &writv1.GetAuditCheckpointsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		size := readSize(t, api)
		v, err := note.NewVerifier(got.GetServerKey().GetVerifierKey())
		if err != nil {
			t.Fatalf("server key %v: %v", got.GetServerKey(), err)
		}
		var covered int64
		for _, c := range got.GetCheckpoints() {
			cp, err := audit.ParseCheckpoint(c.GetNote(), note.VerifierList(v))
			if err != nil {
				t.Fatal(err)
			}
			covered = max(covered, cp.Size)
		}
		if covered != size {
			t.Fatalf("after change %d the log has %d events but checkpoints cover %d", i, size, covered)
		}
		if n := len(got.GetCheckpoints()); n > 2 {
			t.Fatalf("%d checkpoints kept for a log of %d events with checkpoint_events 1000: superseded ones are not dropped", n, size)
		}
	}
	size := readSize(t, api)
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(shutdown)
	head := filepath.Join(cfg.DataDir, auditHeadFile)
	fi, err := os.Stat(head)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("head file: %v, %v; want mode 0600", fi, err)
	}
	data, _ := os.ReadFile(head)
	if c, err := audit.ParseCheckpoint(data, srv.audit.verifier); err != nil || c.Size != size {
		t.Fatalf("head file holds %+v (%v), want size %d", c, err, size)
	}
}

func readSize(t *testing.T, api writv1.AuditServiceClient) int64 {
	t.Helper()
	resp, err := api.ReadEvents(t.Context(), &writv1.ReadAuditEventsRequest{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetSize()
}

// TestAuditUnsignedTailChecked: when the head file trails the log (a crash
// between a commit and the file's save) and the checkpoints in the store
// that covered the tail are gone, the server vouches for the tail only after
// rehashing it; an event changed there without its hash stops the start.
func TestAuditUnsignedTailChecked(t *testing.T) {
	cfg := testConfig(t)
	srv := startServer(t, cfg)
	entries := writv1.NewEntryServiceClient(adminConn(t, srv))
	ctx := t.Context()
	for i := range 3 {
		if _, err := entries.CreateEntries(ctx, &writv1.CreateEntriesRequest{Entries: []*writv1.Entry{
			entry(fmt.Sprintf("/t%d", i), "/node", fmt.Sprintf("unix:uid:%d", i))}}); err != nil {
			t.Fatal(err)
		}
	}
	size, err := srv.Store().AuditSize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(shutdown)

	// An older head, as a crash would have left it.
	older := size - 2
	db, err := sql.Open("sqlite", cfg.Store.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var stored []tlog.Hash
	rows, err := db.Query(`SELECT hash FROM audit_hashes ORDER BY idx`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var h []byte
		if err := rows.Scan(&h); err != nil {
			t.Fatal(err)
		}
		stored = append(stored, tlog.Hash(h))
	}
	rows.Close()
	hs, err := audit.LoadHashes(stored)
	if err != nil {
		t.Fatal(err)
	}
	root, err := hs.RootAt(older)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := audit.SignCheckpoint(audit.Checkpoint{Origin: AuditOrigin(testTD), Size: older, Root: root}, srv.audit.signer)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.DataDir, auditHeadFile), msg, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`DELETE FROM audit_checkpoints WHERE size > ?`, older); err != nil {
		t.Fatal(err)
	}
	var ev []byte
	if err := db.QueryRow(`SELECT event FROM audit_events WHERE idx = ?`, size-1).Scan(&ev); err != nil {
		t.Fatal(err)
	}
	changed := slices.Clone(ev)
	changed[len(changed)/2] ^= 1
	if _, err := db.Exec(`UPDATE audit_events SET event = ? WHERE idx = ?`, changed, size-1); err != nil {
		t.Fatal(err)
	}
	_, err = New(context.Background(), cfg, Options{Logger: quietLogger()})
	if err == nil || !strings.Contains(err.Error(), "REFUSING TO START") || !strings.Contains(err.Error(), fmt.Sprintf("event %d", size-1)) {
		t.Fatalf("start over a changed unsigned tail: %v", err)
	}
	// Put back, the same start succeeds and vouches for the tail.
	if _, err := db.Exec(`UPDATE audit_events SET event = ? WHERE idx = ?`, ev, size-1); err != nil {
		t.Fatal(err)
	}
	srv2 := startServer(t, cfg)
	srv2.audit.mu.Lock()
	got := srv2.audit.last.Size
	srv2.audit.mu.Unlock()
	if got < size {
		t.Fatalf("after the restart the server vouches for %d events, want at least %d", got, size)
	}
}
