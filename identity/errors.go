package identity

import (
	"writ.dev/writ/internal/quote"
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

// Quote renders outside input for an error message or a log line: quoted,
// control and invalid bytes escaped (so the message cannot carry terminal
// escapes or forge log lines), and cut after 96 bytes of quoted text with the full length
// noted. Every message that repeats what a caller sent goes through it.
func Quote(s string) string { return quote.String(s) }
