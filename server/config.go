package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.yaml.in/yaml/v3"

	"writ.dev/writ/ca"
	"writ.dev/writ/identity"
	"writ.dev/writ/keystore"
)

// Defaults of settings other code refers to.
const (
	DefaultMaxClockSkew       = 30 * time.Second
	MaxMaxClockSkew           = 5 * time.Minute
	DefaultCheckpointEvents   = 1000
	DefaultCheckpointInterval = 10 * time.Second
)

// DefaultTrustDomain is fit for a first run only; the server logs a warning
// when it is used, because trust domain names cannot be changed later without
// re-issuing every identity.
const DefaultTrustDomain = "example.org"

// Config is everything the server needs. The zero value plus a data dir is a
// working configuration once Defaults has run.
type Config struct {
	// TrustDomain is the SPIFFE trust domain this server issues identities in.
	TrustDomain string `yaml:"trust_domain"`
	// DataDir holds the embedded store, the CA keys and the admin socket.
	DataDir string `yaml:"data_dir"`
	// ServerID distinguishes servers sharing one store. Empty: generated once
	// and kept in DATA_DIR/server-id.
	ServerID string `yaml:"server_id"`
	// ListenAddress serves the gRPC API to remote callers over mTLS with
	// SVIDs. Empty disables it.
	ListenAddress string `yaml:"listen_address"`
	// AdminSocket is the local unix socket for administration, authorized by
	// the caller's peer credentials.
	AdminSocket string `yaml:"admin_socket"`
	// AdminUIDs may administer the server over AdminSocket. Empty: root and
	// the server's own uid.
	AdminUIDs []int `yaml:"admin_uids"`
	// OpsAddress serves /metrics, /healthz and /readyz over plain HTTP.
	// Empty disables it.
	OpsAddress string `yaml:"ops_address"`
	// OIDCAddress serves OIDC discovery (/.well-known/openid-configuration)
	// and the JWKS (/keys) over plain HTTP, for cloud IAMs that federate
	// with JWT-SVIDs; put TLS in front of it. Empty disables it.
	OIDCAddress string `yaml:"oidc_address"`
	// OIDCIssuer is the issuer discovery names and JWT-SVIDs carry in
	// "iss" while OIDC is enabled. Empty: https://OIDC_ADDRESS.
	OIDCIssuer string `yaml:"oidc_issuer"`

	// MaxClockSkew is how far this server's clock may be from the store's
	// (the reference all servers sharing it agree on). Within it, SVIDs
	// issued by one server verify on the others, since validity is
	// backdated by ca.ClockSkew. Beyond it the server reports not ready and
	// refuses to issue until the clocks agree again.
	MaxClockSkew Duration `yaml:"max_clock_skew"`

	Store           StoreConfig           `yaml:"store"`
	Audit           AuditConfig           `yaml:"audit"`
	NodeAttestation NodeAttestationConfig `yaml:"node_attestation"`
	People          PeopleConfig          `yaml:"people"`
	Guardrails      GuardrailsConfig      `yaml:"guardrails"`
	TokenEndpoint   TokenEndpointConfig   `yaml:"token_endpoint"`
	Console         ConsoleConfig         `yaml:"console"`
	CA              CAConfig              `yaml:"ca"`
	SVID            SVIDConfig            `yaml:"svid"`
	Bundle          BundleConfig          `yaml:"bundle"`
	BundleEndpoint  BundleEndpointConfig  `yaml:"bundle_endpoint"`
	Limits          LimitsConfig          `yaml:"limits"`
	Log             LogConfig             `yaml:"log"`
	// Webhooks receive signed events of access requests (server/webhooks.go).
	Webhooks []WebhookConfig `yaml:"webhooks"`
}

// AuditConfig sets how sparse the trail of old checkpoints is. Every
// commit that appends audit events carries its own signed checkpoint, which
// the next commit's supersedes; one after CheckpointEvents new events or
// CheckpointInterval, whichever comes first, is kept for good, so an
// outside verifier can bracket damage between kept checkpoints.
type AuditConfig struct {
	CheckpointEvents   int64    `yaml:"checkpoint_events"`
	CheckpointInterval Duration `yaml:"checkpoint_interval"`
}

// BundleConfig shapes the SPIFFE bundle document.
type BundleConfig struct {
	// RefreshHint tells federated trust domains how often to fetch the
	// bundle again (spiffe_refresh_hint). It must be well inside the CA
	// lifetime so that a successor authority reaches them before it signs
	// much; see Validate.
	RefreshHint Duration `yaml:"refresh_hint"`
}

// Bundle endpoint profiles, as the SPIFFE federation spec names them.
const (
	// ProfileHTTPSSPIFFE authenticates the endpoint with the server's own
	// X.509-SVID; the fetching side needs a bundle of this trust domain.
	ProfileHTTPSSPIFFE = "https_spiffe"
	// ProfileHTTPSWeb authenticates the endpoint with a Web PKI certificate.
	ProfileHTTPSWeb = "https_web"
)

// BundleEndpointConfig is the listener other trust domains fetch the
// bundle from.
type BundleEndpointConfig struct {
	// Address serves the SPIFFE bundle document at GET /. Empty disables it.
	Address string `yaml:"address"`
	// Profile is https_spiffe (default) or https_web.
	Profile string `yaml:"profile"`
	// CertFile and KeyFile are PEM files for https_web: the certificate
	// chain (leaf first) and its private key. The key file must not be
	// readable by group or others.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// StoreConfig selects the storage engine.
type StoreConfig struct {
	// Engine is "sqlite" (embedded, the default) or "postgres" (several
	// servers sharing one trust domain).
	Engine string `yaml:"engine"`
	// DSN: for sqlite a file path (default DATA_DIR/writ.db); for postgres a
	// connection URL. Use certificate or peer authentication rather than a
	// password in it.
	DSN string `yaml:"dsn"`
}

// CAConfig shapes the X.509 authority.
type CAConfig struct {
	KeyType      string   `yaml:"key_type"`
	TTL          Duration `yaml:"ttl"`
	Organization string   `yaml:"organization"`
	CommonName   string   `yaml:"common_name"`
	// Upstream puts the authority under a company's PKI.
	Upstream UpstreamConfig `yaml:"upstream"`
}

// UpstreamConfig names the PEM files of an upstream CA. All three or none:
// with them the server's CA is an intermediate signed by the upstream key
// and the trust bundle is the upstream roots.
type UpstreamConfig struct {
	// CertFile is the upstream signing CA certificate, optionally followed
	// by its chain up to but excluding the root.
	CertFile string `yaml:"cert_file"`
	// KeyFile is CertFile's private key; mode 0600 or stricter.
	KeyFile string `yaml:"key_file"`
	// BundleFile holds the root certificates of the upstream PKI.
	BundleFile string `yaml:"bundle_file"`
}

// Enabled reports whether any upstream file is named; Validate requires
// all three then.
func (u UpstreamConfig) Enabled() bool {
	return u.CertFile != "" || u.KeyFile != "" || u.BundleFile != ""
}

func (u UpstreamConfig) validate() []error {
	if !u.Enabled() {
		return nil
	}
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("ca.upstream.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	for _, f := range []struct{ key, path, what string }{
		{"cert_file", u.CertFile, "the PEM certificate of the upstream signing CA, optionally followed by its chain"},
		{"key_file", u.KeyFile, "the PEM private key of ca.upstream.cert_file"},
		{"bundle_file", u.BundleFile, "the PEM root certificates of the upstream PKI"},
	} {
		switch {
		case f.path == "":
			add(f.key, "is required when any ca.upstream file is set: %s (set all three of cert_file, key_file and bundle_file, or none)", f.what)
		case f.key == "key_file":
			if err := checkPrivateKeyFile(f.path); err != nil {
				add(f.key, "%v", err)
			}
		default:
			if _, err := os.Stat(f.path); err != nil {
				add(f.key, "%v", err)
			}
		}
	}
	return errs
}

// SVIDConfig sets SVID lifetimes.
type SVIDConfig struct {
	// X509TTL is used when a rule or request names none.
	X509TTL Duration `yaml:"x509_ttl"`
	// MaxX509TTL caps every X.509-SVID, including `writ svid mint`.
	MaxX509TTL Duration `yaml:"max_x509_ttl"`
	JWTTTL     Duration `yaml:"jwt_ttl"`
	MaxJWTTTL  Duration `yaml:"max_jwt_ttl"`
}

// RateLimit is a token bucket: Burst at once, then Rate per second.
type RateLimit struct {
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
}

// Defaults of the limits.
var (
	DefaultIssuancePerIdentity      = RateLimit{Rate: 50, Burst: 100}
	DefaultUnauthenticatedPerSource = RateLimit{Rate: 20, Burst: 50}
	DefaultRequestsPerIdentity      = RateLimit{Rate: 200, Burst: 400}
)

// DefaultRefusalSummaryInterval is how long unauthenticated refusals from
// one source are counted into one summary event.
const DefaultRefusalSummaryInterval = 10 * time.Second

func (l *RateLimit) defaults(d RateLimit) {
	if l.Rate == 0 {
		l.Rate = d.Rate
	}
	if l.Burst == 0 {
		l.Burst = max(d.Burst, int(l.Rate))
	}
}

func (l RateLimit) validate(field string) []error {
	var errs []error
	if !(l.Rate > 0 && l.Rate <= 1e6) {
		errs = append(errs, fmt.Errorf("%s.rate: %g is out of range: more than 0 and at most 1000000 per second", field, l.Rate))
	}
	if l.Burst < 1 || l.Burst > 1_000_000 {
		errs = append(errs, fmt.Errorf("%s.burst: %d is out of range: 1 to 1000000", field, l.Burst))
	}
	return errs
}

// LogConfig sets up slog.
type LogConfig struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is text or json.
	Format string `yaml:"format"`
}

// Duration reads "90s", "1h30m" or a bare number of seconds from YAML.
type Duration struct{ time.Duration }

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration such as 90s or 1h", n.Line)
	}
	v, err := identity.ParseTTL("duration", n.Value, 0)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration: use a positive whole number of seconds or a Go duration such as 90s or 1h", n.Line, n.Value)
	}
	d.Duration = v
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// LoadConfig reads a YAML config file strictly: unknown keys are errors.
func LoadConfig(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	return ParseConfig(f)
}

// DefaultConfig holds the defaults that a config file may override,
// including with "" to disable a listener.
func DefaultConfig() Config {
	return Config{
		ListenAddress: "0.0.0.0:8081",
		OpsAddress:    "127.0.0.1:8082",
	}
}

// ParseConfig decodes YAML config strictly over DefaultConfig. Settings that
// depend on others (paths under data_dir) are filled by Defaults.
func ParseConfig(r io.Reader) (Config, error) {
	data, err := io.ReadAll(io.LimitReader(r, 1<<20+1))
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if len(data) > 1<<20 {
		return Config{}, errors.New("config: file is larger than 1 MiB")
	}
	c := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return c, nil
}

// Defaults fills unset fields. DataDir must be set first.
func (c *Config) Defaults() {
	if c.TrustDomain == "" {
		c.TrustDomain = DefaultTrustDomain
	}
	if c.AdminSocket == "" && c.DataDir != "" {
		c.AdminSocket = filepath.Join(c.DataDir, "admin.sock")
	}
	if len(c.AdminUIDs) == 0 {
		c.AdminUIDs = []int{0}
		if uid := os.Getuid(); uid != 0 {
			c.AdminUIDs = append(c.AdminUIDs, uid)
		}
	}
	if c.Store.Engine == "" {
		c.Store.Engine = "sqlite"
	}
	if c.Store.Engine == "sqlite" && c.Store.DSN == "" && c.DataDir != "" {
		c.Store.DSN = filepath.Join(c.DataDir, "writ.db")
	}
	if c.OIDCAddress != "" && c.OIDCIssuer == "" {
		c.OIDCIssuer = "https://" + c.OIDCAddress
	}
	if c.CA.KeyType == "" {
		c.CA.KeyType = string(keystore.ECP256)
	}
	if c.CA.Organization == "" {
		c.CA.Organization = "writ"
	}
	if c.CA.CommonName == "" {
		c.CA.CommonName = "writ CA " + c.TrustDomain
	}
	setDuration(&c.CA.TTL, 24*time.Hour)
	// An SVID may live at most a sixth of its authority's life: the
	// successor is activated when a sixth is left, so everything the old
	// authority signed has expired by the time it leaves the bundle.
	sixth := c.CA.TTL.Duration / 6
	setDuration(&c.SVID.MaxX509TTL, sixth)
	setDuration(&c.SVID.X509TTL, min(time.Hour, c.SVID.MaxX509TTL.Duration))
	setDuration(&c.SVID.MaxJWTTTL, min(time.Hour, sixth))
	setDuration(&c.SVID.JWTTTL, min(5*time.Minute, c.SVID.MaxJWTTTL.Duration))
	setDuration(&c.MaxClockSkew, DefaultMaxClockSkew)
	setDuration(&c.TokenEndpoint.MaxTTL, 5*time.Minute)
	if c.TokenEndpoint.Address != "" && c.TokenEndpoint.Issuer == "" {
		c.TokenEndpoint.Issuer = "https://" + c.TokenEndpoint.Address + "/token"
	}
	if c.Audit.CheckpointEvents == 0 {
		c.Audit.CheckpointEvents = DefaultCheckpointEvents
	}
	setDuration(&c.Audit.CheckpointInterval, DefaultCheckpointInterval)
	setDuration(&c.Bundle.RefreshHint, DefaultBundleRefreshHint)
	if c.BundleEndpoint.Profile == "" {
		c.BundleEndpoint.Profile = ProfileHTTPSSPIFFE
	}
	c.Limits.defaults()
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
}

func setDuration(d *Duration, v time.Duration) {
	if d.Duration == 0 {
		d.Duration = v
	}
}

// Validate checks a defaulted config; errors name the YAML key and what is allowed.
func (c *Config) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if _, err := identity.ParseTrustDomain(c.TrustDomain); err != nil {
		errs = append(errs, err)
	}
	if c.DataDir == "" {
		add("data_dir", "is required: a directory for the store, keys and admin socket")
	}
	if c.ServerID != "" && !validServerID(c.ServerID) {
		add("server_id", "%q is not allowed: use 1-64 of a-z, 0-9, '-' and '_'", c.ServerID)
	}
	if c.ListenAddress != "" {
		if _, _, err := net.SplitHostPort(c.ListenAddress); err != nil {
			add("listen_address", "%q is not host:port", c.ListenAddress)
		}
	}
	if c.OpsAddress != "" {
		if _, _, err := net.SplitHostPort(c.OpsAddress); err != nil {
			add("ops_address", "%q is not host:port", c.OpsAddress)
		}
	}
	if c.OIDCAddress != "" {
		if _, _, err := net.SplitHostPort(c.OIDCAddress); err != nil {
			add("oidc_address", "%q is not host:port", c.OIDCAddress)
		} else if _, err := ca.OIDCDiscovery(c.OIDCIssuer, jwksURL(c.OIDCIssuer)); err != nil {
			add("oidc_issuer", "%q: %v", c.OIDCIssuer, err)
		}
	} else if c.OIDCIssuer != "" {
		add("oidc_issuer", "is set but oidc_address is empty: set oidc_address to serve discovery, or remove oidc_issuer")
	}
	if c.AdminSocket == "" {
		add("admin_socket", "is required")
	} else if len(c.AdminSocket) > 100 {
		add("admin_socket", "path is %d bytes; unix sockets allow about 100: choose a shorter path", len(c.AdminSocket))
	}
	for i, uid := range c.AdminUIDs {
		if uid < 0 {
			add(fmt.Sprintf("admin_uids[%d]", i), "%d is not a uid", uid)
		}
	}
	switch c.Store.Engine {
	case "sqlite":
	case "postgres":
		if c.Store.DSN == "" {
			add("store.dsn", "is required for the postgres engine, e.g. postgres://writ@db.internal/writ?sslmode=verify-full")
		}
	default:
		add("store.engine", "%q is not supported: use sqlite or postgres", c.Store.Engine)
	}
	if _, err := keystore.ParseKeyType(c.CA.KeyType); err != nil {
		add("ca.key_type", "%v", err)
	}
	if c.CA.TTL.Duration < time.Hour {
		add("ca.ttl", "%s is too short: at least 1h", c.CA.TTL)
	}
	errs = append(errs, c.CA.Upstream.validate()...)
	for _, limit := range []struct {
		field string
		d     Duration
	}{{"svid.max_x509_ttl", c.SVID.MaxX509TTL}, {"svid.max_jwt_ttl", c.SVID.MaxJWTTTL}} {
		if limit.d.Duration > c.CA.TTL.Duration/6 {
			add(limit.field, "%s is more than a sixth of ca.ttl %s (%s): an SVID must expire before the authority that signed it leaves the bundle; lower it or raise ca.ttl",
				limit.d, c.CA.TTL, Duration{c.CA.TTL.Duration / 6})
		}
	}
	if c.MaxClockSkew.Duration < time.Second || c.MaxClockSkew.Duration > MaxMaxClockSkew {
		add("max_clock_skew", "%s is out of range: 1s to %s", c.MaxClockSkew, Duration{MaxMaxClockSkew})
	}
	if td, err := identity.ParseTrustDomain(c.TrustDomain); err == nil {
		errs = append(errs, c.NodeAttestation.validate(td)...)
		errs = append(errs, c.People.validate(td, c.SVID.MaxX509TTL.Duration)...)
		errs = append(errs, c.Console.validate(c.People)...)
	}
	if c.TokenEndpoint.MaxTTL.Duration > time.Hour {
		add("token_endpoint.max_ttl", "%s is too long: delegation tokens live at most 1h", c.TokenEndpoint.MaxTTL)
	}
	if c.Audit.CheckpointEvents < 1 {
		add("audit.checkpoint_events", "%d is out of range: at least 1", c.Audit.CheckpointEvents)
	}
	if c.Audit.CheckpointInterval.Duration < time.Second {
		add("audit.checkpoint_interval", "%s is too short: at least 1s", c.Audit.CheckpointInterval)
	}
	if c.SVID.X509TTL.Duration > c.SVID.MaxX509TTL.Duration {
		add("svid.x509_ttl", "%s exceeds svid.max_x509_ttl %s", c.SVID.X509TTL, c.SVID.MaxX509TTL)
	}
	if c.SVID.JWTTTL.Duration > c.SVID.MaxJWTTTL.Duration {
		add("svid.jwt_ttl", "%s exceeds svid.max_jwt_ttl %s", c.SVID.JWTTTL, c.SVID.MaxJWTTTL)
	}
	if c.Bundle.RefreshHint.Duration > c.CA.TTL.Duration/6 {
		add("bundle.refresh_hint", "%s is too long for ca.ttl %s: at most a sixth of it, so federated trust domains see a successor authority before it signs", c.Bundle.RefreshHint, c.CA.TTL)
	}
	errs = append(errs, c.BundleEndpoint.validate()...)
	errs = append(errs, c.Limits.validate()...)
	errs = append(errs, validateWebhooks(c.Webhooks)...)
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "%q is not a level: use debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		add("log.format", "%q is not a format: use text or json", c.Log.Format)
	}
	return errors.Join(errs...)
}

func (b *BundleEndpointConfig) validate() []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("bundle_endpoint.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if b.Address == "" {
		if b.CertFile != "" || b.KeyFile != "" {
			add("address", "is empty but cert_file or key_file is set: set address to serve the bundle, or remove them")
		}
		return errs
	}
	if _, _, err := net.SplitHostPort(b.Address); err != nil {
		add("address", "%q is not host:port", b.Address)
	}
	switch b.Profile {
	case ProfileHTTPSSPIFFE:
		if b.CertFile != "" || b.KeyFile != "" {
			add("profile", "https_spiffe serves the server's own SVID; cert_file and key_file are for https_web: remove them or set profile: https_web")
		}
	case ProfileHTTPSWeb:
		if b.CertFile == "" {
			add("cert_file", "is required for profile https_web: a PEM certificate chain, leaf first")
		}
		if b.KeyFile == "" {
			add("key_file", "is required for profile https_web: the PEM private key of cert_file")
		} else if err := checkPrivateKeyFile(b.KeyFile); err != nil {
			add("key_file", "%v", err)
		}
	default:
		add("profile", "%q is not a profile: use https_spiffe or https_web", b.Profile)
	}
	return errs
}

// checkPrivateKeyFile refuses a key that other users could read or replace:
// anyone who reads it can impersonate the bundle endpoint.
func checkPrivateKeyFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s is accessible by group or others (mode %v): chmod 600 it", path, perm)
	}
	return nil
}

func validServerID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// trustDomain returns the validated trust domain; call after Validate.
func (c *Config) trustDomain() spiffeid.TrustDomain {
	td, _ := identity.ParseTrustDomain(c.TrustDomain)
	return td
}

// ConfigReference documents every setting; `writ server --help` prints it and
// the README repeats it.
const ConfigReference = `Configuration file (YAML, --config FILE; flags override it):

  trust_domain: example.org       # SPIFFE trust domain (flag --trust-domain)
  data_dir: /var/lib/writ         # store, keys, admin socket (flag --data-dir)
  server_id: ""                   # default: generated once, kept in DATA_DIR/server-id
  listen_address: 0.0.0.0:8081    # gRPC over mTLS with SVIDs; "" disables
  admin_socket: DATA_DIR/admin.sock
  admin_uids: []                  # default: root and the server's own uid
  ops_address: 127.0.0.1:8082     # /metrics /healthz /readyz; "" disables
  oidc_address: ""                # OIDC discovery + JWKS for cloud IAMs; "" disables
  oidc_issuer: ""                 # JWT-SVID "iss" when OIDC is on; default https://OIDC_ADDRESS
  max_clock_skew: 30s             # allowed offset from the store's clock; beyond it: not ready, no issuance
  store:
    engine: sqlite                # sqlite (embedded) or postgres
    dsn: DATA_DIR/writ.db         # postgres: postgres://writ@host/writ?sslmode=verify-full
  ca:
    key_type: ec-p256             # ec-p256, ec-p384, rsa-2048, rsa-3072
    ttl: 24h                      # CA and JWT key lifetime; successor prepared at 1/2, active at 5/6
    organization: writ
    common_name: ""               # default: "writ CA <trust domain>"
    upstream:                     # under your company's PKI: all three or none
      cert_file: ""               # PEM upstream signing CA cert, then its chain (root excluded)
      key_file: ""                # PEM private key of cert_file, mode 0600 or stricter
      bundle_file: ""             # PEM roots of the upstream PKI; they become the trust bundle
  svid:
    x509_ttl: 1h                  # default X.509-SVID lifetime
    max_x509_ttl: 4h              # cap for every X.509-SVID; default and at most ca.ttl/6
    jwt_ttl: 5m                   # default JWT-SVID lifetime
    max_jwt_ttl: 1h               # cap for every JWT-SVID; at most ca.ttl/6
  node_attestation:               # joining with no secret (README: "Joining without a secret")
    oidc: []                      # trusted issuers, each: name, profile (github, gitlab, k8s, generic),
                                  #   issuer, jwks_file, audience (default: the trust domain name),
                                  #   facts (generic), allow (rules: fact: glob), node_id (template)
    x509pop:
      bundle_file: ""             # PEM CAs whose certificates may join by proof of possession; "" disables
      node_id: /node/x509pop/{{fingerprint}}
  people:                         # 'writ login' (README: "People sign in")
    issuer: ""                    # the identity provider; "" disables sign-in
    client_id: ""                 # public client the CLI signs in as (no secret)
    jwks_file: ""                 # static keys instead of discovery
    allow: []                     # who may sign in: rules over email, email_domain, email_local (the last two lowercase)
    svid_ttl: 8h                  # a person's SVID lifetime; at most svid.max_x509_ttl
  token_endpoint:                 # RFC 8693 token exchange: agents acting for people (HTTPS, mTLS with SVIDs)
    address: ""                   # host:port; "" disables
    issuer: ""                    # "iss" of delegation tokens, the same on every server; default https://ADDRESS/token
    max_ttl: 5m                   # delegation token lifetime; at most 1h
  console:                        # web console for people (README: "Web console"), HTTPS with the server's SVID
    address: ""                   # host:port; "" disables; needs people
    public_url: ""                # https://HOST[:PORT] browsers use; default https://ADDRESS;
                                  #   register PUBLIC_URL/callback as a redirect URI of people.client_id
    audit_keys: ""                # key bundle from 'writ audit keys' the audit page verifies the log with
    idle_timeout: 30m             # a session unused this long ends
    session_ttl: 8h               # a session this old ends; default and at most people.svid_ttl
    max_sessions: 10000           # sessions held at once; past it the least recently used ends
  guardrails:
    files: []                     # Cedar policy files (or directories of *.cedar), up to 4 MiB each, bounding every decision
  audit:
    checkpoint_events: 1000       # every commit is signed; keep one checkpoint for good per this many events ...
    checkpoint_interval: 10s      # ... or per this long, whichever comes first
  bundle:
    refresh_hint: 5m              # spiffe_refresh_hint: how often federated domains refetch; <= ca.ttl/6
  bundle_endpoint:                # SPIFFE bundle document at GET / for federated trust domains
    address: ""                   # host:port; "" disables
    profile: https_spiffe         # https_spiffe: TLS with the server's SVID spiffe://TD/writ/server/SERVER_ID
                                  # https_web: TLS with cert_file and key_file (Web PKI)
    cert_file: ""                 # https_web: PEM certificate chain, leaf first
    key_file: ""                  # https_web: PEM private key, mode 0600 or stricter
  log:
    level: info                   # debug, info, warn, error
    format: text                  # text, json
  limits:                         # what one caller can make a listener hold (README: "Limits")
    conns_per_source: 64          # connections at once from one IP to listen_address, token and bundle
                                  #   endpoints; raise it when many agents share one NAT address
    streams_per_conn: 100         # gRPC calls at once on one connection
    handshake_timeout: 10s        # TLS handshake on every listener; HTTP request headers
    read_timeout: 30s             # HTTP: a whole request, body included
    write_timeout: 30s            # HTTP: from the request headers to the end of the response
    idle_timeout: 2m              # closes a keep-alive HTTP connection, or a gRPC one without calls
    max_header_bytes: 16384       # HTTP request headers and gRPC metadata
    anonymous_calls: 128          # gRPC calls at once from callers without a certificate (joins, logins)
    issuance_per_identity:        # SVIDs issued to one SPIFFE ID (workload mints, agent renewal);
      rate: 50                    #   per second, after ...
      burst: 100                  #   ... this many at once; local administrators are not limited
    unauthenticated_per_source:   # join and sign-in attempts from one address (an IPv6 /64 is one),
      rate: 20                    #   checked before any token is verified
      burst: 50
    requests_per_identity:        # token exchanges, decisions (Check, POST /v1/check), and access requests and reviews, each apart,
      rate: 200                   #   of one SPIFFE ID: each is an audit event, so past this the call is
      burst: 400                  #   refused (429, ResourceExhausted) and only counted in a summary
    refusal_summary_interval: 10s # failed joins and sign-ins are counted per source (and calls past
                                  #   requests_per_identity per SPIFFE ID) this long
  webhooks: []                    # receivers of signed access request events, up to 16, each
                                  #   {url: https://HOST/PATH (http only to loopback), events: [...]}:
                                  #   created, reviewed, approved, denied, cancelled, expired; none: all
`
