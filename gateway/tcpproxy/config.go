package tcpproxy

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"writ.dev/writ/internal/quote"
	"writ.dev/writ/task"
)

// Defaults for a listener's limits.
const (
	DefaultAction           = "connect"
	DefaultMaxConnections   = 1024
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultIdleTimeout      = 15 * time.Minute
	DefaultDialTimeout      = 10 * time.Second
	// maxConnections bounds max_connections: each connection is two
	// goroutines and two buffers.
	maxConnections = 1_000_000
)

// Config is one TCP listener of the gateway, as the gateway's config file
// gives it under `tcp:`.
type Config struct {
	// Name names the listener in logs; the resource when empty.
	Name string `yaml:"name"`
	// Listen is the address callers connect to with mTLS (host:port).
	Listen string `yaml:"listen"`
	// Upstream is the address of the protected service (host:port),
	// reached in plain TCP from the gateway.
	Upstream string `yaml:"upstream"`
	// Resource is what a connection asks for, e.g. tcp/orders-db.
	Resource string `yaml:"resource"`
	// Action is what a connection asks to do; "connect" when empty.
	Action string `yaml:"action"`
	// MaxConnections bounds the connections open at once; more are
	// closed on accept. 0 means DefaultMaxConnections.
	MaxConnections int `yaml:"max_connections"`
	// HandshakeTimeout bounds the TLS handshake; IdleTimeout closes a
	// connection with no traffic either way for that long; DialTimeout
	// bounds reaching the upstream. 0 means the default.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	IdleTimeout      time.Duration `yaml:"idle_timeout"`
	DialTimeout      time.Duration `yaml:"dial_timeout"`
}

// Defaults fills what was left out.
func (c *Config) Defaults() {
	if c.Action == "" {
		c.Action = DefaultAction
	}
	if c.Name == "" {
		c.Name = c.Resource
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
}

// Validate says everything wrong with the listener, each naming its field.
// Call Defaults first.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if err := checkAddress(c.Listen); err != nil {
		bad("listen", "%v", err)
	}
	if err := checkAddress(c.Upstream); err != nil {
		bad("upstream", "%v", err)
	} else if host, _, _ := net.SplitHostPort(c.Upstream); host == "" {
		bad("upstream", "%s names no host: give host:port of the protected service", quote.String(c.Upstream))
	}
	if c.Resource == "" {
		bad("resource", "is required: the resource a connection asks for, such as tcp/orders-db")
	} else if err := task.CheckResourceName(c.Resource); err != nil {
		bad("resource", "%v", err)
	} else if strings.Contains(c.Resource, "*") {
		bad("resource", "%s is a pattern: a connection asks for one resource, such as tcp/orders-db", quote.String(c.Resource))
	}
	if err := task.CheckAction(c.Action); err != nil {
		bad("action", "%v", err)
	}
	if c.MaxConnections < 1 || c.MaxConnections > maxConnections {
		bad("max_connections", "%d is out of range: 1 to %d", c.MaxConnections, maxConnections)
	}
	for _, d := range []struct {
		field     string
		v, lo, hi time.Duration
	}{
		{"handshake_timeout", c.HandshakeTimeout, 100 * time.Millisecond, time.Minute},
		{"idle_timeout", c.IdleTimeout, time.Second, 7 * 24 * time.Hour},
		{"dial_timeout", c.DialTimeout, 100 * time.Millisecond, time.Minute},
	} {
		if d.v < d.lo || d.v > d.hi {
			bad(d.field, "%s is out of range: %s to %s (write it with a unit, like 10s)", d.v, d.lo, d.hi)
		}
	}
	if len(c.Name) > 64 {
		bad("name", "%d bytes is too long: at most 64", len(c.Name))
	}
	return errors.Join(errs...)
}

func checkAddress(addr string) error {
	if addr == "" {
		return errors.New("is required: host:port")
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s is not host:port", quote.String(addr))
	}
	if port == "" {
		return fmt.Errorf("%s names no port", quote.String(addr))
	}
	return nil
}
