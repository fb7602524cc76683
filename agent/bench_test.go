package agent_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	writv1 "writ.dev/writ/api/writ/v1"
)

// BenchmarkFetchX509SVID measures a cached FetchX509SVID through go-spiffe's
// shared client, with the server and agent in this process, while the
// agent holds 1, 1,000 or 15,000 rules of which one is the caller's: the
// others name other uids, as on a node with many workloads. The cost per
// fetch should not grow with the rules that cannot match.
func BenchmarkFetchX509SVID(b *testing.B) {
	for _, n := range []int{1, 1_000, 15_000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) { benchFetch(b, n) })
	}
}

func benchFetch(b *testing.B, rules int) {
	dir := shortDir(b)
	e := startServer(b, newServerConfig(b, dir))
	tok := e.token()
	e.rule("spiffe://"+td+"/bench", tok.GetAgentId(), 0, uidSelector())
	createOtherRules(b, e, tok.GetAgentId(), rules-1)
	a := startAgent(b, e, filepath.Join(dir, "agent"), tok.GetToken())
	ctx := context.Background()
	if err := a.Ready(ctx); err != nil {
		b.Fatal(err)
	}
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

// createOtherRules adds n rules of parent for uids no test process has.
func createOtherRules(b *testing.B, e *env, parent string, n int) {
	b.Helper()
	for done := 0; done < n; {
		batch := min(n-done, 1000)
		req := &writv1.CreateEntriesRequest{}
		for i := range batch {
			uid := strconv.Itoa(2_000_000 + done + i)
			req.Entries = append(req.Entries, &writv1.Entry{
				SpiffeId: "spiffe://" + td + "/other/" + uid, ParentId: parent,
				Selectors: []*writv1.Selector{{Type: "unix", Value: "uid:" + uid}},
			})
		}
		if _, err := writv1.NewEntryServiceClient(e.admin).CreateEntries(context.Background(), req); err != nil {
			b.Fatal(err)
		}
		done += batch
	}
}
