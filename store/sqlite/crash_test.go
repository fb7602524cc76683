package sqlite

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"writ.dev/writ/audit"
	"writ.dev/writ/store"
)

// crashWriterEnv makes the test binary a writer that changes the store
// until it is killed.
const crashWriterEnv = "WRIT_TEST_CRASH_WRITER_DB"

// TestMain lets the test binary double as the crash writer.
func TestMain(m *testing.M) {
	if path := os.Getenv(crashWriterEnv); path != "" {
		crashWriter(path)
		return
	}
	os.Exit(m.Run())
}

// crashWriter creates entries with their audit events, and appends
// issuance events, as fast as it can, forever.
func crashWriter(path string) {
	ctx := context.Background()
	s, err := Open(ctx, path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("ready")
	for i := 0; ; i++ {
		var entries []store.Entry
		var evs []store.AuditEvent
		for j := range 20 {
			id := fmt.Sprintf("e-%d-%d-%d", os.Getpid(), i, j)
			entries = append(entries, store.Entry{ID: id, SPIFFEID: "spiffe://example.org/" + id, ParentID: "spiffe://example.org/node"})
			evs = append(evs, store.AuditEvent(fmt.Sprintf(`{"time":"2026-01-01T00:00:00Z","type":%q,"subject":%q}`, audit.EventEntryCreate, id)))
		}
		if _, err := s.CreateEntries(ctx, entries, evs...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if _, err := s.AppendAudit(ctx, store.AuditEvent(fmt.Sprintf(`{"time":"2026-01-01T00:00:00Z","type":%q}`, audit.EventSVIDX509Mint))); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		// One byte per round committed, so the test can kill the writer
		// once it has made progress rather than after a guessed delay.
		os.Stdout.Write([]byte{'.'})
	}
}

// TestCrashLeavesChangeAndEventTogether kills a writer process at several
// moments mid-stream and checks, after each crash, that every stored entry
// has its audit event and every entry event has its entry: a change never
// survives without its evidence, nor evidence without its change.
func TestCrashLeavesChangeAndEventTogether(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills writer processes")
	}
	path := filepath.Join(t.TempDir(), "writ.db")
	before := 0
	// The writer is killed once it reports this many more rounds committed:
	// it is then in the middle of the next one. Counting commits rather than
	// waiting a fixed time keeps a loaded machine from killing it before it
	// stored anything.
	for round, commits := range []int{1, 5, 20} {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashWriterEnv+"="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 6)
		if _, err := out.Read(buf); err != nil {
			t.Fatalf("round %d: writer did not start: %v %s", round, err, stderr.String())
		}
		if _, err := io.ReadFull(out, make([]byte, commits)); err != nil {
			t.Fatalf("round %d: writer stopped before committing %d rounds: %v %s", round, commits, err, stderr.String())
		}
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		n := checkCrashConsistency(t, path, round)
		if n <= before {
			t.Fatalf("round %d: the writer stored nothing before it was killed (%s)", round, stderr.String())
		}
		before = n
	}
}

func checkCrashConsistency(t *testing.T, path string, round int) (entriesStored int) {
	t.Helper()
	s := openTest(t, path)
	ctx := t.Context()
	entries, err := s.ListEntries(ctx, store.EntryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	size, err := s.AuditSize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := s.ReadAudit(ctx, 0, int(size)+1)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(recs)) != size {
		t.Fatalf("round %d: head says %d events, %d stored", round, size, len(recs))
	}
	evented := map[string]bool{}
	for i, r := range recs {
		if r.Index != int64(i) {
			t.Fatalf("round %d: event %d stored at index %d", round, i, r.Index)
		}
		var ev struct{ Type, Subject string }
		if err := json.Unmarshal(r.Event, &ev); err != nil {
			t.Fatalf("round %d: event %d: %v", round, i, err)
		}
		if ev.Type == audit.EventEntryCreate {
			evented[ev.Subject] = true
		}
	}
	stored := map[string]bool{}
	for _, e := range entries {
		stored[e.ID] = true
		if !evented[e.ID] {
			t.Errorf("round %d: entry %s is stored without its audit event", round, e.ID)
		}
	}
	for id := range evented {
		if !stored[id] {
			t.Errorf("round %d: audit event for entry %s, which is not stored", round, id)
		}
	}
	t.Logf("round %d: %d entries and %d events, consistent", round, len(entries), size)
	s.Close()
	return len(entries)
}
