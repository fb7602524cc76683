package review

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"writ.dev/writ/identity"
)

func fieldErr(field, msg string) *identity.FieldError {
	return &identity.FieldError{Field: field, Msg: msg}
}

// checkText checks free text shown to people (a reason): valid UTF-8,
// printable, at most max characters, and present if required.
func checkText(field, s string, max int, required bool, example string) error {
	allowed := fmt.Sprintf("up to %d printable characters", max)
	switch {
	case s == "" && required:
		return fieldErr(field, "is required; give "+allowed+", "+example)
	case !utf8.ValidString(s):
		return fieldErr(field, "is not valid UTF-8; give "+allowed)
	}
	if n := utf8.RuneCountInString(s); n > max {
		return fieldErr(field, fmt.Sprintf("is %d characters; give %s", n, allowed))
	}
	for i, r := range s {
		if !unicode.IsPrint(r) {
			return fieldErr(field, fmt.Sprintf("has unprintable %s at byte %d; give %s", strconv.QuoteRune(r), i, allowed))
		}
	}
	return nil
}

// checkID checks a plain name (a request, task or rule ID): it ends up in
// URLs, file names and audit records. Empty is allowed unless required
// (a request's ID is assigned by the store).
func checkID(field, id string, required bool) error {
	const allowed = "1 to 128 of letters, digits, '.', '_' and '-', other than \".\" and \"..\""
	switch {
	case id == "" && !required:
		return nil
	case id == "":
		return fieldErr(field, "is required; give "+allowed)
	case len(id) > MaxIDLen:
		return fieldErr(field, fmt.Sprintf("%s is %d bytes; give %s", identity.Quote(id), len(id), allowed))
	case id == "." || id == "..":
		return fieldErr(field, identity.Quote(id)+" is not allowed; give "+allowed)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fieldErr(field, fmt.Sprintf("%s: the character at byte %d is not allowed; give %s", identity.Quote(id), i, allowed))
		}
	}
	return nil
}

// formatTime renders a time in messages as RFC 3339 UTC, as the API gives
// times.
func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// formatDuration prints d as an operator writes it: "24h", "1h30m".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
