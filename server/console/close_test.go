package console

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	writv1 "writ.dev/writ/api/writ/v1"
)

type emptyAudit struct {
	writv1.UnimplementedAuditServiceServer
}

func (emptyAudit) ReadEvents(context.Context, *writv1.ReadAuditEventsRequest) (*writv1.ReadAuditEventsResponse, error) {
	return &writv1.ReadAuditEventsResponse{}, nil
}

// TestCloseEndsLiveTail: shutting down ends an open audit tail with a
// word to the page, instead of holding the shutdown to its deadline.
func TestCloseEndsLiveTail(t *testing.T) {
	c, se := testConsole(t, &refusingReviews{})
	c.cfg.Services.Audit = emptyAudit{}
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/audit/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.AddCookie(&http.Cookie{Name: sessionCookie, Value: se.id})
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("tail: %v %v", resp, err)
	}
	defer resp.Body.Close()
	c.Close()
	r := bufio.NewReader(resp.Body)
	var got []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			break
		}
		got = append(got, line)
	}
	if all := strings.Join(got, ""); !strings.Contains(all, "event: end") || !strings.Contains(all, "shutting down") {
		t.Fatalf("the tail after Close: %q", all)
	}
}
