package review

import (
	"strings"
	"testing"
)

// FuzzParseAsk: an "action:resource" from a request either parses into an
// ask that prints back as itself, or is refused with an error that names
// the field and stays bounded whatever the input.
func FuzzParseAsk(f *testing.F) {
	for _, s := range []string{"read:db/staging/orders", "write:db/prod/**", "deploy:k8s/prod/ns/*", "read:host:5432", ":", "*:x", "read:", "read:/a", strings.Repeat("a", 300) + ":b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAsk("asks[0]", s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "asks[0]") {
				t.Fatalf("error %q does not name the field", err)
			}
			if len(err.Error()) > 4*len("asks[0]")+1000 {
				t.Fatalf("error of %d bytes for %d bytes of input: echoes the input unbounded", len(err.Error()), len(s))
			}
			return
		}
		if a.String() != s {
			t.Fatalf("ParseAsk(%q) prints back as %q", s, a.String())
		}
		again, err := ParseAsk("asks[0]", a.String())
		if err != nil || again.String() != a.String() {
			t.Fatalf("ParseAsk of its own output %q: %v, %v", a.String(), again, err)
		}
	})
}
