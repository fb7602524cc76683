package quote

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestMax(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"abc", 10, `"abc"`},
		{"", 2, `""`},
		{"abcdefgh", 6, `"abcd"… (8 bytes)`},
		{"\x9e\x9e\x9e", 10, `"\x9e\x9e"… (3 bytes)`},
		{"a\nb", 96, `"a\nb"`},
		{"héllo wörld", 8, `"héllo"… (13 bytes)`},
	} {
		if got := Max(tc.in, tc.max); got != tc.want {
			t.Errorf("Max(%q, %d) = %s, want %s", tc.in, tc.max, got, tc.want)
		}
	}
}

func TestRuneAt(t *testing.T) {
	if got := RuneAt("a\x9eb", 1); got != `'\x9e'` {
		t.Errorf("RuneAt invalid byte = %s", got)
	}
	if got := RuneAt("aéb", 1); got != `'é'` {
		t.Errorf("RuneAt é = %s", got)
	}
	if got := RuneAt("a\x1bb", 1); got != `'\x1b'` {
		t.Errorf("RuneAt ESC = %s", got)
	}
}

// FuzzMax checks the promise every caller relies on: one printable line,
// bounded whatever the input.
func FuzzMax(f *testing.F) {
	f.Add("plain", 96)
	f.Add(strings.Repeat("\x9e\u02f8\U0001F600", 40), 40)
	f.Add("\x1b[31mred\n", 5)
	f.Fuzz(func(t *testing.T, s string, max int) {
		if max < 2 || max > 4096 {
			return
		}
		got := Max(s, max)
		if !utf8.ValidString(got) {
			t.Fatalf("Max(%q, %d) = %q: not UTF-8", s, max, got)
		}
		for _, r := range got {
			if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
				t.Fatalf("Max(%q, %d) = %q holds control character %U", s, max, got, r)
			}
		}
		if len(got) > max+24 {
			t.Fatalf("Max(%q, %d) is %d bytes", s, max, len(got))
		}
	})
}
