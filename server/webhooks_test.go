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

	jose "github.com/go-jose/go-jose/v4"

	writv1 "writ.dev/writ/api/writ/v1"
)

// TestWebhooksSigned: a loopback receiver gets the events it asked for,
// each a JWS it verifies with the JWKS the ops listener publishes and no
// shared secret; a receiver failing once gets the event again.
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

	resp, err := http.Get("http://" + srv.OpsAddr().String() + WebhookKeysPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var jwks jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&jwks); err != nil || len(jwks.Keys) != 1 || !jwks.Keys[0].IsPublic() {
		t.Fatalf("JWKS = %+v, %v", jwks, err)
	}
	for _, k := range srv.jwt.Keys() {
		if k.KeyID == jwks.Keys[0].KeyID {
			t.Fatal("the webhook key is a JWT-SVID key")
		}
	}

	mu.Lock()
	defer mu.Unlock()
	var seen []string
	for _, b := range bodies {
		sig, err := jose.ParseSigned(b, []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			t.Fatal(err)
		}
		h := sig.Signatures[0].Header
		if h.ExtraHeaders[jose.HeaderType] != WebhookJWSType {
			t.Fatalf("typ = %v", h.ExtraHeaders[jose.HeaderType])
		}
		keys := jwks.Key(h.KeyID)
		if len(keys) != 1 {
			t.Fatalf("kid %q is not in the JWKS", h.KeyID)
		}
		payload, err := sig.Verify(keys[0])
		if err != nil {
			t.Fatalf("verify: %v", err)
		}
		var ev struct {
			ID, Type string
			Request  struct{ ID, State string }
		}
		if err := json.Unmarshal(payload, &ev); err != nil || ev.ID == "" {
			t.Fatalf("payload %s: %v", payload, err)
		}
		seen = append(seen, ev.Type+":"+ev.Request.State)
	}
	want := "created:approved approved:approved created:pending denied:denied"
	if strings.Join(seen, " ") != want {
		t.Fatalf("events = %v, want %s", seen, want)
	}
	// A tampered delivery fails verification.
	parts := strings.Split(bodies[0], ".")
	parts[1] = parts[1][:len(parts[1])-2] + "AA"
	if sig, err := jose.ParseSigned(strings.Join(parts, "."), []jose.SignatureAlgorithm{jose.ES256}); err == nil {
		if _, err := sig.Verify(jwks.Keys[0]); err == nil {
			t.Fatal("a tampered delivery verified")
		}
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
