package config

import (
	"strings"
	"testing"
	"time"
)

const example = `
server: writ.example.com:8081
metrics_address: 127.0.0.1:9090
workload_api: unix:///run/writ/agent.sock
listeners:
  - tcp:
      listen: 0.0.0.0:5433
      upstream: 10.0.0.5:5432
      resource: tcp/orders-db
  - tcp:
      name: bastion
      listen: 0.0.0.0:2222
      upstream: 10.0.0.9:22
      resource: tcp/ssh/bastion
      action: ssh
      max_connections: 50
      idle_timeout: 30m
  - http:
      listen: 0.0.0.0:8443
      upstream: http://127.0.0.1:8080
      audience: orders-api
      routes:
        - {path: "/orders/{id}", resource: "http/orders/{id}"}
      limits: {idle_timeout: 5m}
  - mcp:
      listen: 0.0.0.0:9443
      public_url: https://gateway.example.com:9443/mcp
      token_endpoint: https://writ.example.com:8443/token
      upstreams:
        - {name: github, url: https://mcp.github.internal/mcp}
`

func TestParseExample(t *testing.T) {
	c, err := Parse([]byte(example))
	if err != nil {
		t.Fatal(err)
	}
	db, ssh := c.Listeners[0].TCP, c.Listeners[1].TCP
	if db.Name != "tcp/orders-db" || db.Action != "connect" || db.MaxConnections != 1024 || db.HandshakeTimeout != 10*time.Second {
		t.Errorf("defaults: %+v", db)
	}
	if ssh.Action != "ssh" || ssh.MaxConnections != 50 || ssh.IdleTimeout != 30*time.Minute {
		t.Errorf("bastion: %+v", ssh)
	}
	h, m := c.Listeners[2].HTTP, c.Listeners[3].MCP
	if h.Name != "orders-api" || h.Listen != "0.0.0.0:8443" || h.Limits.IdleTimeout.Duration != 5*time.Minute || h.Limits.MaxHeaderBytes == 0 {
		t.Errorf("http: %+v", h)
	}
	if m.Name != "mcp" || m.Listen != "0.0.0.0:9443" || m.Upstreams[0].Name != "github" || m.Limits.CallTimeout == 0 {
		t.Errorf("mcp: %+v", m)
	}
	if c.MetricsAddress != "127.0.0.1:9090" {
		t.Errorf("metrics_address = %q", c.MetricsAddress)
	}
	if c.Log.Level != "info" || c.Log.Format != "text" {
		t.Errorf("log: %+v", c.Log)
	}
}

func TestParseRefuses(t *testing.T) {
	listener := "listeners:\n  - tcp: {listen: ':1', upstream: 'db:1', resource: tcp/db}\n"
	for _, tc := range []struct{ name, text, want string }{
		{"empty", ``, "the file is empty"},
		{"unknown key", "server: a:1\nlistners: []\n", "field listners not found"},
		{"unknown listener key", "server: a:1\nlisteners:\n  - tcp: {listen: ':1', upstream: 'db:1', resource: tcp/db, upstrem: x}\n", "field upstrem not found"},
		{"no server", listener, "server: is required"},
		{"bad server", "server: nope\n" + listener, `server: "nope" is not host:port`},
		{"no listeners", "server: a:1\n", "listeners: none given"},
		{"kindless listener", "server: a:1\nlisteners: [{}]\n", "listeners[0]: give one kind of listener"},
		{"bad resource", "server: a:1\nlisteners:\n  - tcp: {listen: ':1', upstream: 'db:1', resource: 'tcp/*'}\n", "listeners[0].tcp.resource:"},
		{"no upstream host", "server: a:1\nlisteners:\n  - tcp: {listen: ':1', upstream: ':1', resource: tcp/db}\n", "listeners[0].tcp.upstream: \":1\" names no host"},
		{"duration without unit", "server: a:1\nlisteners:\n  - tcp: {listen: ':1', upstream: 'db:1', resource: tcp/db, idle_timeout: 5}\n", "line 3: cannot unmarshal !!int `5` into time.Duration"},
		{"too many connections", "server: a:1\nlisteners:\n  - tcp: {listen: ':1', upstream: 'db:1', resource: tcp/db, max_connections: -1}\n", "max_connections: -1 is out of range"},
		{"same address", "server: a:1\n" + listener + "  - tcp: {listen: ':1', upstream: 'db:2', resource: tcp/db2}\n", "listeners[1].tcp.listen: \":1\" is also listeners[0].tcp's address"},
		{"bad socket", "server: a:1\nworkload_api: /run/agent.sock\n" + listener, "workload_api: \"/run/agent.sock\" is not a socket address"},
		{"bad level", "server: a:1\nlog: {level: loud}\n" + listener, "log.level"},
		{"two documents", "server: a:1\n" + listener + "---\nserver: b:1\n", "more than one YAML document"},
		{"not a map", "- a\n", "cannot unmarshal"},
		{"two kinds", "server: a:1\nlisteners:\n  - tcp: {listen: ':1', upstream: 'db:1', resource: tcp/db}\n    http: {listen: ':2', upstream: 'http://127.0.0.1:1', audience: a, routes: [{prefix: /, resource: http/a}]}\n", "listeners[0]: has more than one kind"},
		{"http without listen", "server: a:1\nlisteners:\n  - http: {upstream: 'http://127.0.0.1:1', audience: a, routes: [{prefix: /, resource: http/a}]}\n", "listeners[0].http.listen: is required"},
		{"http bad upstream", "server: a:1\nlisteners:\n  - http: {listen: ':2', upstream: 'ftp://x', audience: a, routes: [{prefix: /, resource: http/a}]}\n", "listeners[0].http.upstream:"},
		{"http unknown key", "server: a:1\nlisteners:\n  - http: {listen: ':2', upstream: 'http://127.0.0.1:1', audience: a, route: []}\n", "field route not found"},
		{"mcp bad public url", "server: a:1\nlisteners:\n  - mcp: {listen: ':3', public_url: 'http://h/mcp', token_endpoint: 'https://h/t', upstreams: [{name: gh, command: x}]}\n", "listeners[0].mcp.public_url:"},
		{"mcp bad upstream", "server: a:1\nlisteners:\n  - mcp: {listen: ':3', public_url: 'https://h/mcp', token_endpoint: 'https://h/t', upstreams: [{name: GH, command: x}]}\n", "listeners[0].mcp.upstreams[0].name:"},
		{"mcp same address as tcp", "server: a:1\n" + listener + "  - mcp: {listen: ':1', public_url: 'https://h/mcp', token_endpoint: 'https://h/t', upstreams: [{name: gh, command: x}]}\n", "listeners[1].mcp.listen: \":1\" is also listeners[0].tcp's address"},
		{"bad metrics address", "server: a:1\nmetrics_address: localhost\n" + listener, `metrics_address: "localhost" is not host:port`},
		{"metrics on a listener's address", "server: a:1\nmetrics_address: ':1'\n" + listener, `listeners[0].tcp.listen: ":1" is also metrics_address`},
		{"huge", strings.Repeat("#", MaxBytes+1), "larger than"},
	} {
		_, err := Parse([]byte(tc.text))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte("server: a:1\nlisteners: [{tcp: {listen: ':1', upstream: 'db:1', resource: tcp/db, idle_timeout: 1h}}]\n"))
	f.Add([]byte("listeners: [{tcp: null}, {}]\n"))
	f.Add([]byte("server: [a\n"))
	f.Add([]byte("server: a:1\nlisteners: [{http: {listen: ':2', upstream: 'http://127.0.0.1:1', audience: a, actions: {GET: read, PATCH: ''}, routes: [{path: '/a/{id}', methods: [GET], resource: 'http/a/{id}'}, {prefix: /s, resource: http/s}]}}]\n"))
	f.Add([]byte("server: a:1\nlisteners: [{mcp: {listen: ':3', public_url: 'https://h:3/mcp', token_endpoint: 'https://h/t', require_delegation: true, upstreams: [{name: gh, url: 'http://127.0.0.1:9/mcp'}, {name: f, command: x, args: [a], env: {A: b}, pass_env: [T]}], limits: {call_timeout: 5s}}}]\n"))
	f.Add([]byte("server: a:1\nlisteners: [{http: {listen: ':2'}, mcp: {listen: ':2'}}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			if c != nil {
				t.Fatal("a config beside an error")
			}
			if len(err.Error()) > 4096 {
				t.Fatalf("an error of %d bytes", len(err.Error()))
			}
			return
		}
		if c.Server == "" || len(c.Listeners) == 0 {
			t.Fatalf("accepted without a server or listeners: %+v", c)
		}
		for _, l := range c.Listeners {
			ok := l.kinds() == 1
			switch {
			case l.TCP != nil:
				ok = ok && l.TCP.Validate() == nil
			case l.HTTP != nil:
				ok = ok && l.HTTP.validate() == nil && l.HTTP.Listen != ""
			case l.MCP != nil:
				ok = ok && l.MCP.validate() == nil && l.MCP.Listen != ""
			}
			if !ok {
				t.Fatalf("accepted an invalid listener: %+v", l)
			}
		}
	})
}
