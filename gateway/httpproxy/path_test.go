package httpproxy

import (
	"net/http/httptest"
	"strings"
	"testing"
)

func TestParsePath(t *testing.T) {
	for in, want := range map[string]string{
		"/":            "/",
		"/a/b":         "/a/b",
		"/a/b/":        "/a/b/",
		"/%61":         "/a",
		"/a%20b":       "/a%20b",
		"/a%3Fb":       "/a%3Fb",
		"/caf%C3%A9":   "/caf%C3%A9",
		"/a+b":         "/a+b",
		"/.../x":       "/.../x",
		"/a:b@c!$&'()": "/a:b@c%21$&%27%28%29",
	} {
		p, err := parsePath(in)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if p.escaped != want {
			t.Errorf("%q: escaped %q, want %q", in, p.escaped, want)
		}
	}
	for _, in := range []string{"", "*", "a/b", "/a/../b", "/a/%2E/b", "/a%2fb", "/a%5Cb", "/a\\b", "/a%25b", "/a;b", "//", "/a//b",
		"/a%00", "/a%0a", "/a\x7f", "/%zz", "/%", "/" + strings.Repeat("a", maxPathBytes)} {
		if p, err := parsePath(in); err == nil {
			t.Errorf("%q: accepted as %q", in, p.escaped)
		}
	}
}

func TestRequestPath(t *testing.T) {
	for target, want := range map[string]string{
		"/orders/1?x=%2f":           "/orders/1",
		"/a%2fb<":                   "/a%2fb<",
		"http://gateway/orders/1?q": "/orders/1",
		"https://gateway":           "",
		"*":                         "*",
	} {
		r := httptest.NewRequest("OPTIONS", target, nil)
		if got := requestPath(r); got != want {
			t.Errorf("%q: got %q, want %q", target, got, want)
		}
	}
}
