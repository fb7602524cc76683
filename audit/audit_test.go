package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const testOrigin = "writ.test/audit"

type testKeys struct {
	signer   note.Signer
	verifier note.Verifiers
}

func newTestKeys(t testing.TB, seed byte) testKeys {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	s, err := NewSigner("writ-audit", priv)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier("writ-audit", priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return testKeys{s, note.VerifierList(v)}
}

func testEvent(t testing.TB, i int) []byte {
	t.Helper()
	b, err := Encode(Event{
		Time:    time.Date(2026, 1, 2, 3, 4, 5, i, time.UTC),
		Type:    EventSVIDX509Mint,
		Actor:   "spiffe://example.org/agent/a1",
		Subject: fmt.Sprintf("spiffe://example.org/workload/%d", i),
		Details: json.RawMessage(fmt.Sprintf(`{"serial": %d}`, i)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// buildLog makes n events and a signed checkpoint every `every` events and
// at the end, as a server would.
func buildLog(t testing.TB, k testKeys, leaves [][]byte, every int) []SignedCheckpoint {
	t.Helper()
	var h Hashes
	var cps []SignedCheckpoint
	for i, l := range leaves {
		if _, err := h.Append(l); err != nil {
			t.Fatal(err)
		}
		if (i+1)%every == 0 || i == len(leaves)-1 {
			root, err := h.Root()
			if err != nil {
				t.Fatal(err)
			}
			msg, err := SignCheckpoint(Checkpoint{Origin: testOrigin, Size: h.Size(), Root: root}, k.signer)
			if err != nil {
				t.Fatal(err)
			}
			cps = append(cps, SignedCheckpoint{Note: msg, Source: fmt.Sprintf("checkpoint@%d", h.Size())})
		}
	}
	return cps
}

func makeLeaves(t testing.TB, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = testEvent(t, i)
	}
	return out
}

func clone(l [][]byte) [][]byte {
	out := make([][]byte, len(l))
	for i, b := range l {
		out[i] = bytes.Clone(b)
	}
	return out
}

func TestEventRoundTrip(t *testing.T) {
	e := Event{
		Time:    time.Date(2026, 3, 4, 5, 6, 7, 89, time.FixedZone("x", 3600)),
		Type:    EventEntryCreate,
		Actor:   "uid:0",
		Subject: "spiffe://example.org/db",
		Details: json.RawMessage(`{ "selectors" : ["unix:uid:1000", "<&>"] }`),
	}
	b, err := Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"time":"2026-03-04T04:06:07.000000089Z","type":"entry.create","actor":"uid:0","subject":"spiffe://example.org/db","details":{"selectors":["unix:uid:1000","<&>"]}}`
	if string(b) != want {
		t.Fatalf("Encode:\n got %s\nwant %s", b, want)
	}
	got, err := DecodeEvent(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Time.Equal(e.Time) || got.Type != e.Type || got.Actor != e.Actor || got.Subject != e.Subject {
		t.Fatalf("DecodeEvent = %+v", got)
	}
	again, err := Encode(got)
	if err != nil || !bytes.Equal(again, b) {
		t.Fatalf("re-encode = %s, %v", again, err)
	}
}

func TestEncodeRefuses(t *testing.T) {
	now := time.Now()
	for name, e := range map[string]Event{
		"no type":      {Time: now},
		"no time":      {Type: "x"},
		"bad utf8":     {Time: now, Type: "x", Actor: "\xff"},
		"bad details":  {Time: now, Type: "x", Details: json.RawMessage(`{`)},
		"huge details": {Time: now, Type: "x", Details: json.RawMessage(`"` + strings.Repeat("a", MaxEventSize) + `"`)},
	} {
		if _, err := Encode(e); err == nil {
			t.Errorf("%s: Encode accepted %+v", name, e)
		}
	}
}

func TestDecodeEventRefuses(t *testing.T) {
	for in, want := range map[string]string{
		``:                                "not JSON",
		`[]`:                              "not a JSON object",
		`{"type":"x"}`:                    "no time",
		`{"time":"2026-01-01T00:00:00Z"}`: "no type",
		`{"time":"2026-01-01T00:00:00Z","type":"x","extra":1}`:        "unknown field",
		`{"time":"2026-01-01T00:00:00Z","type":"x"} {}`:               "after the JSON object",
		`{"time":"2026-01-01T00:00:00Z","type":"x","type":"y"}`:       "more than once",
		`{"time":"2026-01-01T00:00:00+01:00","type":"x"}`:             "canonical UTC",
		`{"time":"yesterday","type":"x"}`:                             "not RFC 3339",
		`{"time":"2026-01-01T00:00:00Z","type":3}`:                    "must be a string",
		"{\"time\":\"2026-01-01T00:00:00Z\",\"type\":\"\xff\"}":       "UTF-8",
		`{"time":"2026-01-01T00:00:00Z","type":"x","details":{"a":}}`: "details",
	} {
		_, err := DecodeEvent([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("DecodeEvent(%q) = %v, want error containing %q", in, err, want)
		}
	}
}

func TestHashesMatchTlog(t *testing.T) {
	leaves := makeLeaves(t, 100)
	var h Hashes
	var ref []tlog.Hash
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = ref[x]
		}
		return out, nil
	})
	for i, l := range leaves {
		add, err := AppendHashes(int64(i), l, r)
		if err != nil {
			t.Fatal(err)
		}
		ref = append(ref, add...)
		if _, err := h.Append(l); err != nil {
			t.Fatal(err)
		}
		if len(h.Stored()) != len(ref) {
			t.Fatalf("after %d leaves: %d stored hashes, tlog has %d", i+1, len(h.Stored()), len(ref))
		}
		for j := range ref {
			if h.Stored()[j] != ref[j] {
				t.Fatalf("after %d leaves: stored hash %d differs from tlog", i+1, j)
			}
		}
		loaded, err := LoadHashes(ref)
		if err != nil || loaded.Size() != int64(i+1) {
			t.Fatalf("LoadHashes after %d leaves: size %v, %v", i+1, loaded, err)
		}
	}
	if _, err := LoadHashes(ref[:len(ref)-1]); err == nil {
		t.Error("LoadHashes accepted a cut hash table")
	}
}

func TestCheckpoint(t *testing.T) {
	k := newTestKeys(t, 1)
	c := Checkpoint{Origin: testOrigin, Size: 42, Root: tlog.RecordHash([]byte("x"))}
	msg, err := SignCheckpoint(c, k.signer)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseCheckpoint(msg, k.verifier)
	if err != nil || got != c {
		t.Fatalf("ParseCheckpoint = %+v, %v", got, err)
	}
	other := newTestKeys(t, 2)
	if _, err := ParseCheckpoint(msg, other.verifier); err == nil || !strings.Contains(err.Error(), "does not verify") && !strings.Contains(err.Error(), "not trusted here") {
		t.Errorf("other key: %v", err)
	}
	bad := bytes.Replace(msg, []byte("\n42\n"), []byte("\n43\n"), 1)
	if _, err := ParseCheckpoint(bad, k.verifier); err == nil || !strings.Contains(err.Error(), "altered or forged") {
		t.Errorf("altered size: %v", err)
	}
	for name, body := range map[string]string{
		"extension":    testOrigin + "\n1\n" + c.Root.String() + "\nextra\n",
		"leading zero": testOrigin + "\n01\n" + c.Root.String() + "\n",
		"short root":   testOrigin + "\n1\nAAAA\n",
		"no origin":    "\n1\n" + c.Root.String() + "\n",
	} {
		signed, err := note.Sign(&note.Note{Text: body}, k.signer)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseCheckpoint(signed, k.verifier); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewSigner("writ audit", ed25519.NewKeyFromSeed(make([]byte, 32))); err == nil {
		t.Error("NewSigner accepted a name with a space")
	}
}

func mustVerify(t *testing.T, leaves [][]byte, cps []SignedCheckpoint, v note.Verifiers, opts ...Option) Report {
	t.Helper()
	rep, err := Verify(context.Background(), Leaves(leaves), cps, v, opts...)
	if err != nil {
		t.Fatalf("Verify of a good log: %v", err)
	}
	return rep
}

func mustFail(t *testing.T, leaves [][]byte, cps []SignedCheckpoint, v note.Verifiers, opts ...Option) *Report {
	t.Helper()
	_, err := Verify(context.Background(), Leaves(leaves), cps, v, opts...)
	var ve *VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("Verify = %v, want a *VerifyError", err)
	}
	t.Logf("%v", err)
	return ve.Report
}

func TestVerifyGoodLog(t *testing.T) {
	k := newTestKeys(t, 1)
	leaves := makeLeaves(t, 100)
	cps := buildLog(t, k, leaves, 10)
	rep := mustVerify(t, leaves, cps, k.verifier)
	if rep.Leaves != 100 || rep.Verified != 100 || !rep.OK() || rep.Origin != testOrigin {
		t.Fatalf("report %+v", rep)
	}
	mustVerify(t, nil, nil, k.verifier)
}

// TestVerifyUncoveredTailFails: an event no trusted checkpoint covers could
// have been changed at will, so the log is not OK, and the report says which
// events are unprotected.
func TestVerifyUncoveredTailFails(t *testing.T) {
	k := newTestKeys(t, 1)
	leaves := makeLeaves(t, 100)
	cps := buildLog(t, k, leaves, 10)
	more := append(clone(leaves), testEvent(t, 100), testEvent(t, 101))
	rep := mustFail(t, more, cps, k.verifier)
	if rep.Verified != 100 || !rep.Uncovered() || rep.FirstBad >= 0 {
		t.Fatalf("report %+v", rep)
	}
	if s := rep.Summary(); !strings.Contains(s, "events 100 to 101 are not covered") {
		t.Fatalf("summary %q does not name the uncovered events", s)
	}
	// Signed by a key the verifier was not given: not covered either.
	other := newTestKeys(t, 2)
	rep = mustFail(t, leaves, cps, other.verifier)
	if rep.Verified != 0 || !strings.Contains(rep.Summary(), "none of the 100 events is covered") {
		t.Fatalf("with a foreign key: %+v: %s", rep, rep.Summary())
	}
}

func TestAssemblyGaps(t *testing.T) {
	var a Assembly
	a.Head(6)
	for _, i := range []int64{0, 1, 3, 4} {
		a.Add(i, []byte{byte(i)})
	}
	gaps := a.Gaps()
	if len(gaps) != 2 || !strings.Contains(gaps[0], "no event 2") || !strings.Contains(gaps[1], "head counts 6 events but the last stored one is 4") {
		t.Fatalf("gaps %q", gaps)
	}
	k := newTestKeys(t, 1)
	_, err := Verify(context.Background(), &a, nil, k.verifier)
	var ve *VerifyError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "no event 2") {
		t.Fatalf("Verify of a gapped log: %v", err)
	}
}

// tamperCase damages a copy of the log; want is the first bad index (or -1)
// and kind what the earlier copy shows.
type tamperCase struct {
	name      string
	tamper    func([][]byte) [][]byte
	want      int64
	kind      string
	truncated bool
}

var tamperCases = []tamperCase{
	{"one byte", func(l [][]byte) [][]byte { l[37][20] ^= 1; return l }, 37, "changed", false},
	{"delete", func(l [][]byte) [][]byte { return append(l[:37], l[38:]...) }, 37, "removed", true},
	{"swap", func(l [][]byte) [][]byte { l[37], l[38] = l[38], l[37]; return l }, 37, "reordered", false},
	{"insert", func(l [][]byte) [][]byte { return append(l[:37], append([][]byte{[]byte("{}")}, l[37:]...)...) }, 37, "inserted", false},
	{"truncate tail", func(l [][]byte) [][]byte { return l[:95] }, -1, "", true},
	{"delete first", func(l [][]byte) [][]byte { return l[1:] }, 0, "removed", true},
	{"change last", func(l [][]byte) [][]byte { l[99] = []byte("{}"); return l }, 99, "changed", false},
}

func TestVerifyDetectsTampering(t *testing.T) {
	k := newTestKeys(t, 1)
	orig := makeLeaves(t, 100)
	cps := buildLog(t, k, orig, 10)
	var stored Hashes
	for _, l := range orig {
		stored.Append(l)
	}
	for _, tc := range tamperCases {
		t.Run(tc.name, func(t *testing.T) {
			bad := tc.tamper(clone(orig))

			// Checkpoints alone: the range between checkpoints.
			rep := mustFail(t, bad, cps, k.verifier)
			if rep.Truncated != tc.truncated {
				t.Errorf("Truncated = %v, want %v", rep.Truncated, tc.truncated)
			}
			if tc.want >= 0 && (rep.FirstBad > tc.want || rep.FirstBadEnd <= tc.want) {
				t.Errorf("range [%d,%d) does not hold %d", rep.FirstBad, rep.FirstBadEnd, tc.want)
			}
			if tc.want < 0 && rep.FirstBad >= 0 {
				t.Errorf("FirstBad = %d for a cut tail", rep.FirstBad)
			}

			// With the store's hashes: exact.
			rep = mustFail(t, bad, cps, k.verifier, WithStoredHashes(&stored, stored.Size()))
			if tc.want >= 0 && (rep.FirstBad != tc.want || rep.FirstBadEnd != tc.want+1) {
				t.Errorf("with stored hashes: [%d,%d), want %d", rep.FirstBad, rep.FirstBadEnd, tc.want)
			}

			// With an earlier export: exact, and what happened.
			rep = mustFail(t, bad, cps, k.verifier, WithReference(Leaves(orig)))
			if rep.FirstBad != tc.want || rep.Kind != tc.kind {
				t.Errorf("with reference: %d %q, want %d %q", rep.FirstBad, rep.Kind, tc.want, tc.kind)
			}
			if tc.want >= 0 && !strings.Contains(rep.Summary(), fmt.Sprint(tc.want)) {
				t.Errorf("summary does not name %d: %s", tc.want, rep.Summary())
			}
		})
	}
}

func TestVerifyDetectsRebuiltLog(t *testing.T) {
	k := newTestKeys(t, 1)
	orig := makeLeaves(t, 100)
	oldCPs := buildLog(t, k, orig, 10)[:5] // what an outside party exported at size 50

	for _, tc := range tamperCases {
		t.Run(tc.name, func(t *testing.T) {
			bad := tc.tamper(clone(orig))
			newCPs := buildLog(t, k, bad, 10) // re-signed with the same key
			var h Hashes
			for _, l := range bad {
				h.Append(l)
			}
			// Alone, the rebuilt log is self-consistent.
			mustVerify(t, bad, newCPs, k.verifier, WithStoredHashes(&h, h.Size()))
			if tc.want < 0 || tc.want >= 50 {
				return // the damage is past what the old checkpoints cover
			}
			rep := mustFail(t, bad, append(append([]SignedCheckpoint{}, oldCPs...), newCPs...), k.verifier)
			if rep.FirstBad > tc.want || rep.FirstBadEnd <= tc.want {
				t.Errorf("range [%d,%d) does not hold %d", rep.FirstBad, rep.FirstBadEnd, tc.want)
			}
			if len(rep.Forks) == 0 {
				t.Error("no fork reported between old and new checkpoints")
			}
		})
	}
}

func TestVerifyBadCheckpoints(t *testing.T) {
	k := newTestKeys(t, 1)
	leaves := makeLeaves(t, 20)
	cps := buildLog(t, k, leaves, 10)
	other := newTestKeys(t, 2)
	foreign := buildLog(t, other, leaves, 10)
	rep := mustFail(t, leaves, append(cps, foreign[0]), k.verifier)
	if rep.Checkpoints[2].Err == nil {
		t.Error("checkpoint by another key accepted")
	}
	var h Hashes
	for _, l := range leaves {
		h.Append(l)
	}
	root, _ := h.RootAt(10)
	msg, _ := SignCheckpoint(Checkpoint{Origin: "other/log", Size: 10, Root: root}, k.signer)
	rep = mustFail(t, leaves, append(cps, SignedCheckpoint{Note: msg}), k.verifier)
	if !strings.Contains(rep.Summary(), "other/log") {
		t.Errorf("summary: %s", rep.Summary())
	}
}

func TestVerifyCancelled(t *testing.T) {
	k := newTestKeys(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Verify(ctx, Leaves(makeLeaves(t, 10)), nil, k.verifier); !errors.Is(err, context.Canceled) {
		t.Fatalf("Verify = %v", err)
	}
}

func TestExportRoundTrip(t *testing.T) {
	k := newTestKeys(t, 1)
	leaves := makeLeaves(t, 25)
	leaves[3] = []byte("not json \xff\x00 at all") // a damaged leaf still exports exactly
	leaves[4] = []byte("{\"u\":\"\u2028<>&\\u0000\"}")
	cps := buildLog(t, k, leaves, 10)
	var buf bytes.Buffer
	if err := WriteExport(&buf, Leaves(leaves), cps); err != nil {
		t.Fatal(err)
	}
	e, err := ReadExport(bytes.NewReader(buf.Bytes()), "x.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if e.Len() != 25 || len(e.Checkpoints) != 3 {
		t.Fatalf("read %d leaves, %d checkpoints", e.Len(), len(e.Checkpoints))
	}
	for i := range leaves {
		if !bytes.Equal(e.Leaves[i], leaves[i]) {
			t.Fatalf("leaf %d: %q, want %q", i, e.Leaves[i], leaves[i])
		}
	}
	if _, err := Verify(context.Background(), e, e.Checkpoints, k.verifier); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(buf.String(), "\n")
	if !strings.HasPrefix(lines[10], `{"checkpoint":`) {
		t.Errorf("line 11 is %s, want the checkpoint of size 10", lines[10])
	}
}

func TestReadExportRefuses(t *testing.T) {
	for in, want := range map[string]string{
		`{"index":0,"leaf":"{}","extra":1}`:                            "unknown field",
		`{"leaf":"{}","index":0}`:                                      "canonical",
		`{"index":0, "leaf":"{}"}`:                                     "canonical",
		`{"index":0,"leaf":"{}"} x`:                                    "after the JSON object",
		"{\"index\":0,\"leaf\":\"{}\"}\n{\"index\":2,\"leaf\":\"{}\"}": "missing, repeated or out of order",
		`{"index":0}`: "either",
		`{"index":0,"leaf":"a","leaf_base64":"/w=="}`: "either",
		`{"index":0,"leaf_base64":"YQ=="}`:            "valid UTF-8",
		`{"index":-1,"leaf":"a"}`:                     "negative",
		`{"index":0,"leaf":"\ud800"}`:                 "canonical",
		`{}`:                                          "either",
		``:                                            "",
	} {
		_, err := ReadExport(strings.NewReader(in), "f")
		if want == "" {
			if err != nil {
				t.Errorf("ReadExport(%q) = %v", in, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ReadExport(%q) = %v, want error containing %q", in, err, want)
		}
	}
}

func TestProveExtendsAndStoredLeaves(t *testing.T) {
	leaves := makeLeaves(t, 40)
	var h Hashes
	for _, l := range leaves {
		h.Append(l)
	}
	root20, _ := h.RootAt(20)
	head := Checkpoint{Origin: testOrigin, Size: 20, Root: root20}
	if err := ProveExtends(40, head, &h); err != nil {
		t.Fatalf("an intact log: %v", err)
	}
	if err := ProveExtends(19, head, &h); err == nil || !strings.Contains(err.Error(), "fewer than the 20") {
		t.Fatalf("a short log: %v", err)
	}
	bad := head
	bad.Root[0] ^= 1
	if err := ProveExtends(40, bad, &h); err == nil || !strings.Contains(err.Error(), "at size 20") {
		t.Fatalf("another root: %v", err)
	}
	root40, _ := h.RootAt(40)
	if err := CheckExtends(40, root40, head, &h); err != nil {
		t.Fatalf("CheckExtends of an intact log: %v", err)
	}
	if err := CheckExtends(40, root40, bad, &h); !errors.Is(err, ErrNotExtended) {
		t.Fatalf("CheckExtends of a head with another root: %v, want ErrNotExtended", err)
	}
	if err := CheckExtends(40, root40, head, failingReader{}); err == nil || errors.Is(err, ErrNotExtended) {
		t.Fatalf("CheckExtends with unreadable hashes: %v, want a read error that is not evidence of tampering", err)
	}
	other := root40
	other[0] ^= 1
	if err := CheckExtends(40, other, head, &h); err == nil {
		t.Fatal("CheckExtends accepted a new root that is not the tree's")
	}
	if err := CheckStoredLeaves(20, leaves[20:], &h); err != nil {
		t.Fatalf("the stored tail: %v", err)
	}
	changed := clone(leaves[20:])
	changed[5][3] ^= 1
	if err := CheckStoredLeaves(20, changed, &h); err == nil || !strings.Contains(err.Error(), "event 25") {
		t.Fatalf("a changed tail event: %v", err)
	}
}

type failingReader struct{}

func (failingReader) ReadHashes([]int64) ([]tlog.Hash, error) {
	return nil, errors.New("database is busy")
}
