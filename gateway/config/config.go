// Package config reads the gateway's configuration file: where the writ
// server is, where the gateway's own identity comes from, and the
// listeners it serves. Decoding is strict: an unknown key is an error
// naming it, and every error names the field it is about.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"go.yaml.in/yaml/v3"

	"writ.dev/writ/gateway/httpproxy"
	"writ.dev/writ/gateway/mcpproxy"
	"writ.dev/writ/gateway/tcpproxy"
	"writ.dev/writ/internal/quote"
)

const (
	// MaxBytes bounds the file: a gateway with hundreds of listeners
	// fits many times over.
	MaxBytes = 1 << 20
	// MaxListeners bounds the listeners of one gateway.
	MaxListeners = 256
	// maxErrorBytes bounds a decoder error, which may quote the file.
	maxErrorBytes = 300
)

// Config is the whole file.
type Config struct {
	// Server is the writ server's remote API (host:port), reached over
	// mTLS with the gateway's own X.509-SVID.
	Server string `yaml:"server"`
	// WorkloadAPI is the SPIFFE Workload API socket the gateway's
	// identity comes from (unix:///path or tcp://host:port); empty means
	// $SPIFFE_ENDPOINT_SOCKET.
	WorkloadAPI string `yaml:"workload_api"`
	// CacheSize bounds the decision cache; 0 means the default, -1 turns
	// it off.
	CacheSize int `yaml:"cache_size"`
	// MetricsAddress serves Prometheus metrics at /metrics over plain
	// HTTP (host:port); empty, the default, serves none.
	MetricsAddress string `yaml:"metrics_address"`
	Log            Log    `yaml:"log"`
	// Listeners are what the gateway serves, each of one kind.
	Listeners []Listener `yaml:"listeners"`
}

// Log is how the gateway logs.
type Log struct {
	// Level is debug, info, warn or error; Format text or json.
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Listener is one front end: exactly one of its kinds is set.
type Listener struct {
	// TCP is a TCP proxy with mTLS in front (databases, SSH).
	TCP *tcpproxy.Config `yaml:"tcp"`
	// HTTP is an HTTP reverse proxy deciding every request.
	HTTP *HTTPListener `yaml:"http"`
	// MCP serves MCP endpoints deciding every tool call.
	MCP *MCPListener `yaml:"mcp"`
}

// HTTPListener is an HTTP front end: where it listens, and the front
// end's own settings beside those keys.
type HTTPListener struct {
	// Name names the listener in logs; the audience when empty.
	Name string `yaml:"name"`
	// Listen is the address callers connect to with mTLS (host:port).
	Listen           string `yaml:"listen"`
	httpproxy.Config `yaml:",inline"`
}

// MCPListener is an MCP front end: where it listens, and the front end's
// own settings beside those keys. public_url is what callers are told;
// listen is where the gateway accepts them, which differs behind a load
// balancer.
type MCPListener struct {
	// Name names the listener in logs; "mcp" when empty.
	Name            string `yaml:"name"`
	Listen          string `yaml:"listen"`
	mcpproxy.Config `yaml:",inline"`
}

// kinds lists the kinds a listener may be, for errors.
const kinds = "tcp, http or mcp"

// Parse decodes and validates a config file.
func Parse(data []byte) (*Config, error) {
	if len(data) > MaxBytes {
		return nil, fmt.Errorf("config: %d bytes is larger than %d: is this the right file?", len(data), MaxBytes)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("config: the file is empty: give at least server and listeners")
		}
		return nil, fmt.Errorf("config: %s", bounded(err.Error()))
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("config: the file holds more than one YAML document: give one")
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Read reads and parses the file at r.
func Read(r io.Reader) (*Config, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data)
}

func bounded(s string) string {
	if len(s) <= maxErrorBytes {
		return s
	}
	return strings.ToValidUTF8(s[:maxErrorBytes], "") + "…"
}

// Defaults fills what was left out.
func (c *Config) Defaults() {
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		if l.TCP != nil {
			l.TCP.Defaults()
		}
		if l.HTTP != nil {
			l.HTTP.Defaults()
			if l.HTTP.Name == "" {
				l.HTTP.Name = l.HTTP.Audience
			}
		}
		if l.MCP != nil && l.MCP.Name == "" {
			l.MCP.Name = "mcp"
		}
	}
}

// Validate says everything wrong, each error naming its field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field string, err error) { errs = append(errs, fmt.Errorf("%s: %w", field, err)) }
	if c.Server == "" {
		bad("server", errors.New("is required: the writ server's remote API, host:port"))
	} else if host, port, err := net.SplitHostPort(c.Server); err != nil || host == "" || port == "" {
		bad("server", fmt.Errorf("%s is not host:port", quote.String(c.Server)))
	}
	if c.WorkloadAPI != "" && !strings.HasPrefix(c.WorkloadAPI, "unix://") && !strings.HasPrefix(c.WorkloadAPI, "tcp://") {
		bad("workload_api", fmt.Errorf("%s is not a socket address: use unix:///path/to/agent.sock or tcp://host:port", quote.String(c.WorkloadAPI)))
	}
	if c.CacheSize < -1 || c.CacheSize > 10_000_000 {
		bad("cache_size", fmt.Errorf("%d is out of range: -1 (off), 0 (default) or up to 10000000", c.CacheSize))
	}
	if c.MetricsAddress != "" {
		if _, port, err := net.SplitHostPort(c.MetricsAddress); err != nil || port == "" {
			bad("metrics_address", fmt.Errorf("%s is not host:port: give e.g. 127.0.0.1:9090, or leave it out to serve no metrics", quote.String(c.MetricsAddress)))
		}
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", fmt.Errorf("%s is not a level: use debug, info, warn or error", quote.String(c.Log.Level)))
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format", fmt.Errorf("%s is not a format: use text or json", quote.String(c.Log.Format)))
	}
	switch n := len(c.Listeners); {
	case n == 0:
		bad("listeners", errors.New("none given: add at least one, such as {tcp: {listen, upstream, resource}}"))
	case n > MaxListeners:
		bad("listeners", fmt.Errorf("%d is more than the %d one gateway serves: run another gateway", n, MaxListeners))
	}
	addrs := map[string]string{}
	names := map[string]string{}
	for i, l := range c.Listeners {
		if i >= MaxListeners {
			break
		}
		field := fmt.Sprintf("listeners[%d]", i)
		var name, listen string
		var err error
		switch n := l.kinds(); {
		case n == 0:
			bad(field, fmt.Errorf("give one kind of listener: %s", kinds))
			continue
		case n > 1:
			bad(field, fmt.Errorf("has more than one kind of listener: give one of %s per entry", kinds))
			continue
		case l.TCP != nil:
			field += ".tcp"
			name, listen, err = l.TCP.Name, l.TCP.Listen, l.TCP.Validate()
		case l.HTTP != nil:
			field += ".http"
			name, listen, err = l.HTTP.Name, l.HTTP.Listen, l.HTTP.validate()
		case l.MCP != nil:
			field += ".mcp"
			name, listen, err = l.MCP.Name, l.MCP.Listen, l.MCP.validate()
		}
		if err != nil {
			for _, e := range unjoin(err) {
				// e names its field within the listener.
				errs = append(errs, fmt.Errorf("%s.%w", field, e))
			}
			continue
		}
		if listen == c.MetricsAddress {
			bad(field+".listen", fmt.Errorf("%s is also metrics_address: give each its own", quote.String(listen)))
		}
		if prev, dup := addrs[listen]; dup {
			bad(field+".listen", fmt.Errorf("%s is also %s's address: give each listener its own", quote.String(listen), prev))
		}
		addrs[listen] = field
		if prev, dup := names[name]; dup {
			bad(field+".name", fmt.Errorf("%s is also %s's name: name each listener apart (name: …)", quote.String(name), prev))
		}
		names[name] = field
	}
	return errors.Join(errs...)
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func (l Listener) kinds() int {
	n := 0
	for _, set := range []bool{l.TCP != nil, l.HTTP != nil, l.MCP != nil} {
		if set {
			n++
		}
	}
	return n
}

// validate checks the listener's own keys and then the front end's, each
// error naming its key within the listener.
func (h *HTTPListener) validate() error {
	var errs []error
	errs = append(errs, checkCommon(h.Name, h.Listen)...)
	if err := h.Config.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// validate fills the MCP front end's default limits, as its Validate
// does, so the gateway serves what was checked.
func (m *MCPListener) validate() error {
	var errs []error
	errs = append(errs, checkCommon(m.Name, m.Listen)...)
	if err := m.Config.Validate(); err != nil {
		errs = append(errs, unjoin(err)...)
	}
	return errors.Join(errs...)
}

func checkCommon(name, listen string) []error {
	var errs []error
	if listen == "" {
		errs = append(errs, errors.New("listen: is required: the host:port callers connect to with mTLS"))
	} else if _, port, err := net.SplitHostPort(listen); err != nil || port == "" {
		errs = append(errs, fmt.Errorf("listen: %s is not host:port", quote.String(listen)))
	}
	if len(name) > 64 {
		errs = append(errs, fmt.Errorf("name: %d bytes is too long: at most 64", len(name)))
	}
	return errs
}
