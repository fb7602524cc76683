package audit

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"unicode/utf8"
)

// The export is JSON lines for a SIEM and for outside parties who keep
// checkpoints:
//
//	{"index":0,"leaf":"{\"time\":...}"}
//	{"checkpoint":"writ.example/audit\n1\n...\n\n— writ-audit ...\n"}
//
// A leaf is carried as a JSON string, which round-trips every valid UTF-8
// byte sequence exactly and keeps the event readable; a leaf that is not
// valid UTF-8 (only possible if the store was tampered with) is carried as
// "leaf_base64" instead, so an export of a damaged log is still faithful.
// A checkpoint line follows the leaf that completes its size.
//
// Lines are written in one canonical form, and ReadExport accepts only that
// form: an export is evidence, and an edited line should be noticed rather
// than quietly understood.

// MaxExportLine bounds one line of an export: the largest event, escaped.
const MaxExportLine = 8*MaxEventSize + 1024

type exportLine struct {
	Index      *int64  `json:"index,omitempty"`
	Leaf       *string `json:"leaf,omitempty"`
	LeafBase64 *string `json:"leaf_base64,omitempty"`
	Checkpoint *string `json:"checkpoint,omitempty"`
}

// ExportWriter writes an export line by line, so an export of a large log
// streams from the store.
type ExportWriter struct {
	w    *bufio.Writer
	next int64
	any  bool
}

// NewExportWriter starts an export on w; call Flush at the end.
func NewExportWriter(w io.Writer) *ExportWriter {
	return &ExportWriter{w: bufio.NewWriter(w)}
}

// WriteLeaf writes the leaf at index. Indexes must be consecutive.
func (x *ExportWriter) WriteLeaf(index int64, leaf []byte) error {
	if x.any && index != x.next {
		return fmt.Errorf("audit: export leaf %d written after %d; leaves must be consecutive", index, x.next-1)
	}
	if index < 0 {
		return fmt.Errorf("audit: export leaf index %d is negative", index)
	}
	l := exportLine{Index: &index}
	s := string(leaf)
	if utf8.Valid(leaf) {
		l.Leaf = &s
	} else {
		b := base64.StdEncoding.EncodeToString(leaf)
		l.LeafBase64 = &b
	}
	if err := x.line(l); err != nil {
		return err
	}
	x.any, x.next = true, index+1
	return nil
}

// WriteCheckpoint writes a signed checkpoint note.
func (x *ExportWriter) WriteCheckpoint(signed []byte) error {
	if !utf8.Valid(signed) {
		return errors.New("audit: checkpoint note is not valid UTF-8")
	}
	s := string(signed)
	return x.line(exportLine{Checkpoint: &s})
}

func (x *ExportWriter) line(l exportLine) error {
	b, err := json.Marshal(l)
	if err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	b = append(b, '\n')
	if len(b) > MaxExportLine {
		return fmt.Errorf("audit: export line of %d bytes is longer than the %d allowed", len(b), MaxExportLine)
	}
	_, err = x.w.Write(b)
	return err
}

// Flush writes out buffered lines.
func (x *ExportWriter) Flush() error { return x.w.Flush() }

// WriteExport writes all of leaves with each checkpoint after the leaf that
// completes its size; checkpoints beyond the last leaf come at the end.
// Checkpoints are ordered by the size in their text; their signatures are
// not checked here.
func WriteExport(w io.Writer, leaves LeafSource, checkpoints []SignedCheckpoint) error {
	type cp struct {
		size int64
		note []byte
	}
	cps := make([]cp, 0, len(checkpoints))
	for i, sc := range checkpoints {
		c, err := peekCheckpoint(sc.Note)
		if err != nil {
			return fmt.Errorf("audit: export checkpoint #%d: %w", i+1, err)
		}
		cps = append(cps, cp{c.Size, sc.Note})
	}
	slices.SortStableFunc(cps, func(a, b cp) int { return cmpInt(a.size, b.size) })
	x := NewExportWriter(w)
	n := leaves.Len()
	for i := int64(0); ; i++ {
		for len(cps) > 0 && (cps[0].size <= i || i == n) {
			if err := x.WriteCheckpoint(cps[0].note); err != nil {
				return err
			}
			cps = cps[1:]
		}
		if i == n {
			break
		}
		leaf, err := leaves.Leaf(i)
		if err != nil {
			return fmt.Errorf("audit: export: reading event %d: %w", i, err)
		}
		if err := x.WriteLeaf(i, leaf); err != nil {
			return err
		}
	}
	return x.Flush()
}

// Export is a parsed export. It is a LeafSource when it starts at index 0.
type Export struct {
	Start       int64 // index of the first leaf
	Leaves      [][]byte
	Checkpoints []SignedCheckpoint
}

// Len is the log size the export shows: Start plus its leaves.
func (e *Export) Len() int64 { return e.Start + int64(len(e.Leaves)) }

// Leaf returns leaf i.
func (e *Export) Leaf(i int64) ([]byte, error) {
	if i < e.Start && i >= 0 {
		return nil, fmt.Errorf("audit: export starts at event %d; verifying needs the whole log from event 0", e.Start)
	}
	if i < 0 || i >= e.Len() {
		return nil, fmt.Errorf("audit: no event %d in the export (it ends at %d)", i, e.Len()-1)
	}
	return e.Leaves[i-e.Start], nil
}

// ReadExport parses an export strictly. name is used in messages (a file
// name); checkpoint sources are "name line N". Signatures are not checked
// here; Verify does that.
func ReadExport(r io.Reader, name string) (*Export, error) {
	if name == "" {
		name = "export"
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxExportLine)
	e := &Export{}
	lineNo := 0
	started := false
	for sc.Scan() {
		lineNo++
		raw := sc.Bytes()
		where := fmt.Sprintf("%s line %d", name, lineNo)
		if !utf8.Valid(raw) {
			return nil, fmt.Errorf("audit: %s is not valid UTF-8", where)
		}
		var l exportLine
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			return nil, fmt.Errorf("audit: %s: %v", where, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("audit: %s has data after the JSON object", where)
		}
		// The canonical form rules out duplicate or reordered fields,
		// explicit nulls, spacing and escapes other than encoding/json's.
		canon, err := json.Marshal(l)
		if err != nil || !bytes.Equal(canon, raw) {
			return nil, fmt.Errorf("audit: %s is not in the canonical export form (was the file edited?)", where)
		}
		switch {
		case l.Checkpoint != nil && l.Index == nil && l.Leaf == nil && l.LeafBase64 == nil:
			if len(*l.Checkpoint) > MaxCheckpointSize {
				return nil, fmt.Errorf("audit: %s: checkpoint is longer than %d bytes", where, MaxCheckpointSize)
			}
			e.Checkpoints = append(e.Checkpoints, SignedCheckpoint{Note: []byte(*l.Checkpoint), Source: where})
		case l.Checkpoint == nil && l.Index != nil && (l.Leaf == nil) != (l.LeafBase64 == nil):
			idx := *l.Index
			if idx < 0 {
				return nil, fmt.Errorf("audit: %s: index %d is negative", where, idx)
			}
			if !started {
				e.Start, started = idx, true
			} else if idx != e.Len() {
				return nil, fmt.Errorf("audit: %s: event %d where %d was expected; events are missing, repeated or out of order", where, idx, e.Len())
			}
			var leaf []byte
			if l.Leaf != nil {
				leaf = []byte(*l.Leaf)
			} else {
				leaf, err = base64.StdEncoding.Strict().DecodeString(*l.LeafBase64)
				if err != nil {
					return nil, fmt.Errorf("audit: %s: leaf_base64 is not base64: %v", where, err)
				}
				if utf8.Valid(leaf) {
					return nil, fmt.Errorf("audit: %s: leaf_base64 holds valid UTF-8, which the export carries as \"leaf\"", where)
				}
			}
			if len(leaf) > MaxEventSize {
				return nil, fmt.Errorf("audit: %s: event is %d bytes, more than the %d allowed", where, len(leaf), MaxEventSize)
			}
			e.Leaves = append(e.Leaves, leaf)
		default:
			return nil, fmt.Errorf("audit: %s must be either {\"index\":N,\"leaf\":...} or {\"checkpoint\":...}", where)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("audit: %s line %d is longer than %d bytes", name, lineNo+1, MaxExportLine)
		}
		return nil, fmt.Errorf("audit: reading %s: %w", name, err)
	}
	return e, nil
}
