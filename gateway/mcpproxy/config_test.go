package mcpproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"writ.dev/writ/identity"
)

func loadExample(t testing.TB) []byte {
	data, err := os.ReadFile("testdata/mcp.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestParseConfigExample(t *testing.T) {
	c, err := ParseConfig(bytes.NewReader(loadExample(t)))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Upstreams) != 2 || c.Upstreams[1].Args[1] != "/srv/shared" || c.Limits.CallTimeout != 30*time.Second || !c.RequireDelegation {
		t.Fatalf("parsed %+v", c)
	}
	if got := c.endpointURL("github"); got != "https://gateway.example.com:8443/mcp/github" {
		t.Fatalf("endpoint = %s", got)
	}
	if got := c.metadataURL(c.endpointPath("github")); got != "https://gateway.example.com:8443/.well-known/oauth-protected-resource/mcp/github" {
		t.Fatalf("metadata = %s", got)
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{PublicURL: "https://gw.example.com", TokenEndpoint: "https://writ.example.com/token", Upstreams: []Upstream{{Name: "a", URL: "http://127.0.0.1:9000/mcp"}}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := Limits{MaxBodyBytes: DefaultMaxBodyBytes, MaxSessions: DefaultMaxSessions, CallTimeout: DefaultCallTimeout, SessionIdleTimeout: DefaultSessionIdleTimeout}
	if c.Limits != want {
		t.Fatalf("limits = %+v, want %+v", c.Limits, want)
	}
	if got := c.endpointPath("a"); got != "/a" {
		t.Fatalf("endpoint path at the root = %q", got)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	good := func() Config {
		return Config{PublicURL: "https://gw.example.com/mcp", TokenEndpoint: "https://writ.example.com/token", Upstreams: []Upstream{{Name: "github", URL: "https://mcp.example.com/"}}}
	}
	for _, tc := range []struct {
		field  string
		mutate func(*Config)
	}{
		{"public_url", func(c *Config) { c.PublicURL = "" }},
		{"public_url", func(c *Config) { c.PublicURL = "http://gw.example.com/mcp" }},
		{"public_url", func(c *Config) { c.PublicURL = "https://gw.example.com/mcp/" }},
		{"public_url", func(c *Config) { c.PublicURL = "https://gw.example.com/mcp?x=1" }},
		{"public_url", func(c *Config) { c.PublicURL = "https://user@gw.example.com/mcp" }},
		{"token_endpoint", func(c *Config) { c.TokenEndpoint = "ftp://writ" }},
		{"upstreams", func(c *Config) { c.Upstreams = nil }},
		{"upstreams[0].name", func(c *Config) { c.Upstreams[0].Name = "GitHub" }},
		{"upstreams[0].name", func(c *Config) { c.Upstreams[0].Name = "a/b" }},
		{"upstreams[1].name", func(c *Config) { c.Upstreams = append(c.Upstreams, c.Upstreams[0]) }},
		{"upstreams[0].url", func(c *Config) { c.Upstreams[0].Command = "x" }},
		{"upstreams[0].url", func(c *Config) { c.Upstreams[0].URL = "" }},
		{"upstreams[0].url", func(c *Config) { c.Upstreams[0].URL = "http://mcp.example.com/" }},
		{"upstreams[0].url", func(c *Config) { c.Upstreams[0].URL = "unix:///run/mcp.sock" }},
		{"upstreams[0].args", func(c *Config) { c.Upstreams[0].Args = []string{"x"} }},
		{"upstreams[0].upstream_id", func(c *Config) { c.Upstreams[0].UpstreamID = "https://mcp.example.com/" }},
		{"upstreams[0].upstream_id", func(c *Config) {
			c.Upstreams[0].URL, c.Upstreams[0].UpstreamID = "http://127.0.0.1:9000/mcp", "spiffe://example.org/mcp/github"
		}},
		{"upstreams[0].upstream_id", func(c *Config) {
			c.Upstreams[0] = Upstream{Name: "x", Command: "x", UpstreamID: "spiffe://example.org/mcp/x"}
		}},
		{"upstreams[0].command", func(c *Config) { c.Upstreams[0] = Upstream{Name: "x", Command: " spaced"} }},
		{"upstreams[0].args[0]", func(c *Config) { c.Upstreams[0] = Upstream{Name: "x", Command: "x", Args: []string{"a\x00b"}} }},
		{"upstreams[0].env", func(c *Config) {
			c.Upstreams[0] = Upstream{Name: "x", Command: "x", Env: map[string]string{"1BAD": "v"}}
		}},
		{"upstreams[0].pass_env[0]", func(c *Config) { c.Upstreams[0] = Upstream{Name: "x", Command: "x", PassEnv: []string{"A=B"}} }},
		{"limits.max_body_bytes", func(c *Config) { c.Limits.MaxBodyBytes = 10 }},
		{"limits.max_sessions", func(c *Config) { c.Limits.MaxSessions = -1 }},
		{"limits.call_timeout", func(c *Config) { c.Limits.CallTimeout = time.Millisecond }},
		{"limits.session_idle_timeout", func(c *Config) { c.Limits.SessionIdleTimeout = 48 * time.Hour }},
	} {
		c := good()
		tc.mutate(&c)
		err := c.Validate()
		var fe *identity.FieldError
		if err == nil || !errors.As(err, &fe) {
			t.Errorf("%s: no field error: %v", tc.field, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), tc.field+":") && !strings.Contains(err.Error(), "\n"+tc.field+":") {
			t.Errorf("error does not name %s: %v", tc.field, err)
		}
	}
}

func TestParseConfigRefusesUnknownKeysAndHugeFiles(t *testing.T) {
	if _, err := ParseConfig(strings.NewReader("public_url: https://gw.example.com\nupstream: []\n")); err == nil || !strings.Contains(err.Error(), "upstream") {
		t.Fatalf("unknown key: %v", err)
	}
	big := strings.Repeat("#", maxConfigBytes+1)
	if _, err := ParseConfig(strings.NewReader(big)); err == nil || !strings.Contains(err.Error(), "1 MiB") {
		t.Fatalf("huge file: %v", err)
	}
}

func TestBadConfigStopsNew(t *testing.T) {
	if _, err := New(Config{}, Options{Decider: newFakeDecider(), Holder: &fakeHolder{}}); err == nil {
		t.Fatal("New accepted an empty config")
	}
	c := Config{PublicURL: "https://gw.example.com", TokenEndpoint: "https://writ.example.com/token", Upstreams: []Upstream{{Name: "a", URL: "https://mcp.example.com"}}}
	if _, err := New(c, Options{}); err == nil {
		t.Fatal("New accepted no Decider and Holder")
	}
}

// FuzzParseConfig: any document either fails with bounded messages or
// yields a config that validates again unchanged and whose endpoint and
// metadata URLs parse.
func FuzzParseConfig(f *testing.F) {
	f.Add(loadExample(f))
	f.Add([]byte("public_url: https://a/b\ntoken_endpoint: https://t\nupstreams: [{name: x, command: y, env: {A: b}}]\n"))
	f.Add([]byte("upstreams: [{name: x, url: 'http://[::1]:1/'}]\nlimits: {call_timeout: 1h}"))
	f.Add([]byte("public_url: 'https://a/%zz'"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(bytes.NewReader(data))
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if len(line) > 1024 {
					t.Fatalf("error line of %d bytes", len(line))
				}
			}
			return
		}
		again := c
		if err := again.Validate(); err != nil {
			t.Fatalf("valid config fails Validate again: %v", err)
		}
		for _, u := range c.Upstreams {
			for _, s := range []string{c.endpointURL(u.Name), c.metadataURL(c.endpointPath(u.Name))} {
				if _, err := url.Parse(s); err != nil {
					t.Fatalf("built URL %q does not parse: %v", s, err)
				}
			}
		}
	})
}

// FuzzBearerToken: the Authorization header is outside input; a header
// is either refused with a message that does not repeat it, or yields a
// token of JWT shape.
func FuzzBearerToken(f *testing.F) {
	for _, s := range []string{"Bearer " + testToken, "Bearer a.b", "bearer x.y.z", "Basic Zm9v", "Bearer  a.b.c", "Bearer a.b.c ", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		h := http.Header{}
		if v != "" {
			h["Authorization"] = []string{v}
		}
		tok, present, err := bearerToken(h)
		if v == "" && (present || err != nil) {
			t.Fatal("no header read as a token")
		}
		if err != nil {
			if len(err.Error()) > 200 {
				t.Fatalf("error of %d bytes", len(err.Error()))
			}
			return
		}
		if v != "" && (strings.Count(tok, ".") != 2 || len(tok) > maxTokenBytes || checkTokenShape(tok) != nil) {
			t.Fatalf("accepted %q", tok)
		}
	})
}

// FuzzArguments: tool call arguments go into a decision; whatever is
// accepted is a JSON object that encodes again.
func FuzzArguments(f *testing.F) {
	for _, s := range []string{`{"repo":"acme/prod"}`, `null`, ``, `[1]`, `{"n":1e400}`, `{"a":{"b":[1,"x",null]}}`, `{} {}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		args, err := arguments(raw)
		if err != nil {
			if len(err.Error()) > 200 {
				t.Fatalf("error of %d bytes", len(err.Error()))
			}
			return
		}
		if args == nil {
			t.Fatal("accepted arguments are nil")
		}
		enc, err := json.Marshal(args)
		if err != nil {
			t.Fatalf("accepted arguments do not encode: %v", err)
		}
		// What is forwarded decodes to what was decided.
		again, err := arguments(enc)
		if err != nil {
			t.Fatalf("forwarded arguments %s refused: %v", enc, err)
		}
		if enc2, _ := json.Marshal(again); !bytes.Equal(enc, enc2) {
			t.Fatalf("forwarded %s decodes as %s", enc, enc2)
		}
	})
}

// FuzzCutSessionRequest: a request on a cut session is parsed to answer
// its call with the reason; whatever the body, the answer is a 404 that
// repeats nothing of it.
func FuzzCutSessionRequest(f *testing.F) {
	for _, s := range []string{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}`, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, `[{"jsonrpc":"2.0","id":"a","method":"ping"}]`, `{"id":null}`, ``, `{"jsonrpc":"2.0","id":1e999,"method":"m"}`, `{"jsonrpc":"2.0","id":"` + strings.Repeat("a", 600) + `","method":"tools/call"}`} {
		f.Add([]byte(s))
	}
	e := &endpoint{p: &Proxy{cfg: Config{Limits: Limits{MaxBodyBytes: DefaultMaxBodyBytes}}}}
	const reason = "lock on spiffe://example.org/person/alice"
	f.Fuzz(func(t *testing.T, body []byte) {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/mcp/github", bytes.NewReader(body))
		e.refuseCut(w, r, reason)
		if w.Code != http.StatusNotFound || !strings.Contains(w.Body.String(), reason) {
			t.Fatalf("answer %d %q", w.Code, w.Body.String())
		}
		if w.Body.Len() > 512 {
			t.Fatalf("answer of %d bytes repeats the request", w.Body.Len())
		}
	})
}
