package oidc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

const (
	// minRefresh is the rate limit on fetching keys: a token with an
	// unknown kid is cheap to forge, and must not make the server hammer
	// the issuer.
	minRefresh = 10 * time.Second
	// maxKeyAge is how long fetched keys are trusted before they are
	// fetched again, so a key the issuer withdrew stops verifying.
	maxKeyAge = time.Hour
	// maxDocument bounds a discovery document or JWKS.
	maxDocument  = 1 << 20
	fetchTimeout = 10 * time.Second
)

// ErrKeysUnavailable wraps failures to get the issuer's keys: the token may
// be fine, and the node can retry later.
var ErrKeysUnavailable = errors.New("the issuer's keys are unavailable")

// keySource yields the issuer's current signature keys.
type keySource interface {
	fetch(ctx context.Context) ([]jose.JSONWebKey, error)
}

// keyCache holds the keys of one issuer, fetching them when they are
// older than maxKeyAge or when a token names a key it does not hold (the
// issuer rotated), at most once per minRefresh.
type keyCache struct {
	src keySource
	now func() time.Time

	mu          sync.Mutex
	keys        []jose.JSONWebKey
	loadedAt    time.Time
	lastAttempt time.Time
	lastErr     error
}

// candidates returns the keys that may have signed a token with header h.
// It refreshes the keys when none is found, so a rotation at the issuer is
// picked up by the first token signed with the new key.
func (c *keyCache) candidates(ctx context.Context, h jose.Header) ([]jose.JSONWebKey, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if now.Sub(c.loadedAt) > maxKeyAge {
		if err := c.refresh(ctx, now); err != nil {
			return nil, err
		}
	}
	if keys := matchKeys(c.keys, h); len(keys) > 0 {
		return keys, nil
	}
	if err := c.refresh(ctx, now); err != nil {
		return nil, err
	}
	return matchKeys(c.keys, h), nil
}

// refresh fetches the keys unless the last attempt was under minRefresh
// ago; then it keeps the current keys if they are still fresh.
func (c *keyCache) refresh(ctx context.Context, now time.Time) error {
	if !c.lastAttempt.IsZero() && now.Sub(c.lastAttempt) < minRefresh {
		if now.Sub(c.loadedAt) <= maxKeyAge {
			return nil
		}
		if c.lastErr == nil {
			return fmt.Errorf("%w: fetched less than %s ago; try again later", ErrKeysUnavailable, minRefresh)
		}
		return c.lastErr
	}
	c.lastAttempt = now
	keys, err := c.src.fetch(ctx)
	if err != nil {
		c.lastErr = fmt.Errorf("%w: %w", ErrKeysUnavailable, err)
		return c.lastErr
	}
	c.keys, c.loadedAt, c.lastErr = keys, now, nil
	return nil
}

// matchKeys picks the keys that may verify a signature with header h: the
// one named by kid, or every key when the token names none; a key
// restricted to another algorithm is left out.
func matchKeys(keys []jose.JSONWebKey, h jose.Header) []jose.JSONWebKey {
	var out []jose.JSONWebKey
	for _, k := range keys {
		if h.KeyID != "" && k.KeyID != h.KeyID {
			continue
		}
		if k.Algorithm != "" && k.Algorithm != h.Algorithm {
			continue
		}
		out = append(out, k)
	}
	return out
}

// parseJWKS reads a JWKS, keeping the public signature keys. A key that
// cannot be used (an unsupported type, an encryption or symmetric key) is
// skipped rather than failing the set, because issuers publish keys for
// other purposes next to their signing keys.
func parseJWKS(data []byte) ([]jose.JSONWebKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("not a JWKS: %v", err)
	}
	var keys []jose.JSONWebKey
	for _, raw := range set.Keys {
		var k jose.JSONWebKey
		if json.Unmarshal(raw, &k) != nil || (k.Use != "" && k.Use != "sig") {
			continue
		}
		if pub := k.Public(); pub.Valid() && pub.IsPublic() {
			keys = append(keys, pub)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("the JWKS has no usable public signature key (of %d keys)", len(set.Keys))
	}
	return keys, nil
}

// jwksFile is a static key set, read again when a token names a key it
// does not hold so that an updated file needs no restart.
type jwksFile string

func (f jwksFile) fetch(context.Context) ([]jose.JSONWebKey, error) {
	file, err := os.Open(string(f))
	if err != nil {
		return nil, err
	}
	defer file.Close()
	data, err := readBounded(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f, err)
	}
	keys, err := parseJWKS(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f, err)
	}
	return keys, nil
}

// discovery finds the keys through OIDC discovery at the issuer.
type discovery struct {
	issuer string
	client *http.Client
}

func (d discovery) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	wellKnown := strings.TrimSuffix(d.issuer, "/") + "/.well-known/openid-configuration"
	data, err := d.get(ctx, wellKnown)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: not a discovery document: %v", wellKnown, err)
	}
	// OIDC discovery requires the document to name its own issuer; a
	// mismatch means the URL serves another issuer's keys.
	if doc.Issuer != d.issuer {
		return nil, fmt.Errorf("%s names issuer %s, not %s", wellKnown, quote(doc.Issuer), quote(d.issuer))
	}
	if problem := checkDiscoveryURL(doc.JWKSURI); problem != "" {
		return nil, fmt.Errorf("%s: jwks_uri %s %s", wellKnown, quote(doc.JWKSURI), problem)
	}
	if data, err = d.get(ctx, doc.JWKSURI); err != nil {
		return nil, err
	}
	keys, err := parseJWKS(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", doc.JWKSURI, err)
	}
	return keys, nil
}

func (d discovery) get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	// A redirect to plain http would hand the key set to anyone on the path.
	if resp.Request.URL.Scheme != "https" {
		return nil, fmt.Errorf("GET %s was redirected to %s, which is not https", u, redact(resp.Request.URL))
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	data, err := readBounded(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	return data, nil
}

func redact(u *url.URL) string {
	return u.Scheme + "://" + u.Host + u.Path
}

func readBounded(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxDocument+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxDocument {
		return nil, fmt.Errorf("larger than %d bytes", maxDocument)
	}
	return data, nil
}
