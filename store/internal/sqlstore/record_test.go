package sqlstore

import (
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"writ.dev/writ/store"
)

func TestFingerprint(t *testing.T) {
	sels := func(ss ...string) []store.Selector {
		var out []store.Selector
		for i := 0; i+1 < len(ss); i += 2 {
			out = append(out, store.Selector{Type: ss[i], Value: ss[i+1]})
		}
		return out
	}
	base := fingerprint("spiffe://td/a", "spiffe://td/p", nil, selectorSet(sels("a", "1", "b", "2")))
	if got := fingerprint("spiffe://td/a", "spiffe://td/p", nil, selectorSet(sels("b", "2", "a", "1", "a", "1"))); got != base {
		t.Error("selector order or repeats change the fingerprint")
	}
	// Field boundaries must not be ambiguous.
	for name, fp := range map[string]string{
		"ids shifted":       fingerprint("spiffe://td/ap", "spiffe://td/", nil, selectorSet(sels("a", "1", "b", "2"))),
		"selector shifted":  fingerprint("spiffe://td/a", "spiffe://td/p", nil, selectorSet(sels("a1", "", "b", "2"))),
		"selector moved":    fingerprint("spiffe://td/a", "spiffe://td/p", nil, selectorSet(sels("a", "1b", "", "2"))),
		"selector dropped":  fingerprint("spiffe://td/a", "spiffe://td/p", nil, selectorSet(sels("a", "1"))),
		"parent is spiffe":  fingerprint("spiffe://td/p", "spiffe://td/a", nil, selectorSet(sels("a", "1", "b", "2"))),
		"selector as empty": fingerprint("spiffe://td/a", "spiffe://td/p", nil, selectorSet(sels("a", "1", "b", "2", "", ""))),
		// A parent selector is not a workload selector.
		"selector as parent": fingerprint("spiffe://td/a", "spiffe://td/p", selectorSet(sels("b", "2")), selectorSet(sels("a", "1"))),
		"parent selector":    fingerprint("spiffe://td/a", "spiffe://td/p", selectorSet(sels("c", "3")), selectorSet(sels("a", "1", "b", "2"))),
	} {
		if fp == base {
			t.Errorf("%s: same fingerprint as the base rule", name)
		}
	}
	if len(base) != 64 || strings.ToLower(base) != base {
		t.Errorf("fingerprint %q is not lowercase hex SHA-256", base)
	}
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := newID()
		if len(id) != 36 || id[14] != '4' || !strings.ContainsRune("89ab", rune(id[19])) || !validID(id) {
			t.Fatalf("newID() = %q, not a version 4 UUID", id)
		}
		if seen[id] {
			t.Fatalf("newID() repeated %q", id)
		}
		seen[id] = true
	}
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{
		"a": true, "A-z_0.9": true, strings.Repeat("x", 128): true,
		"": false, strings.Repeat("x", 129): false, "a b": false, "a/b": false, "é": false, "a\n": false,
	} {
		if got := validID(id); got != want {
			t.Errorf("validID(%q) = %v, want %v", id, got, want)
		}
	}
}

// FuzzRowRoundTrip checks that what the store writes it reads back
// unchanged, for any valid UTF-8 text (PostgreSQL stores nothing else).
func FuzzRowRoundTrip(f *testing.F) {
	f.Add("spiffe://td/a", "spiffe://td/p", "k8s", "ns:default", "a.example.org", "hint", int64(3600), int64(1893456000))
	f.Fuzz(func(t *testing.T, spiffeID, parentID, selType, selValue, dns, hint string, ttl, expires int64) {
		for _, s := range []string{spiffeID, parentID, selType, selValue, dns, hint} {
			if !utf8.ValidString(s) {
				t.Skip()
			}
		}
		ttl %= 1 << 32
		e := store.Entry{
			ID: "x", SPIFFEID: spiffeID, ParentID: parentID, Hint: hint,
			Selectors: []store.Selector{{Type: selType, Value: selValue}},
			DNSNames:  []string{dns},
			X509TTL:   time.Duration(ttl) * time.Second,
			JWTTTL:    time.Duration(ttl) * time.Second,
		}
		if expires != 0 {
			e.ExpiresAt = time.Unix(expires, 0).UTC()
		}
		r := newRow(e)
		got, err := r.Entry()
		if err != nil {
			t.Fatal(err)
		}
		got.CreatedAt, got.UpdatedAt = time.Time{}, time.Time{}
		if !reflect.DeepEqual(got, e) {
			t.Errorf("round trip:\n got  %+v\n want %+v", got, e)
		}
	})
}
