package oidc

import (
	"context"
	"errors"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

const (
	// minRefresh is the rate limit on fetching keys: a token with an
	// unknown kid is cheap to forge, and must not make the server hammer
	// the issuer.
	minRefresh = 10 * time.Second
	// maxKeyAge is how long discovered keys are trusted before discovery
	// runs again, so a key the issuer withdrew stops verifying.
	maxKeyAge = time.Hour
	// maxDocument bounds a discovery document or JWKS.
	maxDocument  = 1 << 20
	fetchTimeout = 10 * time.Second
	// maxUpstreamError bounds how much of an error from fetching keys is
	// repeated: go-oidc quotes response bodies in its errors.
	maxUpstreamError = 512
)

// ErrKeysUnavailable wraps failures to get the issuer's keys: the token may
// be fine, and the node can retry later.
var ErrKeysUnavailable = errors.New("the issuer's keys are unavailable")

var (
	// errUnknownKey: no key of the issuer has the token's kid and alg.
	errUnknownKey = errors.New("unknown key")
	// errNotVerified: no key of the issuer verifies the signature.
	errNotVerified = errors.New("signature does not verify")
	// errRateLimited refuses a JWKS fetch within minRefresh of the last.
	errRateLimited = errors.New("keys were fetched less than " + minRefresh.String() + " ago")
	// errFetchFailed refuses one within minRefresh of a failed fetch: the
	// keys held may be none, so a refusal says nothing about the token.
	errFetchFailed = errors.New("fetching the keys failed less than " + minRefresh.String() + " ago; try again later")
)

// goOIDCNotVerified is the error RemoteKeySet returns when it holds keys
// and none verifies, as opposed to failing to fetch them. go-oidc exports
// no sentinel for it; TestWrongKey fails if the text changes.
const goOIDCNotVerified = "failed to verify id token signature"

// keySource checks a token's signature with the issuer's keys. h is the
// token's protected header, already checked against the accepted
// algorithms.
type keySource interface {
	verify(ctx context.Context, raw string, h jose.Header) ([]byte, error)
}
