package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"writ.dev/writ/audit"
	"writ.dev/writ/keystore"
	"writ.dev/writ/store"
)

var testTD = spiffeid.RequireTrustDomainFromString("example.org")

func mustID(t testing.TB, s string) spiffeid.ID {
	t.Helper()
	id, err := spiffeid.FromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// csrKeyTypes are the workload key types ParseCSR accepts.
var csrKeyTypes = []string{"ec-p256", "ec-p384", "ec-p521", "rsa-2048", "rsa-3072", "ed25519"}

var (
	testKeysMu sync.Mutex
	testKeys   = map[string]crypto.Signer{}
)

// testKey returns one key per type for the whole test binary: RSA keys are
// slow to make and nothing here depends on a key being fresh.
func testKey(t testing.TB, kind string) crypto.Signer {
	t.Helper()
	testKeysMu.Lock()
	defer testKeysMu.Unlock()
	if k, ok := testKeys[kind]; ok {
		return k
	}
	var (
		k   crypto.Signer
		err error
	)
	switch kind {
	case "ec-p224":
		k, err = ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	case "ec-p256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ec-p384":
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ec-p521":
		k, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "rsa-1024":
		k, err = rsa.GenerateKey(rand.Reader, 1024)
	case "rsa-2048":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case "rsa-3072":
		k, err = rsa.GenerateKey(rand.Reader, 3072)
	case "ed25519":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("unknown test key type %q", kind)
	}
	if err != nil {
		t.Fatalf("generate %s: %v", kind, err)
	}
	testKeys[kind] = k
	return k
}

func makeCSR(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	if tmpl == nil {
		tmpl = &x509.CertificateRequest{}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

var (
	oidECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidSHA1WithRSA     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 5}
)

// rawCSR builds a request by hand, for what crypto/x509 refuses to make:
// curves it does not sign with and outdated hashes.
func rawCSR(t testing.TB, key crypto.Signer, alg asn1.ObjectIdentifier) []byte {
	t.Helper()
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	subject, err := asn1.Marshal(pkix.Name{CommonName: "hand made"}.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	tbs, err := asn1.Marshal(struct {
		Version    int
		Subject    asn1.RawValue
		PublicKey  asn1.RawValue
		Attributes []asn1.RawValue `asn1:"tag:0"`
	}{0, asn1.RawValue{FullBytes: subject}, asn1.RawValue{FullBytes: spki}, []asn1.RawValue{}})
	if err != nil {
		t.Fatal(err)
	}
	var (
		digest []byte
		hash   crypto.Hash
	)
	switch {
	case alg.Equal(oidSHA1WithRSA):
		sum := sha1.Sum(tbs)
		digest, hash = sum[:], crypto.SHA1
	default:
		sum := sha256.Sum256(tbs)
		digest, hash = sum[:], crypto.SHA256
	}
	sig, err := key.Sign(rand.Reader, digest, hash)
	if err != nil {
		t.Fatal(err)
	}
	der, err := asn1.Marshal(struct {
		TBS       asn1.RawValue
		Algorithm pkix.AlgorithmIdentifier
		Signature asn1.BitString
	}{asn1.RawValue{FullBytes: tbs}, pkix.AlgorithmIdentifier{Algorithm: alg}, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// newTestCA makes a self-signed root of key type kt valid from now-ClockSkew
// to now+ttl.
func newTestCA(t testing.TB, kt keystore.KeyType, now time.Time, ttl time.Duration) *X509CA {
	t.Helper()
	signer, err := keystore.NewMemory().Generate(context.Background(), "ca", kt)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := NewRootCert(signer, testTD, pkix.Name{}, now, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return &X509CA{Cert: cert, Signer: signer}
}

// newIntermediate makes a CA under parent the way an upstream authority
// would, so chains of more than one level can be tested.
func newIntermediate(t testing.TB, parent *X509CA, now time.Time, ttl time.Duration) *X509CA {
	t.Helper()
	key := testKeyFresh(t)
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	serial, err := randomSerial()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"writ"}, CommonName: "intermediate " + serial.String()},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          skid,
		URIs:                  parent.Cert.URIs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent.Cert, key.Public(), parent.Signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	var chain []*x509.Certificate
	if !isSelfSigned(parent.Cert) {
		chain = append([]*x509.Certificate{parent.Cert}, parent.Chain...)
	}
	return &X509CA{Cert: cert, Signer: key, Chain: chain}
}

func testKeyFresh(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// fakeStore keeps CA certificates in memory; the rest of store.Store is not
// needed here and panics if called.
type fakeStore struct {
	store.Store

	mu      sync.Mutex
	certs   []store.CACert
	jwtKeys []store.JWTKey
	putErr  error
	listErr error
	puts    int
	events  [][]byte
}

func (s *fakeStore) PutCACert(_ context.Context, c store.CACert, evs ...store.AuditEvent) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.putErr != nil {
		return s.putErr
	}
	if err := s.record(evs); err != nil {
		return err
	}
	s.puts++
	for i, have := range s.certs {
		if string(have.CertDER) == string(c.CertDER) {
			c.Tainted = c.Tainted || have.Tainted
			c.Revoked = c.Revoked || have.Revoked
			c.CertDER = have.CertDER
			s.certs[i] = c
			return nil
		}
	}
	c.CertDER = append([]byte(nil), c.CertDER...)
	s.certs = append(s.certs, c)
	return nil
}

func (s *fakeStore) ListCACerts(_ context.Context, now time.Time) ([]store.CACert, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listErr != nil {
		return nil, s.listErr
	}
	var out []store.CACert
	for _, c := range s.certs {
		if c.NotAfter.After(now) && !c.Revoked {
			out = append(out, c)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].NotBefore.Before(out[j].NotBefore) })
	return out, nil
}

func (s *fakeStore) PutJWTKey(_ context.Context, k store.JWTKey, evs ...store.AuditEvent) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.putErr != nil {
		return s.putErr
	}
	if err := s.record(evs); err != nil {
		return err
	}
	s.puts++
	for i, have := range s.jwtKeys {
		if have.KeyID == k.KeyID {
			k.Tainted = k.Tainted || have.Tainted
			k.Revoked = k.Revoked || have.Revoked
			s.jwtKeys[i] = k
			return nil
		}
	}
	k.PublicKeyDER = append([]byte(nil), k.PublicKeyDER...)
	s.jwtKeys = append(s.jwtKeys, k)
	return nil
}

func (s *fakeStore) ListJWTKeys(_ context.Context, now time.Time) ([]store.JWTKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listErr != nil {
		return nil, s.listErr
	}
	var out []store.JWTKey
	for _, k := range s.jwtKeys {
		if k.NotAfter.After(now) && !k.Revoked {
			out = append(out, k)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].NotAfter.Before(out[j].NotAfter) })
	return out, nil
}

// record keeps the events of a change, refusing a change without one as
// the real stores do. Called with mu held.
func (s *fakeStore) record(evs []store.AuditEvent) error {
	if len(evs) == 0 {
		return store.ErrNoAuditEvent
	}
	for _, ev := range evs {
		if len(ev) == 0 {
			return store.ErrNoAuditEvent
		}
		s.events = append(s.events, append([]byte(nil), ev...))
	}
	return nil
}

// AppendAudit records events the way changes do, failing like them while
// puts fail.
func (s *fakeStore) AppendAudit(_ context.Context, evs ...store.AuditEvent) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.putErr != nil {
		return 0, s.putErr
	}
	first := int64(len(s.events))
	return first, s.record(evs)
}

// eventTypes decodes the recorded events from index from on, failing the
// test on any that does not decode or whose actor is not actor.
func (s *fakeStore) eventTypes(t *testing.T, from int, actor string) []string {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var types []string
	for _, raw := range s.events[from:] {
		ev, err := audit.DecodeEvent(raw)
		if err != nil {
			t.Fatalf("recorded event %s: %v", raw, err)
		}
		if ev.Actor != actor {
			t.Errorf("event %s by %q, want %q", ev.Type, ev.Actor, actor)
		}
		types = append(types, ev.Type)
	}
	return types
}

func (s *fakeStore) eventCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.events)
}

func (s *fakeStore) setErrors(put, list error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.putErr, s.listErr = put, list
}

func (s *fakeStore) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.certs)
}

var errStoreDown = errors.New("store is down")

// fakeClock is a settable Now for managers.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testEvent is the audit event tests give changes they make to the store
// directly.
var testEvent = store.AuditEvent(`{"time":"2026-01-01T00:00:00Z","type":"test"}`)
