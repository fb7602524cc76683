package httpproxy

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"writ.dev/writ/internal/quote"
)

// maxPathBytes bounds the request path the gateway looks at; the listener's
// header limit bounds it too, but the mapping should not depend on it.
const maxPathBytes = 4096

// cleanPath is a request path in the one form the gateway decides on and
// forwards: segments percent-decoded once and checked, then encoded again
// by Go's rules, so the upstream receives exactly the path that was
// decided and no segment can mean something else to it.
type cleanPath struct {
	segs     []string // decoded, none empty
	trailing bool     // the path ended in '/'
	escaped  string   // what is forwarded and signed
}

// errBadPath is wrapped by every refusal of a path, so the handler answers
// 400 for all of them.
var errBadPath = errors.New("bad request path")

// parsePath checks escapedPath (the request target's path as sent) and
// returns its clean form. It refuses rather than repairs: a path holding
// "." or ".." segments, an encoded '/' or '\', a ';', control characters,
// empty segments or percent signs left after one decoding is not something
// a well-behaved client sends, and cleaning it would mean forwarding a
// path that differs from the one the caller asked for, which is where
// proxies and upstreams start to disagree about what was allowed.
func parsePath(escapedPath string) (cleanPath, error) {
	switch {
	case escapedPath == "":
		return cleanPath{}, fmt.Errorf("%w: the path is empty; request a path starting with '/'", errBadPath)
	case len(escapedPath) > maxPathBytes:
		return cleanPath{}, fmt.Errorf("%w: the path is %d bytes; at most %d are allowed", errBadPath, len(escapedPath), maxPathBytes)
	case escapedPath[0] != '/':
		return cleanPath{}, fmt.Errorf("%w: path %s does not start with '/'", errBadPath, quote.String(escapedPath))
	}
	var p cleanPath
	if escapedPath == "/" {
		p.escaped = "/"
		return p, nil
	}
	rest := escapedPath[1:]
	if strings.HasSuffix(rest, "/") {
		p.trailing = true
		rest = rest[:len(rest)-1]
	}
	for i, raw := range strings.Split(rest, "/") {
		seg, err := url.PathUnescape(raw)
		if err != nil {
			return cleanPath{}, fmt.Errorf("%w: segment %d of path %s is not valid percent-encoding", errBadPath, i+1, quote.String(escapedPath))
		}
		if problem := segmentProblem(seg); problem != "" {
			return cleanPath{}, fmt.Errorf("%w: segment %d of path %s %s", errBadPath, i+1, quote.String(escapedPath), problem)
		}
		p.segs = append(p.segs, seg)
	}
	u := url.URL{Path: "/" + strings.Join(p.segs, "/")}
	if p.trailing {
		u.Path += "/"
	}
	p.escaped = u.EscapedPath()
	return p, nil
}

// segmentProblem says what is wrong with a decoded segment, or "".
func segmentProblem(seg string) string {
	switch seg {
	case "":
		return "is empty (\"//\"); separate segments with a single '/'"
	case ".", "..":
		return "is a dot segment; request the path it stands for instead"
	}
	for i := 0; i < len(seg); i++ {
		switch c := seg[i]; {
		case c == '/' || c == '\\':
			return "holds an encoded '/' or '\\', which upstreams disagree about"
		case c == '%':
			return "still holds '%' after decoding (double encoding is refused)"
		case c == ';':
			return "holds ';', which some upstreams take as the start of path parameters"
		case c < 0x20 || c == 0x7f:
			return "holds a control character"
		}
	}
	return ""
}

// requestPath returns the path of r's request target as the client sent
// it. r.URL.EscapedPath is not that: when the raw path holds a character
// Go would have escaped, it is dropped for an encoding of the decoded
// path, and "a%2fb<" comes back as "a/b%3C", an encoded slash turned real.
func requestPath(r *http.Request) string {
	target := r.RequestURI
	if target == "" {
		// Not from a server (a request built in code): the URL is all
		// there is.
		return r.URL.EscapedPath()
	}
	if i := strings.IndexByte(target, '?'); i >= 0 {
		target = target[:i]
	}
	if strings.HasPrefix(target, "/") {
		return target
	}
	// The absolute form, "https://host/path": the path starts at the first
	// '/' after the authority. Anything else ("*", an authority) has no
	// path, which parsePath refuses.
	if _, rest, ok := strings.Cut(target, "://"); ok {
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			return rest[i:]
		}
		return ""
	}
	return target
}

// String returns the escaped form, for messages.
func (p cleanPath) String() string { return p.escaped }
