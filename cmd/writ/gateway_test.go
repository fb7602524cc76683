package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"writ.dev/writ/agent/output"
	"writ.dev/writ/gateway/config"
)

// TestGatewayCommand: `writ gateway --config` takes its identity from the
// Workload API of `writ dev`, and its TCP listener lets a caller with an
// SVID through to the upstream only inside an open task granting connect;
// cancelling it (as SIGTERM does) stops it cleanly.
func TestGatewayCommand(t *testing.T) {
	dir := shortTempDir(t)
	t.Setenv("TMPDIR", dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, ".writ")
	admin := filepath.Join(data, "admin.sock")
	listen := freePort(t)
	startCommand(t, admin, "dev", "--data-dir", data, "--listen", listen, "--ops-address", "127.0.0.1:0")
	t.Setenv("WRIT_SOCKET", admin)

	upstream := echoUpstream(t)
	proxy := freePort(t)
	conf := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`server: %s
workload_api: unix://%s
listeners:
  - tcp:
      listen: %s
      upstream: %s
      resource: tcp/orders-db
`, listen, filepath.Join(dir, fmt.Sprintf("writ-dev-%d", os.Getuid()), "agent.sock"), proxy, upstream)), 0o600); err != nil {
		t.Fatal(err)
	}

	// A config error is reported naming the field, before anything runs.
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("server: "+listen+"\nlisteners: [{tcp: {listen: ':1', upstream: 'db:1', resource: 'tcp/*'}}]\n"), 0o600)
	var stderr syncBuffer
	if code := run(context.Background(), []string{"gateway", "--config", bad}, io.Discard, &stderr); code == 0 || !strings.Contains(stderr.String(), "listeners[0].tcp.resource") {
		t.Fatalf("a bad config: exit %d: %s", code, stderr.String())
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var gwOut syncBuffer
	go func() { done <- run(ctx, []string{"gateway", "--config", conf}, io.Discard, &gwOut) }()
	defer func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("the gateway exited with %d on cancellation: %s", code, gwOut.String())
			}
		case <-time.After(20 * time.Second):
			t.Error("the gateway did not stop within 20s of cancellation")
		}
	}()
	waitFor(t, "the gateway running", func() bool { return strings.Contains(gwOut.String(), "gateway running") }, &gwOut)

	const agent = "spiffe://example.org/agent/reporter"
	writ(t, "svid", "mint", "--spiffe-id", agent, "--out", filepath.Join(dir, "reporter"))
	svid, err := x509svid.Load(filepath.Join(dir, "reporter", output.SVIDFile), filepath.Join(dir, "reporter", output.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := x509bundle.Load(spiffeid.RequireTrustDomainFromString("example.org"), filepath.Join(dir, "reporter", output.BundleFile))
	if err != nil {
		t.Fatal(err)
	}
	through := func() bool {
		conn, err := tls.Dial("tcp", proxy, tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeMemberOf(bundle.TrustDomain())))
		if err != nil {
			return false
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write([]byte("ping")); err != nil {
			return false
		}
		buf := make([]byte, 4)
		_, err = io.ReadFull(conn, buf)
		return err == nil && string(buf) == "ping"
	}
	if through() {
		t.Fatal("a caller without a task got through")
	}
	if !strings.Contains(gwOut.String(), "refused a connection") || !strings.Contains(gwOut.String(), agent) {
		t.Errorf("the gateway's log does not say who was refused:\n%s", gwOut.String())
	}
	out := writ(t, "task", "create", "--title", "month-end report", "--reason", "finance", "--owner", "spiffe://example.org/person/example.com/ada",
		"--deadline", "1h", "--member", agent)
	taskID := taskIDWord.FindStringSubmatch(out)[1]
	writ(t, "task", "grant", "--id", taskID, "--action", "connect", "--resource", "tcp/orders-db", "--to", agent)
	writ(t, "task", "open", "--id", taskID)
	waitFor(t, "the caller through inside the task", through, &gwOut)
}

func echoUpstream(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// TestGatewayConfigDocs: the configuration shown by `writ gateway --help`
// and the README's example are valid configurations.
func TestGatewayConfigDocs(t *testing.T) {
	_, ref, _ := strings.Cut(gatewayConfigReference, "\n\n")
	var lines []string
	for _, l := range strings.Split(ref, "\n") {
		lines = append(lines, strings.TrimPrefix(l, "  "))
	}
	if _, err := config.Parse([]byte(strings.Join(lines, "\n"))); err != nil {
		t.Errorf("writ gateway --help's configuration: %v", err)
	}
	c, err := config.Parse([]byte(readmeBlock(t, "may ask for decisions.", "yaml")))
	if err != nil {
		t.Fatalf("README's gateway.yaml: %v", err)
	}
	if kinds := len(c.Listeners); kinds != 3 || c.Listeners[1].HTTP == nil || c.Listeners[2].MCP == nil {
		t.Errorf("README's gateway.yaml does not show a listener of each kind: %+v", c.Listeners)
	}
	// The front ends' own sections show listeners of the same file.
	for _, marker := range []string{"### Gateway: MCP tool calls", "### Gateway: HTTP front end"} {
		if _, err := config.Parse([]byte("server: writ.example.com:8081\n" + readmeBlock(t, marker, "yaml"))); err != nil {
			t.Errorf("README's %s: %v", marker, err)
		}
	}
}
