package server

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
)

// mintBoth mints an X.509-SVID and a JWT-SVID for id and returns their errors.
func mintBoth(t testing.TB, cc *grpc.ClientConn, id string) (x509Err, jwtErr error) {
	t.Helper()
	_, csr := newCSR(t)
	sc := writv1.NewSVIDServiceClient(cc)
	ctx := context.Background()
	_, x509Err = sc.MintX509SVID(ctx, &writv1.MintX509SVIDRequest{SpiffeId: id, Csr: csr})
	_, jwtErr = sc.MintJWTSVID(ctx, &writv1.MintJWTSVIDRequest{SpiffeId: id, Audience: []string{"a"}})
	return x509Err, jwtErr
}

// wantMintRefused checks that both kinds of SVID are refused for id because
// of lock lockID.
func wantMintRefused(t *testing.T, cc *grpc.ClientConn, id, lockID, reason string) {
	t.Helper()
	x, j := mintBoth(t, cc, id)
	for what, err := range map[string]error{"X.509": x, "JWT": j} {
		st := status.Convert(err)
		if st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), lockID) || !strings.Contains(st.Message(), reason) {
			t.Errorf("%s-SVID for %s: got %v %q, want PermissionDenied naming lock %s and %q", what, id, st.Code(), st.Message(), lockID, reason)
		}
	}
}

func wantMintAllowed(t *testing.T, cc *grpc.ClientConn, id string) {
	t.Helper()
	x, j := mintBoth(t, cc, id)
	if x != nil || j != nil {
		t.Errorf("minting %s: X.509 %v, JWT %v; want both issued", id, x, j)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func createLock(t *testing.T, cc *grpc.ClientConn, kind, value, reason, ttl string) *writv1.Lock {
	t.Helper()
	l, err := writv1.NewLockServiceClient(cc).CreateLock(context.Background(), &writv1.CreateLockRequest{
		Target: &writv1.LockTarget{Kind: kind, Value: value}, Reason: reason, Ttl: ttl})
	if err != nil {
		t.Fatalf("CreateLock(%s=%s): %v", kind, value, err)
	}
	return l
}

func TestLockStopsIssuance(t *testing.T) {
	srv := startServer(t, testConfig(t))
	cc := adminConn(t, srv)
	lc := writv1.NewLockServiceClient(cc)
	ctx := context.Background()
	id := "spiffe://" + testTD + "/db"
	wantMintAllowed(t, cc, id)

	l := createLock(t, cc, "spiffe-id", id, "INC-42 key leaked", "")
	if l.Id == "" || l.CreatedBy == "" || l.CreatedAt == 0 || l.ExpiresAt != 0 || l.Target.GetValue() != id {
		t.Fatalf("CreateLock returned %v", l)
	}
	// In force at once on the server that made it.
	wantMintRefused(t, cc, id, l.Id, "INC-42 key leaked")
	wantMintAllowed(t, cc, id+"/other")

	list, err := lc.ListLocks(ctx, &writv1.ListLocksRequest{})
	if err != nil || len(list.Locks) != 1 || list.Locks[0].Id != l.Id {
		t.Fatalf("ListLocks = %v, %v", list.GetLocks(), err)
	}

	if _, err := lc.DeleteLock(ctx, &writv1.DeleteLockRequest{Id: l.Id}); err != nil {
		t.Fatalf("DeleteLock: %v", err)
	}
	wantMintAllowed(t, cc, id)
	_, err = lc.DeleteLock(ctx, &writv1.DeleteLockRequest{Id: l.Id})
	wantCode(t, err, codes.NotFound, l.Id)
}

func TestLockIDPrefixMatchesWholeSegments(t *testing.T) {
	srv := startServer(t, testConfig(t))
	cc := adminConn(t, srv)
	base := "spiffe://" + testTD
	l := createLock(t, cc, "id-prefix", base+"/ci", "runner compromised", "")
	wantMintRefused(t, cc, base+"/ci", l.Id, "runner compromised")
	wantMintRefused(t, cc, base+"/ci/x", l.Id, "runner compromised")
	wantMintRefused(t, cc, base+"/ci/x/y", l.Id, "runner compromised")
	wantMintAllowed(t, cc, base+"/cicd")
	wantMintAllowed(t, cc, base+"/c")
	wantMintAllowed(t, cc, base+"/other/ci")

	// node and agent locks stop the node's or agent's own SVID; join-method
	// locks do not touch direct minting.
	n := createLock(t, cc, "node", base+"/node/n1", "stolen laptop", "")
	wantMintRefused(t, cc, base+"/node/n1", n.Id, "stolen laptop")
	wantMintAllowed(t, cc, base+"/node/n1/w")
	createLock(t, cc, "join-method", "join_token", "token leak", "")
	wantMintAllowed(t, cc, base+"/node/n2")
}

func TestLockWithTTLExpires(t *testing.T) {
	var offset atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	cfg := testConfig(t)
	ctx := context.Background()
	srv, err := New(ctx, cfg, Options{Logger: quietLogger(), Version: "test", Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	cc := adminConn(t, srv)
	id := "spiffe://" + testTD + "/batch"
	l := createLock(t, cc, "spiffe-id", id, "maintenance", "30m")
	if d := time.Unix(l.ExpiresAt, 0).Sub(clock()); d < 30*time.Minute-time.Second || d > 30*time.Minute+time.Second {
		t.Fatalf("lock expires in %s, want 30m", d)
	}
	wantMintRefused(t, cc, id, l.Id, "maintenance")
	offset.Store(int64(30*time.Minute + 2*time.Second))
	wantMintAllowed(t, cc, id)
	list, err := writv1.NewLockServiceClient(cc).ListLocks(ctx, &writv1.ListLocksRequest{})
	if err != nil || len(list.Locks) != 0 {
		t.Fatalf("ListLocks after expiry = %v, %v; want none", list.GetLocks(), err)
	}
}

func TestBadLocksAreRefused(t *testing.T) {
	srv := startServer(t, testConfig(t))
	cc := adminConn(t, srv)
	lc := writv1.NewLockServiceClient(cc)
	ctx := context.Background()
	before := revision(t, cc)
	good := "spiffe://" + testTD + "/x"
	target := func(kind, value string) *writv1.LockTarget { return &writv1.LockTarget{Kind: kind, Value: value} }
	for _, tc := range []struct {
		name string
		req  *writv1.CreateLockRequest
		part string
	}{
		{"no target", &writv1.CreateLockRequest{Reason: "r"}, "target.kind"},
		{"unknown kind", &writv1.CreateLockRequest{Target: target("user", good), Reason: "r"}, "target.kind"},
		{"not an ID", &writv1.CreateLockRequest{Target: target("spiffe-id", "db"), Reason: "r"}, "target.value"},
		{"other trust domain", &writv1.CreateLockRequest{Target: target("id-prefix", "spiffe://evil.org/x"), Reason: "r"}, "target.value"},
		{"trust domain root", &writv1.CreateLockRequest{Target: target("id-prefix", "spiffe://"+testTD), Reason: "r"}, "target.value"},
		{"trailing slash", &writv1.CreateLockRequest{Target: target("id-prefix", good+"/"), Reason: "r"}, "target.value"},
		{"bad node", &writv1.CreateLockRequest{Target: target("node", "n1"), Reason: "r"}, "target.value"},
		{"person not lowercase", &writv1.CreateLockRequest{Target: target("spiffe-id", "spiffe://"+testTD+"/person/example.com/Erin"), Reason: "r"},
			`target.value: "spiffe://` + testTD + `/person/example.com/Erin": person IDs are lowercase (sign-in lowercases the email); use "spiffe://` + testTD + `/person/example.com/erin"`},
		{"person prefix not lowercase", &writv1.CreateLockRequest{Target: target("id-prefix", "spiffe://"+testTD+"/person/EXAMPLE.com"), Reason: "r"}, "person IDs are lowercase"},
		{"bad join method", &writv1.CreateLockRequest{Target: target("join-method", "Join Token"), Reason: "r"}, "target.value"},
		{"empty join method", &writv1.CreateLockRequest{Target: target("join-method", ""), Reason: "r"}, "target.value"},
		{"no reason", &writv1.CreateLockRequest{Target: target("spiffe-id", good)}, "reason"},
		{"blank reason", &writv1.CreateLockRequest{Target: target("spiffe-id", good), Reason: "  "}, "reason"},
		{"long reason", &writv1.CreateLockRequest{Target: target("spiffe-id", good), Reason: strings.Repeat("r", 513)}, "reason"},
		{"control in reason", &writv1.CreateLockRequest{Target: target("spiffe-id", good), Reason: "a\nb"}, "reason"},
		{"bad ttl", &writv1.CreateLockRequest{Target: target("spiffe-id", good), Reason: "r", Ttl: "soon"}, "ttl"},
		{"negative ttl", &writv1.CreateLockRequest{Target: target("spiffe-id", good), Reason: "r", Ttl: "-5m"}, "ttl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := lc.CreateLock(ctx, tc.req)
			wantCode(t, err, codes.InvalidArgument, tc.part)
		})
	}
	_, err := lc.DeleteLock(ctx, &writv1.DeleteLockRequest{})
	wantCode(t, err, codes.InvalidArgument, "id")
	_, err = lc.DeleteLock(ctx, &writv1.DeleteLockRequest{Id: "nope"})
	wantCode(t, err, codes.NotFound, "nope")
	if after := revision(t, cc); after != before {
		t.Fatalf("refused calls moved the revision from %d to %d", before, after)
	}
	list, err := lc.ListLocks(ctx, &writv1.ListLocksRequest{})
	if err != nil || len(list.Locks) != 0 {
		t.Fatalf("ListLocks = %v, %v; want none", list.GetLocks(), err)
	}
	// A reason of exactly 512 printable characters, non-ASCII included, is fine.
	createLock(t, cc, "spiffe-id", good, strings.Repeat("é", 512), "")
}
