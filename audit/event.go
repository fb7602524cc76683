package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"
)

// MaxEventSize bounds one encoded event. Events describe a change; bulky
// material (certificates, CSRs) belongs in the store, referenced by subject.
const MaxEventSize = 256 << 10

// Event is one state change or issuance. Its position in the log is its
// index, so the index is not part of the leaf.
type Event struct {
	// Time is when the change was made; encoded as RFC 3339 with
	// nanoseconds in UTC.
	Time time.Time
	// Type names what happened, such as EventEntryCreate or EventSVIDX509Mint.
	Type string
	// Actor is who did it: "uid:N" for a local administrator on the unix
	// socket, or a SPIFFE ID.
	Actor string
	// Subject is what it was done to (an entry ID, a SPIFFE ID, a key ID).
	Subject string
	// Details is any further JSON the event type defines; kept compact.
	Details json.RawMessage
}

// wireEvent fixes the field order of the encoding, which is part of the
// canonical form.
type wireEvent struct {
	Time    string          `json:"time"`
	Type    string          `json:"type"`
	Actor   string          `json:"actor,omitempty"`
	Subject string          `json:"subject,omitempty"`
	Details json.RawMessage `json:"details,omitempty"`
}

// Encode returns the canonical compact JSON of e: fields in a fixed order,
// empty optional fields left out, time in UTC with nanoseconds, details
// compacted. The result is what the store keeps and what the tree hashes.
func Encode(e Event) ([]byte, error) {
	if e.Type == "" {
		return nil, errors.New("audit: event has no type")
	}
	if e.Time.IsZero() {
		return nil, fmt.Errorf("audit: event %q has no time", e.Type)
	}
	// encoding/json would silently replace invalid UTF-8; refuse instead, so
	// the stored bytes say what the caller meant.
	for name, s := range map[string]string{"type": e.Type, "actor": e.Actor, "subject": e.Subject} {
		if !utf8.ValidString(s) {
			return nil, fmt.Errorf("audit: event %s is not valid UTF-8", name)
		}
	}
	w := wireEvent{
		Time:    e.Time.UTC().Format(time.RFC3339Nano),
		Type:    e.Type,
		Actor:   e.Actor,
		Subject: e.Subject,
	}
	if len(e.Details) > 0 {
		if !utf8.Valid(e.Details) {
			return nil, errors.New("audit: event details are not valid UTF-8")
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, e.Details); err != nil {
			return nil, fmt.Errorf("audit: event details are not valid JSON: %w", err)
		}
		w.Details = buf.Bytes()
	}
	// HTML escaping is off so that events read naturally in a SIEM; either
	// way the encoding is deterministic.
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(w); err != nil {
		return nil, fmt.Errorf("audit: encoding event: %w", err)
	}
	b := bytes.TrimSuffix(out.Bytes(), []byte("\n"))
	if len(b) > MaxEventSize {
		return nil, fmt.Errorf("audit: event %q is %d bytes, more than the %d allowed", e.Type, len(b), MaxEventSize)
	}
	return b, nil
}

// DecodeEvent parses one stored event strictly: it must be a single JSON
// object of valid UTF-8 with only the known fields, each at most once, a
// type, and a time in RFC 3339 UTC form; nothing may follow it.
func DecodeEvent(b []byte) (Event, error) {
	var e Event
	if len(b) > MaxEventSize {
		return e, fmt.Errorf("audit: event is %d bytes, more than the %d allowed", len(b), MaxEventSize)
	}
	if !utf8.Valid(b) {
		return e, errors.New("audit: event is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return e, fmt.Errorf("audit: event is not JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return e, errors.New("audit: event is not a JSON object")
	}
	seen := make(map[string]bool)
	var timeText string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return e, fmt.Errorf("audit: event is not valid JSON: %w", err)
		}
		key, ok := tok.(string)
		if !ok {
			return e, errors.New("audit: event is not valid JSON: object key is not a string")
		}
		if seen[key] {
			return e, fmt.Errorf("audit: event has field %q more than once", key)
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return e, fmt.Errorf("audit: event field %q: %w", key, err)
		}
		var dst *string
		switch key {
		case "time":
			dst = &timeText
		case "type":
			dst = &e.Type
		case "actor":
			dst = &e.Actor
		case "subject":
			dst = &e.Subject
		case "details":
			e.Details = append(json.RawMessage(nil), raw...)
			continue
		default:
			return e, fmt.Errorf("audit: event has unknown field %q", key)
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return e, fmt.Errorf("audit: event field %q must be a string", key)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return e, fmt.Errorf("audit: event is not valid JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return e, errors.New("audit: event has data after the JSON object")
	}
	if e.Type == "" {
		return e, errors.New("audit: event has no type")
	}
	if !seen["time"] {
		return e, fmt.Errorf("audit: event %q has no time", e.Type)
	}
	t, err := time.Parse(time.RFC3339Nano, timeText)
	if err != nil {
		return e, fmt.Errorf("audit: event %q has time %q, not RFC 3339: %w", e.Type, timeText, err)
	}
	if t.UTC().Format(time.RFC3339Nano) != timeText {
		return e, fmt.Errorf("audit: event %q has time %q, not in canonical UTC form %q", e.Type, timeText, t.UTC().Format(time.RFC3339Nano))
	}
	e.Time = t.UTC()
	return e, nil
}

// Make encodes an event whose details are v marshalled as JSON (nil for
// none). It is the one-call form writers use for each change they make.
func Make(at time.Time, typ, actor, subject string, v any) ([]byte, error) {
	e := Event{Time: at, Type: typ, Actor: actor, Subject: subject}
	if v != nil {
		d, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("audit: event %q details: %w", typ, err)
		}
		e.Details = d
	}
	return Encode(e)
}
