package delegation

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

func goodForm() url.Values {
	return url.Values{
		"grant_type":         {GrantTypeTokenExchange},
		"subject_token":      {"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"},
		"subject_token_type": {TokenTypeIDToken},
		"actor_token":        {"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2ln"},
		"actor_token_type":   {TokenTypeJWT},
		"audience":           {"calendar"},
		"resource":           {"https://calendar.example.org/api", "https://mail.example.org/"},
		"scope":              {"calendar.read calendar.write"},
	}
}

func TestParseExchangeRequest(t *testing.T) {
	form := goodForm()
	form.Set("requested_token_type", TokenTypeURI)
	form.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
	got, err := ParseExchangeRequest(form)
	if err != nil {
		t.Fatal(err)
	}
	want := ExchangeRequest{
		SubjectToken:       form.Get("subject_token"),
		SubjectTokenType:   TokenTypeIDToken,
		ActorToken:         form.Get("actor_token"),
		ActorTokenType:     TokenTypeJWT,
		Audience:           []string{"calendar"},
		Resource:           []string{"https://calendar.example.org/api", "https://mail.example.org/"},
		Scope:              []string{"calendar.read", "calendar.write"},
		RequestedTokenType: TokenTypeURI,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("request = %+v\nwant %+v", got, want)
	}
}

func TestParseExchangeRequestRefuses(t *testing.T) {
	tests := []struct {
		name   string
		modify func(url.Values)
		code   string
		want   string
	}{
		{"no grant_type", func(f url.Values) { f.Del("grant_type") }, CodeInvalidRequest, "grant_type is missing"},
		{"other grant_type", func(f url.Values) { f.Set("grant_type", "client_credentials") }, CodeUnsupportedGrantType, "only grant_type"},
		{"duplicate grant_type", func(f url.Values) { f.Add("grant_type", GrantTypeTokenExchange) }, CodeInvalidRequest, "grant_type appears more than once"},
		{"no subject_token", func(f url.Values) { f.Del("subject_token") }, CodeInvalidRequest, "subject_token is missing"},
		{"empty subject_token", func(f url.Values) { f.Set("subject_token", "") }, CodeInvalidRequest, "subject_token is missing"},
		{"duplicate subject_token", func(f url.Values) { f.Add("subject_token", "x") }, CodeInvalidRequest, "subject_token appears more than once"},
		{"no subject_token_type", func(f url.Values) { f.Del("subject_token_type") }, CodeInvalidRequest, "subject_token_type is missing"},
		{"unknown subject_token_type", func(f url.Values) { f.Set("subject_token_type", "urn:ietf:params:oauth:token-type:saml2") }, CodeInvalidRequest, "subject_token_type is not supported"},
		{"no actor_token", func(f url.Values) { f.Del("actor_token") }, CodeInvalidRequest, "actor_token is missing"},
		{"duplicate actor_token", func(f url.Values) { f.Add("actor_token", "x") }, CodeInvalidRequest, "actor_token appears more than once"},
		{"no actor_token_type", func(f url.Values) { f.Del("actor_token_type") }, CodeInvalidRequest, "actor_token_type is missing"},
		{"actor access token", func(f url.Values) { f.Set("actor_token_type", TokenTypeAccessToken) }, CodeInvalidRequest, "actor_token_type is not supported"},
		{"oversized token", func(f url.Values) { f.Set("actor_token", strings.Repeat("a", maxInputTokenSize+1)) }, CodeInvalidRequest, "longer than 16384 bytes"},
		{"token with a newline", func(f url.Values) { f.Set("subject_token", "a\nb") }, CodeInvalidRequest, "characters no token has"},
		{"other requested_token_type", func(f url.Values) { f.Set("requested_token_type", TokenTypeAccessToken) }, CodeInvalidRequest, "requested_token_type must be"},
		{"no target", func(f url.Values) { f.Del("audience"); f.Del("resource") }, CodeInvalidTarget, "no audience or resource"},
		{"empty targets", func(f url.Values) { f["audience"] = []string{""}; f["resource"] = []string{""} }, CodeInvalidTarget, "no audience or resource"},
		{"relative resource", func(f url.Values) { f.Add("resource", "/api") }, CodeInvalidTarget, "resource 3 is not an absolute URI"},
		{"resource with fragment", func(f url.Values) { f.Set("resource", "https://calendar.example.org/#x") }, CodeInvalidTarget, "without a fragment"},
		{"too many targets", func(f url.Values) { f["audience"] = make([]string, maxTargets); fill(f["audience"]) }, CodeInvalidTarget, "18 targets"},
		{"audience with a space", func(f url.Values) { f.Set("audience", "calendar mail") }, CodeInvalidTarget, "audience 1"},
		{"duplicate scope", func(f url.Values) { f.Add("scope", "mail.read") }, CodeInvalidRequest, "scope appears more than once"},
		{"scope with two spaces", func(f url.Values) { f.Set("scope", "a  b") }, CodeInvalidRequest, "separated by single spaces"},
		{"scope with a quote", func(f url.Values) { f.Set("scope", `a"b`) }, CodeInvalidRequest, "scope tokens"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			form := goodForm()
			tc.modify(form)
			_, err := ParseExchangeRequest(form)
			var xe *ExchangeError
			if !errors.As(err, &xe) {
				t.Fatalf("error %v is not an *ExchangeError", err)
			}
			if xe.Code != tc.code || !strings.Contains(xe.Description, tc.want) {
				t.Errorf("error = %s: %q, want %s: ...%q...", xe.Code, xe.Description, tc.code, tc.want)
			}
			if !validDescription(xe.Description) {
				t.Errorf("description %q has characters RFC 6749 does not allow", xe.Description)
			}
		})
	}
}

func fill(values []string) {
	for i := range values {
		values[i] = "service"
	}
}

// validDescription reports whether s is an RFC 6749 error_description:
// %x20-21 / %x23-5B / %x5D-7E.
func validDescription(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

func TestExchangeErrorWriteJSON(t *testing.T) {
	rec := httptest.NewRecorder()
	(&ExchangeError{Code: CodeInvalidTarget, Description: "no audience or resource"}).WriteJSON(rec)
	checkNoStoreJSON(t, rec, http.StatusBadRequest)
	want := `{"error":"invalid_target","error_description":"no audience or resource"}`
	if got := rec.Body.String(); got != want {
		t.Errorf("body = %s, want %s", got, want)
	}
}

func TestWriteResponse(t *testing.T) {
	rec := httptest.NewRecorder()
	if err := WriteResponse(rec, "a.b.c", 299*time.Second+900*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	checkNoStoreJSON(t, rec, http.StatusOK)
	var got map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"access_token":      "a.b.c",
		"issued_token_type": TokenTypeURI,
		"token_type":        "N_A",
		"expires_in":        float64(299),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("body = %v, want %v", got, want)
	}
}

func TestWriteResponseRefuses(t *testing.T) {
	for _, tc := range []struct {
		token string
		exp   time.Duration
		want  string
	}{
		{"", time.Minute, "token is empty"},
		{"a.b.c", 999 * time.Millisecond, "less than the one second"},
	} {
		rec := httptest.NewRecorder()
		wantErr(t, WriteResponse(rec, tc.token, tc.exp), tc.want)
		if rec.Body.Len() != 0 || len(rec.Header()) != 0 {
			t.Errorf("%s: response written along with the error", tc.want)
		}
	}
}

func checkNoStoreJSON(t *testing.T, rec *httptest.ResponseRecorder, status int) {
	t.Helper()
	if rec.Code != status {
		t.Errorf("status = %d, want %d", rec.Code, status)
	}
	for name, want := range map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store", "Pragma": "no-cache"} {
		if got := rec.Header().Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}
