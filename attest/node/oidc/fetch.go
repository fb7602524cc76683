package oidc

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

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
