package identity

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestPersonIDIsLowercase(t *testing.T) {
	for _, email := range []string{"erin@example.com", "ERIN@example.com", "Erin@Example.COM", "eRiN@EXAMPLE.com"} {
		id, err := PersonID("email", testTD, email)
		if err != nil {
			t.Fatalf("PersonID(%q): %v", email, err)
		}
		if want := "spiffe://example.org/person/example.com/erin"; id.String() != want {
			t.Errorf("PersonID(%q) = %s, want %s", email, id, want)
		}
		if KindOf(id) != KindPerson || CheckPersonCase("x", id) != nil {
			t.Errorf("PersonID(%q) = %s is not a canonical person", email, id)
		}
	}
	// The last '@' splits: a quoted local part with '@' is refused by
	// the character rule rather than split in the wrong place.
	id, err := PersonID("email", testTD, "first.last-1_x@sub.example.org")
	if err != nil || id.Path() != "/person/sub.example.org/first.last-1_x" {
		t.Fatalf("PersonID = %s, %v", id, err)
	}
}

func TestPersonIDRefusals(t *testing.T) {
	for _, tc := range []struct{ email, want string }{
		{"", "not an email address"},
		{"erin", "not an email address"},
		{"@example.com", "not an email address"},
		{"erin@", "not an email address"},
		{"erin+tag@example.com", "character '+'"},
		{`"a@b"@example.com`, `character '"'`},
		{"..@example.com", "allow letters"},
		{"erin@exa mple.com", "character ' '"},
		{"érin@example.com", "character 'é'"},
		// Unicode case folding maps the Kelvin sign to 'k': another
		// mailbox must not become kate's ID.
		{"\u212Aate@example.com", "character '\u212A'"},
		{"kate@example.co\u212A", "character '\u212A'"},
		{"\u0130rin@example.com", "character 'İ'"},
		{strings.Repeat("a", 2000) + "@example.com", "at most 1024"},
	} {
		_, err := PersonID("email", testTD, tc.email)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "email: ") {
			t.Errorf("PersonID(%q) = %v, want an error containing %q", tc.email, err, tc.want)
		}
	}
}

func TestCheckPersonCase(t *testing.T) {
	err := CheckPersonCase("target.value", spiffeid.RequireFromString("spiffe://example.org/person/example.com/Erin"))
	if err == nil || !strings.Contains(err.Error(), `use "spiffe://example.org/person/example.com/erin"`) {
		t.Fatalf("CheckPersonCase = %v", err)
	}
	for _, ok := range []string{"spiffe://example.org/person/example.com/erin", "spiffe://example.org/svc/Web", "spiffe://example.org/personal/X"} {
		if err := CheckPersonCase("x", spiffeid.RequireFromString(ok)); err != nil {
			t.Errorf("CheckPersonCase(%s) = %v", ok, err)
		}
	}
}

func TestReservedNamespaces(t *testing.T) {
	for id, want := range map[string]string{
		"spiffe://example.org/writ":                    "/writ/",
		"spiffe://example.org/writ/server/s1":          "/writ/",
		"spiffe://example.org/writ/agent/join/n1":      "/writ/",
		"spiffe://example.org/person":                  "/person/",
		"spiffe://example.org/person/example.com/erin": "/person/",
		"spiffe://example.org/writer":                  "",
		"spiffe://example.org/personal/x":              "",
		"spiffe://example.org/svc/writ":                "",
	} {
		err := CheckNotReserved("spiffe_id", spiffeid.RequireFromString(id))
		switch {
		case want == "" && err != nil:
			t.Errorf("%s refused: %v", id, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), "under "+want+", which is reserved")):
			t.Errorf("%s: %v, want refused as under %s", id, err, want)
		}
	}
}

func TestServerID(t *testing.T) {
	id, err := ServerID(testTD, "s-1")
	if err != nil || id.String() != "spiffe://example.org/writ/server/s-1" || !IsServerID(id) || KindOf(id) != KindWorkload {
		t.Fatalf("ServerID = %s, %v", id, err)
	}
	if _, err := ServerID(testTD, "a/b"); err == nil {
		t.Fatal("a server ID with '/' was built")
	}
	for _, s := range []string{"spiffe://example.org/writ/server", "spiffe://example.org/writ/serverx/a", "spiffe://example.org/svc/writ/server/a"} {
		if IsServerID(spiffeid.RequireFromString(s)) {
			t.Errorf("IsServerID(%s)", s)
		}
	}
	if got, err := AgentID(testTD, "join-token", "n1"); err != nil || got.String() != "spiffe://example.org/writ/agent/join-token/n1" || KindOf(got) != KindNode {
		t.Errorf("AgentID = %s, %v", got, err)
	}
	if got := AuditOrigin("example.org"); got != "example.org/writ/audit" {
		t.Errorf("AuditOrigin = %s", got)
	}
}

func TestParseLockKind(t *testing.T) {
	for _, k := range LockKinds() {
		if got, err := ParseLockKind("kind", string(k)); err != nil || got != k {
			t.Errorf("ParseLockKind(%s) = %s, %v", k, got, err)
		}
	}
	if _, err := ParseLockKind("target.kind", "user\x1b[31m"); err == nil || !strings.Contains(err.Error(), `"user\x1b[31m" is not a lock target`) {
		t.Errorf("unknown kind: %v", err)
	}
	if _, err := ParseLockKind("target.kind", ""); err == nil || !strings.Contains(err.Error(), "is required") {
		t.Errorf("empty kind: %v", err)
	}
}

// FuzzPersonID: any email yields either a canonical person ID whose
// segments are the lowercased parts, or a bounded one-line FieldError.
func FuzzPersonID(f *testing.F) {
	for _, s := range []string{"erin@example.com", "ERIN@Example.com", "a@b@c", "@", "x@..", "é@x", "\u212Aate@x", "\u0130@x", strings.Repeat("a", 1100) + "@x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, email string) {
		id, err := PersonID("email", testTD, email)
		if err != nil {
			checkFuzzError(t, err, "email")
			return
		}
		// Only ASCII is folded: anything else would let another mailbox
		// fold onto a person's ID.
		for i := 0; i < len(email); i++ {
			if email[i] >= 0x80 {
				t.Fatalf("PersonID(%q) = %s: a non-ASCII address was accepted", email, id)
			}
		}
		at := strings.LastIndexByte(email, '@')
		want := "/person/" + strings.ToLower(email[at+1:]) + "/" + strings.ToLower(email[:at])
		if id.Path() != want || KindOf(id) != KindPerson || CheckPersonCase("x", id) != nil || CheckNotReserved("x", id) == nil {
			t.Fatalf("PersonID(%q) = %s, want path %s", email, id, want)
		}
		if _, err := ParseIDInTrustDomain("x", id.String(), testTD); err != nil {
			t.Fatalf("PersonID(%q) = %s, which does not parse: %v", email, id, err)
		}
	})
}

// TestReservedNamespacesIgnoreCase: an ID that differs from a reserved one
// only in case is refused too, so no rule makes a workload that reads as
// a person or a server.
func TestReservedNamespacesIgnoreCase(t *testing.T) {
	for _, id := range []string{"spiffe://example.org/Person/example.com/erin", "spiffe://example.org/PERSON", "spiffe://example.org/WRIT/server/s1", "spiffe://example.org/Writ/agent/x"} {
		err := CheckNotReserved("spiffe_id", spiffeid.RequireFromString(id))
		if err == nil || !strings.Contains(err.Error(), "only in case") {
			t.Errorf("%s: %v, want refused as differing from a reserved namespace only in case", id, err)
		}
	}
	for _, id := range []string{"spiffe://example.org/Personal/x", "spiffe://example.org/svc/Person/x", "spiffe://example.org/Writer"} {
		if err := CheckNotReserved("spiffe_id", spiffeid.RequireFromString(id)); err != nil {
			t.Errorf("%s refused: %v", id, err)
		}
	}
}
