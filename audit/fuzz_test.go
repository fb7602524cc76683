package audit

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

func FuzzDecodeEvent(f *testing.F) {
	f.Add([]byte(`{"time":"2026-01-02T03:04:05.000000006Z","type":"entry.create","actor":"uid:0","subject":"spiffe://example.org/x","details":{"a":[1,2]}}`))
	f.Add([]byte(`{"time":"2026-01-02T03:04:05Z","type":"x","type":"y"}`))
	f.Add([]byte(`{"time":"2026-01-02T03:04:05+01:00","type":"x"}`))
	f.Add([]byte(`{"time":"2026-01-02T03:04:05Z","type":"x"} []`))
	f.Add([]byte("{\"type\":\"\xff\"}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEvent(b)
		if err != nil {
			return
		}
		if e.Type == "" || e.Time.IsZero() {
			t.Fatalf("accepted an event without type or time: %q", b)
		}
		enc, err := Encode(e)
		if err != nil {
			// Only oversized re-encodings may fail (compaction cannot grow).
			if len(b) <= MaxEventSize && !strings.Contains(err.Error(), "allowed") {
				t.Fatalf("Encode of decoded %q: %v", b, err)
			}
			return
		}
		e2, err := DecodeEvent(enc)
		if err != nil {
			t.Fatalf("canonical form %q of %q does not decode: %v", enc, b, err)
		}
		enc2, err := Encode(e2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable: %q then %q (%v)", enc, enc2, err)
		}
	})
}

func FuzzParseCheckpoint(f *testing.F) {
	k := newTestKeys(f, 1)
	good, err := SignCheckpoint(Checkpoint{Origin: testOrigin, Size: 7, Root: tlog.RecordHash([]byte("x"))}, k.signer)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(bytes.Replace(good, []byte("\n7\n"), []byte("\n8\n"), 1))
	f.Add([]byte("writ.test/audit\n7\nAAAA\n\n— writ-audit AAAA\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCheckpoint(b, k.verifier)
		if err != nil {
			return
		}
		// Anything accepted is a checkpoint that signs back to a note
		// this parser accepts with the same content.
		again, err := SignCheckpoint(c, k.signer)
		if err != nil {
			t.Fatalf("accepted %q but cannot re-sign it: %v", b, err)
		}
		c2, err := ParseCheckpoint(again, k.verifier)
		if err != nil || c2 != c {
			t.Fatalf("round trip of %+v: %+v, %v", c, c2, err)
		}
		if _, err := peekCheckpoint(b); err != nil {
			t.Fatalf("verified note %q does not peek: %v", b, err)
		}
	})
}

func FuzzReadExport(f *testing.F) {
	k := newTestKeys(f, 1)
	leaves := makeLeaves(f, 3)
	leaves = append(leaves, []byte("\xff\xfe"))
	cps := buildLog(f, k, leaves, 2)
	var buf bytes.Buffer
	if err := WriteExport(&buf, Leaves(leaves), cps); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte("{\"index\":5,\"leaf\":\"{}\"}\n{\"index\":6,\"leaf_base64\":\"/w==\"}\n"))
	f.Add([]byte(`{"checkpoint":"x"}`))
	f.Add([]byte(`{"index":0,"leaf":"\u2028"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ReadExport(bytes.NewReader(b), "fuzz")
		if err != nil {
			return
		}
		// Whatever is accepted writes back to an export that reads the same.
		var out bytes.Buffer
		x := NewExportWriter(&out)
		for i, l := range e.Leaves {
			if err := x.WriteLeaf(e.Start+int64(i), l); err != nil {
				t.Fatalf("rewrite leaf %d: %v", i, err)
			}
		}
		for _, c := range e.Checkpoints {
			if err := x.WriteCheckpoint(c.Note); err != nil {
				t.Fatalf("rewrite checkpoint: %v", err)
			}
		}
		if err := x.Flush(); err != nil {
			t.Fatal(err)
		}
		e2, err := ReadExport(bytes.NewReader(out.Bytes()), "again")
		if err != nil {
			t.Fatalf("rewritten export does not read: %v\n%s", err, out.Bytes())
		}
		if e2.Start != e.Start || len(e2.Leaves) != len(e.Leaves) || len(e2.Checkpoints) != len(e.Checkpoints) {
			t.Fatalf("rewritten export differs")
		}
		for i := range e.Leaves {
			if !bytes.Equal(e.Leaves[i], e2.Leaves[i]) {
				t.Fatalf("leaf %d: %q then %q", i, e.Leaves[i], e2.Leaves[i])
			}
		}
	})
}
