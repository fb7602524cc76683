package webhook

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("example.org")
	serverID = spiffeid.RequireFromString("spiffe://example.org/writ/server/s1")
	workload = spiffeid.RequireFromString("spiffe://example.org/billing/worker")
	t0       = time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
)

const hookURL = "https://hooks.example.com/writ"

type pki struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &pki{key: key, cert: cert}
}

func (p *pki) bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(td, []*x509.Certificate{p.cert})
}

func (p *pki) svid(t testing.TB, id spiffeid.ID, notAfter time.Time) *x509svid.SVID {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: t0.Add(-time.Minute), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, URIs: []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, key.Public(), p.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

type fixed struct{ s *x509svid.SVID }

func (f fixed) GetX509SVID() (*x509svid.SVID, error) { return f.s, nil }

func event() Event {
	return Event{ID: "E-1", Type: "created", ServerID: "s1", Revision: 7, Request: json.RawMessage(`{"id":"R-1","state":"pending"}`)}
}

func sign(t testing.TB, svid *x509svid.SVID, at time.Time) string {
	t.Helper()
	body, err := NewSigner(fixed{svid}).Sign(event(), hookURL, at)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func TestVerifyValidDelivery(t *testing.T) {
	p := newPKI(t)
	ev, err := Verify([]byte(sign(t, p.svid(t, serverID, t0.Add(time.Hour)), t0)), p.bundle(), hookURL, t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Issuer != serverID.String() || ev.ID != "E-1" || ev.Type != "created" || ev.SentAt != t0.Unix() || string(ev.Request) != `{"id":"R-1","state":"pending"}` {
		t.Fatalf("event = %+v", ev)
	}
}

func TestVerifyRefuses(t *testing.T) {
	p, foreign := newPKI(t), newPKI(t)
	good := p.svid(t, serverID, t0.Add(time.Hour))
	body := sign(t, good, t0)
	parts := strings.Split(body, ".")

	// forged: the header and payload of a real delivery, signed by another key.
	forgedSig := sign(t, p.svid(t, serverID, t0.Add(time.Hour)), t0)
	forged := parts[0] + "." + parts[1] + "." + strings.Split(forgedSig, ".")[2]

	// tampered: the payload changed after signing.
	var ev map[string]any
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	json.Unmarshal(raw, &ev)
	ev["type"] = "approved"
	changed, _ := json.Marshal(ev)
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(changed) + "." + parts[2]

	// a JWT-SVID-like token: right signer, wrong typ.
	wrongTyp, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: good.PrivateKey},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("x5c", []string{base64.StdEncoding.EncodeToString(good.Certificates[0].Raw)}))
	jwsTyp, _ := wrongTyp.Sign(changed)
	typBody, _ := jwsTyp.CompactSerialize()

	for _, tc := range []struct {
		name, body, aud string
		now             time.Time
		want            string
	}{
		{"forged signature", forged, hookURL, t0, "does not verify"},
		{"tampered body", tampered, hookURL, t0, "does not verify"},
		{"foreign CA", sign(t, foreign.svid(t, serverID, t0.Add(time.Hour)), t0), hookURL, t0, "not a valid X.509-SVID"},
		{"workload SVID", sign(t, p.svid(t, workload, t0.Add(time.Hour)), t0), hookURL, t0, "not a writ server"},
		{"expired delivery", body, hookURL, t0.Add(Lifetime), "expired"},
		{"expired SVID", sign(t, p.svid(t, serverID, t0.Add(time.Minute)), t0), hookURL, t0.Add(2 * time.Minute), "not a valid X.509-SVID"},
		{"from the future", body, hookURL, t0.Add(-time.Minute), "future"},
		{"other receiver", body, "https://other.example.com/hook", t0, "not for"},
		{"wrong typ", typBody, hookURL, t0, "typ"},
		{"not a JWS", "hello", hookURL, t0, "not a compact JWS"},
		{"too big", strings.Repeat("a", MaxBodyBytes+1), hookURL, t0, "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify([]byte(tc.body), p.bundle(), tc.aud, tc.now)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestReplaysRefused: a delivery verified twice is a replay until it
// expires, after which Verify refuses it anyway.
func TestReplaysRefused(t *testing.T) {
	p := newPKI(t)
	body := []byte(sign(t, p.svid(t, serverID, t0.Add(time.Hour)), t0))
	var r Replays
	for i, want := range []bool{false, true} {
		ev, err := Verify(body, p.bundle(), hookURL, t0.Add(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Seen(ev, t0.Add(time.Second)); got != want {
			t.Fatalf("delivery %d: seen = %v, want %v", i, got, want)
		}
	}
	// A retry of the same event, signed afresh, is still the same event.
	retry := []byte(sign(t, p.svid(t, serverID, t0.Add(time.Hour)), t0.Add(10*time.Second)))
	ev, err := Verify(retry, p.bundle(), hookURL, t0.Add(11*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if !r.Seen(ev, t0.Add(11*time.Second)) {
		t.Fatal("a retry of an event already seen was not recognised")
	}
	if _, err := Verify(body, p.bundle(), hookURL, t0.Add(Lifetime+time.Second)); err == nil {
		t.Fatal("a delivery past its lifetime verified")
	}
}

func FuzzVerify(f *testing.F) {
	p := newPKI(f)
	f.Add(sign(f, p.svid(f, serverID, t0.Add(time.Hour)), t0))
	f.Add("eyJhbGciOiJFUzI1NiJ9.e30.AA")
	f.Add("")
	f.Fuzz(func(t *testing.T, body string) {
		ev, err := Verify([]byte(body), p.bundle(), hookURL, t0)
		if err == nil && ev.Issuer != serverID.String() {
			t.Fatalf("verified a delivery from %q", ev.Issuer)
		}
		if err != nil && len(err.Error()) > 1024 {
			t.Fatalf("error of %d bytes", len(err.Error()))
		}
	})
}

// BenchmarkVerify is a receiver's cost per delivery: parse, chain to the
// bundle, one ES256 verification.
func BenchmarkVerify(b *testing.B) {
	p := newPKI(b)
	body := []byte(sign(b, p.svid(b, serverID, t0.Add(time.Hour)), t0))
	bundle := p.bundle()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(body, bundle, hookURL, t0); err != nil {
			b.Fatal(err)
		}
	}
}
