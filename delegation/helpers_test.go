package delegation

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"writ.dev/writ/internal/jwssign"
)

const (
	testIssuer   = "https://writ.example.org/token"
	testKID      = "delegation-1"
	testAudience = "https://calendar.example.org"
	testPerson   = "spiffe://example.org/person/alice"
	testAgent    = "spiffe://example.org/agent/planner"
	testCaller   = "spiffe://example.org/agent/orchestrator"
)

// testNow is a fixed instant, so that no test depends on the wall clock.
var testNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

func newP256(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newEd25519(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newCert returns a self-signed certificate standing for an agent's
// X509-SVID; only its DER encoding matters to the binding.
func newCert(t testing.TB) *x509.Certificate {
	t.Helper()
	key := newP256(t)
	id, _ := url.Parse(testAgent)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "agent"},
		URIs:         []*url.URL{id},
		NotBefore:    testNow.Add(-time.Hour),
		NotAfter:     testNow.Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func newTestSigner(t testing.TB, key crypto.Signer, opts ...Option) *Signer {
	t.Helper()
	s, err := NewSigner(key, testKID, testIssuer, append([]Option{WithClock(fixedClock(testNow))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newTestVerifier(t testing.TB, pub crypto.PublicKey, opts ...Option) *Verifier {
	t.Helper()
	v, err := NewVerifier(map[string]crypto.PublicKey{testKID: pub}, testIssuer, append([]Option{WithClock(fixedClock(testNow))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// testClaims is what the token endpoint would ask for: the planner agent,
// called by the orchestrator, acting for alice on task-42.
func testClaims(cert *x509.Certificate) Claims {
	return Claims{
		Subject:    testPerson,
		Audience:   []string{testAudience},
		Actors:     []string{testAgent, testCaller},
		TaskID:     "task-42",
		Thumbprint: Thumbprint(cert),
		Expiry:     testNow.Add(DefaultMaxTTL),
	}
}

func issue(t testing.TB, s *Signer, c Claims) string {
	t.Helper()
	tok, err := s.Issue(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// decodePart decodes part i of a compact JWS as a JSON object.
func decodePart(t testing.TB, tok string, i int) map[string]any {
	t.Helper()
	raw, err := b64.DecodeString(strings.Split(tok, ".")[i])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// signRaw signs header and payload as given, to build tokens Issue never
// would: tokens that are well signed and wrong in some other way.
func signRaw(t testing.TB, key crypto.Signer, header, payload string) string {
	t.Helper()
	alg, err := algorithmFor(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	opaque, err := jwssign.New(key, testKID, alg.name)
	if err != nil {
		t.Fatal(err)
	}
	input := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString([]byte(payload))
	sig, err := opaque.SignPayload([]byte(input), alg.name)
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + b64.EncodeToString(sig)
}

func wantErr(t testing.TB, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not contain %q", err, want)
	}
}
