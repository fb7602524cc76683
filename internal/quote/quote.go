// Package quote renders outside input for error messages and log lines:
// quoted as Go string literals, so control and invalid bytes are escaped and
// a value cannot carry terminal escapes or forge a log line, and cut short,
// so a 2 KiB value cannot flood one.
//
// The bound is on the quoted text, not on the input: a byte that is not
// UTF-8 grows fourfold when escaped, and a cut on the input alone lets a
// short hostile value make a long message.
package quote

import (
	"strconv"
	"unicode/utf8"
)

// DefaultMax is how many bytes of quoted text String keeps: enough to
// recognise a value, not enough to flood a line.
const DefaultMax = 96

// String quotes s for a message, keeping at most DefaultMax bytes of quoted
// text; a cut value is followed by "…" and its full length.
func String(s string) string { return Max(s, DefaultMax) }

// Max quotes s for a message, keeping at most max bytes of quoted text
// (quotation marks included). A cut value is followed by "…" and its full
// length in bytes, so the result is at most max+24 bytes long.
func Max(s string, max int) string {
	full := strconv.Quote(s)
	if len(full) <= max {
		return full
	}
	buf := make([]byte, 0, max+24)
	buf = append(buf, '"')
	for i := 0; i < len(s); {
		_, size := utf8.DecodeRuneInString(s[i:])
		piece := strconv.Quote(s[i : i+size])
		piece = piece[1 : len(piece)-1]
		if len(buf)+len(piece)+1 > max {
			break
		}
		buf = append(buf, piece...)
		i += size
	}
	buf = append(buf, '"')
	buf = append(buf, "… ("...)
	buf = strconv.AppendInt(buf, int64(len(s)), 10)
	buf = append(buf, " bytes)"...)
	return string(buf)
}

// RuneAt renders the character starting at byte i of s as a Go rune
// literal, or the raw byte as '\xNN' when s is not UTF-8 there.
func RuneAt(s string, i int) string {
	r, size := utf8.DecodeRuneInString(s[i:])
	if r == utf8.RuneError && size <= 1 {
		const hex = "0123456789abcdef"
		return `'\x` + string(hex[s[i]>>4]) + string(hex[s[i]&0xf]) + `'`
	}
	return strconv.QuoteRune(r)
}
