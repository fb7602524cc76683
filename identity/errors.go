package identity

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// FieldError says which input field was wrong and what is allowed.
//
// Field is the name the operator used to give the value (a YAML key, a JSON
// field, a CLI flag without dashes), so the message can be read without
// knowing writ's code.
type FieldError struct {
	Field string
	Msg   string
}

// Error returns "<field>: <msg>".
func (e *FieldError) Error() string {
	return e.Field + ": " + e.Msg
}

// Within returns a copy of e with its field nested under parent, e.g.
// FieldError{"selectors[1]", …}.Within("entries[3]") names
// "entries[3].selectors[1]". It exists so batch APIs build nested names the
// same way everywhere.
func (e *FieldError) Within(parent string) *FieldError {
	if parent == "" {
		return &FieldError{Field: e.Field, Msg: e.Msg}
	}
	return &FieldError{Field: parent + "." + e.Field, Msg: e.Msg}
}

func fieldErr(field, msg string) *FieldError {
	return &FieldError{Field: field, Msg: msg}
}

// maxQuoted bounds how much of a bad input is echoed back: enough to
// recognise it, not so much that a 2 KiB ID floods a terminal or a log line.
const maxQuoted = 96

// Quote renders outside input for an error message or a log line: quoted,
// control and invalid bytes escaped (so the message cannot carry terminal
// escapes or forge log lines), and cut after 96 bytes with the full length
// noted. Every message that repeats what a caller sent goes through it.
func Quote(s string) string { return quote(s) }

// quote renders operator input for an error message. It escapes control and
// invalid bytes so the message itself cannot carry terminal escapes or forge
// log lines.
func quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "… (" + strconv.Itoa(len(s)) + " bytes)"
}

// quoteRuneAt renders the character starting at byte i of s, or the raw
// byte when s is not valid UTF-8 there.
func quoteRuneAt(s string, i int) string {
	r, size := utf8.DecodeRuneInString(s[i:])
	if r == utf8.RuneError && size <= 1 {
		return fmt.Sprintf(`'\x%02x'`, s[i])
	}
	return strconv.QuoteRune(r)
}
