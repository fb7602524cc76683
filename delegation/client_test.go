package delegation

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestClientFormRoundTrip: what Form sends is what the endpoint parses.
func TestClientFormRoundTrip(t *testing.T) {
	req := ExchangeRequest{
		SubjectToken: "a.b.c", SubjectTokenType: TokenTypeJWT,
		ActorToken: "d.e.f", ActorTokenType: TokenTypeJWT,
		Audience: []string{"payroll", "hr"}, Scope: []string{"task:T-1"},
	}
	got, err := ParseExchangeRequest(req.Form())
	if err != nil {
		t.Fatal(err)
	}
	if got.SubjectToken != "a.b.c" || got.ActorToken != "d.e.f" || len(got.Audience) != 2 || got.Scope[0] != "task:T-1" {
		t.Fatalf("round trip: %+v", got)
	}
}

func TestParseResponse(t *testing.T) {
	rec := httptest.NewRecorder()
	if err := WriteResponse(rec, "x.y.z", 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	r, err := ParseResponse(rec.Code, rec.Body.Bytes())
	if err != nil || r.AccessToken != "x.y.z" || r.ExpiresIn != 300 || r.IssuedTokenType != TokenTypeURI {
		t.Fatalf("%+v %v", r, err)
	}
	rec = httptest.NewRecorder()
	(&ExchangeError{Code: CodeInvalidTarget, Description: "no live task has both"}).WriteJSON(rec)
	_, err = ParseResponse(rec.Code, rec.Body.Bytes())
	var ee *ExchangeError
	if !errors.As(err, &ee) || ee.Code != CodeInvalidTarget || ee.Description != "no live task has both" {
		t.Fatalf("error answer: %v", err)
	}
	_, err = ParseResponse(http.StatusServiceUnavailable, []byte(strings.Repeat("z", 5000)))
	if err == nil || len(err.Error()) > 700 {
		t.Fatalf("plain error answer: %.100v", err)
	}
}

// FuzzParseResponse: no answer makes the client panic, every accepted one
// has a token, and errors stay short whatever the endpoint sent.
func FuzzParseResponse(f *testing.F) {
	f.Add(200, []byte(`{"access_token":"a.b.c","issued_token_type":"urn:ietf:params:oauth:token-type:jwt","token_type":"N_A","expires_in":300}`))
	f.Add(400, []byte(`{"error":"invalid_request","error_description":"actor_token: bad"}`))
	f.Add(502, []byte("<html>bad gateway</html>"))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		r, err := ParseResponse(status, body)
		if err != nil {
			if len(err.Error()) > 1200 {
				t.Fatalf("error of %d bytes", len(err.Error()))
			}
			return
		}
		if r.AccessToken == "" {
			t.Fatal("accepted without a token")
		}
	})
}
