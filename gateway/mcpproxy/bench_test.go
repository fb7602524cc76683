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
// SDK client, straight to the upstream and through the gateway, in the
// same run over loopback TLS. Through the gateway the call also crosses
// mTLS, one decision (an in-process fake here: the decider's own cost is
// the gateway core's benchmark) and the gateway's upstream session.
func BenchmarkToolCall(b *testing.B) {
	e := newEnv(b, nil)
	b.Run("direct", func(b *testing.B) {
		c := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil)
		cs, err := c.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: e.upURL, HTTPClient: e.pki.httpClient(&e.agent, ""), DisableStandaloneSSE: true}, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer cs.Close()
		measureCalls(b, cs)
	})
	b.Run("gateway", func(b *testing.B) {
		cs := e.mustConnect("github", testToken)
		measureCalls(b, cs)
	})
}

func measureCalls(b *testing.B, cs *mcp.ClientSession) {
	args := map[string]any{"repo": "acme/dev", "title": "t"}
	if _, err := call(b, cs, "create_issue", args); err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "create_issue", Arguments: args})
		lat = append(lat, time.Since(t0))
		if err != nil || res.IsError {
			b.Fatalf("call: %v %q", err, text(res))
		}
	}
	b.StopTimer()
	reportPercentiles(b, lat, "us")
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
