package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/attest/node/oidc"
	"writ.dev/writ/audit"
	"writ.dev/writ/ca"
	"writ.dev/writ/store"
)

// refusalSummaryDetails is the details of a refusal.summary event.
type refusalSummaryDetails struct {
	Source      string         `json:"source"`
	Count       int            `json:"count"`
	Recorded    int            `json:"recorded"`
	RateLimited int            `json:"rate_limited"`
	ByType      map[string]int `json:"by_type"`
	Reasons     []string       `json:"reasons"`
	Omitted     int            `json:"reasons_omitted"`
}

// manualClock is a clock tests move by hand.
type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func newManualClock() *manualClock { return &manualClock{t: time.Now()} }

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *manualClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// countingLocks counts lock checks.
type countingLocks struct {
	issueLocks
	issues atomic.Int64
}

func (c *countingLocks) checkIssue(id spiffeid.ID) error {
	c.issues.Add(1)
	return c.issueLocks.checkIssue(id)
}

// countingX509 counts X.509 signatures.
type countingX509 struct {
	x509Signer
	signed atomic.Int64
}

func (c *countingX509) SignX509SVID(p ca.X509SVIDParams, now time.Time) ([]*x509.Certificate, error) {
	c.signed.Add(1)
	return c.x509Signer.SignX509SVID(p, now)
}

// fromSource is a call from addr, as the transport would present it.
func fromSource(ctx context.Context, addr string) context.Context {
	ap, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		panic(err)
	}
	return peer.NewContext(ctx, &peer.Peer{Addr: ap, AuthInfo: credentials.TLSInfo{}})
}

func localAdmin(ctx context.Context) context.Context {
	return context.WithValue(ctx, callerKey{}, Caller{Local: &PeerCred{}})
}

// asAgent is a call from the agent id presenting leaf over mTLS.
func asAgent(ctx context.Context, id string, leaf *x509.Certificate) context.Context {
	ctx = peer.NewContext(ctx, &peer.Peer{
		Addr:     &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4000},
		AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}},
	})
	return context.WithValue(ctx, callerKey{}, Caller{ID: spiffeid.RequireFromString(id)})
}

func eventsOf(t *testing.T, srv *Server, typ string) []audit.Event {
	t.Helper()
	var out []audit.Event
	for _, e := range readEvents(t, writv1.NewAuditServiceClient(adminConn(t, srv))) {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

func issuedTotal(srv *Server, kind svidKind) float64 {
	var m dto.Metric
	if err := srv.metrics.issued.WithLabelValues(string(kind)).Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// joinedAgent joins an agent in process with a join token and gives it a
// rule for workload, returning a context that calls as that agent.
func joinedAgent(t *testing.T, srv *Server, workload string) context.Context {
	t.Helper()
	ctx := t.Context()
	tok, err := srv.NewJoinToken(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, csr := newCSR(t)
	svid, err := (&agentService{s: srv}).Join(fromSource(ctx, "192.0.2.1:1000"), &writv1.JoinRequest{Token: tok.GetToken(), Csr: csr})
	if err != nil {
		t.Fatal(err)
	}
	leaf := parseCerts(t, svid.GetCertChain())[0]
	e := &writv1.Entry{Id: "wl", SpiffeId: "spiffe://" + testTD + workload, ParentId: tok.GetAgentId(),
		Selectors: []*writv1.Selector{{Type: "unix", Value: "uid:1000"}}}
	if _, err := writv1.NewEntryServiceClient(adminConn(t, srv)).CreateEntries(ctx, &writv1.CreateEntriesRequest{Entries: []*writv1.Entry{e}}); err != nil {
		t.Fatal(err)
	}
	return asAgent(ctx, tok.GetAgentId(), leaf)
}

// TestAdminMintChecksTheLockOnce: each mint asks the locks once, where the
// JWT path used to ask twice.
func TestAdminMintChecksTheLockOnce(t *testing.T) {
	srv := startServer(t, testConfig(t))
	locks := &countingLocks{issueLocks: srv.issuer.locks}
	srv.issuer.locks = locks
	svc := &svidService{s: srv}
	ctx := localAdmin(t.Context())
	id := "spiffe://" + testTD + "/once"
	if _, err := svc.MintJWTSVID(ctx, &writv1.MintJWTSVIDRequest{SpiffeId: id, Audience: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	if n := locks.issues.Load(); n != 1 {
		t.Fatalf("JWT mint checked the locks %d times, want 1", n)
	}
	_, csr := newCSR(t)
	if _, err := svc.MintX509SVID(ctx, &writv1.MintX509SVIDRequest{SpiffeId: id, Csr: csr}); err != nil {
		t.Fatal(err)
	}
	if n := locks.issues.Load(); n != 2 {
		t.Fatalf("X.509 mint checked the locks %d times, want 1", n-1)
	}
}

// TestWorkloadMintUnderLockIsAudited: a lock refusing a workload's SVID is
// an audit event on the workload path too, X.509 and JWT alike.
func TestWorkloadMintUnderLockIsAudited(t *testing.T) {
	srv := startServer(t, testConfig(t))
	ctx := joinedAgent(t, srv, "/locked-wl")
	id := "spiffe://" + testTD + "/locked-wl"
	createLock(t, adminConn(t, srv), "spiffe-id", id, "INC-7", "")
	as := &agentService{s: srv}
	_, csr := newCSR(t)
	resp, err := as.MintWorkloadX509SVIDs(ctx, &writv1.MintWorkloadX509SVIDsRequest{Csrs: []*writv1.WorkloadCSR{{EntryId: "wl", Csr: csr}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetSvids()[0]; got.GetError() == "" || len(got.GetCertChain()) > 0 {
		t.Fatalf("locked workload got %+v, want a refusal", got)
	}
	_, err = as.MintWorkloadJWTSVID(ctx, &writv1.MintWorkloadJWTSVIDRequest{EntryId: "wl", Audience: []string{"a"}})
	wantCode(t, err, codes.PermissionDenied, "INC-7")
	for _, typ := range []string{audit.EventSVIDX509Refused, audit.EventSVIDJWTRefused} {
		evs := eventsOf(t, srv, typ)
		if len(evs) != 1 || evs[0].Subject != id {
			t.Fatalf("%s events: %+v, want one for %s", typ, evs, id)
		}
	}
}

// TestWorkloadJWTMintIsRateLimited: past its burst, a workload's JWT-SVIDs
// are refused with ResourceExhausted and no audit event each.
func TestWorkloadJWTMintIsRateLimited(t *testing.T) {
	clock := newManualClock()
	cfg := testConfig(t)
	cfg.Limits.IssuancePerIdentity = RateLimit{Rate: 1, Burst: 5}
	srv, err := New(t.Context(), cfg, Options{Logger: quietLogger(), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	ctx := joinedAgent(t, srv, "/chatty")
	as := &agentService{s: srv}
	req := &writv1.MintWorkloadJWTSVIDRequest{EntryId: "wl", Audience: []string{"a"}}
	for i := range 5 {
		if _, err := as.MintWorkloadJWTSVID(ctx, req); err != nil {
			t.Fatalf("mint %d within the burst: %v", i, err)
		}
	}
	before := len(readEvents(t, writv1.NewAuditServiceClient(adminConn(t, srv))))
	for range 100 {
		_, err := as.MintWorkloadJWTSVID(ctx, req)
		wantCode(t, err, codes.ResourceExhausted, "limits.issuance_per_identity")
	}
	if after := len(readEvents(t, writv1.NewAuditServiceClient(adminConn(t, srv)))); after != before {
		t.Fatalf("rate-limited mints wrote %d audit events", after-before)
	}
	if issued := issuedTotal(srv, kindJWT); issued != 5 {
		t.Fatalf("writ_svids_issued_total{kind=jwt} = %v, want 5", issued)
	}
	clock.Add(time.Second)
	if _, err := as.MintWorkloadJWTSVID(ctx, req); err != nil {
		t.Fatalf("a second later: %v", err)
	}

	// A lock's refusals are one event each, as many as the limit lets by.
	createLock(t, adminConn(t, srv), "spiffe-id", "spiffe://"+testTD+"/chatty", "INC-9", "")
	clock.Add(2 * time.Second)
	denied := 0
	for range 20 {
		_, err := as.MintWorkloadJWTSVID(ctx, req)
		switch status.Code(err) {
		case codes.PermissionDenied:
			denied++
		case codes.ResourceExhausted:
		default:
			t.Fatalf("locked mint: %v", err)
		}
	}
	if refusals := eventsOf(t, srv, audit.EventSVIDJWTRefused); denied != 2 || len(refusals) != 2 {
		t.Fatalf("%d lock refusals, %d audited; want the 2 the limit let by, each audited", denied, len(refusals))
	}
}

// TestJoinTokenReplaySignsNothing: a replayed join token is refused before
// anything is signed or counted.
func TestJoinTokenReplaySignsNothing(t *testing.T) {
	srv := startServer(t, testConfig(t))
	signer := &countingX509{x509Signer: srv.issuer.x509}
	srv.issuer.x509 = signer
	tok, err := srv.NewJoinToken(t.Context(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	as := &agentService{s: srv}
	ctx := fromSource(t.Context(), "192.0.2.9:1000")
	_, csr := newCSR(t)
	if _, err := as.Join(ctx, &writv1.JoinRequest{Token: tok.GetToken(), Csr: csr}); err != nil {
		t.Fatal(err)
	}
	signed, issued := signer.signed.Load(), issuedTotal(srv, kindX509)
	_, err = as.Join(ctx, &writv1.JoinRequest{Token: tok.GetToken(), Csr: csr})
	wantCode(t, err, codes.PermissionDenied, "already used")
	if n := signer.signed.Load(); n != signed {
		t.Fatalf("the replay was signed (%d signatures, want %d)", n, signed)
	}
	if n := issuedTotal(srv, kindX509); n != issued {
		t.Fatalf("the replay was counted: writ_svids_issued_total{kind=x509} %v, want %v", n, issued)
	}
	if evs := eventsOf(t, srv, audit.EventAgentJoinRefused); len(evs) != 1 {
		t.Fatalf("%d refusal events, want 1", len(evs))
	}
}

// writeJWKS writes a key set holding key's public half.
func writeJWKS(t *testing.T, key *ecdsa.PrivateKey) string {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestFailedLoginsAreSummarised: a thousand failed sign-ins from one
// source leave one event for the first and one summary counting all,
// however many the rate limit turned away.
func TestFailedLoginsAreSummarised(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	clock := newManualClock()
	cfg := testConfig(t)
	cfg.People = PeopleConfig{Issuer: "https://idp.example", ClientID: "writ", JWKSFile: writeJWKS(t, key), Allow: []oidc.Rule{{"email_domain": "example.com"}}}
	cfg.Defaults()
	srv, err := New(t.Context(), cfg, Options{Logger: quietLogger(), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	ps := &personService{s: srv}
	ctx := fromSource(t.Context(), "198.51.100.7:5555")
	_, csr := newCSR(t)
	limited := 0
	for i := range 1000 {
		_, err := ps.Login(ctx, &writv1.LoginRequest{IdToken: fmt.Sprintf("not-a-token-%d", i), Csr: csr})
		switch status.Code(err) {
		case codes.PermissionDenied:
		case codes.ResourceExhausted:
			limited++
		default:
			t.Fatalf("login %d: %v", i, err)
		}
	}
	if limited == 0 {
		t.Fatal("no attempt was rate limited")
	}
	if evs := eventsOf(t, srv, audit.EventRefusalSummary); len(evs) != 0 {
		t.Fatalf("a summary was written before its interval ended: %+v", evs)
	}
	clock.Add(cfg.Limits.RefusalSummaryInterval.Duration)
	if err := srv.issuer.flushRefusals(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	// The background flush may have taken the window first; wait for it.
	eventually(t, 10*time.Second, "the summary", func() bool { return len(eventsOf(t, srv, audit.EventRefusalSummary)) > 0 })
	if evs := eventsOf(t, srv, audit.EventPersonLoginRefused); len(evs) != 1 {
		t.Fatalf("%d sign-in refusals recorded on their own, want 1", len(evs))
	}
	sums := eventsOf(t, srv, audit.EventRefusalSummary)
	if len(sums) != 1 {
		t.Fatalf("%d summaries, want 1", len(sums))
	}
	var d refusalSummaryDetails
	if err := json.Unmarshal(sums[0].Details, &d); err != nil {
		t.Fatal(err)
	}
	if d.Source != "198.51.100.7" || d.Count != 1000 || d.RateLimited != limited || d.Recorded != 1 || d.ByType[audit.EventPersonLoginRefused] != 1000 {
		t.Fatalf("summary %+v, want 1000 refusals from 198.51.100.7, %d rate limited, 1 recorded", d, limited)
	}
	if len(d.Reasons) > maxSummaryReasons || len(d.Reasons) == 0 {
		t.Fatalf("summary reasons %q: want 1 to %d", d.Reasons, maxSummaryReasons)
	}
}

// fakeAudit keeps events in memory.
type fakeAudit struct {
	mu  sync.Mutex
	evs []audit.Event
}

func (f *fakeAudit) event(_ context.Context, typ, subject string, details any) (store.AuditEvent, error) {
	return audit.Make(time.Unix(0, 0), typ, "test", subject, details)
}

func (f *fakeAudit) record(_ context.Context, evs ...store.AuditEvent) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, raw := range evs {
		e, err := audit.DecodeEvent(raw)
		if err != nil {
			return err
		}
		f.evs = append(f.evs, e)
	}
	return nil
}

func (f *fakeAudit) types() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, e := range f.evs {
		out = append(out, e.Type)
	}
	return out
}

type noLocks struct{}

func (noLocks) checkIssue(spiffeid.ID) error { return nil }
func (noLocks) checkJoin(string) error       { return nil }

type okClock struct{}

func (okClock) checkIssue() error { return nil }

type fakeMetrics struct{ issuedN, limitedN atomic.Int64 }

func (m *fakeMetrics) issued(_ svidKind, n int) { m.issuedN.Add(int64(n)) }
func (m *fakeMetrics) rateLimited(svidKind)     { m.limitedN.Add(1) }

type fakeX509 struct{ n atomic.Int64 }

func (f *fakeX509) SignX509SVID(p ca.X509SVIDParams, now time.Time) ([]*x509.Certificate, error) {
	return []*x509.Certificate{{SerialNumber: big.NewInt(f.n.Add(1)), NotAfter: now.Add(p.TTL)}}, nil
}

func testIssuer(t *testing.T, clock *manualClock, rec auditRecorder) (*issuer, *fakeMetrics) {
	t.Helper()
	cfg := testConfig(t)
	m := &fakeMetrics{}
	return newIssuer(issuerConfig{
		X509: &fakeX509{}, Locks: noLocks{}, Clock: okClock{}, Audit: rec, Metrics: m,
		Now: clock.Now, Log: quietLogger(), SVID: cfg.SVID, Limits: cfg.Limits,
	}), m
}

// TestRefusalSummaryIntervals: refusals are summarised per source and per
// interval by the injected clock; each interval's first is recorded at once.
func TestRefusalSummaryIntervals(t *testing.T) {
	clock := newManualClock()
	rec := &fakeAudit{}
	is, _ := testIssuer(t, clock, rec)
	refused := func(src string) {
		r := &issueRequest{Kind: kindX509, Anonymous: true, Event: audit.EventAgentJoin, RefusedEvent: audit.EventAgentJoinRefused,
			Attest: func(context.Context, *issueRequest) error {
				return status.Error(codes.PermissionDenied, "bad evidence")
			}}
		_, err := is.issue(fromSource(t.Context(), src), r)
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("from %s: %v", src, err)
		}
	}
	for range 10 {
		refused("192.0.2.1:1")
		refused("[2001:db8::1]:1")
		refused("[2001:db8::2]:2") // the same /64
	}
	if got := rec.types(); len(got) != 2 {
		t.Fatalf("events before the interval ended: %v, want one per source", got)
	}
	clock.Add(is.refusals.interval - time.Second)
	if err := is.flushRefusals(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	if got := rec.types(); len(got) != 2 {
		t.Fatalf("summaries written before the interval ended: %v", got)
	}
	clock.Add(time.Second)
	if err := is.flushRefusals(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, e := range rec.evs[2:] {
		var d refusalSummaryDetails
		if err := json.Unmarshal(e.Details, &d); err != nil || e.Type != audit.EventRefusalSummary {
			t.Fatalf("event %s %s: %v", e.Type, e.Details, err)
		}
		counts[d.Source] = d.Count
	}
	if want := map[string]int{"192.0.2.1": 10, "2001:db8::/64": 20}; fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Fatalf("summaries %v, want %v", counts, want)
	}
	// The next interval starts afresh: its first refusal is recorded.
	refused("192.0.2.1:1")
	if n := len(rec.types()); n != 5 {
		t.Fatalf("%d events, want 5", n)
	}
}

// TestRefusalsAreFlushedAtShutdown: what is counted when the server stops
// is written, and refusals after that are recorded one by one.
func TestRefusalsAreFlushedAtShutdown(t *testing.T) {
	clock := newManualClock()
	rec := &fakeAudit{}
	is, _ := testIssuer(t, clock, rec)
	for range 3 {
		is.noteAnonymousRefusalForTest(t, "192.0.2.5:1")
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { is.run(ctx); close(done) }()
	cancel()
	<-done
	if got := rec.types(); len(got) != 2 || got[1] != audit.EventRefusalSummary {
		t.Fatalf("events after shutdown: %v, want the first refusal and a summary", got)
	}
	is.noteAnonymousRefusalForTest(t, "192.0.2.5:1")
	if got := rec.types(); len(got) != 3 || got[2] != audit.EventAgentJoinRefused {
		t.Fatalf("a refusal after the final flush: %v, want it recorded on its own", got)
	}
}

func (is *issuer) noteAnonymousRefusalForTest(t *testing.T, src string) {
	t.Helper()
	r := &issueRequest{Kind: kindX509, Anonymous: true, RefusedEvent: audit.EventAgentJoinRefused,
		Attest: func(context.Context, *issueRequest) error { return status.Error(codes.PermissionDenied, "no") }}
	if _, err := is.issue(fromSource(t.Context(), src), r); status.Code(err) != codes.PermissionDenied {
		t.Fatal(err)
	}
}

// TestRateLimiter: a bucket per key, refilled by the injected clock, and
// memory bounded however many keys come.
func TestRateLimiter(t *testing.T) {
	clock := newManualClock()
	l := newRateLimiter(RateLimit{Rate: 2, Burst: 3}, clock.Now)
	for i := range 3 {
		if !l.allow("a") {
			t.Fatalf("call %d within the burst refused", i)
		}
	}
	if l.allow("a") {
		t.Fatal("call past the burst allowed")
	}
	if !l.allow("b") {
		t.Fatal("another key shares a's bucket")
	}
	clock.Add(500 * time.Millisecond)
	if !l.allow("a") || l.allow("a") {
		t.Fatal("half a second at 2/s should allow exactly one more")
	}
	for i := range maxLimiterKeys + 10 {
		l.allow(fmt.Sprint("k", i))
	}
	if n := len(l.buckets); n > maxLimiterKeys+1 {
		t.Fatalf("%d buckets, bound %d", n, maxLimiterKeys)
	}
}
