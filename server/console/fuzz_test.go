package console

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
)

// refusingReviews refuses every review, as the service does for a
// reviewer the rule does not count; it records what reached it.
type refusingReviews struct {
	writv1.UnimplementedReviewServiceServer
	calls int
}

func (r *refusingReviews) Approve(context.Context, *writv1.ReviewAccessRequest) (*writv1.AccessRequestDetail, error) {
	r.calls++
	return nil, status.Error(codes.PermissionDenied, "not counted")
}

func (r *refusingReviews) Deny(context.Context, *writv1.ReviewAccessRequest) (*writv1.AccessRequestDetail, error) {
	r.calls++
	return nil, status.Error(codes.PermissionDenied, "not counted")
}

type emptyRequests struct {
	writv1.UnimplementedRequestServiceServer
}

func (emptyRequests) ListRequests(context.Context, *writv1.ListAccessRequestsRequest) (*writv1.ListAccessRequestsResponse, error) {
	return &writv1.ListAccessRequestsResponse{}, nil
}

func testConsole(t testing.TB, reviews writv1.ReviewServiceServer) (*Console, *session) {
	c, err := New(Config{
		PublicURL: "https://console.test",
		SignIn:    func(context.Context, string) (spiffeid.ID, error) { return alice, nil },
		As: func(ctx context.Context, _ spiffeid.ID, _ string) (context.Context, error) {
			return ctx, nil
		},
		Services:    Services{Reviews: reviews, Requests: emptyRequests{}},
		IdleTimeout: 1 << 40, SessionTTL: 1 << 40, MaxSessions: 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c, c.sessions.start(alice)
}

// FuzzReviewForm: whatever a review form carries, the console answers
// with a page, never echoes the input unbounded, and reaches the review
// service only with the session's token, a verdict and a bounded reason.
func FuzzReviewForm(f *testing.F) {
	f.Add("R-1", "approve", "looks right", true)
	f.Add("R-1", "deny", strings.Repeat("x", 2000), true)
	f.Add("../../x", "approve", "\x00\xff", false)
	f.Add(strings.Repeat("%", 300), "maybe", "", true)
	rv := &refusingReviews{}
	c, se := testConsole(f, rv)
	f.Fuzz(func(t *testing.T, id, verdict, reason string, withToken bool) {
		rv.calls = 0
		form := url.Values{"verdict": {verdict}, "reason": {reason}}
		if withToken {
			form.Set("csrf", se.csrf)
		}
		req := httptest.NewRequest(http.MethodPost, "/requests/"+url.PathEscape(id)+"/review", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(&http.Cookie{Name: sessionCookie, Value: se.id})
		w := httptest.NewRecorder()
		c.Handler().ServeHTTP(w, req)
		if w.Code == http.StatusOK {
			t.Fatalf("a refused review answered 200: %s", w.Body)
		}
		if len(reason) > 64 && strings.Contains(w.Body.String(), reason) {
			t.Fatal("the page echoes the reason")
		}
		wantCall := withToken && (verdict == "approve" || verdict == "deny") && strings.TrimSpace(reason) != "" &&
			len(strings.TrimSpace(reason)) <= maxReason && len(form.Encode()) < maxForm
		if rv.calls > 1 || (rv.calls == 1) != (wantCall && validUTF8(strings.TrimSpace(reason))) {
			t.Fatalf("review service reached %d times for %q %q (token %v)", rv.calls, verdict, reason, withToken)
		}
	})
}

// FuzzAuditFilter: any filter query parses or is refused with a bounded
// message, and matching never fails.
func FuzzAuditFilter(f *testing.F) {
	f.Add("spiffe://example.org/person/example.com/alice", "T-1", "request", []byte(`{"time":"2026-01-01T00:00:00Z","type":"task.close","subject":"T-1"}`))
	f.Add(strings.Repeat("a", 300), "", "", []byte("{"))
	f.Fuzz(func(t *testing.T, identity, task, typ string, raw []byte) {
		q := url.Values{"identity": {identity}, "task": {task}, "type": {typ}}
		r := httptest.NewRequest(http.MethodGet, "/audit?"+q.Encode(), nil)
		flt, err := filterOf(r)
		if err != nil {
			if len(err.Error()) > 200 {
				t.Fatalf("error too long: %d bytes", len(err.Error()))
			}
			return
		}
		row := rowOf(1, raw)
		if row.Type == "" && row.Details == "" && len(raw) > 0 && row.Time == "" {
			t.Fatalf("an undecodable event shows nothing: %q", raw)
		}
		if e, err := audit.DecodeEvent(raw); err == nil {
			flt.match(e)
		}
	})
}

func validUTF8(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }
