package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	writv1 "writ.dev/writ/api/writ/v1"
)

// BenchmarkMintX509SVIDInProcess measures the handler without transport:
// CSR parsing, validation, signing, the durable audit event and response
// assembly. Callers are many, as agents are, so audit events share commits.
func BenchmarkMintX509SVIDInProcess(b *testing.B) {
	srv := startServer(b, testConfig(b))
	svc := &svidService{s: srv}
	_, csr := newCSR(b)
	req := &writv1.MintX509SVIDRequest{SpiffeId: "spiffe://" + testTD + "/bench", Csr: csr}
	ctx := context.WithValue(context.Background(), callerKey{}, Caller{Local: &PeerCred{}})
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := svc.MintX509SVID(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportRate(b, "svids/s")
}

// BenchmarkMintX509SVIDGRPC measures the same through the admin socket with
// peer-credential authorization, concurrent callers on one connection.
func BenchmarkMintX509SVIDGRPC(b *testing.B) {
	srv := startServer(b, testConfig(b))
	sc := writv1.NewSVIDServiceClient(adminConn(b, srv))
	_, csr := newCSR(b)
	req := &writv1.MintX509SVIDRequest{SpiffeId: "spiffe://" + testTD + "/bench", Csr: csr}
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := sc.MintX509SVID(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportRate(b, "svids/s")
}

// BenchmarkMintJWTSVIDGRPC measures JWT-SVID issuance through the admin
// socket, concurrent callers on one connection, for comparison with the
// raw ES256 signing benchmarks of package ca.
func BenchmarkMintJWTSVIDGRPC(b *testing.B) {
	srv := startServer(b, testConfig(b))
	sc := writv1.NewSVIDServiceClient(adminConn(b, srv))
	req := &writv1.MintJWTSVIDRequest{SpiffeId: "spiffe://" + testTD + "/bench", Audience: []string{"bench"}}
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := sc.MintJWTSVID(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportRate(b, "svids/s")
}

// BenchmarkCreateRules100k creates 100,000 identity rules through the API in
// batches of 1,000, as `writ entry create --file` would in 100 calls.
func BenchmarkCreateRules100k(b *testing.B) {
	const total, batch = 100_000, 1_000
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		srv := startServer(b, testConfig(b))
		ec := writv1.NewEntryServiceClient(adminConn(b, srv))
		b.StartTimer()
		start := time.Now()
		for n := 0; n < total; n += batch {
			req := &writv1.CreateEntriesRequest{Entries: make([]*writv1.Entry, batch)}
			for j := range batch {
				req.Entries[j] = &writv1.Entry{
					SpiffeId:  fmt.Sprintf("spiffe://%s/workload/%d", testTD, n+j),
					ParentId:  "spiffe://" + testTD + "/node/bench",
					Selectors: []*writv1.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", n+j)}},
				}
			}
			if _, err := ec.CreateEntries(context.Background(), req); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(total/time.Since(start).Seconds(), "rules/s")
	}
}

func reportRate(b *testing.B, unit string) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), unit)
}

// BenchmarkCheckGRPC measures a decision through the admin socket: an
// agent acting for a person, among 1,000 open tasks, with its audit event
// recorded in the background.
func BenchmarkCheckGRPC(b *testing.B) {
	srv := startServer(b, testConfig(b))
	cc := adminConn(b, srv)
	seedCheckTasks(b, writv1.NewTaskServiceClient(cc))
	benchCheck(b, writv1.NewDecisionServiceClient(cc))
}

// seedCheckTasks opens the 1,000 tasks of BenchmarkCheckGRPC through the
// API and returns their ids.
func seedCheckTasks(b *testing.B, tasks writv1.TaskServiceClient) []string {
	b.Helper()
	ctx := context.Background()
	ids := make([]string, 0, 1000)
	for i := range 1000 {
		person := fmt.Sprintf("spiffe://%s/person/example.com/p%d", testTD, i)
		agent := fmt.Sprintf("spiffe://%s/agent/a%d", testTD, i)
		t, err := tasks.CreateTask(ctx, &writv1.CreateTaskRequest{Task: &writv1.Task{Title: "bench", Reason: "bench", Owner: person,
			Members: []string{person, agent}, Deadline: time.Now().Add(time.Hour).Unix(),
			Grants: []*writv1.Grant{{Actions: []string{"read"}, Resources: []string{fmt.Sprintf("hr/team-%d/**", i)}, To: []string{person, agent}}}}})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tasks.OpenTask(ctx, &writv1.TaskTransitionRequest{Id: t.GetId()}); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, t.GetId())
	}
	return ids
}

// benchCheck times the decision of BenchmarkCheckGRPC (agent a500 acting
// for person p500 reads what task 500 grants), 16 callers per core.
func benchCheck(b *testing.B, dc writv1.DecisionServiceClient) {
	ctx := context.Background()
	req := &writv1.CheckRequest{Action: "read", Resource: "hr/team-500/salaries",
		Chain: []string{fmt.Sprintf("spiffe://%s/agent/a500", testTD), fmt.Sprintf("spiffe://%s/person/example.com/p500", testTD)}}
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r, err := dc.Check(ctx, req)
			if err != nil || !r.GetAllow() {
				b.Errorf("check: %v %v", r, err)
				return
			}
		}
	})
	reportRate(b, "decisions/s")
}
