package identity

import (
	"testing"
	"time"
)

func TestScratchMessages(t *testing.T) {
	for _, s := range []string{"", " spiffe://example.org/x", "https://example.org/x", "SPIFFE://example.org/x", "spiffe:/example.org/x", "example.org/x",
		"spiffe://", "spiffe:///x", "spiffe://Example.org/Web", "spiffe://user:pw@example.org/x", "spiffe://example.org:8080/x", "spiffe://exa mple.org/x",
		"spiffe://example.org/", "spiffe://example.org//a", "spiffe://example.org/a/./b", "spiffe://example.org/a/..", "spiffe://example.org/a?b=c", "spiffe://example.org#f",
		"spiffe://example.org/a%20b", "spiffe://example.org/caf\u00e9", "spiffe://example.org/a\x00", "spiffe://ex\xffample.org/"} {
		_, err := ParseID("spiffe_id", s)
		t.Logf("%q -> %v", s, err)
	}
	for _, s := range []string{"", "Example.org", "spiffe://example.org", "spiffe://example.org/x", "https://example.org", "example.org:443", "a@example.org", "example.org/x", "ex ample"} {
		_, err := ParseTrustDomain(s)
		t.Logf("%q -> %v", s, err)
	}
	for _, s := range []string{"", "unix", ":x", "unix:", "UNIX:uid:1", "un ix:x", "unix:uid\n1", "unix: x", "unix:\xff"} {
		_, err := ParseSelector(s)
		t.Logf("%q -> %v", s, err)
	}
	for _, s := range []string{"", "0", "-5s", "1.5s", "abc", "99999999999999999999", "25h", "3600", "1h30m"} {
		d, err := ParseTTL("x509_ttl", s, 24*time.Hour)
		t.Logf("%q -> %v %v", s, d, err)
	}
	for _, s := range []string{"*.Example.org", "*", "a.*.b", "10.0.0.1", "::1", "a..b", "-a.b", "a.b.", "café.org", "a_b.org", "x.123"} {
		n, p := canonicalDNSName(s)
		t.Logf("%q -> %q %v", s, n, p)
	}
}
