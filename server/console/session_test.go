package console

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func requestWith(id string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.AddCookie(&http.Cookie{Name: sessionCookie, Value: id})
	return r
}

var alice = spiffeid.RequireFromString("spiffe://example.org/person/example.com/alice")

// TestSessionTimeouts: a session ends when unused for the idle timeout,
// and at the absolute timeout however busy it is.
func TestSessionTimeouts(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	ss := newSessions(10*time.Minute, time.Hour, 10, clk.now)
	se := ss.start(alice)
	for range 6 { // used every 9 minutes: idle never ends it
		clk.t = clk.t.Add(9 * time.Minute)
		if ss.get(requestWith(se.id)) == nil {
			t.Fatalf("session ended at %s though used", clk.t)
		}
	}
	clk.t = clk.t.Add(9 * time.Minute) // 63 minutes after sign-in
	if ss.get(requestWith(se.id)) != nil {
		t.Fatal("session outlived its absolute timeout")
	}

	idle := ss.start(alice)
	clk.t = clk.t.Add(10 * time.Minute)
	if ss.get(requestWith(idle.id)) != nil {
		t.Fatal("session outlived its idle timeout")
	}
	if ss.get(requestWith("forged")) != nil {
		t.Fatal("an unknown id found a session")
	}
}

// TestSessionsBounded: at the bound, the least recently used session gives way.
func TestSessionsBounded(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	ss := newSessions(time.Hour, 8*time.Hour, 3, clk.now)
	var ids []string
	for range 3 {
		clk.t = clk.t.Add(time.Second)
		ids = append(ids, ss.start(alice).id)
	}
	clk.t = clk.t.Add(time.Second)
	ss.get(requestWith(ids[0])) // the oldest is used again
	ss.start(alice)
	if ss.count() != 3 {
		t.Fatalf("%d sessions held, bound 3", ss.count())
	}
	if ss.get(requestWith(ids[1])) != nil || ss.get(requestWith(ids[0])) == nil {
		t.Fatal("the wrong session gave way")
	}
}

// TestPendingLoginsOnceAndBounded: a sign-in's state is taken once, lapses,
// and sign-ins in progress are bounded.
func TestPendingLoginsOnceAndBounded(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	ss := newSessions(time.Hour, 8*time.Hour, 3, clk.now)
	state := ss.beginLogin("v1")
	if p, ok := ss.finishLogin(state); !ok || p.verifier != "v1" {
		t.Fatal("sign-in not found")
	}
	if _, ok := ss.finishLogin(state); ok {
		t.Fatal("a sign-in was taken twice")
	}
	late := ss.beginLogin("v2")
	clk.t = clk.t.Add(loginTTL)
	if _, ok := ss.finishLogin(late); ok {
		t.Fatal("a lapsed sign-in was taken")
	}
	for range maxPendingLogins + 10 {
		ss.beginLogin("v")
	}
	if n := len(ss.pending); n > maxPendingLogins {
		t.Fatalf("%d sign-ins pending, bound %d", n, maxPendingLogins)
	}
}

func TestCSRF(t *testing.T) {
	se := &session{csrf: "token"}
	for _, bad := range []string{"", "tokem", "token2"} {
		if validCSRF(se, bad) {
			t.Errorf("%q accepted", bad)
		}
	}
	if !validCSRF(se, "token") || validCSRF(nil, "token") {
		t.Error("validCSRF is wrong about a session's own token")
	}
}
