package delegation

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"
)

// maxResponseSize bounds a token endpoint's answer: a delegation token with
// the longest chain is a few KiB.
const maxResponseSize = 64 << 10

// Response is a token endpoint's success answer (RFC 8693 section 2.2.1).
type Response struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
}

// Form encodes req as the body of a token-exchange request.
func (req ExchangeRequest) Form() url.Values {
	f := url.Values{}
	f.Set("grant_type", GrantTypeTokenExchange)
	f.Set("subject_token", req.SubjectToken)
	f.Set("subject_token_type", req.SubjectTokenType)
	f.Set("actor_token", req.ActorToken)
	f.Set("actor_token_type", req.ActorTokenType)
	for _, a := range req.Audience {
		f.Add("audience", a)
	}
	for _, r := range req.Resource {
		f.Add("resource", r)
	}
	if len(req.Scope) > 0 {
		f.Set("scope", strings.Join(req.Scope, " "))
	}
	if req.RequestedTokenType != "" {
		f.Set("requested_token_type", req.RequestedTokenType)
	}
	return f
}

// Exchange posts req to the token endpoint with client, which must present
// the actor's X.509-SVID: the token issued is bound to it.
func Exchange(ctx context.Context, client *http.Client, endpoint string, req ExchangeRequest) (Response, error) {
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(req.Form().Encode()))
	if err != nil {
		return Response{}, fmt.Errorf("delegation: token endpoint %s: %w", endpoint, err)
	}
	hr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	hr.Header.Set("Accept", "application/json")
	resp, err := client.Do(hr)
	if err != nil {
		return Response{}, fmt.Errorf("delegation: token endpoint: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseSize+1))
	if err != nil {
		return Response{}, fmt.Errorf("delegation: token endpoint: reading the answer: %w", err)
	}
	return ParseResponse(resp.StatusCode, body)
}

// ParseResponse reads a token endpoint's answer: the token, or the
// endpoint's error as an *ExchangeError. What the endpoint says is echoed
// only in part, since it is outside input.
func ParseResponse(status int, body []byte) (Response, error) {
	if len(body) > maxResponseSize {
		return Response{}, fmt.Errorf("delegation: the token endpoint's answer is larger than %d bytes: is the endpoint URL right?", maxResponseSize)
	}
	if status != http.StatusOK {
		var e struct {
			Code        string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(body, &e) == nil && e.Code != "" {
			return Response{}, &ExchangeError{Code: bound(e.Code, 64), Description: bound(e.Description, maxDescription)}
		}
		return Response{}, fmt.Errorf("delegation: the token endpoint answered %d %s: %s", status, http.StatusText(status), bound(string(bytes.TrimSpace(body)), maxDescription))
	}
	var r Response
	if err := json.Unmarshal(body, &r); err != nil {
		return Response{}, fmt.Errorf("delegation: the token endpoint's answer is not the JSON of RFC 8693: %w", err)
	}
	if r.AccessToken == "" || strings.ContainsAny(r.AccessToken, " \t\r\n") {
		return Response{}, fmt.Errorf("delegation: the token endpoint's answer has no usable access_token")
	}
	if r.ExpiresIn < 0 {
		return Response{}, fmt.Errorf("delegation: the token endpoint's answer expires in %d seconds", r.ExpiresIn)
	}
	return r, nil
}

// maxDescription bounds an endpoint's error description: long enough for
// the two SPIFFE IDs a refusal names, short enough for a terminal.
const maxDescription = 512

// bound cuts s to n bytes and replaces what a terminal or a log line could
// take for control: the text comes from the endpoint.
func bound(s string, n int) string {
	cut := len(s) > n
	if cut {
		s = s[:n]
	}
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	if cut {
		s += "..."
	}
	return s
}
