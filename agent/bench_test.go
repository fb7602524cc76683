package agent_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// BenchmarkFetchX509SVID measures a cached FetchX509SVID through go-spiffe's
// shared client, with the server and agent in this process.
func BenchmarkFetchX509SVID(b *testing.B) {
	dir := shortDir(b)
	e := startServer(b, newServerConfig(b, dir))
	tok := e.token()
	e.rule("spiffe://"+td+"/bench", tok.GetAgentId(), 0, uidSelector())
	a := startAgent(b, e, filepath.Join(dir, "agent"), tok.GetToken())
	ctx := context.Background()
	c, err := workloadapi.New(ctx, a.addr())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, err := c.FetchX509SVID(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.FetchX509SVID(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
