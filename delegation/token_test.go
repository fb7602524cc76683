package delegation

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"writ.dev/writ/ca"
)

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  crypto.Signer
		alg  jose.SignatureAlgorithm
	}{
		{"ES256", newP256(t), jose.ES256},
		{"EdDSA", newEd25519(t), jose.EdDSA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert := newCert(t)
			want := testClaims(cert)
			tok := issue(t, newTestSigner(t, tc.key), want)

			got, err := newTestVerifier(t, tc.key.Public()).Verify(tok, testAudience, cert)
			if err != nil {
				t.Fatal(err)
			}
			if got.ID == "" {
				t.Error("no jti")
			}
			want.Issuer, want.IssuedAt, want.NotBefore, want.ID = testIssuer, testNow, testNow, got.ID
			if !reflect.DeepEqual(got, want) {
				t.Errorf("claims = %+v\nwant %+v", got, want)
			}

			// An independent JOSE implementation agrees on the signature.
			jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{tc.alg})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := jws.Verify(tc.key.Public()); err != nil {
				t.Errorf("go-jose refuses the signature: %v", err)
			}
			wantHeader := map[string]any{"alg": string(tc.alg), "kid": testKID, "typ": TokenType}
			if h := decodePart(t, tok, 0); !reflect.DeepEqual(h, wantHeader) {
				t.Errorf("header = %v, want %v", h, wantHeader)
			}
		})
	}
}

func TestIssueEachTokenHasItsOwnID(t *testing.T) {
	key := newP256(t)
	s, v, cert := newTestSigner(t, key), newTestVerifier(t, key.Public()), newCert(t)
	c1, err := v.Verify(issue(t, s, testClaims(cert)), testAudience, cert)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := v.Verify(issue(t, s, testClaims(cert)), testAudience, cert)
	if err != nil {
		t.Fatal(err)
	}
	if c1.ID == c2.ID {
		t.Errorf("two tokens share jti %q", c1.ID)
	}
}

// TestClaimsEncoding checks the payload member by member: "act" nests as
// in the example of RFC 8693 section 4.1, nearest actor outermost.
func TestClaimsEncoding(t *testing.T) {
	cert := newCert(t)
	c := testClaims(cert)
	c.Audience = []string{testAudience, "https://mail.example.org"}
	tok := issue(t, newTestSigner(t, newP256(t)), c)

	got := decodePart(t, tok, 1)
	jti, _ := got["jti"].(string)
	var want map[string]any
	err := json.Unmarshal([]byte(`{
		"iss": "`+testIssuer+`",
		"sub": "spiffe://example.org/person/alice",
		"aud": ["https://calendar.example.org", "https://mail.example.org"],
		"exp": `+jsonInt(testNow.Add(5*time.Minute).Unix())+`,
		"nbf": `+jsonInt(testNow.Unix())+`,
		"iat": `+jsonInt(testNow.Unix())+`,
		"jti": "`+jti+`",
		"task": "task-42",
		"act": {
			"sub": "spiffe://example.org/agent/planner",
			"act": {"sub": "spiffe://example.org/agent/orchestrator"}
		},
		"cnf": {"x5t#S256": "`+Thumbprint(cert)+`"}
	}`), &want)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("payload = %v\nwant      %v", got, want)
	}
}

func jsonInt(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestClaimsEncodingOneAudienceAndNoTask(t *testing.T) {
	c := testClaims(newCert(t))
	c.Actors, c.TaskID = []string{testAgent}, ""
	got := decodePart(t, issue(t, newTestSigner(t, newP256(t)), c), 1)
	if got["aud"] != testAudience {
		t.Errorf("aud = %v, want the string %q", got["aud"], testAudience)
	}
	if _, ok := got["task"]; ok {
		t.Errorf("task = %v, want no member", got["task"])
	}
	if want := map[string]any{"sub": testAgent}; !reflect.DeepEqual(got["act"], want) {
		t.Errorf("act = %v, want %v", got["act"], want)
	}
}

func TestThumbprint(t *testing.T) {
	cert := newCert(t)
	if tp := Thumbprint(cert); len(tp) != 43 || strings.ContainsAny(tp, "+/=") {
		t.Errorf("Thumbprint = %q, want 43 base64url characters", tp)
	}
	if Thumbprint(cert) == Thumbprint(newCert(t)) {
		t.Error("two certificates share a thumbprint")
	}
	if tp := Thumbprint(nil); tp != "" {
		t.Errorf("Thumbprint(nil) = %q", tp)
	}
}

func TestVerifyRefuses(t *testing.T) {
	key := newP256(t)
	cert := newCert(t)
	signer := newTestSigner(t, key)
	good := issue(t, signer, testClaims(cert))
	goodPayload := strings.Split(good, ".")[1]
	pub := key.Public()

	svidAuthority := &ca.JWTAuthority{Signer: key, KeyID: testKID, NotAfter: testNow.Add(time.Hour)}
	svid, err := svidAuthority.SignJWTSVID(ca.JWTSVIDParams{
		SPIFFEID: spiffeid.RequireFromString(testAgent),
		Audience: []string{testAudience},
		TTL:      time.Minute,
		Issuer:   testIssuer,
	}, testNow)
	if err != nil {
		t.Fatal(err)
	}

	deepSigner := newTestSigner(t, key, WithMaxChain(4))
	deep := testClaims(cert)
	deep.Actors = append(deep.Actors, "spiffe://example.org/agent/a", "spiffe://example.org/agent/b")

	header := `{"alg":"ES256","kid":"` + testKID + `","typ":"` + TokenType + `"}`
	payload := func(s string) string {
		raw, _ := b64.DecodeString(goodPayload)
		return strings.Replace(string(raw), `"iss"`, s+`"iss"`, 1)
	}

	tests := []struct {
		name     string
		token    string
		verifier *Verifier
		aud      string
		cert     *x509.Certificate
		noCert   bool
		want     string
	}{
		{name: "wrong key", token: good, verifier: newTestVerifier(t, newP256(t).Public()), want: "signature does not verify"},
		{name: "unknown kid", token: good, verifier: mustVerifier(t, map[string]crypto.PublicKey{"other": pub}), want: `unknown key "delegation-1"`},
		{name: "JWT-SVID signed with the same key", token: svid, want: `not a delegation token (typ "JWT"`},
		{name: "expired", token: good, verifier: newTestVerifier(t, pub, WithClock(fixedClock(testNow.Add(DefaultMaxTTL+DefaultLeeway+time.Second)))), want: "expired at 2030-01-02T03:09:05Z"},
		{name: "not yet valid", token: good, verifier: newTestVerifier(t, pub, WithClock(fixedClock(testNow.Add(-DefaultLeeway-time.Second)))), want: "not valid until 2030-01-02T03:04:05Z"},
		{name: "wrong issuer", token: good, verifier: mustVerifier(t, map[string]crypto.PublicKey{testKID: pub}, "https://other.example.org/token"), want: "from issuer"},
		{name: "wrong audience", token: good, aud: "https://bank.example.org", want: `not for audience "https://bank.example.org"`},
		{name: "replayed by another agent", token: good, cert: newCert(t), want: "token is bound to another certificate"},
		{name: "no certificate", token: good, noCert: true, want: "no client certificate presented"},
		{name: "chain too deep", token: issue(t, deepSigner, deep), want: "actor chain of 4 is deeper than the 3 allowed"},
		{name: "alg none", token: b64.EncodeToString([]byte(`{"alg":"none","kid":"`+testKID+`","typ":"`+TokenType+`"}`)) + "." + goodPayload + ".", want: `alg "none" is not ES256`},
		{name: "HS256 with the public key as secret", token: hs256Forgery(t, pub, goodPayload), want: `alg "HS256" is not ES256`},
		{name: "payload swapped", token: strings.Split(good, ".")[0] + "." + b64.EncodeToString([]byte(payload(`"admin":true,`))) + "." + strings.Split(good, ".")[2], want: "signature does not verify"},
		{name: "unknown claim", token: signRaw(t, key, header, payload(`"admin":true,`)), want: `unknown field "admin"`},
		{name: "duplicate claim", token: signRaw(t, key, header, payload(`"sub":"spiffe://example.org/person/bob",`)), want: `member "sub" appears twice`},
		{name: "claim name in another case", token: signRaw(t, key, header, payload(`"ISS":"https://other.example.org",`)), want: `member "ISS" is not one`},
		{name: "crit header", token: signRaw(t, key, `{"alg":"ES256","crit":["exp"],"kid":"`+testKID+`","typ":"`+TokenType+`"}`, payload("")), want: `unknown field "crit"`},
		{name: "JSON serialization", token: `{"payload":"` + goodPayload + `"}`, want: "malformed token"},
		{name: "padded segment", token: good + "=", want: "not unpadded base64url"},
		{name: "empty", token: "", want: "malformed token"},
		{name: "oversized", token: good + strings.Repeat("A", maxTokenSize), want: "more than the 8192"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, aud, presented := tc.verifier, tc.aud, tc.cert
			if v == nil {
				v = newTestVerifier(t, pub)
			}
			if aud == "" {
				aud = testAudience
			}
			if presented == nil && !tc.noCert {
				presented = cert
			}
			c, err := v.Verify(tc.token, aud, presented)
			wantErr(t, err, tc.want)
			if !reflect.DeepEqual(c, Claims{}) {
				t.Errorf("claims returned with the error: %+v", c)
			}
			if len(tc.token) > 0 && strings.Contains(err.Error(), tc.token) {
				t.Errorf("error repeats the token")
			}
		})
	}
}

func mustVerifier(t *testing.T, keys map[string]crypto.PublicKey, issuer ...string) *Verifier {
	t.Helper()
	iss := testIssuer
	if len(issuer) > 0 {
		iss = issuer[0]
	}
	v, err := NewVerifier(keys, iss, WithClock(fixedClock(testNow)))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// hs256Forgery signs payload with HMAC keyed by the DER public key, the
// classic forgery against verifiers that let "alg" pick the algorithm.
func hs256Forgery(t testing.TB, pub crypto.PublicKey, payload string) string {
	t.Helper()
	secret, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	opts := (&jose.SignerOptions{}).WithType(TokenType).WithHeader("kid", testKID)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: secret}, opts)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := b64.DecodeString(payload)
	jws, err := signer.Sign(raw)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestVerifyLeeway checks the leeway extends the start of the validity
// period and never its end: a token is refused from its "exp" on, however
// much clock skew the verifier tolerates.
func TestVerifyLeeway(t *testing.T) {
	key, cert := newP256(t), newCert(t)
	tok := issue(t, newTestSigner(t, key), testClaims(cert))
	for _, at := range []time.Time{testNow.Add(-DefaultLeeway), testNow.Add(DefaultMaxTTL - time.Second)} {
		v := newTestVerifier(t, key.Public(), WithClock(fixedClock(at)))
		if _, err := v.Verify(tok, testAudience, cert); err != nil {
			t.Errorf("at %s: %v", at, err)
		}
	}
	for _, at := range []time.Time{testNow.Add(DefaultMaxTTL), testNow.Add(DefaultMaxTTL + DefaultLeeway/2)} {
		v := newTestVerifier(t, key.Public(), WithClock(fixedClock(at)), WithLeeway(time.Minute))
		wantErr(t, func() error { _, err := v.Verify(tok, testAudience, cert); return err }(), "expired at")
	}
}

// TestJWTSVIDVerifierRefusesDelegationToken checks the other direction of
// the separation: even with the delegation key wrongly in a SPIFFE bundle,
// go-spiffe does not take a delegation token for a JWT-SVID.
func TestJWTSVIDVerifierRefusesDelegationToken(t *testing.T) {
	key, cert := newP256(t), newCert(t)
	c := testClaims(cert)
	c.Expiry = time.Now().Add(time.Minute)
	s, err := NewSigner(key, testKID, testIssuer)
	if err != nil {
		t.Fatal(err)
	}
	tok := issue(t, s, c)
	bundle := jwtbundle.New(spiffeid.RequireTrustDomainFromString("example.org"))
	if err := bundle.AddJWTAuthority(testKID, key.Public()); err != nil {
		t.Fatal(err)
	}
	_, err = jwtsvid.ParseAndValidate(tok, bundle, []string{testAudience})
	wantErr(t, err, "header type")
}

func TestIssueRefuses(t *testing.T) {
	cert := newCert(t)
	tests := []struct {
		name   string
		modify func(*Claims)
		want   string
	}{
		{"lifetime over the cap", func(c *Claims) { c.Expiry = testNow.Add(DefaultMaxTTL + time.Second) }, "lifetime 5m1s is over the cap of 5m0s"},
		{"no expiry", func(c *Claims) { c.Expiry = time.Time{} }, "no Expiry"},
		{"expired", func(c *Claims) { c.Expiry = testNow.Add(500 * time.Millisecond) }, "no whole second"},
		{"no actors", func(c *Claims) { c.Actors = nil }, "no actor"},
		{"chain too deep", func(c *Claims) {
			c.Actors = append(c.Actors, "spiffe://example.org/agent/a", "spiffe://example.org/agent/b")
		}, "actor chain of 4 is deeper than the 3 allowed"},
		{"subject not a SPIFFE ID", func(c *Claims) { c.Subject = "alice@example.org" }, `subject "alice@example.org" is not a SPIFFE ID`},
		{"subject a trust domain", func(c *Claims) { c.Subject = "spiffe://example.org" }, "names a trust domain"},
		{"actor not a SPIFFE ID", func(c *Claims) { c.Actors[1] = "https://agent.example.org" }, `actor 2 "https://agent.example.org" is not a SPIFFE ID`},
		{"empty audience", func(c *Claims) { c.Audience = nil }, "audience is empty"},
		{"empty audience string", func(c *Claims) { c.Audience = []string{testAudience, ""} }, "audience 2 of 2 is an empty string"},
		{"no thumbprint", func(c *Claims) { c.Thumbprint = "" }, "no certificate thumbprint"},
		{"malformed thumbprint", func(c *Claims) { c.Thumbprint = "abc" }, "not a base64url SHA-256 digest"},
		{"other issuer", func(c *Claims) { c.Issuer = "https://other.example.org" }, "is not this signer's"},
		{"preset jti", func(c *Claims) { c.ID = "chosen" }, "set by Issue"},
	}
	s := newTestSigner(t, newP256(t))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := testClaims(cert)
			tc.modify(&c)
			tok, err := s.Issue(c)
			wantErr(t, err, tc.want)
			if tok != "" {
				t.Error("token returned with the error")
			}
		})
	}
}

func TestIssueWithOptions(t *testing.T) {
	key, cert := newP256(t), newCert(t)
	s := newTestSigner(t, key, WithMaxTTL(time.Minute), WithMaxChain(1))
	c := testClaims(cert)
	_, err := s.Issue(c)
	wantErr(t, err, "actor chain of 2 is deeper than the 1 allowed")
	c.Actors = c.Actors[:1]
	_, err = s.Issue(c)
	wantErr(t, err, "over the cap of 1m0s")
	c.Expiry = testNow.Add(time.Minute)
	issue(t, s, c)
}

func TestNewSignerRefuses(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key := newP256(t)
	tests := []struct {
		name   string
		key    crypto.Signer
		kid    string
		issuer string
		opts   []Option
		want   string
	}{
		{"RSA key", rsaKey, testKID, testIssuer, nil, "*rsa.PublicKey keys cannot sign"},
		{"P-384 key", p384, testKID, testIssuer, nil, "curve P-384 cannot sign"},
		{"no key", nil, testKID, testIssuer, nil, "no key"},
		{"no kid", key, "", testIssuer, nil, "key ID is empty"},
		{"no issuer", key, testKID, "", nil, "issuer is empty"},
		{"http issuer", key, testKID, "http://writ.example.org/token", nil, "must use https"},
		{"relative issuer", key, testKID, "/token", nil, "not an absolute URL"},
		{"verifier option", key, testKID, testIssuer, []Option{WithLeeway(time.Second)}, "WithLeeway does not apply to a Signer"},
		{"zero TTL", key, testKID, testIssuer, []Option{WithMaxTTL(0)}, "WithMaxTTL: 0s is not positive"},
		{"nil clock", key, testKID, testIssuer, []Option{WithClock(nil)}, "clock is nil"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewSigner(tc.key, tc.kid, tc.issuer, tc.opts...)
			wantErr(t, err, tc.want)
		})
	}
	if _, err := NewSigner(key, testKID, "http://127.0.0.1:8443/token"); err != nil {
		t.Errorf("loopback http issuer refused: %v", err)
	}
}

func TestNewVerifierRefuses(t *testing.T) {
	pub := newP256(t).Public()
	tests := []struct {
		name string
		keys map[string]crypto.PublicKey
		opts []Option
		want string
	}{
		{"no keys", nil, nil, "no keys"},
		{"empty kid", map[string]crypto.PublicKey{"": pub}, nil, "empty key ID"},
		{"HMAC secret", map[string]crypto.PublicKey{testKID: []byte("secret")}, nil, "[]uint8 keys cannot sign"},
		{"signer option", map[string]crypto.PublicKey{testKID: pub}, []Option{WithMaxTTL(time.Minute)}, "WithMaxTTL does not apply to a Verifier"},
		{"negative leeway", map[string]crypto.PublicKey{testKID: pub}, []Option{WithLeeway(-time.Second)}, "is negative"},
		{"no chain", map[string]crypto.PublicKey{testKID: pub}, []Option{WithMaxChain(0)}, "WithMaxChain: 0 is less than 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewVerifier(tc.keys, testIssuer, tc.opts...)
			wantErr(t, err, tc.want)
		})
	}
}
