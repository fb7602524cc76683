package mcpproxy

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"io"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"writ.dev/writ/identity"
	"writ.dev/writ/internal/quote"
)

// Config is the MCP front end's part of the gateway config file. The YAML
// keys are the tag names.
type Config struct {
	// PublicURL is the https URL callers reach the MCP front end at, e.g.
	// "https://gateway.example.com:8443/mcp". Upstream "github" is served
	// at PublicURL + "/github": one MCP endpoint per upstream, so tools keep
	// the names their server gives them.
	PublicURL string `yaml:"public_url"`
	// TokenEndpoint is the URL of the writ token endpoint that mints
	// delegation tokens for the gateway; it is the authorization server the
	// protected-resource metadata (RFC 9728) names.
	TokenEndpoint string `yaml:"token_endpoint"`
	// RequireDelegation refuses callers that present no delegation token
	// (401 with a pointer to the metadata). Without it an agent may also
	// call for itself, with its SVID alone.
	RequireDelegation bool `yaml:"require_delegation"`
	// Upstreams are the MCP servers behind the gateway.
	Upstreams []Upstream `yaml:"upstreams"`
	Limits    Limits     `yaml:"limits"`
}

// Upstream is one MCP server: either URL (streamable HTTP) or Command
// (stdio), never both.
type Upstream struct {
	// Name is the server's name in resources ("mcp/<name>/tool/<tool>")
	// and in the endpoint path: 1 to 32 of a-z, 0-9, '_' and '-'.
	Name string `yaml:"name"`
	// URL is the streamable HTTP endpoint: https, or http on a loopback
	// address only.
	URL string `yaml:"url"`
	// UpstreamID, when set, is the SPIFFE ID an https upstream must
	// present: the gateway accepts that X.509-SVID and nothing else (no
	// web PKI certificate, no other workload of the trust domain).
	UpstreamID string `yaml:"upstream_id,omitempty"`
	// Command and Args start a stdio server; it is started when first
	// needed and shared by every session of this endpoint.
	Command string   `yaml:"command"`
	Args    []string `yaml:"args"`
	// Env sets variables for the command. Its environment holds only these,
	// PATH, and the variables PassEnv names; the gateway's own environment
	// is not inherited, so nothing of the gateway's leaks to a tool server.
	// Secrets belong in PassEnv (set by the service manager), not here.
	Env     map[string]string `yaml:"env"`
	PassEnv []string          `yaml:"pass_env"`
}

// Limits bound what one caller can make the gateway hold.
type Limits struct {
	// MaxBodyBytes bounds one HTTP request body (default 1 MiB).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxSessions bounds the live MCP sessions over all endpoints
	// (default 1000).
	MaxSessions int `yaml:"max_sessions"`
	// CallTimeout bounds one tool call, decision included (default 60s).
	CallTimeout time.Duration `yaml:"call_timeout"`
	// SessionIdleTimeout closes a session that sent nothing for this long
	// (default 15m).
	SessionIdleTimeout time.Duration `yaml:"session_idle_timeout"`
}

// Defaults and bounds of the limits.
const (
	DefaultMaxBodyBytes       = 1 << 20
	MaxMaxBodyBytes           = 64 << 20
	DefaultMaxSessions        = 1000
	MaxMaxSessions            = 100000
	DefaultCallTimeout        = 60 * time.Second
	MaxCallTimeout            = time.Hour
	DefaultSessionIdleTimeout = 15 * time.Minute
	MaxSessionIdleTimeout     = 24 * time.Hour
	maxUpstreams              = 256
	maxArgs                   = 256
	maxEnv                    = 256
	maxConfigBytes            = 1 << 20
)

var (
	namePattern    = regexp.MustCompile(`^[a-z0-9_-]{1,32}$`)
	envNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
)

// ParseConfig decodes a YAML document strictly (unknown keys are errors)
// and validates it.
func ParseConfig(r io.Reader) (Config, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxConfigBytes+1))
	if err != nil {
		return Config{}, fmt.Errorf("mcp config: %w", err)
	}
	if len(data) > maxConfigBytes {
		return Config{}, errors.New("mcp config: larger than 1 MiB; it holds a few upstreams, check the file")
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("mcp config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate fills the default limits and checks c. It returns every problem
// at once, each an *identity.FieldError naming the YAML key
// ("upstreams[1].url"), so the gateway can nest them under its own key.
func (c *Config) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &identity.FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	if msg := checkPublicURL(c.PublicURL); msg != "" {
		add("public_url", "%s", msg)
	}
	if msg := checkHTTPSURL(c.TokenEndpoint); msg != "" {
		add("token_endpoint", "%s", msg)
	}
	if len(c.Upstreams) == 0 {
		add("upstreams", "is empty: name at least one MCP server, with url or command")
	}
	if len(c.Upstreams) > maxUpstreams {
		add("upstreams", "has %d entries; at most %d are allowed", len(c.Upstreams), maxUpstreams)
	}
	seen := map[string]int{}
	for i, u := range c.Upstreams {
		if i >= maxUpstreams {
			break
		}
		for _, err := range u.validate() {
			errs = append(errs, err.Within(fmt.Sprintf("upstreams[%d]", i)))
		}
		if j, dup := seen[u.Name]; dup && u.Name != "" {
			add(fmt.Sprintf("upstreams[%d].name", i), "%s is also upstreams[%d]: names must be unique", quote.String(u.Name), j)
		}
		seen[u.Name] = i
	}
	errs = append(errs, c.Limits.validate()...)
	return errors.Join(errs...)
}

func (u *Upstream) validate() []*identity.FieldError {
	var errs []*identity.FieldError
	add := func(field, format string, args ...any) {
		errs = append(errs, &identity.FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	if !namePattern.MatchString(u.Name) {
		add("name", "%s is not allowed: use 1 to 32 of a-z, 0-9, '_' and '-', e.g. \"github\"", quote.String(u.Name))
	}
	switch {
	case u.URL != "" && u.Command != "":
		add("url", "and command are both set: an upstream is either streamable HTTP (url) or stdio (command)")
	case u.URL == "" && u.Command == "":
		add("url", "and command are both empty: set url for a streamable HTTP server or command for a stdio one")
	case u.URL != "":
		if msg := checkUpstreamURL(u.URL); msg != "" {
			add("url", "%s", msg)
		}
		if len(u.Args) > 0 || len(u.Env) > 0 || len(u.PassEnv) > 0 {
			add("args", "args, env and pass_env apply to command only; remove them or use command")
		}
		if u.UpstreamID != "" {
			if _, err := spiffeid.FromString(u.UpstreamID); err != nil {
				add("upstream_id", "%s is not a SPIFFE ID: give the upstream's, e.g. spiffe://example.org/mcp/github", quote.String(u.UpstreamID))
			} else if !strings.HasPrefix(u.URL, "https://") {
				add("upstream_id", "needs an https url: the upstream proves its SPIFFE ID in the TLS handshake")
			}
		}
	default:
		if u.UpstreamID != "" {
			add("upstream_id", "applies to an https url only; a stdio upstream is the gateway's own child process")
		}
		if strings.ContainsRune(u.Command, 0) || strings.TrimSpace(u.Command) != u.Command || len(u.Command) > 4096 {
			add("command", "%s is not a usable program name: give a path or a name on PATH, without surrounding spaces", quote.String(u.Command))
		}
		if len(u.Args) > maxArgs {
			add("args", "has %d entries; at most %d are allowed", len(u.Args), maxArgs)
		}
		for i, a := range u.Args {
			if strings.ContainsRune(a, 0) || len(a) > 4096 {
				add(fmt.Sprintf("args[%d]", i), "holds a NUL byte or is longer than 4096 bytes")
			}
		}
		if len(u.Env)+len(u.PassEnv) > maxEnv {
			add("env", "env and pass_env have %d entries; at most %d are allowed", len(u.Env)+len(u.PassEnv), maxEnv)
		}
		for k, v := range u.Env {
			if !envNamePattern.MatchString(k) {
				add("env", "%s is not a variable name: use letters, digits and '_', not starting with a digit", quote.String(k))
			}
			if strings.ContainsRune(v, 0) || len(v) > 4096 {
				add("env."+k, "holds a NUL byte or is longer than 4096 bytes")
			}
		}
		for i, k := range u.PassEnv {
			if !envNamePattern.MatchString(k) {
				add(fmt.Sprintf("pass_env[%d]", i), "%s is not a variable name: use letters, digits and '_', not starting with a digit", quote.String(k))
			}
		}
	}
	return errs
}

func (l *Limits) validate() []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &identity.FieldError{Field: "limits." + field, Msg: fmt.Sprintf(format, args...)})
	}
	if l.MaxBodyBytes == 0 {
		l.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if l.MaxSessions == 0 {
		l.MaxSessions = DefaultMaxSessions
	}
	if l.CallTimeout == 0 {
		l.CallTimeout = DefaultCallTimeout
	}
	if l.SessionIdleTimeout == 0 {
		l.SessionIdleTimeout = DefaultSessionIdleTimeout
	}
	if l.MaxBodyBytes < 1024 || l.MaxBodyBytes > MaxMaxBodyBytes {
		add("max_body_bytes", "%d is out of range: from 1024 to %d", l.MaxBodyBytes, MaxMaxBodyBytes)
	}
	if l.MaxSessions < 1 || l.MaxSessions > MaxMaxSessions {
		add("max_sessions", "%d is out of range: from 1 to %d", l.MaxSessions, MaxMaxSessions)
	}
	if l.CallTimeout < time.Second || l.CallTimeout > MaxCallTimeout {
		add("call_timeout", "%s is out of range: from 1s to %s", l.CallTimeout, MaxCallTimeout)
	}
	if l.SessionIdleTimeout < time.Second || l.SessionIdleTimeout > MaxSessionIdleTimeout {
		add("session_idle_timeout", "%s is out of range: from 1s to %s", l.SessionIdleTimeout, MaxSessionIdleTimeout)
	}
	return errs
}

// checkPublicURL allows https URLs with a path prefix and nothing after it:
// the endpoints are built by appending "/<name>".
func checkPublicURL(s string) string {
	if msg := checkHTTPSURL(s); msg != "" {
		return msg
	}
	u, _ := url.Parse(s)
	if u.RawQuery != "" || u.ForceQuery || strings.HasSuffix(u.Path, "/") || strings.Contains(u.Path, "//") || u.RawPath != "" {
		return fmt.Sprintf("%s must be a base URL without query or trailing slash, e.g. \"https://gateway.example.com:8443/mcp\"", quote.String(s))
	}
	return ""
}

func checkHTTPSURL(s string) string {
	if s == "" {
		return "is empty: give an https URL"
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" || u.Opaque != "" {
		return fmt.Sprintf("%s is not an https URL with a host (no user info, no fragment)", quote.String(s))
	}
	return ""
}

// checkUpstreamURL allows plain http to a loopback address only: the
// gateway forwards tool arguments, which must not cross a network in clear.
func checkUpstreamURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" || u.Opaque != "" {
		return fmt.Sprintf("%s is not an http(s) URL with a host (no user info, no fragment)", quote.String(s))
	}
	switch u.Scheme {
	case "https":
		return ""
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
			return ""
		}
		return fmt.Sprintf("%s uses http to a host that is not loopback: use https", quote.String(s))
	}
	return fmt.Sprintf("%s is not an http(s) URL", quote.String(s))
}

// endpointPath is where upstream name is served, below the public URL's
// path.
func (c *Config) endpointPath(name string) string {
	u, _ := url.Parse(c.PublicURL)
	return u.Path + "/" + name
}

// endpointURL is the resource identifier of upstream name's endpoint.
func (c *Config) endpointURL(name string) string { return c.PublicURL + "/" + name }

// metadataURL is where RFC 9728 §3.1 puts the metadata of the resource
// at path: the well-known segment goes between the host and the path.
func (c *Config) metadataURL(path string) string {
	u, _ := url.Parse(c.PublicURL)
	return u.Scheme + "://" + u.Host + wellKnown + path
}

const wellKnown = "/.well-known/oauth-protected-resource"
