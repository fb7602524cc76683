package server

import (
	"slices"
	"testing"
	"time"

	writv1 "writ.dev/writ/api/writ/v1"
)

// BenchmarkWatcherDropToDeny measures, on one server, how long after a
// watcher's stream is cancelled Check first denies a dual-controlled grant
// (polled every millisecond), and reports p50 and p99 over b.N drops.
func BenchmarkWatcherDropToDeny(b *testing.B) {
	srv := startServer(b, testConfig(b))
	benchDropToDeny(b, srv, srv)
}

// BenchmarkWatcherDropToDenyPostgres is the same with two servers sharing
// PostgreSQL: the watcher on one, Check on the other.
func BenchmarkWatcherDropToDenyPostgres(b *testing.B) {
	dsn := freshPostgresDB(b)
	cfgA, cfgB := testConfig(b), testConfig(b)
	for _, c := range []*Config{&cfgA, &cfgB} {
		c.Store.Engine = "postgres"
		c.Store.DSN = dsn
	}
	benchDropToDeny(b, startServer(b, cfgA), startServer(b, cfgB))
}

func benchDropToDeny(b *testing.B, srv, other *Server) {
	admin := adminConn(b, srv)
	if _, err := writv1.NewReviewServiceClient(admin).ApplyRules(b.Context(), &writv1.ApplyReviewRulesRequest{Text: dualRules}); err != nil {
		b.Fatal(err)
	}
	tasks := writv1.NewTaskServiceClient(admin)
	decide := writv1.NewDecisionServiceClient(adminConn(b, other))
	created, err := tasks.CreateTask(b.Context(), &writv1.CreateTaskRequest{Task: &writv1.Task{
		Title: "rotate", Reason: "bench", Owner: ceo, Members: []string{ceo}, Deadline: time.Now().Add(time.Hour).Unix(),
		Grants: []*writv1.Grant{{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}}}}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := tasks.OpenTask(b.Context(), &writv1.TaskTransitionRequest{Id: created.GetId()}); err != nil {
		b.Fatal(err)
	}
	aliceCC := svidConn(b, srv, signIn(b, srv, alice))
	bobCC := svidConn(b, srv, signIn(b, srv, bob))
	if _, err := writv1.NewRequestServiceClient(aliceCC).CreateRequest(b.Context(), &writv1.CreateAccessRequest{
		Kind: "join", Task: created.GetId(), Asks: []string{"read:vault/keys"}, Reason: "rotate"}); err != nil {
		b.Fatal(err)
	}
	allowed := func() bool {
		r, err := decide.Check(b.Context(), &writv1.CheckRequest{Action: "read", Resource: "vault/keys", Chain: []string{alice}})
		if err != nil {
			b.Fatal(err)
		}
		return r.GetAllow()
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		w, err := watchTask(b, bobCC, created.GetId(), true)
		if err != nil {
			b.Fatal(err)
		}
		for !allowed() { // the other server sees the join within its refresh
			time.Sleep(time.Millisecond)
		}
		start := time.Now()
		w.cancel()
		for allowed() {
			time.Sleep(time.Millisecond)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[(len(lat)*99)/100].Microseconds())/1000, "p99-ms")
}
