package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/attest/node/oidc"
	"writ.dev/writ/audit"
	"writ.dev/writ/person/login/logintest"
)

// startConsoleServer runs a server with people signing in against a local
// identity provider, and the console on loopback.
func startConsoleServer(t *testing.T) (*Server, *logintest.Provider, Config) {
	t.Helper()
	idp := logintest.New(t)
	cfg := testConfig(t)
	jwks := filepath.Join(cfg.DataDir, "idp-jwks.json")
	idp.WriteJWKS(t, jwks)
	cfg.People = PeopleConfig{Issuer: idp.URL, ClientID: idp.ClientID(), JWKSFile: jwks, Allow: []oidc.Rule{{"email_domain": "example.com"}}}
	cfg.Console = ConsoleConfig{Address: "127.0.0.1:0", AuditKeys: filepath.Join(cfg.DataDir, "trusted-audit-keys.json")}
	return startServer(t, cfg), idp, cfg
}

// browser is a person's browser on the console: it keeps cookies and
// follows nothing by itself, so each step of a sign-in can be checked.
type browser struct {
	t    *testing.T
	base string
	hc   *http.Client
}

func newBrowser(t *testing.T, srv *Server) *browser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	// The console's certificate is the server's SVID, which names no host:
	// a browser would be told to trust it by the operator.
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	t.Cleanup(tr.CloseIdleConnections)
	return &browser{t: t, base: "https://" + srv.ConsoleAddr().String(), hc: &http.Client{Jar: jar, Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *browser) do(req *http.Request) (*http.Response, string) {
	b.t.Helper()
	resp, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return resp, string(body)
}

func (b *browser) get(path string) (*http.Response, string) {
	b.t.Helper()
	u := path
	if strings.HasPrefix(path, "/") {
		u = b.base + path
	}
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.do(req)
}

func (b *browser) post(path string, form url.Values) (*http.Response, string) {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", b.base)
	return b.do(req)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf reads the form token from a page the person has open.
func (b *browser) csrf(path string) string {
	b.t.Helper()
	_, body := b.get(path)
	m := csrfField.FindStringSubmatch(body)
	if m == nil {
		b.t.Fatalf("%s has no CSRF token: %s", path, body)
	}
	return m[1]
}

// signIn runs the sign-in as email step by step and returns the callback's
// answer and the callback URL (to try again).
func (b *browser) signIn(idp *logintest.Provider, email string) (*http.Response, string, string) {
	b.t.Helper()
	idp.SetUser(email, true)
	resp, _ := b.get("/signin")
	if resp.StatusCode != http.StatusSeeOther {
		b.t.Fatalf("/signin answered %s", resp.Status)
	}
	resp, _ = b.get(resp.Header.Get("Location"))
	callback := resp.Header.Get("Location")
	if !strings.HasPrefix(callback, b.base+"/callback?") {
		b.t.Fatalf("the provider sent the browser to %q", callback)
	}
	resp, body := b.get(callback)
	return resp, body, callback
}

func cookieNamed(resp *http.Response, name string) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// TestConsoleSignIn: a person signs in through the identity provider with
// the authorization code and PKCE, gets a server-side session in a
// __Host- cookie that is Secure, HttpOnly and SameSite=Strict, and signs
// out for good. A replayed callback, a callback this browser did not
// start, and a person the allow rules refuse get no session.
func TestConsoleSignIn(t *testing.T) {
	srv, idp, _ := startConsoleServer(t)
	b := newBrowser(t, srv)

	resp, body := b.get("/requests")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="signin"`) {
		t.Fatalf("not signed in: %s %s", resp.Status, body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Fatalf("CSP = %q", csp)
	}

	resp, body, callback := b.signIn(idp, "Alice@Example.com")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "You are signed in") {
		t.Fatalf("callback: %s %s", resp.Status, body)
	}
	c := cookieNamed(resp, "__Host-writ-session")
	if c == nil || !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Domain != "" {
		t.Fatalf("session cookie = %+v", c)
	}
	if _, body := b.get("/requests"); !strings.Contains(body, "Signed in as <code>"+alice+"</code>") {
		t.Fatalf("signed in page: %s", body)
	}

	// The callback works once: the state was used.
	other := newBrowser(t, srv)
	if resp, body := other.get(callback); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "does not belong to a sign-in this browser started") {
		t.Fatalf("callback in another browser: %s %s", resp.Status, body)
	}
	if resp, body := b.get(callback); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("replayed callback: %s %s", resp.Status, body)
	}

	mallory := newBrowser(t, srv)
	resp, body, _ = mallory.signIn(idp, "mallory@evil.test")
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "Sign-in refused") || cookieNamed(resp, "__Host-writ-session") != nil {
		t.Fatalf("refused person: %s %s", resp.Status, body)
	}

	// Signing out needs the form's token, and ends the session on the server.
	if resp, _ := b.post("/signout", url.Values{}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("sign-out without a token: %s", resp.Status)
	}
	token := b.csrf("/requests")
	if resp, body := b.post("/signout", url.Values{"csrf": {token}}); resp.StatusCode != http.StatusOK || !strings.Contains(body, "signed out") {
		t.Fatalf("sign-out: %s %s", resp.Status, body)
	}
	if _, body := b.get("/requests"); !strings.Contains(body, `id="signin"`) {
		t.Fatalf("after sign-out: %s", body)
	}
	ev := readEvents(t, writv1.NewAuditServiceClient(adminConn(t, srv)))
	types := map[string]int{}
	for _, e := range ev {
		types[e.Type]++
	}
	if types[audit.EventConsoleSignIn] != 1 || types[audit.EventConsoleSignInRefused] != 1 || types[audit.EventConsoleSignOut] != 1 {
		t.Fatalf("audit events: %v", types)
	}
}

// TestConsoleReview: a reviewer sees a pending request with its rule and
// who may approve, and approves it with a reason, as themselves; the
// requester's own approval is refused as over gRPC; a form without the
// session's token changes nothing.
func TestConsoleReview(t *testing.T) {
	srv, idp, _ := startConsoleServer(t)
	admin := adminConn(t, srv)
	applyTestRules(t, admin)
	work := openTask(t, writv1.NewTaskServiceClient(admin), "migrate payments", []string{ceo},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"db/prod/payments"}, To: []string{ceo}})
	aliceCC := svidConn(t, srv, signIn(t, srv, alice))
	req, err := actorConn(aliceCC).join(t, work.GetId(), "run the migration", "write:db/prod/payments")
	if err != nil {
		t.Fatal(err)
	}
	id := req.GetRequest().GetId()

	bobB := newBrowser(t, srv)
	bobB.signIn(idp, "bob@example.com")
	_, body := bobB.get("/requests")
	for _, want := range []string{id, "prod-write", "security", sam, "none yet", "run the migration"} {
		if !strings.Contains(body, want) {
			t.Fatalf("requests page lacks %q: %s", want, body)
		}
	}
	reviews := func() int {
		d, err := writv1.NewRequestServiceClient(admin).GetRequest(t.Context(), &writv1.GetAccessRequestRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		return len(d.GetReviews())
	}
	if resp, _ := bobB.post("/requests/"+id+"/review", url.Values{"verdict": {"approve"}, "reason": {"looks right"}}); resp.StatusCode != http.StatusForbidden || reviews() != 0 {
		t.Fatalf("review without a token: %s, %d reviews", resp.Status, reviews())
	}
	token := bobB.csrf("/requests")
	if resp, body := bobB.post("/requests/"+id+"/review", url.Values{"csrf": {token}, "verdict": {"approve"}, "reason": {""}}); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Give a reason") || reviews() != 0 {
		t.Fatalf("review without a reason: %s %s", resp.Status, body)
	}
	resp, body := bobB.post("/requests/"+id+"/review", url.Values{"csrf": {token}, "verdict": {"approve"}, "reason": {"looks right"}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "is now pending") || reviews() != 1 {
		t.Fatalf("approve: %s %s", resp.Status, body)
	}
	d, _ := writv1.NewRequestServiceClient(admin).GetRequest(t.Context(), &writv1.GetAccessRequestRequest{Id: id})
	if rv := d.GetReviews()[0]; !slices.Equal(rv.GetChain(), []string{bob}) || rv.GetReason() != "looks right" {
		t.Fatalf("the review was not made as bob: %v", rv)
	}

	aliceB := newBrowser(t, srv)
	aliceB.signIn(idp, "alice@example.com")
	resp, body = aliceB.post("/requests/"+id+"/review", url.Values{"csrf": {aliceB.csrf("/requests")}, "verdict": {"approve"}, "reason": {"mine"}})
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, `role="alert"`) || reviews() != 1 {
		t.Fatalf("self-approval: %s %s", resp.Status, body)
	}
}

// sseEvent reads the next server-sent event.
func sseEvent(t *testing.T, r *bufio.Reader) (name, data string) {
	t.Helper()
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("event stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		case line == "" && name != "":
			return name, data
		}
	}
}

// openWatch opens the watch page's event stream; cancel is closing the tab.
func (b *browser) openWatch(taskID string) (*bufio.Reader, context.CancelFunc) {
	b.t.Helper()
	ctx, cancel := context.WithCancel(b.t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.base+"/tasks/"+taskID+"/watch/events", nil)
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b.t.Fatalf("watch events: %s", resp.Status)
	}
	b.t.Cleanup(func() { resp.Body.Close() })
	return bufio.NewReader(resp.Body), cancel
}

// beat posts the watch page's heartbeats for the session named in the
// stream's hello until ctx ends, as the page's worker does.
func (b *browser) beat(ctx context.Context, taskID, watch string) {
	token := b.csrf("/tasks/" + taskID + "/watch")
	go func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.base+"/tasks/"+taskID+"/watch/beat",
				strings.NewReader(url.Values{"csrf": {token}, "watch": {watch}}.Encode()))
			if err != nil {
				return
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if resp, err := b.hc.Do(req); err == nil {
				resp.Body.Close()
			}
		}
	}()
}

// hello reads the stream's first event, which names its watch session.
func hello(t *testing.T, events *bufio.Reader) string {
	t.Helper()
	name, data := sseEvent(t, events)
	var h struct{ Watch string }
	if name != "hello" || json.Unmarshal([]byte(data), &h) != nil || h.Watch == "" {
		t.Fatalf("first event: %s %s", name, data)
	}
	return h.Watch
}

// TestConsoleWatch: a watch page's open, beating stream is the watcher's
// presence: the dual-controlled grant is live while it stands and dies when
// the page closes. The requester cannot watch over herself here either, and
// nobody can beat for a page of another person.
func TestConsoleWatch(t *testing.T) {
	srv, idp, _ := startConsoleServer(t)
	admin := adminConn(t, srv)
	if _, err := writv1.NewReviewServiceClient(admin).ApplyRules(t.Context(), &writv1.ApplyReviewRulesRequest{Text: dualRules}); err != nil {
		t.Fatal(err)
	}
	decide := writv1.NewDecisionServiceClient(admin)
	work := openTask(t, writv1.NewTaskServiceClient(admin), "rotate the vault keys", []string{ceo},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}})
	aliceCC := svidConn(t, srv, signIn(t, srv, alice))
	if got, err := actorConn(aliceCC).join(t, work.GetId(), "rotate the keys", "read:vault/keys"); err != nil || got.GetRequest().GetState() != "approved" {
		t.Fatalf("the vault read = %v, %v", got, err)
	}
	if check(t, decide, "read", "vault/keys", alice).GetAllow() {
		t.Fatal("allowed with no watcher")
	}

	aliceB := newBrowser(t, srv)
	aliceB.signIn(idp, "alice@example.com")
	events, _ := aliceB.openWatch(work.GetId())
	hello(t, events)
	if name, data := sseEvent(t, events); name != "end" || !strings.Contains(data, "may not watch") {
		t.Fatalf("the requester watching: %s %s", name, data)
	}

	bobB := newBrowser(t, srv)
	bobB.signIn(idp, "bob@example.com")
	events, closeTab := bobB.openWatch(work.GetId())
	watch := hello(t, events)
	// Alice cannot keep Bob's watch alive, even knowing its name.
	if resp, _ := aliceB.post("/tasks/"+work.GetId()+"/watch/beat", url.Values{"csrf": {aliceB.csrf("/requests")}, "watch": {watch}}); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a beat for another person's page: %s", resp.Status)
	}
	beating, stopBeating := context.WithCancel(t.Context())
	defer stopBeating()
	bobB.beat(beating, work.GetId(), watch)
	if name, data := sseEvent(t, events); name != "status" || !strings.Contains(data, `"live":true`) || !strings.Contains(data, bob) {
		t.Fatalf("watching: %s %s", name, data)
	}
	if r := check(t, decide, "read", "vault/keys", alice); !r.GetAllow() {
		t.Fatalf("denied while bob watches: %v", r)
	}
	// The page's heartbeats keep the session past its lapse (two heartbeats).
	for range 6 {
		if name, _ := sseEvent(t, events); name != "status" {
			t.Fatalf("event %q while watching", name)
		}
	}
	if r := check(t, decide, "read", "vault/keys", alice); !r.GetAllow() {
		t.Fatalf("denied after heartbeats: %v", r)
	}
	closeTab()
	eventually(t, 10*time.Second, "the grant dies when the watch page closes", func() bool {
		return !check(t, decide, "read", "vault/keys", alice).GetAllow()
	})
	if r := check(t, decide, "read", "vault/keys", alice); !strings.Contains(r.GetReason(), "0 of 1 watchers present") {
		t.Fatalf("denial after the tab closed: %v", r)
	}

	// A page that stays connected but stops beating (a sleeping laptop)
	// loses the session as a hung 'writ watch' does.
	events, _ = bobB.openWatch(work.GetId())
	hello(t, events)
	if name, data := sseEvent(t, events); name != "status" || !strings.Contains(data, `"live":true`) {
		t.Fatalf("watching again: %s %s", name, data)
	}
	if name, data := sseEvent(t, events); name != "end" || !strings.Contains(data, "no heartbeat") {
		t.Fatalf("a silent page: %s %s", name, data)
	}
	eventually(t, 10*time.Second, "the grant dies when the page stops beating", func() bool {
		return !check(t, decide, "read", "vault/keys", alice).GetAllow()
	})
}

// TestConsoleRecordsNeedAGrant: the console holds no power of its own: a
// person reads the audit log and tasks, and closes tasks, only with a live
// task's grant on writ/audit and writ/tasks. With one, the audit page
// verifies the log with the trusted keys and flags a changed event.
func TestConsoleRecordsNeedAGrant(t *testing.T) {
	srv, idp, cfg := startConsoleServer(t)
	admin := adminConn(t, srv)
	bobB := newBrowser(t, srv)
	bobB.signIn(idp, "bob@example.com")
	for _, path := range []string{"/audit", "/tasks", "/inventory"} {
		resp, body := bobB.get(path)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "for identities a live task grants") {
			t.Fatalf("%s without a grant: %s %s", path, resp.Status, body)
		}
	}
	applyTestRules(t, admin)
	ops := openTask(t, writv1.NewTaskServiceClient(admin), "incident review", []string{bob},
		&writv1.Grant{Actions: []string{"read", "close"}, Resources: []string{"writ/**"}, To: []string{bob}})
	work := openTask(t, writv1.NewTaskServiceClient(admin), "payments migration", []string{ceo},
		&writv1.Grant{Actions: []string{"write"}, Resources: []string{"db/prod/payments"}, To: []string{ceo}})

	_, body := bobB.get("/tasks")
	if !strings.Contains(body, work.GetId()) || !strings.Contains(body, ops.GetId()) {
		t.Fatalf("tasks page: %s", body)
	}
	_, body = bobB.get("/inventory?resource=db/prod/payments")
	if !strings.Contains(body, ceo) || !strings.Contains(body, "task "+work.GetId()) ||
		!strings.Contains(body, "prod-write") || !strings.Contains(body, "2 of spiffe://"+testTD+"/person/** (people)") {
		t.Fatalf("access paths: %s", body)
	}

	// The live tail sends the events that pass its filter as they are written.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, bobB.base+"/audit/events?type=task.close", nil)
	if err != nil {
		t.Fatal(err)
	}
	tail, err := bobB.hc.Do(req)
	if err != nil || tail.StatusCode != http.StatusOK {
		t.Fatalf("live tail: %v %v", tail, err)
	}
	defer tail.Body.Close()
	resp, body := bobB.post("/tasks/"+work.GetId()+"/close", url.Values{"csrf": {bobB.csrf("/tasks/" + work.GetId())}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="task-state">closed`) {
		t.Fatalf("close: %s %s", resp.Status, body)
	}
	if name, data := sseEvent(t, bufio.NewReader(tail.Body)); name != "event" || !strings.Contains(data, `"Type":"task.close"`) || !strings.Contains(data, work.GetId()) || !strings.Contains(data, bob) {
		t.Fatalf("live tail: %s %s", name, data)
	}

	_, body = bobB.get("/audit?type=task.close")
	if !strings.Contains(body, "task.close") || strings.Contains(body, "task.open</td>") {
		t.Fatalf("filtered audit page: %s", body)
	}
	if _, body = bobB.get("/audit?verify=1"); !strings.Contains(body, "Not verified") || !strings.Contains(body, "reading the trusted audit keys") {
		t.Fatalf("verification without the keys file: %s", body)
	}
	cps, err := writv1.NewAuditServiceClient(admin).GetCheckpoints(t.Context(), &writv1.GetAuditCheckpointsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bundle := &audit.KeyBundle{}
	if err := bundle.Add(audit.BundleKey{ServerID: cps.GetServerKey().GetServerId(), VerifierKey: cps.GetServerKey().GetVerifierKey()}); err != nil {
		t.Fatal(err)
	}
	data, err := bundle.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.Console.AuditKeys, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, body = bobB.get("/audit?verify=1"); !strings.Contains(body, "<strong>Verified:</strong> OK") {
		t.Fatalf("verification: %s", body)
	}
	tamperAuditEvent(t, cfg, srv, 3)
	if _, body = bobB.get("/audit?verify=1"); !strings.Contains(body, "Not verified") || !strings.Contains(body, "FAILED") {
		t.Fatalf("verification of a changed log: %s", body)
	}
}

// tamperAuditEvent flips a byte of a stored event behind the server's back.
func tamperAuditEvent(t *testing.T, cfg Config, srv *Server, idx int64) {
	t.Helper()
	db, err := sql.Open("sqlite", cfg.Store.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var ev []byte
	if err := db.QueryRow(`SELECT event FROM audit_events WHERE idx = ?`, idx).Scan(&ev); err != nil {
		t.Fatal(err)
	}
	ev = []byte(strings.Replace(string(ev), `"time":"2`, `"time":"1`, 1))
	if _, err := db.Exec(`UPDATE audit_events SET event = ? WHERE idx = ?`, ev, idx); err != nil {
		t.Fatal(err)
	}
}

// TestConsoleLockEndsUse: a lock on a signed-in person refuses everything
// they try in the console at once, and their next sign-in.
func TestConsoleLockEndsUse(t *testing.T) {
	srv, idp, _ := startConsoleServer(t)
	b := newBrowser(t, srv)
	b.signIn(idp, "bob@example.com")
	if resp, _ := b.get("/requests"); resp.StatusCode != http.StatusOK {
		t.Fatalf("before the lock: %s", resp.Status)
	}
	createLock(t, adminConn(t, srv), "spiffe-id", bob, "INC-9 stolen laptop", "")
	if resp, body := b.get("/requests"); resp.StatusCode == http.StatusOK || !strings.Contains(body, "INC-9") {
		t.Fatalf("after the lock: %s %s", resp.Status, body)
	}
	if resp, body, _ := newBrowser(t, srv).signIn(idp, "bob@example.com"); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "INC-9") {
		t.Fatalf("signing in under a lock: %s %s", resp.Status, body)
	}
}

// TestConsoleSignInRateLimited: starting sign-ins from one address is
// bounded by limits.unauthenticated_per_source, with the sign-ins and joins
// over gRPC from there.
func TestConsoleSignInRateLimited(t *testing.T) {
	idp := logintest.New(t)
	cfg := testConfig(t)
	jwks := filepath.Join(cfg.DataDir, "idp-jwks.json")
	idp.WriteJWKS(t, jwks)
	cfg.People = PeopleConfig{Issuer: idp.URL, ClientID: idp.ClientID(), JWKSFile: jwks, Allow: []oidc.Rule{{"email_domain": "example.com"}}}
	cfg.Console = ConsoleConfig{Address: "127.0.0.1:0"}
	cfg.Limits.UnauthenticatedPerSource = RateLimit{Rate: 0.001, Burst: 2}
	srv := startServer(t, cfg)
	b := newBrowser(t, srv)
	for i := range 2 {
		if resp, _ := b.get("/signin"); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("sign-in %d: %s", i, resp.Status)
		}
	}
	if resp, body := b.get("/signin"); resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, "limits.unauthenticated_per_source") {
		t.Fatalf("past the limit: %s %s", resp.Status, body)
	}
}

func TestConsoleConfig(t *testing.T) {
	people := PeopleConfig{Issuer: "https://login.example.com", ClientID: "writ", SVIDTTL: Duration{8 * time.Hour}}
	for _, tc := range []struct {
		name string
		c    ConsoleConfig
		p    PeopleConfig
		want string
	}{
		{"off", ConsoleConfig{}, PeopleConfig{}, ""},
		{"ok", ConsoleConfig{Address: "127.0.0.1:8443", PublicURL: "https://writ.example.com"}, people, ""},
		{"no people", ConsoleConfig{Address: "127.0.0.1:8443"}, PeopleConfig{}, "configure people first"},
		{"public url without address", ConsoleConfig{PublicURL: "https://writ.example.com"}, people, "console.address: is required"},
		{"http", ConsoleConfig{Address: "127.0.0.1:8443", PublicURL: "http://writ.example.com"}, people, "console.public_url"},
		{"path", ConsoleConfig{Address: "127.0.0.1:8443", PublicURL: "https://writ.example.com/console"}, people, "no path"},
		{"bad address", ConsoleConfig{Address: "writ"}, people, "not host:port"},
		{"long session", ConsoleConfig{Address: "127.0.0.1:8443", SessionTTL: Duration{24 * time.Hour}}, people, "more than people.svid_ttl"},
	} {
		errs := tc.c.validate(tc.p)
		var msgs []string
		for _, e := range errs {
			msgs = append(msgs, e.Error())
		}
		got := strings.Join(msgs, "; ")
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
