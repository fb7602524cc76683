package tcpproxy_test

import (
	"context"
	"crypto/tls"
	"io"
	"testing"
	"time"

	writv1 "writ.dev/writ/api/writ/v1"
)

const agentID = "spiffe://" + td + "/agent/reporter"

// echoes reports whether a round trip through conn comes back.
func echoes(conn *tls.Conn) bool {
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	defer conn.SetDeadline(time.Time{})
	if _, err := conn.Write([]byte("ping")); err != nil {
		return false
	}
	buf := make([]byte, 4)
	_, err := io.ReadFull(conn, buf)
	return err == nil && string(buf) == "ping"
}

// waitCut waits for the live connection to be closed by the proxy and
// says how long it took from start.
func waitCut(t *testing.T, conn *tls.Conn, start time.Time, what string) time.Duration {
	t.Helper()
	// A generous bound, so a loaded machine does not fail the test; the
	// latency itself is measured, not asserted.
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 16)
	for {
		_, err := conn.Read(buf)
		if err == nil {
			continue
		}
		took := time.Since(start)
		if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
			t.Fatalf("%s: the connection was not cut within 30s", what)
		}
		t.Logf("%s: cut %s after", what, took)
		return took
	}
}

// TestConnectionsFollowDecisions: a caller with its SVID gets through to
// the upstream only inside an open task granting connect; a live
// connection is cut when a lock names the caller and when the task
// closes.
func TestConnectionsFollowDecisions(t *testing.T) {
	e := startEnv(t)
	agent := e.mint(t, agentID)

	if conn := e.dial(t, agent); echoes(conn) {
		t.Fatal("a caller without a task got through")
	}
	taskID := e.openTask(t, agentID)
	live := e.dial(t, agent)
	if !echoes(live) {
		t.Fatal("a caller inside an open task with a connect grant did not get through")
	}
	// Another identity is not let in by the task.
	if conn := e.dial(t, e.mint(t, "spiffe://"+td+"/agent/other")); echoes(conn) {
		t.Fatal("an identity outside the task got through")
	}

	locks := writv1.NewLockServiceClient(e.admin)
	start := time.Now()
	lock, err := locks.CreateLock(t.Context(), &writv1.CreateLockRequest{Target: &writv1.LockTarget{Kind: "spiffe-id", Value: agentID}, Reason: "INC-7"})
	if err != nil {
		t.Fatal(err)
	}
	waitCut(t, live, start, "lock")
	if conn := e.dial(t, agent); echoes(conn) {
		t.Fatal("a locked caller got through")
	}
	if _, err := locks.DeleteLock(t.Context(), &writv1.DeleteLockRequest{Id: lock.GetId()}); err != nil {
		t.Fatal(err)
	}
	live = e.dial(t, agent)
	for deadline := time.Now().Add(30 * time.Second); !echoes(live); live = e.dial(t, agent) {
		// A denial cached before the unlock's change message arrived
		// may answer once more.
		if time.Now().After(deadline) {
			t.Fatal("the caller was still refused 30s after the unlock")
		}
	}

	start = time.Now()
	if _, err := writv1.NewTaskServiceClient(e.admin).CloseTask(t.Context(), &writv1.TaskTransitionRequest{Id: taskID}); err != nil {
		t.Fatal(err)
	}
	waitCut(t, live, start, "task close")
	if conn := e.dial(t, agent); echoes(conn) {
		t.Fatal("a caller got through after its task closed")
	}
	if n := e.core.Held(); n != 0 {
		// Sessions are released as their connections end.
		deadline := time.Now().Add(10 * time.Second)
		for e.core.Held() != 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if e.core.Held() != 0 {
			t.Fatalf("%d sessions still held after every connection ended", e.core.Held())
		}
	}
}

// TestServerLossCutsConnections: when the writ server goes away, the
// gateway can neither follow changes nor decide, so live connections are
// cut and new ones refused rather than let through on old decisions.
func TestServerLossCutsConnections(t *testing.T) {
	e := startEnv(t)
	agent := e.mint(t, agentID)
	e.openTask(t, agentID)
	live := e.dial(t, agent)
	for deadline := time.Now().Add(30 * time.Second); !echoes(live); live = e.dial(t, agent) {
		if time.Now().After(deadline) {
			t.Fatal("the caller inside the task never got through")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	e.srv.Shutdown(ctx)
	waitCut(t, live, start, "server shutdown")
	if conn := e.dial(t, agent); echoes(conn) {
		t.Fatal("a caller got through with the server gone")
	}
}
