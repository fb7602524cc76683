package server

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
	"writ.dev/writ/person/login/logintest"
)

// browserTimeout bounds one browser test; a browser that hangs fails it
// rather than the whole run.
const browserTimeout = 30 * time.Second

// chromium finds a Chromium to drive: WRIT_CHROME, then the usual names.
// Without one the browser tests are skipped with how to get one, except
// under CI, whose image must have it (.ci/run installs it).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("WRIT_CHROME"), "chromium-headless-shell", "headless-shell", "chromium", "chromium-browser", "google-chrome"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no Chromium found, and CI must run the browser tests: install chromium-headless-shell (.ci/run does) or set WRIT_CHROME")
	}
	t.Skip("browser tests skipped: no Chromium found; install it (apt-get install chromium-headless-shell) or set WRIT_CHROME to its path")
	return ""
}

// newChrome starts a headless Chromium and returns a context for its first
// tab. The browser lives as long as the test; steps bound themselves.
func newChrome(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900),
		// The console's certificate is the server's SVID, which no
		// browser trusts and which names no host.
		chromedp.IgnoreCertErrors,
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	return ctx
}

// step runs browser actions, failing the test with what was being done.
func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, browserTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v\npage: %s", what, err, pageText(ctx))
	}
}

// pageText is what the page shows, for a failure's message.
func pageText(tab context.Context) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(tab), 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`))
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	return s
}

// textOf reads the text of the element with this id.
func textOf(t *testing.T, ctx context.Context, id string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, browserTimeout)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID(id)))
	if err != nil {
		t.Fatalf("reading #%s: %v", id, err)
	}
	return s
}

// screenshot saves the page to WRIT_SCREENSHOTS/name.png when that is set:
// the README's pictures come from here.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("WRIT_SCREENSHOTS")
	if dir == "" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// browserSignIn signs email in from the console's sign-in page, through the
// identity provider, and waits for the requests page.
func browserSignIn(t *testing.T, ctx context.Context, srv *Server, idp *logintest.Provider, email string) string {
	t.Helper()
	base := "https://" + srv.ConsoleAddr().String()
	idp.SetUser(email, true)
	step(t, ctx, "sign-in page", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("signin")))
	screenshot(t, ctx, "console-signin")
	step(t, ctx, "signing in as "+email, chromedp.Click(chromedp.ID("signin")), chromedp.WaitVisible(chromedp.ID("who")))
	if who := textOf(t, ctx, "who"); !strings.Contains(who, strings.ToLower(strings.Split(email, "@")[0])) {
		t.Fatalf("signed in as %q, want %s", who, email)
	}
	return base
}

// TestBrowserSignInAndApprove: in a real browser, a person signs in
// through the identity provider and approves a request with a reason.
func TestBrowserSignInAndApprove(t *testing.T) {
	ctx := newChrome(t)
	srv, idp, _ := startConsoleServer(t)
	admin := adminConn(t, srv)
	applyTestRules(t, admin)
	work := openTask(t, writv1.NewTaskServiceClient(admin), "migrate payments", []string{ceo},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"db/prod/payments"}, To: []string{ceo}})
	req, err := actorConn(svidConn(t, srv, signIn(t, srv, alice))).join(t, work.GetId(), "run the migration", "write:db/prod/payments")
	if err != nil {
		t.Fatal(err)
	}
	id := req.GetRequest().GetId()

	browserSignIn(t, ctx, srv, idp, "bob@example.com")
	step(t, ctx, "requests page", chromedp.WaitVisible(chromedp.ID("request-"+id)),
		chromedp.SendKeys(chromedp.ID("reason-"+id), "checked the migration plan"))
	screenshot(t, ctx, "console-requests")
	step(t, ctx, "approving", chromedp.Click(chromedp.ID("approve-"+id)), chromedp.WaitVisible(chromedp.ID("notice")))
	if notice := textOf(t, ctx, "notice"); !strings.Contains(notice, "is now pending") {
		t.Fatalf("after approving: %q", notice)
	}
	d, err := writv1.NewRequestServiceClient(admin).GetRequest(t.Context(), &writv1.GetAccessRequestRequest{Id: id})
	if err != nil || len(d.GetReviews()) != 1 || d.GetReviews()[0].GetChain()[0] != bob || d.GetReviews()[0].GetReason() != "checked the migration plan" {
		t.Fatalf("the review: %v, %v", d.GetReviews(), err)
	}
}

// TestBrowserWatchThenCloseTab: a watch page open in a tab keeps a
// dual-controlled grant live; closing the tab ends the watch and Check
// denies.
func TestBrowserWatchThenCloseTab(t *testing.T) {
	ctx := newChrome(t)
	srv, idp, _ := startConsoleServer(t)
	admin := adminConn(t, srv)
	if _, err := writv1.NewReviewServiceClient(admin).ApplyRules(t.Context(), &writv1.ApplyReviewRulesRequest{Text: dualRules}); err != nil {
		t.Fatal(err)
	}
	decide := writv1.NewDecisionServiceClient(admin)
	work := openTask(t, writv1.NewTaskServiceClient(admin), "rotate the vault keys", []string{ceo},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"hr/salaries"}, To: []string{ceo}})
	if got, err := actorConn(svidConn(t, srv, signIn(t, srv, alice))).join(t, work.GetId(), "rotate the keys", "read:vault/keys"); err != nil || got.GetRequest().GetState() != "approved" {
		t.Fatalf("the vault read = %v, %v", got, err)
	}
	base := browserSignIn(t, ctx, srv, idp, "bob@example.com")

	step(t, ctx, "watch page", chromedp.Navigate(base+"/tasks/"+work.GetId()+"/watch"),
		chromedp.WaitVisible(chromedp.CSS(`#watch[data-live="yes"]`)))
	if r := check(t, decide, "read", "vault/keys", alice); !r.GetAllow() {
		t.Fatalf("denied while the watch page is open: %v", r)
	}
	// A status comes back for each heartbeat the page's worker posts; eight
	// of them outlast the session's lapse of two heartbeat intervals.
	step(t, ctx, "the page beating", chromedp.WaitVisible(chromedp.CSS(`#watch[data-statuses="8"]`)))
	if r := check(t, decide, "read", "vault/keys", alice); !r.GetAllow() {
		t.Fatalf("denied while the watch page beats: %v", r)
	}
	screenshot(t, ctx, "console-watch")
	// Another tab keeps the browser running; the watch tab closes as a
	// person closes it, from the browser's side.
	other, cancelOther := chromedp.NewContext(ctx)
	defer cancelOther()
	step(t, other, "another tab", chromedp.Navigate("about:blank"))
	step(t, ctx, "closing the watch tab", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, page.Close, cdp.Empty{})
		return err
	}))
	eventually(t, 20*time.Second, "the grant dies when the watch tab closes", func() bool {
		return !check(t, decide, "read", "vault/keys", alice).GetAllow()
	})
	if r := check(t, decide, "read", "vault/keys", alice); !strings.Contains(r.GetReason(), "0 of 1 watchers present") {
		t.Fatalf("denial after the tab closed: %v", r)
	}
}

// TestBrowserTamperedAuditFlagged: the audit page, verifying with the
// trusted keys, flags a log whose event was changed behind the server.
func TestBrowserTamperedAuditFlagged(t *testing.T) {
	ctx := newChrome(t)
	srv, idp, cfg := startConsoleServer(t)
	admin := adminConn(t, srv)
	openTask(t, writv1.NewTaskServiceClient(admin), "incident review", []string{bob},
		&writv1.Grant{Actions: []string{"read"}, Resources: []string{"writ/**"}, To: []string{bob}})
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
	base := browserSignIn(t, ctx, srv, idp, "bob@example.com")
	step(t, ctx, "audit page", chromedp.Navigate(base+"/audit"), chromedp.Click(chromedp.ID("verify-button")),
		chromedp.WaitVisible(chromedp.ID("verify")))
	if verdict := textOf(t, ctx, "verify"); !strings.HasPrefix(verdict, "Verified: OK") {
		t.Fatalf("an untouched log: %q", verdict)
	}
	tamperAuditEvent(t, cfg, srv, 3)
	step(t, ctx, "audit page after tampering", chromedp.Navigate(base+"/audit?verify=1"), chromedp.WaitVisible(chromedp.ID("verify")))
	if verdict := textOf(t, ctx, "verify"); !strings.HasPrefix(verdict, "Not verified: FAILED") {
		t.Fatalf("a changed log: %q", verdict)
	}
	screenshot(t, ctx, "console-audit")
	step(t, ctx, "inventory page", chromedp.Navigate(base+"/inventory?resource=writ/audit"), chromedp.WaitVisible(chromedp.ID("paths")))
	screenshot(t, ctx, "console-inventory")
}
