package httpproxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.yaml.in/yaml/v3"

	"writ.dev/writ/internal/quote"
)

// Config is one HTTP front end: where requests go and how each is named
// for a decision. It is a section of the gateway's configuration file.
type Config struct {
	// Upstream is the URL requests are forwarded to: scheme, host and
	// port only ("http://127.0.0.1:8080"), since the path a caller asks
	// for is the path the upstream receives and the signed header names.
	Upstream string `yaml:"upstream"`
	// UpstreamID, when set, is the SPIFFE ID the upstream must present;
	// the gateway then connects with mTLS using its own X.509-SVID, and
	// Upstream must be https.
	UpstreamID string `yaml:"upstream_id,omitempty"`
	// Audience names the upstream in the Writ-Caller header ("aud"), so a
	// header made for one upstream is refused by another.
	Audience string `yaml:"audience"`
	// Actions maps methods to actions over DefaultActions; an empty action
	// removes a method, so requests with it are refused.
	Actions map[string]string `yaml:"actions,omitempty"`
	// Routes map paths to resources; the first route that matches decides.
	// A request no route matches is refused with 404.
	Routes []Route `yaml:"routes"`
	Limits Limits  `yaml:"limits,omitempty"`
}

// Limits bound what one caller can make the front end hold.
type Limits struct {
	// MaxHeaderBytes caps a request's headers.
	MaxHeaderBytes int `yaml:"max_header_bytes,omitempty"`
	// MaxBodyBytes caps a request's body; a larger one is refused with 413
	// before anything is forwarded, or cut when it is streamed.
	MaxBodyBytes int64 `yaml:"max_body_bytes,omitempty"`
	// ReadHeaderTimeout bounds the TLS handshake and the request headers.
	ReadHeaderTimeout Duration `yaml:"read_header_timeout,omitempty"`
	// IdleTimeout closes a keep-alive connection with no request.
	IdleTimeout Duration `yaml:"idle_timeout,omitempty"`
	// UpstreamTimeout bounds the wait for the upstream's response headers.
	// The body has no time limit, so streams and downloads last as long as
	// the decision holds.
	UpstreamTimeout Duration `yaml:"upstream_timeout,omitempty"`
	// CallerHeaderTTL is how long a Writ-Caller header is valid: long
	// enough for clock skew, short enough that a copied header is soon
	// useless.
	CallerHeaderTTL Duration `yaml:"caller_header_ttl,omitempty"`
}

// Defaults of Limits.
const (
	DefaultMaxHeaderBytes    = 16 << 10
	DefaultMaxBodyBytes      = 10 << 20
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultUpstreamTimeout   = 30 * time.Second
	DefaultCallerHeaderTTL   = 60 * time.Second
	// MaxCallerHeaderTTL keeps a leaked header short-lived whatever the
	// configuration says.
	MaxCallerHeaderTTL = 5 * time.Minute
)

// maxConfigBytes bounds a configuration file read by ParseConfig.
const maxConfigBytes = 1 << 20

// ParseConfig reads a Config from YAML, refusing unknown fields so a
// misspelt setting is an error rather than silently left at its default.
// It does not validate; call Validate.
func ParseConfig(r io.Reader) (Config, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxConfigBytes+1))
	if err != nil {
		return Config{}, err
	}
	if len(data) > maxConfigBytes {
		return Config{}, fmt.Errorf("configuration is larger than %d bytes", maxConfigBytes)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("http proxy configuration: %w", err)
	}
	return c, nil
}

// Defaults fills the limits left unset.
func (c *Config) Defaults() {
	l := &c.Limits
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxBodyBytes == 0 {
		l.MaxBodyBytes = DefaultMaxBodyBytes
	}
	for _, d := range []struct {
		v   *Duration
		def time.Duration
	}{
		{&l.ReadHeaderTimeout, DefaultReadHeaderTimeout},
		{&l.IdleTimeout, DefaultIdleTimeout},
		{&l.UpstreamTimeout, DefaultUpstreamTimeout},
		{&l.CallerHeaderTTL, DefaultCallerHeaderTTL},
	} {
		if d.v.Duration == 0 {
			d.v.Duration = d.def
		}
	}
}

// Validate checks c, naming the field at fault. Limits left at zero are
// checked as their defaults, so Defaults need not come first.
func (c *Config) Validate() error {
	d := *c
	d.Defaults()
	_, err := d.compile()
	return err
}

// compiled is what a valid Config becomes.
type compiled struct {
	upstream   *url.URL
	upstreamID spiffeid.ID
	mapper     *mapper
}

func (c *Config) compile() (compiled, error) {
	var out compiled
	if c.Upstream == "" {
		return out, errors.New("upstream: not set; give the URL to forward to, e.g. http://127.0.0.1:8080")
	}
	u, err := url.Parse(c.Upstream)
	switch {
	case err != nil:
		return out, fmt.Errorf("upstream: %s is not a URL; give e.g. http://127.0.0.1:8080", quote.String(c.Upstream))
	case u.Scheme != "http" && u.Scheme != "https":
		return out, fmt.Errorf("upstream: %s: the scheme must be http or https", quote.String(c.Upstream))
	case u.Host == "" || u.Hostname() == "":
		return out, fmt.Errorf("upstream: %s has no host", quote.String(c.Upstream))
	case u.User != nil:
		return out, errors.New("upstream: the URL carries credentials; the gateway authenticates to upstreams with its SVID (upstream_id), never with a static secret")
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return out, fmt.Errorf("upstream: %s has a path, query or fragment; give scheme, host and port only, since callers' paths are forwarded as they are", quote.String(c.Upstream))
	}
	out.upstream = &url.URL{Scheme: u.Scheme, Host: u.Host}
	if c.UpstreamID != "" {
		id, err := spiffeid.FromString(c.UpstreamID)
		if err != nil {
			return out, fmt.Errorf("upstream_id: %s is not a SPIFFE ID (%v); give e.g. spiffe://example.org/orders-api", quote.String(c.UpstreamID), err)
		}
		if u.Scheme != "https" {
			return out, errors.New("upstream_id: set, but upstream is http; mTLS to the upstream needs an https URL")
		}
		out.upstreamID = id
	}
	if err := checkAudience(c.Audience); err != nil {
		return out, fmt.Errorf("audience: %w", err)
	}
	if out.mapper, err = compileMapping(c.Actions, c.Routes); err != nil {
		return out, err
	}
	l := c.Limits
	switch {
	case l.MaxHeaderBytes < 1024 || l.MaxHeaderBytes > 1<<20:
		return out, fmt.Errorf("limits.max_header_bytes: %d; give 1024 to 1048576 bytes", l.MaxHeaderBytes)
	case l.MaxBodyBytes < 0:
		return out, fmt.Errorf("limits.max_body_bytes: %d is negative", l.MaxBodyBytes)
	case l.ReadHeaderTimeout.Duration <= 0:
		return out, errors.New("limits.read_header_timeout: must be positive")
	case l.IdleTimeout.Duration <= 0:
		return out, errors.New("limits.idle_timeout: must be positive")
	case l.UpstreamTimeout.Duration <= 0:
		return out, errors.New("limits.upstream_timeout: must be positive")
	case l.CallerHeaderTTL.Duration < time.Second || l.CallerHeaderTTL.Duration > MaxCallerHeaderTTL:
		return out, fmt.Errorf("limits.caller_header_ttl: %s; give 1s to %s", l.CallerHeaderTTL.Duration, MaxCallerHeaderTTL)
	}
	return out, nil
}

// checkAudience keeps the audience a plain name the upstream can compare.
func checkAudience(aud string) error {
	if aud == "" || len(aud) > 255 {
		return errors.New("give 1 to 255 characters naming the upstream, e.g. orders-api or its SPIFFE ID")
	}
	for i := 0; i < len(aud); i++ {
		if c := aud[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("%s holds a space, control or non-ASCII character", quote.String(aud))
		}
	}
	return nil
}

// Duration reads "30s", "2m" or a number of seconds from YAML.
type Duration struct{ time.Duration }

// UnmarshalYAML accepts a Go duration string or whole seconds.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var secs int64
	if n.Decode(&secs) == nil {
		if secs < 0 || secs > int64(24*time.Hour/time.Second) {
			return fmt.Errorf("line %d: %d seconds is out of range", n.Line, secs)
		}
		d.Duration = time.Duration(secs) * time.Second
		return nil
	}
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: not a duration; write e.g. 30s or 2m", n.Line)
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %s is not a duration; write e.g. 30s or 2m", n.Line, quote.String(s))
	}
	d.Duration = v
	return nil
}

// MarshalYAML writes the duration as Go prints it.
func (d Duration) MarshalYAML() (any, error) { return d.Duration.String(), nil }
