package sqlstore

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"writ.dev/writ/store"
)

// Row is an entry as both engines store it: times as unix seconds, TTLs as
// whole seconds, DNS names as a JSON array, selectors sorted and unique.
type Row struct {
	ID          string
	SPIFFEID    string
	ParentID    string
	X509TTL     int64
	JWTTTL      int64
	Hint        string
	ExpiresAt   int64 // 0 = never
	Revision    int64
	CreatedAt   int64
	UpdatedAt   int64
	DNSNames    string
	Fingerprint string
	Selectors   []store.Selector
	// ParentSelectors is a JSON array of {"type", "value"}, "[]" for none.
	ParentSelectors string
}

// parentSelector is how a parent selector is written in the JSON column.
type parentSelector struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// entryColumns is the column order of Row.dest; Row.Args adds the fingerprint.
var entryColumns = []string{"id", "spiffe_id", "parent_id", "x509_ttl_seconds", "jwt_ttl_seconds", "hint", "expires_at", "revision", "created_at", "updated_at", "dns_names", "parent_selectors"}

func (r *Row) dest() []any {
	return []any{&r.ID, &r.SPIFFEID, &r.ParentID, &r.X509TTL, &r.JWTTTL, &r.Hint, &r.ExpiresAt, &r.Revision, &r.CreatedAt, &r.UpdatedAt, &r.DNSNames, &r.ParentSelectors}
}

// Args are the parameters of InsertEntrySQL.
func (r *Row) Args() []any {
	return []any{r.ID, r.SPIFFEID, r.ParentID, r.X509TTL, r.JWTTTL, r.Hint, r.ExpiresAt, r.Revision, r.CreatedAt, r.UpdatedAt, r.DNSNames, r.Fingerprint, r.ParentSelectors}
}

// noParentSelectors is the column's value for an entry without any.
const noParentSelectors = "[]"

func encodeParentSelectors(sels []store.Selector) string {
	if len(sels) == 0 {
		return noParentSelectors
	}
	out := make([]parentSelector, len(sels))
	for i, s := range sels {
		out[i] = parentSelector{Type: s.Type, Value: s.Value}
	}
	// Marshalling strings cannot fail.
	data, _ := json.Marshal(out)
	return string(data)
}

func decodeParentSelectors(id, col string) ([]store.Selector, error) {
	if col == noParentSelectors || col == "" {
		return nil, nil
	}
	var in []parentSelector
	if err := json.Unmarshal([]byte(col), &in); err != nil {
		return nil, fmt.Errorf("entry %q: parent_selectors: %w", id, err)
	}
	out := make([]store.Selector, len(in))
	for i, s := range in {
		out[i] = store.Selector{Type: s.Type, Value: s.Value}
	}
	return out, nil
}

// newRow converts an entry for storage. The ID is taken as given.
func newRow(e store.Entry) Row {
	// Marshalling a []string cannot fail.
	dns, _ := json.Marshal(nonNil(e.DNSNames))
	r := Row{
		ID:        e.ID,
		SPIFFEID:  e.SPIFFEID,
		ParentID:  e.ParentID,
		X509TTL:   int64(e.X509TTL / time.Second),
		JWTTTL:    int64(e.JWTTTL / time.Second),
		Hint:      e.Hint,
		ExpiresAt: unixOrZero(e.ExpiresAt),
		DNSNames:  string(dns),
		Selectors: selectorSet(e.Selectors),
	}
	parents := selectorSet(e.ParentSelectors)
	r.ParentSelectors = encodeParentSelectors(parents)
	r.Fingerprint = fingerprint(r.SPIFFEID, r.ParentID, parents, r.Selectors)
	return r
}

// Entry converts a stored row back.
func (r *Row) Entry() (store.Entry, error) {
	var dns []string
	if err := json.Unmarshal([]byte(r.DNSNames), &dns); err != nil {
		return store.Entry{}, fmt.Errorf("entry %q: dns_names: %w", r.ID, err)
	}
	parents, err := decodeParentSelectors(r.ID, r.ParentSelectors)
	if err != nil {
		return store.Entry{}, err
	}
	e := store.Entry{
		ID:        r.ID,
		SPIFFEID:  r.SPIFFEID,
		ParentID:  r.ParentID,
		Selectors: r.Selectors,
		// A fresh decode, so entries never share the slice.
		ParentSelectors: parents,
		X509TTL:         time.Duration(r.X509TTL) * time.Second,
		JWTTTL:          time.Duration(r.JWTTTL) * time.Second,
		Hint:            r.Hint,
		Revision:        r.Revision,
		CreatedAt:       time.Unix(r.CreatedAt, 0).UTC(),
		UpdatedAt:       time.Unix(r.UpdatedAt, 0).UTC(),
	}
	if len(dns) > 0 {
		e.DNSNames = dns
	}
	if r.ExpiresAt != 0 {
		e.ExpiresAt = time.Unix(r.ExpiresAt, 0).UTC()
	}
	return e, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func unixOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

// selectorSet sorts and de-duplicates: an entry holds a set of selectors, so
// order and repeats must not make two equal rules look different.
func selectorSet(sels []store.Selector) []store.Selector {
	if len(sels) == 0 {
		return nil
	}
	out := slices.Clone(sels)
	slices.SortFunc(out, compareSelectors)
	return slices.Compact(out)
}

func compareSelectors(a, b store.Selector) int {
	return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.Value, b.Value))
}

// fingerprint identifies a rule by what makes it unique. Every field is
// length-prefixed so that no two different rules encode to the same bytes.
// Parent selectors come last behind a marker no selector type can hold,
// and only when there are some, so rules stored before parent selectors
// existed keep their fingerprints.
func fingerprint(spiffeID, parentID string, parents, sels []store.Selector) string {
	h := sha256.New()
	field := func(s string) {
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(s))))
		h.Write([]byte(s))
	}
	field(spiffeID)
	field(parentID)
	for _, s := range sels {
		field(s.Type)
		field(s.Value)
	}
	if len(parents) > 0 {
		field("\x00parent_selectors")
		for _, s := range parents {
			field(s.Type)
			field(s.Value)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// newID returns a random (version 4) UUID.
func newID() string { return store.NewID() }

const maxIDLen = 128

// validID keeps IDs safe to show in logs, paths and URLs unescaped.
func validID(id string) bool {
	if len(id) == 0 || len(id) > maxIDLen {
		return false
	}
	for _, c := range []byte(id) {
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}

// prepareBatch converts a batch for storage, assigning missing IDs and
// rejecting bad IDs and duplicates within the batch before the database is
// touched.
func prepareBatch(entries []store.Entry, now int64) ([]Row, error) {
	rows := make([]Row, len(entries))
	byID := make(map[string]int, len(entries))
	byFingerprint := make(map[string]int, len(entries))
	for i, e := range entries {
		if e.ID == "" {
			e.ID = newID()
		} else if !validID(e.ID) {
			return nil, fmt.Errorf("entries[%d]: id %q: an id is 1 to %d characters of A-Z a-z 0-9 . _ -, or empty to have one assigned", i, e.ID, maxIDLen)
		}
		r := newRow(e)
		if j, dup := byID[r.ID]; dup {
			return nil, fmt.Errorf("entries[%d]: id %q is also used by entries[%d]: %w", i, r.ID, j, store.ErrAlreadyExists)
		}
		if j, dup := byFingerprint[r.Fingerprint]; dup {
			return nil, fmt.Errorf("entries[%d]: same SPIFFE ID, parent and selectors as entries[%d]: %w", i, j, store.ErrAlreadyExists)
		}
		byID[r.ID], byFingerprint[r.Fingerprint] = i, i
		r.CreatedAt, r.UpdatedAt = now, now
		rows[i] = r
	}
	return rows, nil
}
