package httpproxy

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"writ.dev/writ/gateway"
	"writ.dev/writ/internal/jwssign"
)

var (
	testDecision = gateway.Decision{Allow: true, Chain: []string{agentID.String(), aliceID.String()}}
	testRequest  = gateway.Request{Action: "read", Resource: "http/orders/1"}
)

func signWith(t testing.TB, svid *x509svid.SVID, aud string, now time.Time) string {
	t.Helper()
	s := newHeaderSigner(svid, aud, DefaultCallerHeaderTTL)
	h, err := s.sign(now, testDecision, testRequest, "GET", "/orders/1")
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// signRaw signs any payload with any typ and x5c, for headers the gateway
// would never make.
func signRaw(t testing.TB, svid *x509svid.SVID, typ string, x5c []string, payload []byte) string {
	t.Helper()
	key, err := jwssign.New(svid.PrivateKey, "", jose.ES256)
	if err != nil {
		t.Fatal(err)
	}
	opts := (&jose.SignerOptions{}).WithType(jose.ContentType(typ))
	if x5c != nil {
		opts = opts.WithHeader("x5c", x5c)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	h, err := jwssign.Compact(s, payload)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func x5cOf(svid *x509svid.SVID) []string {
	var out []string
	for _, c := range svid.Certificates {
		out = append(out, base64.StdEncoding.EncodeToString(c.Raw))
	}
	return out
}

func claimsAt(now time.Time, edit func(*callerClaims)) []byte {
	c := callerClaims{
		Issuer: gatewayID.String(), Audience: "orders-api", IssuedAt: now.Unix(), Expiry: now.Add(time.Minute).Unix(),
		ID: "j1", Chain: []string{agentID.String()}, Action: "read", Resource: "http/orders/1", Method: "GET", Path: "/orders/1",
	}
	if edit != nil {
		edit(&c)
	}
	b, _ := json.Marshal(c)
	return b
}

func TestVerifyCallerHeader(t *testing.T) {
	pki := newPKI(t, testTD)
	other := newPKI(t, testTD) // same trust domain name, a root nobody trusts
	now := time.Now()
	gw := pki.svid(t, gatewayID)
	accept := spiffeid.MatchID(gatewayID)

	good := signWith(t, gw, "orders-api", now)
	v, err := VerifyCallerHeader(good, pki.bundle, accept, "orders-api", now)
	if err != nil {
		t.Fatalf("valid header refused: %v", err)
	}
	if v.Gateway != gatewayID || len(v.Chain) != 2 || v.Chain[1] != aliceID || v.ID == "" || v.Expires.Sub(v.IssuedAt) != DefaultCallerHeaderTTL {
		t.Errorf("verified %+v", v)
	}

	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(claimsAt(now, func(c *callerClaims) { c.Chain = []string{aliceID.String()} })) + "." + parts[2]
	agent := pki.svid(t, agentID)
	expiredSVID := pki.svidAt(t, gatewayID, now.Add(-2*time.Hour), now.Add(-time.Hour))

	for _, tc := range []struct {
		name, header, audience string
		at                     time.Time
		want                   string
	}{
		{"empty", "", "orders-api", now, "no Writ-Caller header"},
		{"garbage", "not a jws", "orders-api", now, "not a compact JWS"},
		{"too large", strings.Repeat("a", maxCallerHeaderBytes+1), "orders-api", now, "bytes"},
		{"wrong audience", good, "billing-api", now, "made for \"orders-api\""},
		{"expired", good, "orders-api", now.Add(DefaultCallerHeaderTTL), "expired"},
		{"from the future", good, "orders-api", now.Add(-time.Minute), "future"},
		{"tampered claims", tampered, "orders-api", now, "signature does not verify"},
		{"untrusted root", signWith(t, other.svid(t, gatewayID), "orders-api", now), "orders-api", now, "not a valid X.509-SVID"},
		{"expired SVID", signWith(t, expiredSVID, "orders-api", now), "orders-api", now, "not a valid X.509-SVID"},
		{"valid SVID, not a gateway", signWith(t, agent, "orders-api", now), "orders-api", now, "not an accepted gateway"},
		{"key not the x5c's", signRaw(t, agent, CallerHeaderType, x5cOf(gw), claimsAt(now, nil)), "orders-api", now, "signature does not verify"},
		{"no x5c", signRaw(t, gw, CallerHeaderType, nil, claimsAt(now, nil)), "orders-api", now, "x5c"},
		{"JWT type", signRaw(t, gw, "JWT", x5cOf(gw), claimsAt(now, nil)), "orders-api", now, "not a caller header"},
		{"iss not the signer", signRaw(t, gw, CallerHeaderType, x5cOf(gw), claimsAt(now, func(c *callerClaims) { c.Issuer = aliceID.String() })), "orders-api", now, "is not the signer"},
		{"too long lived", signRaw(t, gw, CallerHeaderType, x5cOf(gw), claimsAt(now, func(c *callerClaims) { c.Expiry = now.Add(time.Hour).Unix() })), "orders-api", now, "apart"},
		{"no chain", signRaw(t, gw, CallerHeaderType, x5cOf(gw), claimsAt(now, func(c *callerClaims) { c.Chain = nil })), "orders-api", now, "missing"},
		{"chain not SPIFFE IDs", signRaw(t, gw, CallerHeaderType, x5cOf(gw), claimsAt(now, func(c *callerClaims) { c.Chain = []string{"alice"} })), "orders-api", now, "not a SPIFFE ID"},
		{"alg none", base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"writ-caller+jwt"}`)) + "." + parts[1] + ".", "orders-api", now, "not a compact JWS"},
	} {
		_, err := VerifyCallerHeader(tc.header, pki.bundle, accept, tc.audience, tc.at)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error mentioning %q", tc.name, err, tc.want)
		}
		if err != nil && len(err.Error()) > 400 {
			t.Errorf("%s: error is %d bytes long", tc.name, len(err.Error()))
		}
	}
}

func TestVerifyRequestBindsMethodAndPath(t *testing.T) {
	pki := newPKI(t, testTD)
	now := time.Now()
	h := signWith(t, pki.svid(t, gatewayID), "orders-api", now)
	accept := spiffeid.MatchID(gatewayID)
	for _, tc := range []struct{ method, target, want string }{
		{"GET", "/orders/1", ""},
		{"DELETE", "/orders/1", "not for this request"},
		{"GET", "/orders/2", "not for this request"},
		{"GET", "/orders/%31", "not for this request"},
	} {
		r := httptest.NewRequest(tc.method, tc.target, nil)
		r.Header.Set(CallerHeader, h)
		_, err := VerifyRequest(r, pki.bundle, accept, "orders-api", now)
		if (tc.want == "" && err != nil) || (tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want))) {
			t.Errorf("%s %s: got %v, want %q", tc.method, tc.target, err, tc.want)
		}
	}
	r := httptest.NewRequest("GET", "/orders/1", nil)
	r.Header.Add(CallerHeader, h)
	r.Header.Add(CallerHeader, h)
	if _, err := VerifyRequest(r, pki.bundle, accept, "orders-api", now); err == nil {
		t.Error("two Writ-Caller headers accepted")
	}
}

// TestSignerFollowsRenewal checks that a renewed SVID signs the next
// header, so a header never carries a chain that has expired.
func TestSignerFollowsRenewal(t *testing.T) {
	pki := newPKI(t, testTD)
	now := time.Now()
	src := &swapSource{svid: pki.svid(t, gatewayID)}
	s := newHeaderSigner(src, "orders-api", time.Minute)
	first, err := s.sign(now, testDecision, testRequest, "GET", "/orders/1")
	if err != nil {
		t.Fatal(err)
	}
	src.svid = pki.svid(t, gatewayID)
	second, err := s.sign(now, testDecision, testRequest, "GET", "/orders/1")
	if err != nil {
		t.Fatal(err)
	}
	c1, c2 := x5cLeaf(t, first), x5cLeaf(t, second)
	if c1.Equal(c2) || !c2.Equal(src.svid.Certificates[0]) {
		t.Error("the header was not signed with the renewed SVID")
	}
	if _, err := VerifyCallerHeader(second, pki.bundle, spiffeid.MatchID(gatewayID), "orders-api", now); err != nil {
		t.Error(err)
	}
}

// x5cLeaf reads the leaf certificate a compact JWS carries in x5c.
func x5cLeaf(t *testing.T, compact string) *x509.Certificate {
	t.Helper()
	protected, _, _ := strings.Cut(compact, ".")
	raw, err := base64.RawURLEncoding.DecodeString(protected)
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		X5C [][]byte `json:"x5c"`
	}
	if err := json.Unmarshal(raw, &h); err != nil || len(h.X5C) == 0 {
		t.Fatalf("x5c of %s: %v", raw, err)
	}
	c, err := x509.ParseCertificate(h.X5C[0])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type swapSource struct{ svid *x509svid.SVID }

func (s *swapSource) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }

// FuzzVerifyCallerHeader feeds the verifier headers derived from a valid
// one: it must never panic, and nothing but the untouched header may
// verify.
func FuzzVerifyCallerHeader(f *testing.F) {
	pki := newPKI(f, testTD)
	now := time.Now()
	good := signWith(f, pki.svid(f, gatewayID), "orders-api", now)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add("e30.e30.")
	f.Add("..")
	f.Add(strings.Replace(good, ".", "..", 1))
	accept := spiffeid.MatchID(gatewayID)
	f.Fuzz(func(t *testing.T, h string) {
		_, err := VerifyCallerHeader(h, pki.bundle, accept, "orders-api", now)
		if err == nil && h != good {
			// Only the same header and claims may pass: base64 decoders
			// may ignore trailing bits, and an ECDSA signature has a twin
			// (r, n-s) that verifies too, so the signature part may differ.
			if !sameDecoding(h, good) {
				t.Fatalf("a changed header verified: %q", h)
			}
		}
		if err != nil && len(err.Error()) > 1024 {
			t.Fatalf("error of %d bytes", len(err.Error()))
		}
	})
}

func sameDecoding(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	if len(pa) != 3 || len(pb) != 3 {
		return false
	}
	for i := range 2 {
		da, err1 := base64.RawURLEncoding.DecodeString(pa[i])
		db, err2 := base64.RawURLEncoding.DecodeString(pb[i])
		if err1 != nil || err2 != nil || string(da) != string(db) {
			return false
		}
	}
	return true
}
