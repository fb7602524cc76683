package server

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"writ.dev/writ/api/webhook"
	writv1 "writ.dev/writ/api/writ/v1"
)

// TestWebhooksSigned: a loopback receiver gets the events it asked for,
// each a JWS signed with the server's X.509-SVID that it verifies with the
// trust bundle alone; a receiver failing once gets the event again.
func TestWebhooksSigned(t *testing.T) {
	prev := webhookBackoff
	webhookBackoff = func(int) time.Duration { return 0 }
	t.Cleanup(func() { webhookBackoff = prev })

	var (
		mu       sync.Mutex
		bodies   []string
		attempts int
	)
	got := make(chan struct{}, 16)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if attempts++; attempts == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		if r.Header.Get("Content-Type") != "application/jose" {
			t.Errorf("content type %q", r.Header.Get("Content-Type"))
		}
		bodies = append(bodies, string(b))
		got <- struct{}{}
	}))
	t.Cleanup(recv.Close)

	srv, _ := startTokenEndpoint(t, func(c *Config) {
		c.Webhooks = []WebhookConfig{{URL: recv.URL + "/hook", Events: []string{"created", "approved", "denied"}}}
	})
	admin := adminConn(t, srv)
	applyTestRules(t, admin)
	work := openTask(t, writv1.NewTaskServiceClient(admin), "reconcile payments", []string{ceo},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}})
	agent := actorConn(svidConn(t, srv, mintSVID(t, srv, stageBot)))
	samA := actorConn(svidConn(t, srv, signIn(t, srv, sam)))
	if _, err := agent.join(t, work.GetId(), "nightly reads", "read:db/staging/orders"); err != nil {
		t.Fatal(err)
	}
	prod, err := agent.join(t, work.GetId(), "fix the batch", "write:db/prod/payments")
	if err != nil {
		t.Fatal(err)
	}
	// bob's approval is a "reviewed" event, which this receiver did not ask for.
	bobA := actorConn(svidConn(t, srv, signIn(t, srv, bob)))
	if _, err := bobA.reviews.Approve(t.Context(), &writv1.ReviewAccessRequest{Id: prod.GetRequest().GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := samA.reviews.Deny(t.Context(), &writv1.ReviewAccessRequest{Id: prod.GetRequest().GetId(), Reason: "not today"}); err != nil {
		t.Fatal(err)
	}
	for range 4 { // staging created+approved, prod created, prod denied
		select {
		case <-got:
		case <-time.After(time.Minute): // only keeps a broken sender from hanging the test
			t.Fatal("webhook events did not arrive")
		}
	}

	// The receiver holds the trust bundle and nothing else of this server.
	bundle := x509bundle.FromX509Authorities(srv.TrustDomain(), srv.x509.Bundle())
	mu.Lock()
	defer mu.Unlock()
	var (
		seen    []string
		replays webhook.Replays
	)
	for _, b := range bodies {
		ev, err := webhook.Verify([]byte(b), bundle, recv.URL+"/hook", srv.now())
		if err != nil {
			t.Fatalf("verify: %v", err)
		}
		if ev.Issuer != srv.tlsID.ID().String() || ev.ServerID != srv.ServerID() {
			t.Fatalf("signed by %s (server %s), want this server %s", ev.Issuer, ev.ServerID, srv.tlsID.ID())
		}
		if replays.Seen(ev, srv.now()) {
			t.Fatalf("event %s delivered twice after success", ev.ID)
		}
		var req struct{ ID, State string }
		if err := json.Unmarshal(ev.Request, &req); err != nil || req.ID == "" {
			t.Fatalf("request %s: %v", ev.Request, err)
		}
		seen = append(seen, ev.Type+":"+req.State)
	}
	want := "created:approved approved:approved created:pending denied:denied"
	if strings.Join(seen, " ") != want {
		t.Fatalf("events = %v, want %s", seen, want)
	}
	// A tampered delivery fails verification.
	parts := strings.Split(bodies[0], ".")
	parts[1] = parts[1][:len(parts[1])-2] + "AA"
	if _, err := webhook.Verify([]byte(strings.Join(parts, ".")), bundle, recv.URL+"/hook", srv.now()); err == nil {
		t.Fatal("a tampered delivery verified")
	}
	// The keys endpoint is gone: the bundle is how receivers verify.
	resp, err := http.Get("http://" + srv.OpsAddr().String() + "/webhooks/keys")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /webhooks/keys = %d, want 404", resp.StatusCode)
	}
}

func TestWebhookConfigValidated(t *testing.T) {
	for _, tc := range []struct {
		hooks []WebhookConfig
		want  string
	}{
		{[]WebhookConfig{{URL: "http://example.com/x"}}, "plain http to a remote host"},
		{[]WebhookConfig{{URL: "https://u:p@example.com/x"}}, "carries credentials"},
		{[]WebhookConfig{{URL: "ftp://example.com/x"}}, "not supported"},
		{[]WebhookConfig{{URL: ""}}, "is required"},
		{[]WebhookConfig{{URL: "https://example.com/x", Events: []string{"approved", "approved"}}}, "listed twice"},
		{[]WebhookConfig{{URL: "https://example.com/x", Events: []string{"opened"}}}, "not an event"},
		{[]WebhookConfig{{URL: "https://example.com/" + strings.Repeat("a", 3000)}}, "at most 2048"},
	} {
		errs := validateWebhooks(tc.hooks)
		if len(errs) == 0 || !strings.Contains(errs[0].Error(), tc.want) {
			t.Errorf("%v: errors %v, want %q", tc.hooks, errs, tc.want)
		}
	}
	for _, ok := range []string{"https://hooks.example.com/writ", "http://127.0.0.1:9000/x", "http://[::1]/x", "http://localhost:8080/x"} {
		if errs := validateWebhooks([]WebhookConfig{{URL: ok}}); len(errs) > 0 {
			t.Errorf("%s: %v", ok, errs)
		}
	}
}

// TestWebhooksSignWithoutNetworkListener: a server with only its admin
// socket still has the SVID deliveries are signed with.
func TestWebhooksSignWithoutNetworkListener(t *testing.T) {
	cfg := testConfig(t)
	cfg.ListenAddress, cfg.OpsAddress = "", ""
	cfg.Webhooks = []WebhookConfig{{URL: "http://127.0.0.1:9/hook"}}
	srv := startServer(t, cfg)
	body, err := srv.webhooks.signer.Sign(webhook.Event{ID: "E-1", Type: "created", Request: []byte(`{}`)}, cfg.Webhooks[0].URL, srv.now())
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	bundle := x509bundle.FromX509Authorities(srv.TrustDomain(), srv.x509.Bundle())
	if _, err := webhook.Verify([]byte(body), bundle, cfg.Webhooks[0].URL, srv.now()); err != nil {
		t.Fatal(err)
	}
}
