package delegation

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// GrantTypeTokenExchange is the RFC 8693 "grant_type".
const GrantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"

// The RFC 8693 token types writ accepts as input.
const (
	TokenTypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
	TokenTypeIDToken     = "urn:ietf:params:oauth:token-type:id_token"
	TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
)

// The RFC 6749 and RFC 8693 error codes of a token exchange.
const (
	CodeInvalidRequest = "invalid_request"
	// CodeInvalidGrant refuses a subject or actor that may not delegate
	// now, e.g. one a lock names.
	CodeInvalidGrant         = "invalid_grant"
	CodeInvalidTarget        = "invalid_target"
	CodeUnauthorizedClient   = "unauthorized_client"
	CodeUnsupportedGrantType = "unsupported_grant_type"
)

// Bounds on a request. They are far above anything legitimate (an ID token
// is a few KiB) and keep one request from costing much more than another;
// the token endpoint bounds the body itself (http.MaxBytesReader, see
// server.maxTokenForm) before parsing the form.
const (
	maxInputTokenSize = 16 << 10
	maxTargets        = 16
	maxTargetSize     = 2 << 10
	maxScopeSize      = 1 << 10
)

// ExchangeRequest is a parsed RFC 8693 token-exchange request. Its tokens
// are only known to be present and well formed: checking them is the
// token endpoint's job.
type ExchangeRequest struct {
	SubjectToken, SubjectTokenType string
	ActorToken, ActorTokenType     string
	// Audience holds the logical names of the target services, Resource
	// their absolute URIs; between them at least one target.
	Audience []string
	Resource []string
	// Scope is the space-separated "scope" parameter, split.
	Scope []string
	// RequestedTokenType is empty or TokenTypeURI.
	RequestedTokenType string
}

// ExchangeError is a token-exchange error as RFC 6749 section 5.2 reports
// it. Its Description never repeats a token the client sent, so that none
// ends up in a response or a log, and repeats other input only escaped and
// cut short.
type ExchangeError struct {
	Code        string
	Description string
}

func (e *ExchangeError) Error() string {
	return "delegation: token exchange: " + e.Code + ": " + e.Description
}

// WriteJSON writes e as the RFC 6749 error response, status 400. A failed
// write is not reported: it means the client has gone, and there is
// nothing left to tell it.
func (e *ExchangeError) WriteJSON(w http.ResponseWriter) {
	body, _ := json.Marshal(struct {
		Code        string `json:"error"`
		Description string `json:"error_description,omitempty"`
	}{e.Code, e.Description})
	writeNoStore(w, http.StatusBadRequest, body)
}

func exchangeErr(code, format string, args ...any) *ExchangeError {
	return &ExchangeError{Code: code, Description: fmt.Sprintf(format, args...)}
}

// singleParams are the parameters RFC 6749 section 3.2 allows once;
// RFC 8693 lets "audience" and "resource" repeat.
var singleParams = []string{"grant_type", "subject_token", "subject_token_type", "actor_token", "actor_token_type", "requested_token_type", "scope"}

var subjectTokenTypes = []string{TokenTypeJWT, TokenTypeIDToken, TokenTypeAccessToken, TokenTypeURI}

// ParseExchangeRequest checks the form of a token-exchange request: the
// endpoint passes r.PostForm, since tokens in a query string would end up
// in access logs. Both a subject and an actor token are required: writ
// issues delegation tokens only to an agent acting for someone. As RFC 6749
// requires, a parameter with an empty value counts as absent and
// unrecognized parameters (client authentication among them) are ignored.
// Every error is an *ExchangeError.
func ParseExchangeRequest(form url.Values) (ExchangeRequest, error) {
	for _, name := range singleParams {
		if len(form[name]) > 1 {
			return ExchangeRequest{}, exchangeErr(CodeInvalidRequest, "parameter %s appears more than once", name)
		}
	}
	if err := checkGrantType(form.Get("grant_type")); err != nil {
		return ExchangeRequest{}, err
	}
	req := ExchangeRequest{RequestedTokenType: form.Get("requested_token_type")}
	var err error
	if req.SubjectToken, req.SubjectTokenType, err = inputToken(form, "subject", subjectTokenTypes); err != nil {
		return ExchangeRequest{}, err
	}
	if req.ActorToken, req.ActorTokenType, err = inputToken(form, "actor", []string{TokenTypeJWT}); err != nil {
		return ExchangeRequest{}, err
	}
	if req.RequestedTokenType != "" && req.RequestedTokenType != TokenTypeURI {
		return ExchangeRequest{}, exchangeErr(CodeInvalidRequest, "requested_token_type must be %s or absent: writ issues delegation tokens only", TokenTypeURI)
	}
	if req.Audience, req.Resource, err = targets(form); err != nil {
		return ExchangeRequest{}, err
	}
	if req.Scope, err = scopes(form.Get("scope")); err != nil {
		return ExchangeRequest{}, err
	}
	return req, nil
}

func checkGrantType(gt string) error {
	switch gt {
	case GrantTypeTokenExchange:
		return nil
	case "":
		return exchangeErr(CodeInvalidRequest, "grant_type is missing: use %s", GrantTypeTokenExchange)
	}
	return exchangeErr(CodeUnsupportedGrantType, "this endpoint serves only grant_type %s", GrantTypeTokenExchange)
}

// inputToken returns the <role>_token and <role>_token_type parameters,
// both required, the type one of types.
func inputToken(form url.Values, role string, types []string) (token, typ string, err error) {
	token, typ = form.Get(role+"_token"), form.Get(role+"_token_type")
	switch {
	case token == "":
		return "", "", exchangeErr(CodeInvalidRequest, "%s_token is missing", role)
	case len(token) > maxInputTokenSize:
		return "", "", exchangeErr(CodeInvalidRequest, "%s_token is longer than %d bytes", role, maxInputTokenSize)
	case !isVisibleASCII(token, false):
		return "", "", exchangeErr(CodeInvalidRequest, "%s_token contains characters no token has", role)
	case typ == "":
		return "", "", exchangeErr(CodeInvalidRequest, "%s_token_type is missing: use one of %s", role, strings.Join(types, ", "))
	}
	for _, t := range types {
		if typ == t {
			return token, typ, nil
		}
	}
	return "", "", exchangeErr(CodeInvalidRequest, "%s_token_type is not supported: use one of %s", role, strings.Join(types, ", "))
}

// targets returns the non-empty "audience" and "resource" values; at least
// one is required. A resource is an absolute URI without a fragment
// (RFC 8707 section 2).
func targets(form url.Values) (aud, res []string, err error) {
	aud, res = nonEmpty(form["audience"]), nonEmpty(form["resource"])
	switch n := len(aud) + len(res); {
	case n == 0:
		return nil, nil, exchangeErr(CodeInvalidTarget, "no audience or resource: name the service the token is for")
	case n > maxTargets:
		return nil, nil, exchangeErr(CodeInvalidTarget, "%d targets (audience and resource) is more than the %d allowed", n, maxTargets)
	}
	for i, a := range aud {
		if len(a) > maxTargetSize || !isVisibleASCII(a, false) {
			return nil, nil, exchangeErr(CodeInvalidTarget, "audience %d is longer than %d bytes or not printable ASCII", i+1, maxTargetSize)
		}
	}
	for i, r := range res {
		if len(r) > maxTargetSize || !isVisibleASCII(r, false) {
			return nil, nil, exchangeErr(CodeInvalidTarget, "resource %d is longer than %d bytes or not printable ASCII", i+1, maxTargetSize)
		}
		if u, err := url.Parse(r); err != nil || !u.IsAbs() || strings.Contains(r, "#") {
			return nil, nil, exchangeErr(CodeInvalidTarget, "resource %d is not an absolute URI without a fragment", i+1)
		}
	}
	return aud, res, nil
}

func nonEmpty(values []string) []string {
	var out []string
	for _, v := range values {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}

// scopes splits "scope" as RFC 6749 section 3.3 defines it: scope tokens
// of printable ASCII other than '"' and '\', separated by single spaces.
func scopes(scope string) ([]string, error) {
	if scope == "" {
		return nil, nil
	}
	if len(scope) > maxScopeSize {
		return nil, exchangeErr(CodeInvalidRequest, "scope is longer than %d bytes", maxScopeSize)
	}
	out := strings.Split(scope, " ")
	for _, s := range out {
		if s == "" || !isVisibleASCII(s, true) {
			return nil, exchangeErr(CodeInvalidRequest, "scope is not a list of scope tokens separated by single spaces")
		}
	}
	return out, nil
}

// isVisibleASCII reports whether s is printable ASCII without spaces
// (%x21-7E); strict also excludes '"' and '\', as scope tokens do.
func isVisibleASCII(s string, strict bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || (strict && (c == '"' || c == '\\')) {
			return false
		}
	}
	return true
}

// WriteResponse writes the RFC 8693 success response for token, which
// expires in expiresIn (reported in whole seconds, rounded down so the
// client never believes it lives longer than it does). "token_type" is
// "N_A": the token is bound to the agent's certificate and is not an OAuth
// bearer token.
func WriteResponse(w http.ResponseWriter, token string, expiresIn time.Duration) error {
	if token == "" {
		return errors.New("delegation: write response: token is empty")
	}
	secs := int64(expiresIn / time.Second)
	if secs < 1 {
		return fmt.Errorf("delegation: write response: expires in %s, less than the one second a response can state", expiresIn)
	}
	body, err := json.Marshal(struct {
		AccessToken     string `json:"access_token"`
		IssuedTokenType string `json:"issued_token_type"`
		TokenType       string `json:"token_type"`
		ExpiresIn       int64  `json:"expires_in"`
	}{token, TokenTypeURI, "N_A", secs})
	if err != nil {
		return fmt.Errorf("delegation: write response: %w", err)
	}
	if err := writeNoStore(w, http.StatusOK, body); err != nil {
		return fmt.Errorf("delegation: write response: %w", err)
	}
	return nil
}

// writeNoStore writes a JSON body that no cache may keep, as RFC 6749
// section 5.1 requires of every token endpoint response.
func writeNoStore(w http.ResponseWriter, status int, body []byte) error {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_, err := w.Write(body)
	return err
}
