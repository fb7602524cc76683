package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"math/big"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
)

// fakeDecisions is a DecisionService whose answers and change stream the
// test drives.
type fakeDecisions struct {
	writv1.UnimplementedDecisionServiceServer
	allow atomic.Bool
	down  atomic.Bool // Check fails as if unreachable
	// mute keeps open streams silent: no changes, no heartbeats, as a
	// server lost behind a network that drops packets.
	mute atomic.Bool
	// limited makes that many Checks fail as rate limited.
	limited atomic.Int64
	// refuseWatch makes WatchDecisions fail, as a server that cannot
	// be watched.
	refuseWatch atomic.Bool
	checks      atomic.Int64
	// gate, when set, holds each Check until it is closed.
	gate atomic.Pointer[chan struct{}]

	mu      sync.Mutex
	streams []chan *writv1.DecisionsChanged
	ends    []chan struct{}
}

func (f *fakeDecisions) Check(ctx context.Context, req *writv1.CheckRequest) (*writv1.CheckResponse, error) {
	f.checks.Add(1)
	if g := f.gate.Load(); g != nil {
		<-*g
	}
	if f.down.Load() {
		return nil, status.Error(codes.Unavailable, "down")
	}
	if f.limited.Add(-1) >= 0 {
		return nil, status.Error(codes.ResourceExhausted, "too many decisions")
	}
	if !f.allow.Load() {
		return &writv1.CheckResponse{Allow: false, Reason: "task T-1 is closed"}, nil
	}
	return &writv1.CheckResponse{Allow: true, Chain: []string{"spiffe://test.writ/agent/a"}}, nil
}

func (f *fakeDecisions) WatchDecisions(_ *writv1.WatchDecisionsRequest, stream writv1.DecisionService_WatchDecisionsServer) error {
	if f.refuseWatch.Load() {
		return status.Error(codes.Unavailable, "not now")
	}
	ch, end := make(chan *writv1.DecisionsChanged, 16), make(chan struct{})
	f.mu.Lock()
	f.streams, f.ends = append(f.streams, ch), append(f.ends, end)
	f.mu.Unlock()
	if err := stream.Send(&writv1.DecisionsChanged{Revision: 1}); err != nil {
		return err
	}
	for {
		select {
		case m := <-ch:
			if f.mute.Load() {
				continue
			}
			if err := stream.Send(m); err != nil {
				return err
			}
		case <-end:
			return status.Error(codes.Unavailable, "stream broken")
		case <-stream.Context().Done():
			return nil
		}
	}
}

// push sends a change on every open stream.
func (f *fakeDecisions) push(m *writv1.DecisionsChanged) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ch := range f.streams {
		select {
		case ch <- m:
		default: // a stream gone or behind; the tests wait for effects
		}
	}
}

// breakStreams ends every open stream with an error.
func (f *fakeDecisions) breakStreams() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, end := range f.ends {
		close(end)
	}
	f.streams, f.ends = nil, nil
}

func startFake(t *testing.T) (*fakeDecisions, *Core) {
	t.Helper()
	f := &fakeDecisions{}
	f.allow.Store(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	writv1.RegisterDecisionServiceServer(gs, f)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	core, err := NewCore(CoreConfig{Conn: cc})
	if err != nil {
		t.Fatal(err)
	}
	// A clock that stands still unless a test moves it, so no cached
	// decision lapses by a minute turning during a test.
	clock := time.Date(2026, 12, 7, 10, 30, 0, 0, time.UTC)
	core.now = func() time.Time { return clock }
	// The fake sends heartbeats only when a test does.
	core.silence = time.Hour
	return f, core
}

func run(t *testing.T, core *Core, ctx context.Context) {
	t.Helper()
	done := make(chan struct{})
	go func() { core.Run(ctx); close(done) }()
	t.Cleanup(func() { <-done })
	waitFor(t, "the core watching", core.Watching)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testCaller(t testing.TB) Caller {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://test.writ/agent/a")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return Caller{Certificates: []*x509.Certificate{cert}, SourceAddress: "127.0.0.1:5555"}
}

var connect = Request{Action: "connect", Resource: "tcp/orders-db"}

func decide(t *testing.T, core *Core, c Caller, r Request) Decision {
	t.Helper()
	d, err := core.Decide(t.Context(), c, r)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestCacheOnlyWhileWatching: without the change stream every decision
// goes to the server; with it, a repeated request is answered from the
// cache, and a change message empties it.
func TestCacheOnlyWhileWatching(t *testing.T) {
	f, core := startFake(t)
	c := testCaller(t)
	decide(t, core, c, connect)
	decide(t, core, c, connect)
	if n := f.checks.Load(); n != 2 {
		t.Fatalf("checks without the stream = %d, want 2", n)
	}
	run(t, core, t.Context())
	decide(t, core, c, connect)
	other := c
	other.SourceAddress = "127.0.0.1:6666" // another connection of the same caller
	decide(t, core, other, connect)
	if n := f.checks.Load(); n != 3 {
		t.Fatalf("checks with the stream = %d, want 3 (one cached)", n)
	}
	args := connect
	args.Arguments = map[string]any{"repo": "acme/prod"}
	decide(t, core, c, args)
	if n := f.checks.Load(); n != 4 {
		t.Fatalf("checks after new arguments = %d, want 4", n)
	}
	// A heartbeat changes nothing; a change empties the cache.
	f.push(&writv1.DecisionsChanged{Revision: 1, Heartbeat: true})
	f.push(&writv1.DecisionsChanged{Revision: 2})
	if err := core.WaitRedecided(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the cache emptied", func() bool { core.mu.Lock(); defer core.mu.Unlock(); return len(core.cache) == 0 })
	f.allow.Store(false)
	if d := decide(t, core, c, connect); d.Allow {
		t.Fatalf("after a change: %+v, want the server's new denial", d)
	}
}

// TestBrokenStreamStopsServingAllows: once the change stream breaks, the
// cached allow is not served: the server's denial is, and a held session
// the server can no longer decide is cut.
func TestBrokenStreamStopsServingAllows(t *testing.T) {
	f, core := startFake(t)
	run(t, core, t.Context())
	c := testCaller(t)
	if d := decide(t, core, c, connect); !d.Allow {
		t.Fatalf("first decision: %+v", d)
	}
	live, release := core.Hold(t.Context(), c, connect)
	defer release()
	if live.Err() != nil {
		t.Fatalf("held session ended at once: %v", context.Cause(live))
	}
	before := f.checks.Load()
	if d := decide(t, core, c, connect); !d.Allow || f.checks.Load() != before {
		t.Fatalf("cached decision: %+v after %d checks", d, f.checks.Load()-before)
	}

	// The server changes its mind and the stream breaks without a word.
	f.allow.Store(false)
	f.down.Store(true)
	f.refuseWatch.Store(true)
	f.breakStreams()
	waitFor(t, "the core to notice the broken stream", func() bool { return !core.Watching() })
	select {
	case <-live.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the held session was not cut when it could no longer be decided")
	}
	var cut *CutError
	if !errors.As(context.Cause(live), &cut) || !strings.Contains(cut.Reason, "no decision") {
		t.Fatalf("cause = %v, want a CutError saying no decision could be had", context.Cause(live))
	}
	f.down.Store(false)
	if d, err := core.Decide(t.Context(), c, connect); err != nil || d.Allow {
		t.Fatalf("after the stream broke: %+v, %v: want the server's denial, not the cached allow", d, err)
	}
	// While the stream is down nothing is cached, denials included.
	f.allow.Store(true)
	before = f.checks.Load()
	decide(t, core, c, connect)
	decide(t, core, c, connect)
	if n := f.checks.Load() - before; n != 2 || core.Watching() {
		t.Fatalf("%d checks for 2 decisions while the stream is down (watching %v), want 2", n, core.Watching())
	}
}

// TestHoldCutOnChange: a change after which the server denies cuts every
// session of that caller and request, naming the reason, and leaves the
// others.
func TestHoldCutOnChange(t *testing.T) {
	f, core := startFake(t)
	run(t, core, t.Context())
	c := testCaller(t)
	a, releaseA := core.Hold(t.Context(), c, connect)
	defer releaseA()
	b, releaseB := core.Hold(t.Context(), c, connect)
	defer releaseB()
	if core.Held() != 2 || a.Err() != nil || b.Err() != nil {
		t.Fatalf("held %d, errors %v %v", core.Held(), a.Err(), b.Err())
	}
	f.push(&writv1.DecisionsChanged{Revision: 2})
	if err := core.WaitRedecided(t.Context()); err != nil {
		t.Fatal(err)
	}
	if a.Err() != nil {
		t.Fatalf("cut while the decision still holds: %v", context.Cause(a))
	}
	f.allow.Store(false)
	f.push(&writv1.DecisionsChanged{Revision: 3})
	for _, live := range []context.Context{a, b} {
		select {
		case <-live.Done():
		case <-time.After(20 * time.Second):
			t.Fatal("not cut after the server denied")
		}
		var cut *CutError
		if !errors.As(context.Cause(live), &cut) || cut.Reason != "task T-1 is closed" {
			t.Fatalf("cause = %v", context.Cause(live))
		}
	}
	releaseA()
	releaseB()
	if core.Held() != 0 {
		t.Fatalf("held after release: %d", core.Held())
	}
	// A session held after the denial is cut at once.
	late, release := core.Hold(t.Context(), c, connect)
	defer release()
	if late.Err() == nil {
		t.Fatal("a session held after the denial is live")
	}
}

// TestDecisionAcrossAChangeIsNotCached: an answer the server gave while
// a change arrived may predate the change, so it is not cached.
func TestDecisionAcrossAChangeIsNotCached(t *testing.T) {
	f, core := startFake(t)
	run(t, core, t.Context())
	c := testCaller(t)
	gate := make(chan struct{})
	f.gate.Store(&gate)
	done := make(chan Decision)
	go func() { d, _ := core.Decide(context.Background(), c, connect); done <- d }()
	waitFor(t, "the check in flight", func() bool { return f.checks.Load() == 1 })
	core.mu.Lock()
	before := core.gen
	core.mu.Unlock()
	f.push(&writv1.DecisionsChanged{Revision: 2})
	waitFor(t, "the change seen", func() bool { core.mu.Lock(); defer core.mu.Unlock(); return core.gen > before })
	f.gate.Store(nil)
	close(gate)
	if d := <-done; !d.Allow {
		t.Fatalf("in-flight decision: %+v", d)
	}
	f.allow.Store(false)
	if d := decide(t, core, c, connect); d.Allow {
		t.Fatal("the allow fetched across a change was served from the cache")
	}
}

// TestCacheIsBounded: the cache never holds more than its size.
func TestCacheIsBounded(t *testing.T) {
	_, core := startFake(t)
	core.size = 8
	run(t, core, t.Context())
	c := testCaller(t)
	for i := range 50 {
		decide(t, core, c, Request{Action: "connect", Resource: "tcp/db-" + string(rune('a'+i%26)) + string(rune('a'+i/26))})
	}
	core.mu.Lock()
	defer core.mu.Unlock()
	if len(core.cache) > 8 {
		t.Fatalf("cache holds %d, more than its size 8", len(core.cache))
	}
}

// TestSilentStreamStopsServingAllows: a stream that stays open but says
// nothing past the heartbeat (a lost server) is taken for broken: the
// cache is dropped and the held sessions decided again.
func TestSilentStreamStopsServingAllows(t *testing.T) {
	f, core := startFake(t)
	core.silence = 300 * time.Millisecond
	go func() {
		// The fake's heartbeats, until it is muted.
		for t.Context().Err() == nil {
			f.push(&writv1.DecisionsChanged{Revision: 1, Heartbeat: true})
			time.Sleep(50 * time.Millisecond)
		}
	}()
	run(t, core, t.Context())
	c := testCaller(t)
	decide(t, core, c, connect)
	live, release := core.Hold(t.Context(), c, connect)
	defer release()
	f.refuseWatch.Store(true)
	f.down.Store(true)
	f.mute.Store(true)
	waitFor(t, "the silent stream taken for broken", func() bool { return !core.Watching() })
	select {
	case <-live.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the held session was not decided again when the stream went silent")
	}
	before := f.checks.Load()
	core.Decide(t.Context(), c, connect)
	if f.checks.Load() == before {
		t.Fatal("a decision was served from the cache after the stream went silent")
	}
}

// TestHoldEndsWithTheEvidence: a session ends when the delegation token
// it was decided on expires, though nothing changed on the server.
func TestHoldEndsWithTheEvidence(t *testing.T) {
	_, core := startFake(t)
	run(t, core, t.Context())
	c := testCaller(t)
	exp := time.Now().Add(300*time.Millisecond).Unix() + 1
	c.DelegationToken = "e30." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":`+strconv.FormatInt(exp, 10)+`}`)) + ".sig"
	live, release := core.Hold(t.Context(), c, connect)
	defer release()
	select {
	case <-live.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the session outlived its delegation token")
	}
	var cut *CutError
	if !errors.As(context.Cause(live), &cut) || !strings.Contains(cut.Reason, "delegation token expired") {
		t.Fatalf("cause = %v", context.Cause(live))
	}
	for _, bad := range []string{"", "a.b", "a.!!.c", "a." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":"x"}`)) + ".c"} {
		if _, ok := tokenExpiry(bad); ok {
			t.Errorf("tokenExpiry(%q) found an expiry", bad)
		}
	}
}

// TestRedecisionWaitsOutTheRateLimit: held sessions decided again at once
// may meet the server's rate limit; a session still allowed is not cut for
// a refusal that passes, and is cut when it does not.
func TestRedecisionWaitsOutTheRateLimit(t *testing.T) {
	f, core := startFake(t)
	run(t, core, t.Context())
	c := testCaller(t)
	live, release := core.Hold(t.Context(), c, connect)
	defer release()
	f.limited.Store(2)
	f.push(&writv1.DecisionsChanged{Revision: 2})
	waitFor(t, "the limited checks used up", func() bool { return f.limited.Load() < 0 })
	if err := core.WaitRedecided(t.Context()); err != nil {
		t.Fatal(err)
	}
	if live.Err() != nil {
		t.Fatalf("cut for a passing rate limit: %v", context.Cause(live))
	}
	f.limited.Store(1 << 40)
	f.push(&writv1.DecisionsChanged{Revision: 3})
	select {
	case <-live.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("a session the server would not decide was kept")
	}
	if !strings.Contains(context.Cause(live).Error(), "rate limiting") {
		t.Fatalf("cause = %v", context.Cause(live))
	}
}

// TestCachedDecisionsLastToTheMinute: a guardrail may read the time, which
// no change announces, so a cached decision is not served past the next
// whole minute.
func TestCachedDecisionsLastToTheMinute(t *testing.T) {
	f, core := startFake(t)
	var clock atomic.Int64
	start := time.Date(2026, 12, 7, 21, 59, 59, 0, time.UTC)
	core.now = func() time.Time { return start.Add(time.Duration(clock.Load())) }
	run(t, core, t.Context())
	c := testCaller(t)
	decide(t, core, c, connect)
	clock.Store(int64(900 * time.Millisecond))
	decide(t, core, c, connect)
	if n := f.checks.Load(); n != 1 {
		t.Fatalf("checks within the minute = %d, want 1", n)
	}
	clock.Store(int64(time.Second)) // 22:00:00, when a guardrail on the hour may turn
	decide(t, core, c, connect)
	if n := f.checks.Load(); n != 2 {
		t.Fatalf("checks after the minute turned = %d, want 2", n)
	}
}

// TestHeldSessionsDecidedAtEveryStep: held sessions are decided again as
// time passes, though nothing changed on the server.
func TestHeldSessionsDecidedAtEveryStep(t *testing.T) {
	f, core := startFake(t)
	core.recheck = 50 * time.Millisecond
	core.now = time.Now
	run(t, core, t.Context())
	c := testCaller(t)
	live, release := core.Hold(t.Context(), c, connect)
	defer release()
	f.allow.Store(false)
	select {
	case <-live.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("a held session was never decided again without a change")
	}
}
