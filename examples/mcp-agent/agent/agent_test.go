package agent

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The token file is read per request, so a refreshed token is sent from
// the next request on; an empty file is an error, never an empty bearer.
func TestBearerFromFileFollowsTheFile(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("Authorization"))
	}))
	defer srv.Close()
	path := filepath.Join(t.TempDir(), "token")
	client := &http.Client{Transport: &BearerFromFile{Path: path, Next: http.DefaultTransport}}
	for _, tok := range []string{"a.b.c\n", "d.e.f"} {
		if err := os.WriteFile(path, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		resp, err := client.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if len(got) != 2 || got[0] != "Bearer a.b.c" || got[1] != "Bearer d.e.f" {
		t.Fatalf("sent %q", got)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Get(srv.URL); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Fatalf("empty token file: %v", err)
	}
	if len(got) != 2 {
		t.Fatal("a request went out without a token")
	}
}
