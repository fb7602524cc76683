package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"writ.dev/writ/ca/catest"
	"writ.dev/writ/keystore"
)

// jwtKeyTypes are the keystore key types a JWT authority may hold, with the
// JWS algorithm each signs with.
var jwtKeyTypes = []struct {
	kt  keystore.KeyType
	alg string
}{
	{keystore.ECP256, "ES256"},
	{keystore.ECP384, "ES384"},
	{keystore.RSA2048, "RS256"},
	{keystore.RSA3072, "RS256"},
}

var jwtTestAlgs = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.ES512, jose.RS256}

// newTestJWTAuthority makes a key in a memory keystore, as the server
// would, and an authority for it valid until notAfter.
func newTestJWTAuthority(t testing.TB, kt keystore.KeyType, notAfter time.Time) *JWTAuthority {
	t.Helper()
	var signer crypto.Signer
	switch kt {
	case keystore.RSA2048, keystore.RSA3072:
		// RSA keys are slow to make; the shared test keys serve.
		signer = catest.Key(t, string(kt))
	default:
		var err error
		signer, err = keystore.NewMemory().Generate(context.Background(), "jwt", kt)
		if err != nil {
			t.Fatal(err)
		}
	}
	return jwtAuthorityFor(t, signer, notAfter)
}

func jwtAuthorityFor(t testing.TB, signer crypto.Signer, notAfter time.Time) *JWTAuthority {
	t.Helper()
	kid, err := KeyIDFor(signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	return &JWTAuthority{Signer: signer, KeyID: kid, NotAfter: notAfter}
}

func testJWTParams(t testing.TB) JWTSVIDParams {
	return JWTSVIDParams{
		SPIFFEID: catest.ID(t, "spiffe://example.org/ns/prod/sa/api"),
		Audience: []string{"sts.example.com"},
		TTL:      5 * time.Minute,
		Issuer:   "https://oidc.example.org",
	}
}

func bundleFor(a *JWTAuthority) *jwtbundle.Bundle {
	return jwtbundle.FromJWTAuthorities(testTD, map[string]crypto.PublicKey{a.KeyID: a.Signer.Public()})
}

// decodeJWTPart decodes one base64url part of a compact JWS into a map, so
// tests see exactly the members that were written.
func decodeJWTPart(t testing.TB, tok string, part int) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want 3: %q", len(parts), tok)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[part])
	if err != nil {
		t.Fatalf("part %d is not base64url: %v", part, err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("part %d is not a JSON object: %v", part, err)
	}
	return m
}

func TestSignJWTSVIDVerifiesWithGoSPIFFE(t *testing.T) {
	for _, tc := range jwtKeyTypes {
		t.Run(string(tc.kt), func(t *testing.T) {
			now := time.Now()
			a := newTestJWTAuthority(t, tc.kt, now.Add(time.Hour))
			p := testJWTParams(t)
			tok, err := a.SignJWTSVID(p, now)
			if err != nil {
				t.Fatal(err)
			}
			svid, err := jwtsvid.ParseAndValidate(tok, bundleFor(a), []string{"sts.example.com"})
			if err != nil {
				t.Fatalf("go-spiffe refuses the token: %v", err)
			}
			if svid.ID != p.SPIFFEID {
				t.Errorf("ID = %s, want %s", svid.ID, p.SPIFFEID)
			}
			if len(svid.Audience) != 1 || svid.Audience[0] != "sts.example.com" {
				t.Errorf("audience = %q", svid.Audience)
			}
			if want := time.Unix(now.Add(p.TTL).Unix(), 0).UTC(); !svid.Expiry.Equal(want) {
				t.Errorf("expiry = %s, want %s", svid.Expiry, want)
			}

			h := decodeJWTPart(t, tok, 0)
			wantHeader := map[string]any{"alg": tc.alg, "kid": a.KeyID, "typ": "JWT"}
			if len(h) != len(wantHeader) {
				t.Errorf("header = %v, want exactly %v", h, wantHeader)
			}
			for k, v := range wantHeader {
				if h[k] != v {
					t.Errorf("header %s = %v, want %v", k, h[k], v)
				}
			}
			c := decodeJWTPart(t, tok, 1)
			if c["sub"] != p.SPIFFEID.String() || c["iss"] != p.Issuer ||
				c["iat"] != float64(now.Unix()) || c["exp"] != float64(now.Add(p.TTL).Unix()) {
				t.Errorf("claims = %v", c)
			}
			// Two tokens alike in every other claim differ in jti, so a
			// token endpoint accepting each once tells them apart.
			again, err := a.SignJWTSVID(p, now)
			if err != nil {
				t.Fatal(err)
			}
			jti, _ := c["jti"].(string)
			if jti == "" || jti == decodeJWTPart(t, again, 1)["jti"] {
				t.Errorf("jti %q, and %q for a token alike in every other claim: want distinct, non-empty ids", jti, decodeJWTPart(t, again, 1)["jti"])
			}
		})
	}
}

func TestSignJWTSVIDP521(t *testing.T) {
	now := time.Now()
	a := jwtAuthorityFor(t, catest.Key(t, "ec-p521"), now.Add(time.Hour))
	tok, err := a.SignJWTSVID(testJWTParams(t), now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(tok, bundleFor(a), []string{"sts.example.com"}); err != nil {
		t.Fatal(err)
	}
	if alg := decodeJWTPart(t, tok, 0)["alg"]; alg != "ES512" {
		t.Errorf("alg = %v, want ES512", alg)
	}
}

func TestSignJWTSVIDAudiences(t *testing.T) {
	now := time.Now()
	a := newTestJWTAuthority(t, keystore.ECP256, now.Add(time.Hour))
	p := testJWTParams(t)
	p.Audience = []string{"first", "second"}
	p.Issuer = ""
	tok, err := a.SignJWTSVID(p, now)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := jwtsvid.ParseAndValidate(tok, bundleFor(a), []string{"second"})
	if err != nil {
		t.Fatal(err)
	}
	if len(svid.Audience) != 2 || svid.Audience[0] != "first" || svid.Audience[1] != "second" {
		t.Errorf("audience = %q", svid.Audience)
	}
	if _, err := jwtsvid.ParseAndValidate(tok, bundleFor(a), []string{"third"}); err == nil {
		t.Error("a token for first and second was accepted by third")
	}
	c := decodeJWTPart(t, tok, 1)
	if _, ok := c["iss"]; ok {
		t.Errorf("iss = %v written though no issuer was set", c["iss"])
	}
}

func TestSignJWTSVIDExpiryClampedToNotAfter(t *testing.T) {
	now := time.Now()
	// A NotAfter between whole seconds: exp must round down to stay inside.
	notAfter := now.Add(90*time.Second + 500*time.Millisecond)
	a := newTestJWTAuthority(t, keystore.ECP256, notAfter)
	p := testJWTParams(t)
	p.TTL = time.Hour
	tok, err := a.SignJWTSVID(p, now)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := jwtsvid.ParseAndValidate(tok, bundleFor(a), p.Audience)
	if err != nil {
		t.Fatal(err)
	}
	if svid.Expiry.After(notAfter) {
		t.Errorf("expiry %s is after the authority's NotAfter %s", svid.Expiry, notAfter)
	}
	if want := notAfter.Unix(); svid.Expiry.Unix() != want {
		t.Errorf("exp = %d, want NotAfter %d", svid.Expiry.Unix(), want)
	}

	// A TTL inside the authority's life is kept as asked.
	p.TTL = time.Minute
	tok, err = a.SignJWTSVID(p, now)
	if err != nil {
		t.Fatal(err)
	}
	if exp := decodeJWTPart(t, tok, 1)["exp"]; exp != float64(now.Add(time.Minute).Unix()) {
		t.Errorf("exp = %v, want now+1m", exp)
	}
}

// opaqueSigner shows nothing but crypto.Signer, as a key in an HSM or a
// remote keystore would; it counts its signatures.
type opaqueSigner struct {
	pub   crypto.PublicKey
	sign  func(io.Reader, []byte, crypto.SignerOpts) ([]byte, error)
	calls atomic.Int64
}

func (s *opaqueSigner) Public() crypto.PublicKey { return s.pub }

func (s *opaqueSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	s.calls.Add(1)
	return s.sign(r, digest, opts)
}

func wrapSigner(k crypto.Signer) *opaqueSigner {
	return &opaqueSigner{pub: k.Public(), sign: k.Sign}
}

func TestSignJWTSVIDOpaqueSigner(t *testing.T) {
	for _, kind := range []string{"ec-p256", "ec-p384", "rsa-2048"} {
		t.Run(kind, func(t *testing.T) {
			now := time.Now()
			s := wrapSigner(catest.Key(t, kind))
			a := jwtAuthorityFor(t, s, now.Add(time.Hour))
			tok, err := a.SignJWTSVID(testJWTParams(t), now)
			if err != nil {
				t.Fatal(err)
			}
			if s.calls.Load() != 1 {
				t.Errorf("signer called %d times, want 1", s.calls.Load())
			}
			if _, err := jwtsvid.ParseAndValidate(tok, bundleFor(a), []string{"sts.example.com"}); err != nil {
				t.Fatalf("token from an opaque signer does not verify: %v", err)
			}
		})
	}
}

func TestSignJWTSVIDSignerFailures(t *testing.T) {
	now := time.Now()
	key := catest.Key(t, "ec-p256")
	errHSM := errors.New("hsm unplugged")
	for name, sign := range map[string]func(io.Reader, []byte, crypto.SignerOpts) ([]byte, error){
		"error": func(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) { return nil, errHSM },
		"not DER": func(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
			return make([]byte, 64), nil
		},
		"trailing data": func(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
			sig, err := key.Sign(r, d, o)
			return append(sig, 0), err
		},
		"r too large": func(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
			return asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1)})
		},
		"s zero": func(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
			return asn1.Marshal(struct{ R, S *big.Int }{big.NewInt(1), big.NewInt(0)})
		},
	} {
		t.Run(name, func(t *testing.T) {
			a := jwtAuthorityFor(t, &opaqueSigner{pub: key.Public(), sign: sign}, now.Add(time.Hour))
			tok, err := a.SignJWTSVID(testJWTParams(t), now)
			if err == nil {
				t.Fatalf("signed %q with a faulty signer", tok)
			}
			if !strings.Contains(err.Error(), "signing key") {
				t.Errorf("error %q does not name the signing key", err)
			}
			if name == "error" && !errors.Is(err, errHSM) {
				t.Errorf("error %q does not wrap the signer's error", err)
			}
		})
	}
}

func TestSignJWTSVIDRefuses(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	good := newTestJWTAuthority(t, keystore.ECP256, now.Add(time.Hour))
	cases := []struct {
		name string
		a    *JWTAuthority
		edit func(*JWTSVIDParams)
		now  time.Time
		want string
	}{
		{name: "zero ID", edit: func(p *JWTSVIDParams) { p.SPIFFEID = spiffeid.ID{} }, want: "SPIFFE ID is empty"},
		{name: "trust domain ID", edit: func(p *JWTSVIDParams) { p.SPIFFEID = testTD.ID() }, want: "names the trust domain"},
		{name: "no audience", edit: func(p *JWTSVIDParams) { p.Audience = nil }, want: "audience is empty"},
		{name: "empty audience list", edit: func(p *JWTSVIDParams) { p.Audience = []string{} }, want: "audience is empty"},
		{name: "empty audience", edit: func(p *JWTSVIDParams) { p.Audience = []string{"a", ""} }, want: "audience 2 of 2 is an empty string"},
		{name: "zero TTL", edit: func(p *JWTSVIDParams) { p.TTL = 0 }, want: "TTL 0s is not positive"},
		{name: "negative TTL", edit: func(p *JWTSVIDParams) { p.TTL = -time.Second }, want: "TTL -1s is not positive"},
		{name: "expired at NotAfter", now: now.Add(time.Hour), want: "expired at 2030-01-02T04:04:05Z (NotAfter)"},
		{name: "expired after NotAfter", now: now.Add(2 * time.Hour), want: "expired"},
		// exp rounds down to the same second as iat: the token would be born expired.
		{name: "no room before NotAfter", a: &JWTAuthority{Signer: good.Signer, KeyID: "k", NotAfter: now.Add(time.Hour + 300*time.Millisecond)},
			now: now.Add(time.Hour + 200*time.Millisecond), want: "leaves no room"},
		{name: "nil authority", a: nil, want: "no active JWT authority"},
		{name: "no signer", a: &JWTAuthority{KeyID: "k", NotAfter: now.Add(time.Hour)}, want: "no active JWT authority"},
		{name: "no key ID", a: &JWTAuthority{Signer: good.Signer, NotAfter: now.Add(time.Hour)}, want: "no key ID"},
		{name: "no NotAfter", a: &JWTAuthority{Signer: good.Signer, KeyID: "k"}, want: "no NotAfter"},
		{name: "Ed25519 key", a: &JWTAuthority{Signer: catest.Key(t, "ed25519"), KeyID: "k", NotAfter: now.Add(time.Hour)}, want: "Ed25519 keys cannot sign JWT-SVIDs"},
		{name: "P-224 key", a: &JWTAuthority{Signer: catest.Key(t, "ec-p224"), KeyID: "k", NotAfter: now.Add(time.Hour)}, want: "curve P-224 cannot sign JWTs"},
		{name: "RSA-1024 key", a: &JWTAuthority{Signer: catest.Key(t, "rsa-1024"), KeyID: "k", NotAfter: now.Add(time.Hour)}, want: "RSA key of 1024 bits"},
		{name: "other trust domain", a: &JWTAuthority{Signer: good.Signer, KeyID: "k", NotAfter: now.Add(time.Hour), TrustDomain: testTD},
			edit: func(p *JWTSVIDParams) { p.SPIFFEID = catest.ID(t, "spiffe://other.org/api") }, want: "not in trust domain example.org"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := good
			if tc.a != nil || strings.HasPrefix(tc.name, "nil") {
				a = tc.a
			}
			p := testJWTParams(t)
			if tc.edit != nil {
				tc.edit(&p)
			}
			at := now
			if !tc.now.IsZero() {
				at = tc.now
			}
			tok, err := a.SignJWTSVID(p, at)
			if err == nil {
				t.Fatalf("signed %q", tok)
			}
			if tok != "" {
				t.Errorf("returned token %q with an error", tok)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

func TestSignJWTSVIDTrustDomainMember(t *testing.T) {
	now := time.Now()
	a := newTestJWTAuthority(t, keystore.ECP256, now.Add(time.Hour))
	a.TrustDomain = testTD
	if _, err := a.SignJWTSVID(testJWTParams(t), now); err != nil {
		t.Fatal(err)
	}
}

func TestKeyIDForIsTheJWKThumbprint(t *testing.T) {
	for _, kind := range []string{"ec-p256", "ec-p384", "ec-p521", "rsa-2048", "rsa-3072"} {
		t.Run(kind, func(t *testing.T) {
			pub := catest.Key(t, kind).Public()
			kid, err := KeyIDFor(pub)
			if err != nil {
				t.Fatal(err)
			}
			jwk := jose.JSONWebKey{Key: pub}
			sum, err := jwk.Thumbprint(crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			if want := base64.RawURLEncoding.EncodeToString(sum); kid != want {
				t.Errorf("kid = %s, want RFC 7638 thumbprint %s", kid, want)
			}
			again, _ := KeyIDFor(pub)
			if again != kid {
				t.Errorf("kid changed between calls: %s then %s", kid, again)
			}
		})
	}
	k1, _ := KeyIDFor(catest.FreshKey(t).Public())
	k2, _ := KeyIDFor(catest.FreshKey(t).Public())
	if k1 == k2 {
		t.Error("two keys have the same kid")
	}
}

func TestKeyIDForRefuses(t *testing.T) {
	for name, pub := range map[string]crypto.PublicKey{
		"nil":         nil,
		"Ed25519":     catest.Key(t, "ed25519").Public(),
		"P-224":       catest.Key(t, "ec-p224").Public(),
		"RSA-1024":    catest.Key(t, "rsa-1024").Public(),
		"nil ECDSA":   (*ecdsa.PublicKey)(nil),
		"nil RSA":     (*rsa.PublicKey)(nil),
		"private key": catest.Key(t, "ec-p256"),
	} {
		if kid, err := KeyIDFor(pub); err == nil {
			t.Errorf("%s: kid %q", name, kid)
		}
	}
}

func TestJWKSRoundTrip(t *testing.T) {
	now := time.Now()
	var (
		auths []*JWTAuthority
		keys  []JWTKey
	)
	for _, tc := range jwtKeyTypes {
		a := newTestJWTAuthority(t, tc.kt, now.Add(time.Hour))
		auths = append(auths, a)
		keys = append(keys, JWTKey{KeyID: a.KeyID, PublicKey: a.Signer.Public(), NotAfter: a.NotAfter})
	}
	doc, err := JWKS(keys)
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(doc, &set); err != nil {
		t.Fatalf("go-jose cannot read the JWKS: %v\n%s", err, doc)
	}
	if len(set.Keys) != len(keys) {
		t.Fatalf("%d keys in the set, want %d", len(set.Keys), len(keys))
	}
	for i, a := range auths {
		tc := jwtKeyTypes[i]
		found := set.Key(a.KeyID)
		if len(found) != 1 {
			t.Fatalf("%s: %d keys under kid %s", tc.kt, len(found), a.KeyID)
		}
		k := found[0]
		if !k.Valid() || !k.IsPublic() || k.Use != "sig" || k.Algorithm != tc.alg {
			t.Errorf("%s: key = valid %v public %v use %q alg %q", tc.kt, k.Valid(), k.IsPublic(), k.Use, k.Algorithm)
		}
		if !a.Signer.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(k.Key) {
			t.Errorf("%s: published key differs from the authority's", tc.kt)
		}

		// The published key, and nothing else, verifies a token.
		tok, err := a.SignJWTSVID(testJWTParams(t), now)
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := jwt.ParseSigned(tok, jwtTestAlgs)
		if err != nil {
			t.Fatal(err)
		}
		var claims jwt.Claims
		if err := parsed.Claims(k.Key, &claims); err != nil {
			t.Errorf("%s: token does not verify with the published key: %v", tc.kt, err)
		}
		if err := claims.Validate(jwt.Expected{Issuer: "https://oidc.example.org", AnyAudience: jwt.Audience{"sts.example.com"}, Time: now}); err != nil {
			t.Errorf("%s: claims: %v", tc.kt, err)
		}
	}

	// A SPIFFE consumer reading the same document accepts the tokens too.
	b, err := jwtbundle.Parse(testTD, doc)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := auths[0].SignJWTSVID(testJWTParams(t), now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(tok, b, []string{"sts.example.com"}); err != nil {
		t.Fatal(err)
	}
}

func TestJWKSShape(t *testing.T) {
	pub := catest.Key(t, "ec-p256").Public().(*ecdsa.PublicKey)
	doc, err := JWKS([]JWTKey{{KeyID: "k1", PublicKey: pub}})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(doc, &got); err != nil {
		t.Fatal(err)
	}
	point, err := pub.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
		"x": base64.RawURLEncoding.EncodeToString(point[1:33]),
		"y": base64.RawURLEncoding.EncodeToString(point[33:]),
	}
	if len(got.Keys) != 1 || len(got.Keys[0]) != len(want) {
		t.Fatalf("JWKS = %s", doc)
	}
	for k, v := range want {
		if got.Keys[0][k] != v {
			t.Errorf("%s = %q, want %q", k, got.Keys[0][k], v)
		}
	}

	rsaPub := catest.Key(t, "rsa-2048").Public().(*rsa.PublicKey)
	doc, err = JWKS([]JWTKey{{KeyID: "r", PublicKey: rsaPub}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), `"e":"AQAB"`) || !strings.Contains(string(doc), `"kty":"RSA"`) {
		t.Errorf("RSA JWKS = %s", doc)
	}

	empty, err := JWKS(nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(empty) != `{"keys":[]}` {
		t.Errorf("empty JWKS = %s, want {\"keys\":[]}", empty)
	}
}

func TestJWKSDuplicates(t *testing.T) {
	a, b := catest.FreshKey(t).Public(), catest.FreshKey(t).Public()
	doc, err := JWKS([]JWTKey{{KeyID: "k", PublicKey: a}, {KeyID: "k", PublicKey: a}})
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(doc, &set); err != nil || len(set.Keys) != 1 {
		t.Errorf("the same key twice gives %d keys (%v), want 1", len(set.Keys), err)
	}
	if _, err := JWKS([]JWTKey{{KeyID: "k", PublicKey: a}, {KeyID: "k", PublicKey: b}}); err == nil ||
		!strings.Contains(err.Error(), `key ID "k" names two different keys`) {
		t.Errorf("two keys under one kid: err = %v", err)
	}
}

func TestJWKSRefuses(t *testing.T) {
	for name, tc := range map[string]struct {
		key  JWTKey
		want string
	}{
		"no kid":  {JWTKey{PublicKey: catest.FreshKey(t).Public()}, "key 1 of 1 has no key ID"},
		"no key":  {JWTKey{KeyID: "k"}, `key "k": no public key`},
		"Ed25519": {JWTKey{KeyID: "k", PublicKey: catest.Key(t, "ed25519").Public()}, "Ed25519 keys cannot sign"},
	} {
		if _, err := JWKS([]JWTKey{tc.key}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to say %q", name, err, tc.want)
		}
	}
}

func TestOIDCDiscovery(t *testing.T) {
	doc, err := OIDCDiscovery("https://oidc.example.org/td", "https://oidc.example.org/td/keys")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Issuer   string   `json:"issuer"`
		JWKSURI  string   `json:"jwks_uri"`
		Response []string `json:"response_types_supported"`
		Subject  []string `json:"subject_types_supported"`
		Algs     []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := json.Unmarshal(doc, &got); err != nil {
		t.Fatal(err)
	}
	if got.Issuer != "https://oidc.example.org/td" || got.JWKSURI != "https://oidc.example.org/td/keys" ||
		strings.Join(got.Response, ",") != "id_token" || strings.Join(got.Subject, ",") != "public" ||
		strings.Join(got.Algs, ",") != "RS256,ES256,ES384,ES512" {
		t.Errorf("discovery document = %s", doc)
	}

	for _, ok := range [][2]string{
		{"http://localhost:8443", "http://localhost:8443/keys"},
		{"http://127.0.0.1:8443", "http://[::1]:8443/keys"},
		{"https://oidc.example.org", "https://cdn.example.org/keys?v=2"},
	} {
		if _, err := OIDCDiscovery(ok[0], ok[1]); err != nil {
			t.Errorf("%q, %q: %v", ok[0], ok[1], err)
		}
	}
}

func TestOIDCDiscoveryRefuses(t *testing.T) {
	const keys = "https://oidc.example.org/keys"
	for _, tc := range []struct{ issuer, jwks, want string }{
		{"", keys, "issuer: is empty"},
		{"https://oidc.example.org", "", "jwks_uri: is empty"},
		{"oidc.example.org", keys, "not an absolute URL"},
		{"/td", keys, "not an absolute URL"},
		{"http://oidc.example.org", keys, "uses http"},
		{"https://oidc.example.org", "http://oidc.example.org/keys", "jwks_uri"},
		{"ftp://oidc.example.org", keys, `scheme "ftp"`},
		{"https://oidc.example.org?x=1", keys, "has a query"},
		{"https://oidc.example.org?", keys, "has a query"},
		{"https://oidc.example.org#frag", keys, "has a fragment"},
		{"https://oidc.example.org", keys + "#", "has a fragment"},
		{"https://user:pw@oidc.example.org", keys, "user information"},
		{"https://oidc.example.org/%zz", keys, "is not a URL"},
	} {
		if doc, err := OIDCDiscovery(tc.issuer, tc.jwks); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("OIDCDiscovery(%q, %q) = %s, %v; want an error saying %q", tc.issuer, tc.jwks, doc, err, tc.want)
		}
	}
}

func jsonRoundTrip(t *testing.T, s string) string {
	t.Helper()
	raw, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var out string
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// FuzzSignJWTSVIDClaims checks that whatever strings a caller passes as
// audience and issuer come back unchanged from a verifier, so no value can
// break out of its JSON string into another claim.
func FuzzSignJWTSVIDClaims(f *testing.F) {
	f.Add("sts.example.com", "https://oidc.example.org")
	f.Add(`a","sub":"spiffe://evil/x`, `"}`)
	f.Add("\u2028<script>&", "\x00\xff")
	now := time.Now()
	a := newTestJWTAuthority(f, keystore.ECP256, now.Add(time.Hour))
	f.Fuzz(func(t *testing.T, aud, iss string) {
		p := testJWTParams(t)
		p.Audience, p.Issuer = []string{aud}, iss
		tok, err := a.SignJWTSVID(p, now)
		if aud == "" {
			if err == nil {
				t.Fatal("signed a token with an empty audience")
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := jwt.ParseSigned(tok, jwtTestAlgs)
		if err != nil {
			t.Fatal(err)
		}
		var c jwt.Claims
		if err := parsed.Claims(a.Signer.Public(), &c); err != nil {
			t.Fatal(err)
		}
		// encoding/json writes invalid UTF-8 as U+FFFD; expect what it makes.
		wantAud, wantIss := jsonRoundTrip(t, aud), jsonRoundTrip(t, iss)
		if c.Subject != p.SPIFFEID.String() || len(c.Audience) != 1 || c.Audience[0] != wantAud || c.Issuer != wantIss {
			t.Errorf("claims = %+v, want sub %s aud %q iss %q", c, p.SPIFFEID, wantAud, wantIss)
		}
	})
}
