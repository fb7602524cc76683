package server

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	writv1 "writ.dev/writ/api/writ/v1"
)

// TestMalformedJoinsAreRateLimited: every join attempt counts against its
// source's limit before anything in it is parsed, so a flood of malformed
// tokens or unknown join methods is turned away like one of wrong secrets,
// and it spends the source's allowance, not another source's.
func TestMalformedJoinsAreRateLimited(t *testing.T) {
	clock := newManualClock()
	cfg := testConfig(t)
	cfg.Limits.UnauthenticatedPerSource = RateLimit{Rate: 1, Burst: 3}
	cfg.Defaults()
	srv, err := New(t.Context(), cfg, Options{Logger: quietLogger(), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(t.Context()) })
	as := &agentService{s: srv}
	_, csr := newCSR(t)
	flood := fromSource(t.Context(), "198.51.100.7:5555")
	malformed := []*writv1.JoinRequest{
		{Token: "not-a-join-token", Csr: csr},
		{Token: "", Csr: csr},
		{Method: "no-such-method", Jwt: "x", Csr: csr},
	}
	for _, req := range malformed {
		_, err := as.Join(flood, req)
		wantCode(t, err, codes.InvalidArgument, "")
	}
	for _, req := range malformed {
		_, err := as.Join(flood, req)
		wantCode(t, err, codes.ResourceExhausted, "limits.unauthenticated_per_source")
	}
	// A good token from the flooding source waits its turn too.
	tok, err := srv.NewJoinToken(t.Context(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, err = as.Join(flood, &writv1.JoinRequest{Token: tok.GetToken(), Csr: csr})
	wantCode(t, err, codes.ResourceExhausted, "limits.unauthenticated_per_source")
	// Another source is untouched by the flood.
	if _, err := as.Join(fromSource(t.Context(), "192.0.2.1:4444"), &writv1.JoinRequest{Token: tok.GetToken(), Csr: csr}); err != nil {
		t.Fatalf("a join from another source: %v", err)
	}
}
