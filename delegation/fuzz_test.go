package delegation

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

// FuzzVerify feeds arbitrary strings to Verify. None may be accepted: the
// seeds are signed by a key the verifier does not hold (under the kid it
// knows), so a mutation gets through parsing and header checks to the
// signature, which nothing but the key can produce.
func FuzzVerify(f *testing.F) {
	key, outsider := newP256(f), newP256(f)
	cert := newCert(f)
	f.Add(issue(f, newTestSigner(f, outsider), testClaims(cert)))
	f.Add(issue(f, newTestSigner(f, newEd25519(f)), testClaims(cert)))
	f.Add(hs256Forgery(f, key.Public(), strings.Split(issue(f, newTestSigner(f, key), testClaims(cert)), ".")[1]))
	f.Add(b64.EncodeToString([]byte(`{"alg":"none","kid":"`+testKID+`","typ":"`+TokenType+`"}`)) + ".e30.")
	f.Add("")
	f.Add("..")
	v := newTestVerifier(f, key.Public())
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(token, testAudience, cert)
		if err == nil {
			t.Fatalf("accepted a token not signed by the key: %+v", c)
		}
		if len(token) >= 8 && strings.Contains(err.Error(), token) {
			t.Fatalf("error %q repeats the token", err)
		}
	})
}

var exchangeCodes = map[string]bool{CodeInvalidRequest: true, CodeInvalidTarget: true, CodeUnsupportedGrantType: true}

// FuzzParseExchangeRequest feeds arbitrary form bodies to
// ParseExchangeRequest: it never panics, every error is an *ExchangeError
// with a known code and a description RFC 6749 allows, and every request
// it accepts has the tokens and target it promises.
func FuzzParseExchangeRequest(f *testing.F) {
	f.Add(goodForm().Encode())
	f.Add("grant_type=" + url.QueryEscape(GrantTypeTokenExchange) + "&subject_token=a&subject_token_type=" + url.QueryEscape(TokenTypeJWT))
	f.Add("scope=a+b&scope=c&audience=&resource=%23")
	f.Fuzz(func(t *testing.T, body string) {
		form, err := url.ParseQuery(body)
		if err != nil {
			return
		}
		req, err := ParseExchangeRequest(form)
		if err != nil {
			var xe *ExchangeError
			if !errors.As(err, &xe) || !exchangeCodes[xe.Code] || !validDescription(xe.Description) {
				t.Fatalf("bad error %#v", err)
			}
			return
		}
		if req.SubjectToken == "" || req.ActorToken == "" || req.ActorTokenType != TokenTypeJWT ||
			len(req.Audience)+len(req.Resource) == 0 || len(req.Audience)+len(req.Resource) > maxTargets {
			t.Fatalf("accepted %+v", req)
		}
	})
}
