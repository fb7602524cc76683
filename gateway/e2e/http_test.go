package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/gateway/httpproxy"
)

// ordersAPI is the upstream: it accepts only requests carrying a
// Writ-Caller header the gateway signed, answers /orders/{id} with the
// chain it was decided for, and streams /events until the client leaves.
func (e *env) ordersAPI(t testing.TB) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		v, _ := httpproxy.CallerFromContext(r.Context())
		fmt.Fprintf(w, "order %s for %v", r.PathValue("id"), v.Chain)
	})
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; ; i++ {
			if _, err := fmt.Fprintf(w, "data: %d\n\n", i); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	h := httpproxy.RequireCaller(mux, e.bundle, spiffeid.MatchID(spiffeid.RequireFromString(gatewayID)), "orders-api")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return "http://" + ln.Addr().String()
}

// startHTTP serves the HTTP front end and returns its base URL.
func (e *env) startHTTP(t testing.TB, upstream string) string {
	t.Helper()
	cfg := httpproxy.Config{
		Upstream: upstream,
		Audience: "orders-api",
		Routes: []httpproxy.Route{
			{Path: "/orders/{id}", Resource: "http/orders/{id}"},
			{Prefix: "/events", Resource: "http/events"},
		},
	}
	p, err := httpproxy.New(cfg, httpproxy.Options{Decider: e.core, Holder: e.core, SVID: e.gw, Bundle: e.gw, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.serveTLS(t, httpproxy.NewServer(cfg, p, nil), ln)
	return "https://" + ln.Addr().String()
}

func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestHTTPThroughGateway: an agent acting for a person with a delegation
// token made for the gateway reaches the upstream through the HTTP front
// end only where the task allows, and a streaming response is cut when a
// lock lands.
func TestHTTPThroughGateway(t *testing.T) {
	e := startEnv(t, nil)
	base := e.startHTTP(t, e.ordersAPI(t))

	const agentID = "spiffe://" + td + "/agent/billing-bot"
	agent := e.mint(t, agentID)
	taskID := e.openTask(t, []string{ada, agentID}, "read", "http/orders/1", "http/events")
	token := e.delegate(t, agent, "ada@example.com", gatewayID, taskID)
	c := e.client(agent, token)

	code, body := get(t, c, base+"/orders/1")
	if code != http.StatusOK || !strings.Contains(body, "order 1 for ["+agentID+" "+ada+"]") {
		t.Fatalf("an allowed request: %d %s", code, body)
	}
	code, body = get(t, c, base+"/orders/2")
	if code != http.StatusForbidden || !strings.Contains(body, "writ denied read on http/orders/2") {
		t.Fatalf("a request the task does not grant: %d %s", code, body)
	}
	other := e.delegate(t, agent, "ada@example.com", "spiffe://"+td+"/svc/orders", taskID)
	if code, body := get(t, e.client(agent, other), base+"/orders/1"); code == http.StatusOK || !strings.Contains(body, "not for audience") {
		t.Fatalf("a token for another audience: %d %s", code, body)
	}
	thief := e.mint(t, "spiffe://"+td+"/agent/other-bot")
	if code, body := get(t, e.client(thief, token), base+"/orders/1"); code == http.StatusOK || !strings.Contains(body, "bound to another certificate") {
		t.Fatalf("a token replayed by another agent: %d %s", code, body)
	}

	// A stream that is live when the lock lands ends.
	resp, err := c.Get(base + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the stream: %d", resp.StatusCode)
	}
	ended := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
		}
		ended <- sc.Err()
	}()
	lockID := e.lock(t, agentID)
	select {
	case <-ended:
	case <-time.After(30 * time.Second):
		t.Fatal("the stream went on 30s after the lock")
	}
	code, body = get(t, c, base+"/orders/1")
	if code != http.StatusForbidden || !strings.Contains(body, "writ denied") {
		t.Fatalf("a request under the lock: %d %s", code, body)
	}
	e.unlock(t, lockID)
	waitFor(t, "requests allowed again once the lock is gone", func() bool {
		code, _ := get(t, c, base+"/orders/1")
		return code == http.StatusOK
	})
	e.closeTask(t, taskID)
	waitFor(t, "requests denied after the task closed", func() bool {
		code, _ := get(t, c, base+"/orders/1")
		return code == http.StatusForbidden
	})
}
