package mcpproxy

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// BenchmarkToolCall measures one tools/call end to end with the official
// SDK client, straight to the upstream and through the gateway, over
// loopback TLS. Each iteration makes one call each way, in alternating
// order, so both distributions see the same load on a shared machine.
// Through the gateway the call also crosses mTLS, one decision (an
// in-process fake here: the decider's own cost is the gateway core's
// benchmark) and the gateway's upstream session.
func BenchmarkToolCall(b *testing.B) {
	e := newEnv(b, nil)
	c := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil)
	direct, err := c.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: e.upURL, HTTPClient: e.pki.httpClient(&e.agent, ""), DisableStandaloneSSE: true}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close()
	gw := e.mustConnect("github", testToken)
	args := map[string]any{"repo": "acme/dev", "title": "t"}
	one := func(cs *mcp.ClientSession) time.Duration {
		t0 := time.Now()
		res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "create_issue", Arguments: args})
		d := time.Since(t0)
		if err != nil || res.IsError {
			b.Fatalf("call: %v %q", err, text(res))
		}
		return d
	}
	one(direct)
	one(gw)
	viaDirect := make([]time.Duration, 0, b.N)
	viaGateway := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 0 {
			viaDirect = append(viaDirect, one(direct))
			viaGateway = append(viaGateway, one(gw))
		} else {
			viaGateway = append(viaGateway, one(gw))
			viaDirect = append(viaDirect, one(direct))
		}
	}
	b.StopTimer()
	reportPercentiles(b, viaDirect, "direct-us")
	reportPercentiles(b, viaGateway, "gateway-us")
}

// BenchmarkHoldEndToCut measures the gateway's share of lock-to-cut: from
// the Holder ending a session's hold to the downstream session being
// closed (the server side of the session has ended; the client's next
// request is refused with the reason).
func BenchmarkHoldEndToCut(b *testing.B) {
	e := newEnv(b, nil)
	lat := make([]time.Duration, 0, b.N)
	for range b.N {
		cs := e.mustConnect("github", testToken)
		if res, err := call(b, cs, "read_file", nil); err != nil || res.IsError {
			b.Fatalf("call: %v %q", err, text(res))
		}
		var ss *mcp.ServerSession
		for s := range e.proxy.endpoints["/mcp/github"].server.Sessions() {
			if s.InitializeParams() != nil {
				ss = s
			}
		}
		t0 := time.Now()
		e.holder.revokeAll(errors.New("lock"))
		_ = ss.Wait()
		lat = append(lat, time.Since(t0))
		cs.Close()
	}
	reportPercentiles(b, lat, "us")
}

func reportPercentiles(b *testing.B, lat []time.Duration, unit string) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	scale := float64(time.Microsecond)
	b.ReportMetric(float64(lat[len(lat)/2])/scale, "p50-"+unit)
	b.ReportMetric(float64(lat[len(lat)*99/100])/scale, "p99-"+unit)
}
