// Package workloadapi serves the SPIFFE Workload API on the agent's unix
// socket, so that any SPIFFE client (go-spiffe, Envoy, ...) gets its
// identity from writ unchanged. The server knows nothing of rules or caches:
// it attests each caller from the kernel's account of it (SO_PEERCRED),
// asks a Source what that caller may hold, and keeps long-lived streams up
// to date as the Source's answers change.
package workloadapi

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"log/slog"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/attest/workload"
	"writ.dev/writ/identity"
)

// X509SVID is one X.509 identity a workload holds.
type X509SVID struct {
	SPIFFEID spiffeid.ID
	// Chain is the leaf first, then any intermediates up to (not
	// including) a root in the trust domain's bundle.
	Chain []*x509.Certificate
	// Key is the leaf's private key. It must be marshalable by
	// x509.MarshalPKCS8PrivateKey, the encoding the protocol carries.
	Key crypto.Signer
	// ChainDER and KeyDER, when set, are Chain (concatenated DER) and Key
	// (PKCS#8) already encoded, as the protocol carries them: a Source
	// holding many SVIDs may keep only these and leave Chain and Key nil.
	ChainDER []byte
	KeyDER   []byte
	// Hint tells a workload holding several SVIDs which to use for what.
	Hint string
}

// JWTSVID is one signed JWT-SVID for a workload.
type JWTSVID struct {
	SPIFFEID spiffeid.ID
	// Token is the compact serialization.
	Token string
	// Hint is the same operator guidance as X509SVID.Hint.
	Hint string
}

// ErrNoIdentity is what Source.JWTSVIDs returns (possibly wrapped) when the
// caller holds no identity, or not the one it asked for. The server reports
// it as PermissionDenied, which SPIFFE clients treat as "not yet" and retry.
var ErrNoIdentity = errors.New("no identity issued")

// Source is what the agent knows. The server calls it on every request and
// every change, so answers should come from memory. Implementations must be
// safe for concurrent use.
//
// A change channel is closed when the answer returned with it may have
// changed (new rules, rotation, locks, bundle updates); the server then
// asks again. Closing it when nothing changed costs a recomputation but no
// message to the workload. A nil channel means the answer never changes.
type Source interface {
	// X509SVIDs returns the SVIDs of a workload with these selectors, in
	// the order the workload should prefer them, and a change channel.
	X509SVIDs(sels []identity.Selector) ([]X509SVID, <-chan struct{})
	// Bundles returns the X.509 and JWT bundles of the agent's trust
	// domain and of every federated one, and a change channel. Either
	// set may be nil before the agent has received its first bundle.
	Bundles() (*x509bundle.Set, *jwtbundle.Set, <-chan struct{})
	// JWTSVIDs returns JWT-SVIDs for audience (never empty) for a
	// workload with these selectors: one per identity it holds, or only
	// spiffeID's if spiffeID is not zero. It returns an error wrapping
	// ErrNoIdentity if there is none to give.
	JWTSVIDs(ctx context.Context, sels []identity.Selector, spiffeID spiffeid.ID, audience []string) ([]JWTSVID, error)
}

// AttestFunc returns the selectors of a calling process. The agent passes
// its pooled workload attestors here.
type AttestFunc func(ctx context.Context, p workload.Peer) ([]identity.Selector, error)

// Config is what a Server needs.
type Config struct {
	// Source answers what a caller may hold. Required.
	Source Source
	// Attest turns a caller into selectors. Required.
	Attest AttestFunc
	// Logger receives refusals and failures; nil discards them.
	Logger *slog.Logger
}
