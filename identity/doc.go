// Package identity holds writ's vocabulary for who is who: SPIFFE IDs and
// trust domains, workload selectors, identity kinds, and identity rules
// (registration entries) that say which workloads an agent may hand which
// identity to.
//
// go-spiffe's spiffeid package is the authority on what a SPIFFE ID is, and
// everything accepted here is accepted by it. This package adds what an
// identity server needs on top: the length limits of the SPIFFE
// specification (go-spiffe does not enforce them), and errors that name the
// offending input field and say what is allowed, because operators read them
// in CLI output and should be able to fix their input without reading the
// specification.
//
// Every error returned for bad input is a *FieldError. Callers that validate
// many inputs at once prefix the field, e.g. "entries[3].selectors[1]".
//
// The package imports nothing else of writ's so that every layer above it can
// share one definition of a valid identity.
package identity
