package oidc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
	"writ.dev/writ/internal/quote"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

// discoveredKeys finds the issuer's keys through OIDC discovery with
// go-oidc, whose RemoteKeySet caches them and fetches them again when a
// token names a key it does not hold. Discovery runs at the first token
// rather than at startup, so an issuer outage while the server starts does
// not keep it from serving agents that have already joined; it runs again
// after maxKeyAge, so a withdrawn key stops verifying.
type discoveredKeys struct {
	issuer    string
	client    *http.Client // bounded: see boundedClient
	transport *boundedTransport
	now       func() time.Time

	mu          sync.Mutex
	set         *gooidc.RemoteKeySet
	algs        []string // what the issuer says it signs ID tokens with
	discovered  time.Time
	lastAttempt time.Time
	lastErr     error
}

func newDiscoveredKeys(issuer string, base *http.Client, now func() time.Time) *discoveredKeys {
	d := &discoveredKeys{issuer: issuer, now: now}
	d.client = boundedClient(base, d.wellKnown(), now)
	d.transport = d.client.Transport.(*boundedTransport)
	return d
}

func (d *discoveredKeys) wellKnown() string {
	return strings.TrimSuffix(d.issuer, "/") + "/.well-known/openid-configuration"
}

func (d *discoveredKeys) verify(ctx context.Context, raw string, h jose.Header) ([]byte, error) {
	set, algs, err := d.current(ctx)
	if err != nil {
		return nil, err
	}
	// What go-oidc's IDTokenVerifier does by default: an algorithm the
	// issuer does not sign with is not tried against its keys.
	if len(algs) > 0 && !slices.Contains(algs, h.Algorithm) {
		return nil, fmt.Errorf("the token is signed with %s, which the issuer does not list in id_token_signing_alg_values_supported %s", h.Algorithm, clip(fmt.Sprint(algs)))
	}
	payload, err := set.VerifySignature(ctx, raw)
	switch {
	case err == nil:
		return payload, nil
	case errors.Is(err, errFetchFailed):
		return nil, fmt.Errorf("%w: %w", ErrKeysUnavailable, errFetchFailed)
	case errors.Is(err, errRateLimited):
		// The cached keys were tried and none verified.
		return nil, errNotVerified
	case err.Error() == goOIDCNotVerified:
		return nil, errNotVerified
	case ctx.Err() != nil:
		return nil, fmt.Errorf("%w: %w", ErrKeysUnavailable, ctx.Err())
	}
	return nil, fmt.Errorf("%w: %s", ErrKeysUnavailable, clip(err.Error()))
}

// current returns the key set, running discovery when there is none yet or
// it is older than maxKeyAge, at most once per minRefresh.
func (d *discoveredKeys) current(ctx context.Context) (*gooidc.RemoteKeySet, []string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	if d.set != nil && now.Sub(d.discovered) <= maxKeyAge {
		return d.set, d.algs, nil
	}
	if !d.lastAttempt.IsZero() && now.Sub(d.lastAttempt) < minRefresh && d.lastErr != nil {
		return nil, nil, d.lastErr
	}
	d.lastAttempt = now
	set, algs, err := d.discover(ctx)
	if err != nil {
		d.lastErr = fmt.Errorf("%w: %w", ErrKeysUnavailable, err)
		return nil, nil, d.lastErr
	}
	d.set, d.algs, d.discovered, d.lastErr = set, algs, now, nil
	// A new set holds no keys: its first fetch must not be refused for
	// one the old set made.
	d.transport.forgetKeyFetch()
	return set, algs, nil
}

func (d *discoveredKeys) discover(ctx context.Context) (*gooidc.RemoteKeySet, []string, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	p, err := gooidc.NewProvider(gooidc.ClientContext(ctx, d.client), d.issuer)
	var mismatch *gooidc.IssuerMismatchError
	switch {
	case errors.As(err, &mismatch):
		// A mismatch means the URL serves another issuer's keys.
		return nil, nil, fmt.Errorf("%s names issuer %s, not %s", d.wellKnown(), quote.String(mismatch.Discovered), quote.String(d.issuer))
	case err != nil:
		return nil, nil, fmt.Errorf("%s: %s", d.wellKnown(), clip(err.Error()))
	}
	var doc struct {
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := p.Claims(&doc); err != nil {
		return nil, nil, fmt.Errorf("%s: not a discovery document: %v", d.wellKnown(), err)
	}
	if problem := checkDiscoveryURL(doc.JWKSURI); problem != "" {
		return nil, nil, fmt.Errorf("%s: jwks_uri %s %s", d.wellKnown(), quote.String(doc.JWKSURI), problem)
	}
	// The set fetches keys in the background with this context's client;
	// go-oidc ignores its cancellation, so the client's timeout bounds it.
	set := gooidc.NewRemoteKeySet(gooidc.ClientContext(context.Background(), d.client), doc.JWKSURI)
	return set, doc.Algs, nil
}
