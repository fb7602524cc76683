package oidc

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
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

// staticKeys is a jwks_file. It is read again when a token names a key it
// does not hold and the file changed, so an updated file needs no restart.
type staticKeys struct {
	file string

	mu    sync.Mutex
	keys  []jose.JSONWebKey
	stamp fileStamp
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func loadStaticKeys(file string) (*staticKeys, error) {
	s := &staticKeys{file: file}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *staticKeys) load() error {
	f, err := os.Open(s.file)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	data, err := readBounded(f)
	if err != nil {
		return fmt.Errorf("%s: %w", s.file, err)
	}
	keys, err := parseJWKS(data)
	if err != nil {
		return fmt.Errorf("%s: %w", s.file, err)
	}
	s.keys, s.stamp = keys, fileStamp{fi.ModTime(), fi.Size()}
	return nil
}

// candidates returns the keys that may have signed a token with header h,
// reading the file again if it changed since it was read.
func (s *staticKeys) candidates(h jose.Header) ([]jose.JSONWebKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if keys := matchKeys(s.keys, h); len(keys) > 0 {
		return keys, nil
	}
	fi, err := os.Stat(s.file)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeysUnavailable, err)
	}
	if (fileStamp{fi.ModTime(), fi.Size()}) == s.stamp {
		return nil, nil
	}
	if err := s.load(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeysUnavailable, err)
	}
	return matchKeys(s.keys, h), nil
}

func (s *staticKeys) verify(ctx context.Context, raw string, h jose.Header) ([]byte, error) {
	keys, err := s.candidates(h)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errUnknownKey
	}
	set := gooidc.StaticKeySet{PublicKeys: make([]crypto.PublicKey, len(keys))}
	for i, k := range keys {
		set.PublicKeys[i] = k.Key
	}
	payload, err := set.VerifySignature(ctx, raw)
	if err != nil {
		return nil, errNotVerified
	}
	return payload, nil
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
		return nil, nil, fmt.Errorf("%s names issuer %s, not %s", d.wellKnown(), quote(mismatch.Discovered), quote(d.issuer))
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
		return nil, nil, fmt.Errorf("%s: jwks_uri %s %s", d.wellKnown(), quote(doc.JWKSURI), problem)
	}
	// The set fetches keys in the background with this context's client;
	// go-oidc ignores its cancellation, so the client's timeout bounds it.
	set := gooidc.NewRemoteKeySet(gooidc.ClientContext(context.Background(), d.client), doc.JWKSURI)
	return set, doc.Algs, nil
}

// boundedClient returns a copy of base that bounds what the issuer can make
// the server do: each request within fetchTimeout, each response within
// maxDocument bytes, no redirect off https (whoever is on the path of a
// plain http request could hand over a key set), and key set fetches at
// most once per minRefresh. go-oidc reads whole responses, so the bounds
// live in the client it is given.
func boundedClient(base *http.Client, wellKnown string, now func() time.Time) *http.Client {
	c := *base
	if c.Timeout <= 0 || c.Timeout > fetchTimeout {
		c.Timeout = fetchTimeout
	}
	next := c.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	c.Transport = &boundedTransport{next: next, wellKnown: wellKnown, now: now}
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.Scheme != "https" {
			return fmt.Errorf("redirected to %s, which is not https", req.URL.Scheme+"://"+req.URL.Host+req.URL.Path)
		}
		if len(via) >= 5 {
			return errors.New("more than 5 redirects")
		}
		return nil
	}
	return &c
}

type boundedTransport struct {
	next      http.RoundTripper
	wellKnown string
	now       func() time.Time

	mu        sync.Mutex
	lastFetch time.Time
	// lastFailed: the last key fetch got no complete 200 response.
	lastFailed bool
}

func (t *boundedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	keyFetch := origin(req).URL.String() != t.wellKnown
	// A redirect hop (req.Response set) is part of a fetch already
	// admitted.
	if keyFetch && req.Response == nil {
		if err := t.admitKeyFetch(); err != nil {
			return nil, err
		}
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body := &boundedBody{ReadCloser: resp.Body, left: maxDocument}
	if keyFetch {
		// A redirect counts as failed until its last hop answers 200.
		t.setFailed(resp.StatusCode != http.StatusOK)
		body.overflow = func() { t.setFailed(true) }
	}
	resp.Body = body
	return resp, nil
}

// origin returns the request a chain of redirects started from.
func origin(req *http.Request) *http.Request {
	for req.Response != nil && req.Response.Request != nil {
		req = req.Response.Request
	}
	return req
}

func (t *boundedTransport) setFailed(failed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lastFailed = failed
}

func (t *boundedTransport) admitKeyFetch() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if !t.lastFetch.IsZero() && now.Sub(t.lastFetch) < minRefresh {
		if t.lastFailed {
			return errFetchFailed
		}
		return errRateLimited
	}
	// Failed until a response says otherwise, so a fetch that never got
	// one counts as failed.
	t.lastFetch, t.lastFailed = now, true
	return nil
}

func (t *boundedTransport) forgetKeyFetch() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lastFetch, t.lastFailed = time.Time{}, false
}

// boundedBody fails a read past left bytes instead of truncating, so a
// cut-off key set is never mistaken for the whole one.
type boundedBody struct {
	io.ReadCloser
	left     int64
	overflow func() // called when the bound is passed, if set
}

func (b *boundedBody) Read(p []byte) (int, error) {
	// One byte past the bound is read to tell a body of exactly
	// maxDocument bytes from a longer one.
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		if b.overflow != nil {
			b.overflow()
		}
		return 0, fmt.Errorf("response larger than %d bytes", maxDocument)
	}
	return n, err
}

// clip bounds an upstream error repeated to the caller and escapes it, so
// a response body quoted in it can neither flood nor forge log lines.
func clip(s string) string {
	cut, suffix := len(s), ""
	if cut > maxUpstreamError {
		cut, suffix = maxUpstreamError, "…"
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
	}
	q := strconv.Quote(s[:cut])
	return q[1:len(q)-1] + suffix
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
