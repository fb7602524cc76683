package task

import (
	"fmt"
	"strconv"
	"unicode"
	"unicode/utf8"
	"writ.dev/writ/internal/quote"

	"writ.dev/writ/identity"
)

func fieldErr(field, msg string) *identity.FieldError {
	return &identity.FieldError{Field: field, Msg: msg}
}

// checkText checks free text shown to people (a title, a reason): valid
// UTF-8, printable, at most max characters, and present if required.
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

// isIDChar reports whether c may appear in a task or standing grant ID.
// IDs end up in URLs, file names and audit records, so they are plain.
func isIDChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_'
}

// checkID checks the ID of a task or standing grant; empty means not yet
// assigned by the store.
func checkID(field, id string) error {
	const allowed = "an id is 1 to 128 of letters, digits, '.', '_' and '-', other than \".\" and \"..\""
	switch {
	case id == "":
		return nil
	case len(id) > MaxIDLen:
		return fieldErr(field, fmt.Sprintf("%s is %d bytes; %s", quote.String(id), len(id), allowed))
	case id == "." || id == "..":
		return fieldErr(field, quote.String(id)+" is not allowed; "+allowed)
	}
	for i := 0; i < len(id); i++ {
		if !isIDChar(id[i]) {
			return fieldErr(field, fmt.Sprintf("%s: character %s at byte %d is not allowed; %s", quote.String(id), quote.RuneAt(id, i), i, allowed))
		}
	}
	return nil
}
