package httpproxy

import (
	"strings"
	"testing"
	"time"
)

const sampleConfig = `
upstream: http://127.0.0.1:8080
audience: orders-api
actions:
  PUT: replace
  PATCH: ""
routes:
  - {path: "/orders/{id}/refund", methods: [POST], action: refund, resource: "http/orders/{id}"}
  - {path: "/orders/{id}", resource: "http/orders/{id}"}
  - {path: "/files/{rest...}", resource: "http/files/{rest}"}
  - {prefix: /static, resource: http/static}
limits:
  max_body_bytes: 1048576
  upstream_timeout: 10s
  caller_header_ttl: 30
`

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig(strings.NewReader(sampleConfig))
	if err != nil {
		t.Fatal(err)
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Limits.UpstreamTimeout.Duration != 10*time.Second || c.Limits.CallerHeaderTTL.Duration != 30*time.Second ||
		c.Limits.IdleTimeout.Duration != DefaultIdleTimeout || len(c.Routes) != 4 || c.Actions["PATCH"] != "" {
		t.Errorf("parsed %+v", c)
	}
	if _, err := ParseConfig(strings.NewReader("upstrem: http://x\n")); err == nil || !strings.Contains(err.Error(), "upstrem") {
		t.Errorf("a misspelt field: %v", err)
	}
	if _, err := ParseConfig(strings.NewReader("limits: {idle_timeout: -5s}\n")); err == nil || !strings.Contains(err.Error(), "not a duration") {
		t.Errorf("a negative duration: %v", err)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	base := func() Config {
		c := testConfig("http://127.0.0.1:8080")
		c.Defaults()
		return c
	}
	for _, tc := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Upstream = "" }, "upstream: not set"},
		{func(c *Config) { c.Upstream = "ftp://x" }, "upstream: \"ftp://x\": the scheme"},
		{func(c *Config) { c.Upstream = "http://u:secret@x" }, "upstream: the URL carries credentials"},
		{func(c *Config) { c.Upstream = "http://x/api" }, "upstream: \"http://x/api\" has a path"},
		{func(c *Config) { c.Upstream = "http://" }, "upstream: \"http://\" has no host"},
		{func(c *Config) { c.UpstreamID = "orders" }, "upstream_id: \"orders\" is not a SPIFFE ID"},
		{func(c *Config) { c.UpstreamID = "spiffe://example.org/x" }, "upstream_id: set, but upstream is http"},
		{func(c *Config) { c.Audience = "" }, "audience:"},
		{func(c *Config) { c.Audience = "a b" }, "audience: \"a b\" holds a space"},
		{func(c *Config) { c.Actions = map[string]string{"get": "read"} }, "actions: method \"get\""},
		{func(c *Config) { c.Actions = map[string]string{"GET": "re ad"} }, "actions[GET]: action \"re ad\""},
		{func(c *Config) { c.Routes = nil }, "routes: none given"},
		{func(c *Config) { c.Routes[1].Path = "orders" }, "routes[1].path: \"orders\" does not start with '/'"},
		{func(c *Config) { c.Routes[1].Prefix = "/x" }, "routes[1].path: give either path or prefix"},
		{func(c *Config) { c.Routes[1].Path = "" }, "routes[1].path: give a path template"},
		{func(c *Config) { c.Routes[1].Path = "/orders/{id}/{id}" }, "routes[1].path: \"/orders/{id}/{id}\": variable \"id\" appears twice"},
		{func(c *Config) { c.Routes[1].Path = "/orders/{1d}" }, "routes[1].path: \"/orders/{1d}\": variable"},
		{func(c *Config) { c.Routes[1].Path = "/orders/{rest...}/x" }, "may only be the last segment"},
		{func(c *Config) { c.Routes[1].Path = "/orders/x{id}" }, "a variable is a whole segment"},
		{func(c *Config) { c.Routes[1].Path = "/orders/../{id}" }, "routes[1].path: \"/orders/../{id}\": segment 2 is a dot segment"},
		{func(c *Config) { c.Routes[1].Path = "/orders//{id}" }, "segment 2 is empty"},
		{func(c *Config) { c.Routes[4].Prefix = "/static/{x}" }, "routes[4].prefix: \"/static/{x}\": a prefix holds no variables"},
		{func(c *Config) { c.Routes[1].Resource = "" }, "routes[1].resource: empty"},
		{func(c *Config) { c.Routes[1].Resource = "http/orders/{order}" }, "routes[1].resource: \"http/orders/{order}\" uses \"{order}\", which the route's path does not define"},
		{func(c *Config) { c.Routes[1].Resource = "http/orders/{id" }, "'{' without '}'"},
		{func(c *Config) { c.Routes[1].Resource = "http/orders/id}" }, "'}' without '{'"},
		{func(c *Config) { c.Routes[1].Resource = "/http/orders/{id}" }, "routes[1].resource: \"/http/orders/{id}\" does not make a valid resource name"},
		{func(c *Config) { c.Routes[1].Resource = "http/orders/*" }, "wildcards belong in grants"},
		{func(c *Config) { c.Routes[1].Methods = []string{"get"} }, "routes[1].methods: method \"get\""},
		{func(c *Config) { c.Routes[1].Action = "*" }, "routes[1].action:"},
		{func(c *Config) { c.Limits.MaxHeaderBytes = 10 }, "limits.max_header_bytes"},
		{func(c *Config) { c.Limits.MaxBodyBytes = -1 }, "limits.max_body_bytes"},
		{func(c *Config) { c.Limits.CallerHeaderTTL.Duration = time.Hour }, "limits.caller_header_ttl"},
		{func(c *Config) { c.Limits.UpstreamTimeout.Duration = -time.Second }, "limits.upstream_timeout"},
	} {
		c := base()
		tc.edit(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error containing %q", err, tc.want)
		}
	}
	c := base()
	if err := c.Validate(); err != nil {
		t.Fatalf("base config: %v", err)
	}
	// Limits left unset are checked as their defaults.
	c.Limits = Limits{}
	if err := c.Validate(); err != nil {
		t.Fatalf("config without limits: %v", err)
	}
}
