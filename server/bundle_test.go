package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/federation"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/ca"
)

// liveBundle is the server's bundle as the endpoint should serve it.
func liveBundle(t testing.TB, srv *Server) *spiffebundle.Bundle {
	t.Helper()
	b, err := srv.spiffeBundle(srv.x509.Bundle(), srv.jwt.Keys())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// adminBundle is GetBundle's document, parsed as outside input.
func adminBundle(t testing.TB, srv *Server) (*writv1.Bundle, *spiffebundle.Bundle) {
	t.Helper()
	resp, err := writv1.NewBundleServiceClient(adminConn(t, srv)).GetBundle(context.Background(), &writv1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseSPIFFEBundle(srv.TrustDomain(), resp.SpiffeBundle)
	if err != nil {
		t.Fatalf("GetBundle's spiffe_bundle: %v", err)
	}
	return resp, b
}

func TestBundleDocumentFormat(t *testing.T) {
	srv := startServer(t, testConfig(t))
	resp, b := adminBundle(t, srv)
	if !b.Equal(liveBundle(t, srv)) {
		t.Fatal("GetBundle's document differs from the live bundle")
	}
	if len(b.X509Authorities()) != len(resp.X509Authorities) || len(b.JWTAuthorities()) != len(resp.JwtAuthorities) {
		t.Fatalf("document has %d X.509 and %d JWT authorities; the message lists %d and %d",
			len(b.X509Authorities()), len(b.JWTAuthorities()), len(resp.X509Authorities), len(resp.JwtAuthorities))
	}

	// The raw JSON carries what the SPIFFE bundle format asks for.
	var doc struct {
		Keys []struct {
			Use string   `json:"use"`
			Kid string   `json:"kid"`
			X5c []string `json:"x5c"`
		} `json:"keys"`
		Sequence    *uint64 `json:"spiffe_sequence"`
		RefreshHint *int64  `json:"spiffe_refresh_hint"`
	}
	if err := json.Unmarshal(resp.SpiffeBundle, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Sequence == nil || *doc.Sequence == 0 {
		t.Fatalf("spiffe_sequence missing or zero: %s", resp.SpiffeBundle)
	}
	if doc.RefreshHint == nil || *doc.RefreshHint != int64(DefaultBundleRefreshHint/time.Second) {
		t.Fatalf("spiffe_refresh_hint %v, want %d", doc.RefreshHint, int64(DefaultBundleRefreshHint/time.Second))
	}
	uses := map[string]int{}
	for _, k := range doc.Keys {
		uses[k.Use]++
		switch k.Use {
		case "x509-svid":
			if len(k.X5c) != 1 {
				t.Errorf("x509-svid key with %d x5c certificates", len(k.X5c))
			}
		case "jwt-svid":
			if k.Kid == "" {
				t.Error("jwt-svid key without kid")
			}
		default:
			t.Errorf("key with use %q", k.Use)
		}
	}
	if uses["x509-svid"] == 0 || uses["jwt-svid"] == 0 {
		t.Fatalf("keys by use: %v", uses)
	}
}

func TestBundleEndpointSPIFFEProfile(t *testing.T) {
	cfg := testConfig(t)
	cfg.BundleEndpoint.Address = "127.0.0.1:0"
	srv := startServer(t, cfg)

	// The federating side is configured with this trust domain's bundle,
	// obtained out of band, and the endpoint's SPIFFE ID.
	_, known := adminBundle(t, srv)
	url := "https://" + srv.BundleEndpointAddr().String() + "/"
	got, err := federation.FetchBundle(context.Background(), srv.TrustDomain(), url,
		federation.WithSPIFFEAuth(known.X509Bundle(), srv.ServerSPIFFEID()))
	if err != nil {
		t.Fatalf("FetchBundle: %v", err)
	}
	if !got.Equal(liveBundle(t, srv)) {
		t.Fatal("fetched bundle differs from the server's")
	}
	if len(got.X509Authorities()) == 0 || len(got.JWTAuthorities()) == 0 {
		t.Fatalf("fetched %d X.509 and %d JWT authorities", len(got.X509Authorities()), len(got.JWTAuthorities()))
	}

	// Another SPIFFE ID expected for the endpoint is refused.
	other := srv.ServerSPIFFEID()
	other, _ = other.AppendPath("-impostor")
	if _, err := federation.FetchBundle(context.Background(), srv.TrustDomain(), url,
		federation.WithSPIFFEAuth(known.X509Bundle(), other)); err == nil {
		t.Fatal("FetchBundle accepted an endpoint with an unexpected SPIFFE ID")
	}
	// A fetcher trusting some other root refuses the endpoint.
	otherRoot := x509bundle.FromX509Authorities(srv.TrustDomain(), []*x509.Certificate{selfSignedCA(t).cert})
	if _, err := federation.FetchBundle(context.Background(), srv.TrustDomain(), url,
		federation.WithSPIFFEAuth(otherRoot, srv.ServerSPIFFEID())); err == nil {
		t.Fatal("FetchBundle accepted an endpoint its bundle does not verify")
	}

	// Plain HTTP and other paths and methods are not served.
	if r, err := http.Get("http://" + srv.BundleEndpointAddr().String() + "/"); err == nil && r.StatusCode == http.StatusOK {
		t.Fatal("bundle served over plain HTTP")
	}
}

func TestBundleEndpointWebProfile(t *testing.T) {
	root := selfSignedCA(t)
	dir := t.TempDir()
	certFile, keyFile := root.issueServerCert(t, dir, net.IPv4(127, 0, 0, 1))

	cfg := testConfig(t)
	cfg.BundleEndpoint = BundleEndpointConfig{Address: "127.0.0.1:0", Profile: ProfileHTTPSWeb, CertFile: certFile, KeyFile: keyFile}
	srv := startServer(t, cfg)
	pool := x509.NewCertPool()
	pool.AddCert(root.cert)
	url := "https://" + srv.BundleEndpointAddr().String() + "/"
	got, err := federation.FetchBundle(context.Background(), srv.TrustDomain(), url, federation.WithWebPKIRoots(pool))
	if err != nil {
		t.Fatalf("FetchBundle: %v", err)
	}
	if !got.Equal(liveBundle(t, srv)) {
		t.Fatal("fetched bundle differs from the server's")
	}

	// The document is served with its media type; nothing else is served.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	r, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if ct := r.Header.Get("Content-Type"); r.StatusCode != http.StatusOK || ct != "application/json" {
		t.Fatalf("GET /: %d %q", r.StatusCode, ct)
	}
	if _, err := ParseSPIFFEBundle(srv.TrustDomain(), body); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ method, path string }{{"POST", "/"}, {"GET", "/keys"}, {"GET", "/metrics"}} {
		req, _ := http.NewRequest(tc.method, url[:len(url)-1]+tc.path, nil)
		r, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode == http.StatusOK {
			t.Errorf("%s %s served", tc.method, tc.path)
		}
	}
}

// testClock is a settable clock for the server's Options.Now.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestBundleSequenceFollowsRotation(t *testing.T) {
	ctx := context.Background()
	clock := &testClock{t: time.Now()}
	cfg := testConfig(t)
	srv, err := New(ctx, cfg, Options{Logger: quietLogger(), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})

	seq := func() uint64 {
		t.Helper()
		_, b := adminBundle(t, srv)
		n, ok := b.SequenceNumber()
		if !ok {
			t.Fatal("no spiffe_sequence")
		}
		return n
	}
	first := seq()
	clock.Advance(time.Hour)
	if err := srv.x509.RefreshBundle(ctx); err != nil {
		t.Fatal(err)
	}
	if again := seq(); again != first {
		t.Fatalf("sequence moved from %d to %d with no change in content", first, again)
	}

	// Past half the CA's life, rotation adds a successor; the old CA stays.
	clock.Advance(cfg.CA.TTL.Duration/2 + time.Minute)
	rotated, err := srv.x509.Rotate(ctx)
	if err != nil || !rotated {
		t.Fatalf("Rotate: %v %v", rotated, err)
	}
	afterX509 := seq()
	if afterX509 <= first {
		t.Fatalf("sequence %d after an X.509 rotation, was %d", afterX509, first)
	}
	if rotated, err := srv.jwt.Rotate(ctx); err != nil || !rotated {
		t.Fatalf("JWT Rotate: %v %v", rotated, err)
	}
	afterJWT := seq()
	if afterJWT <= afterX509 {
		t.Fatalf("sequence %d after a JWT key rotation, was %d", afterJWT, afterX509)
	}

	// A restart publishes the same content under the same number.
	ctxS, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	srv.Shutdown(ctxS)
	srv2, err := New(ctx, cfg, Options{Logger: quietLogger(), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	srv = srv2
	if again := seq(); again != afterJWT {
		t.Fatalf("sequence %d after a restart, was %d", again, afterJWT)
	}
}

func TestBundleSequenceIsContentBased(t *testing.T) {
	ca1, ca2, ca3 := selfSignedCA(t).cert, selfSignedCA(t).cert, selfSignedCA(t).cert
	ca2.NotAfter = ca1.NotAfter.Add(time.Hour)
	ca3.NotAfter = ca2.NotAfter
	seq := func(certs ...*x509.Certificate) uint64 { return bundleSequence(certs, nil) }
	one := seq(ca1)
	if one == 0 || one != seq(ca1) {
		t.Fatalf("sequence %d for one CA is zero or not stable", one)
	}
	two := seq(ca1, ca2)
	if two <= one || two != seq(ca2, ca1) {
		t.Fatalf("adding a later authority: %d (was %d), or order mattered", two, one)
	}
	three := seq(ca1, ca2, ca3)
	if three <= two {
		t.Fatalf("adding an authority ending in the same second: %d (was %d)", three, two)
	}
	// The oldest authority expiring and leaving does not lower it.
	if after := seq(ca2, ca3); after < three {
		t.Fatalf("removing an expired authority lowered the sequence from %d to %d", three, after)
	}
	key := ca.JWTKey{KeyID: "k", PublicKey: ca1.PublicKey, NotAfter: ca2.NotAfter.Add(time.Second)}
	if withKey := bundleSequence([]*x509.Certificate{ca1, ca2, ca3}, []ca.JWTKey{key}); withKey <= three {
		t.Fatalf("adding a later JWT key: %d (was %d)", withKey, three)
	}
	if bundleSequence(nil, nil) != 0 {
		t.Fatal("empty bundle has a sequence")
	}
	// Under an upstream PKI the X.509 authority is a root that outlives
	// every JWT key; a JWT rotation must still raise the number.
	root := selfSignedCA(t).cert
	root.NotAfter = ca1.NotAfter.Add(10 * 365 * 24 * time.Hour)
	k1 := ca.JWTKey{KeyID: "k1", PublicKey: ca1.PublicKey, NotAfter: ca1.NotAfter}
	k2 := ca.JWTKey{KeyID: "k2", PublicKey: ca1.PublicKey, NotAfter: ca1.NotAfter.Add(12 * time.Hour)}
	before := bundleSequence([]*x509.Certificate{root}, []ca.JWTKey{k1})
	if after := bundleSequence([]*x509.Certificate{root}, []ca.JWTKey{k1, k2}); after <= before {
		t.Fatalf("a JWT rotation under a long-lived root left the sequence at %d (was %d)", after, before)
	}
}

func TestParseSPIFFEBundleRefusals(t *testing.T) {
	srv := startServer(t, testConfig(t))
	resp, _ := adminBundle(t, srv)
	doc := resp.SpiffeBundle
	for _, tc := range []struct {
		name string
		doc  []byte
		want string
	}{
		{"empty", nil, "empty"},
		{"truncated", doc[:len(doc)/2], "not a valid bundle document"},
		{"garbage", []byte("not json"), "not a valid bundle document"},
		{"no keys", []byte(`{"keys":[]}`), "no X.509 or JWT authority"},
		{"too large", make([]byte, maxBundleDocumentBytes+1), "more than"},
	} {
		if _, err := ParseSPIFFEBundle(srv.TrustDomain(), tc.doc); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func FuzzParseSPIFFEBundle(f *testing.F) {
	srv := startServer(f, testConfig(f))
	resp, _ := adminBundle(f, srv)
	doc := resp.SpiffeBundle
	f.Add(doc)
	f.Add(doc[:len(doc)/2])
	f.Add([]byte(`{"keys":[{"use":"x509-svid","kty":"EC","x5c":["AAAA"]}],"spiffe_sequence":1}`))
	f.Add([]byte(`{"keys":[{"use":"jwt-svid","kty":"EC","crv":"P-256","kid":"k","x":"","y":""}],"spiffe_refresh_hint":-1}`))
	f.Add([]byte("\x00\xff garbage"))
	td := srv.TrustDomain()
	f.Fuzz(func(t *testing.T, in []byte) {
		b, err := ParseSPIFFEBundle(td, in)
		if err != nil {
			if b != nil {
				t.Fatal("a bundle returned with an error")
			}
			return
		}
		if len(b.X509Authorities()) == 0 && len(b.JWTAuthorities()) == 0 {
			t.Fatal("an empty bundle was accepted")
		}
		// What was accepted marshals and parses back to the same bundle.
		out, err := b.Marshal()
		if err != nil {
			t.Fatalf("accepted bundle does not marshal: %v", err)
		}
		again, err := ParseSPIFFEBundle(td, out)
		if err != nil {
			t.Fatalf("re-marshalled bundle refused: %v", err)
		}
		if !again.Equal(b) {
			t.Fatal("bundle changed through marshal and parse")
		}
	})
}

func TestBundleEndpointConfig(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := selfSignedCA(t).issueServerCert(t, dir, net.IPv4(127, 0, 0, 1))
	groupReadable := filepath.Join(dir, "group.key")
	data, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(groupReadable, data, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(groupReadable, 0o640); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ep   BundleEndpointConfig
		want string // "" means valid
	}{
		{"disabled", BundleEndpointConfig{}, ""},
		{"spiffe", BundleEndpointConfig{Address: "127.0.0.1:8443"}, ""},
		{"web", BundleEndpointConfig{Address: "127.0.0.1:8443", Profile: ProfileHTTPSWeb, CertFile: certFile, KeyFile: keyFile}, ""},
		{"unknown profile", BundleEndpointConfig{Address: "127.0.0.1:8443", Profile: "http"}, `bundle_endpoint.profile: "http" is not a profile`},
		{"bad address", BundleEndpointConfig{Address: "nonsense"}, "bundle_endpoint.address"},
		{"web without files", BundleEndpointConfig{Address: "127.0.0.1:8443", Profile: ProfileHTTPSWeb}, "bundle_endpoint.cert_file: is required"},
		{"web without key", BundleEndpointConfig{Address: "127.0.0.1:8443", Profile: ProfileHTTPSWeb, CertFile: certFile}, "bundle_endpoint.key_file: is required"},
		{"group-readable key", BundleEndpointConfig{Address: "127.0.0.1:8443", Profile: ProfileHTTPSWeb, CertFile: certFile, KeyFile: groupReadable}, "chmod 600"},
		{"missing key", BundleEndpointConfig{Address: "127.0.0.1:8443", Profile: ProfileHTTPSWeb, CertFile: certFile, KeyFile: filepath.Join(dir, "nope")}, "bundle_endpoint.key_file"},
		{"files with spiffe", BundleEndpointConfig{Address: "127.0.0.1:8443", Profile: ProfileHTTPSSPIFFE, CertFile: certFile, KeyFile: keyFile}, "https_spiffe serves the server's own SVID"},
		{"files without address", BundleEndpointConfig{CertFile: certFile}, "bundle_endpoint.address: is empty"},
	} {
		c := testConfig(t)
		c.BundleEndpoint = tc.ep
		c.Defaults()
		err := c.Validate()
		if tc.want == "" && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}

	c := testConfig(t)
	c.Bundle.RefreshHint.Duration = c.CA.TTL.Duration
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "bundle.refresh_hint") {
		t.Errorf("refresh hint as long as the CA: %v", err)
	}

	// A certificate file that does not hold a certificate stops New.
	bad := testConfig(t)
	notCert := filepath.Join(dir, "not-a-cert.pem")
	if err := os.WriteFile(notCert, []byte("nothing here"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad.BundleEndpoint = BundleEndpointConfig{Address: "127.0.0.1:0", Profile: ProfileHTTPSWeb, CertFile: notCert, KeyFile: keyFile}
	if _, err := New(context.Background(), bad, Options{Logger: quietLogger()}); err == nil || !strings.Contains(err.Error(), "bundle_endpoint") {
		t.Fatalf("New with an unusable cert_file: %v", err)
	}
}

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func selfSignedCA(t testing.TB) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test web root"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{cert: cert, key: key}
}

// issueServerCert writes a Web PKI server certificate for ip and its key
// (mode 0600) to dir and returns their paths.
func (c testCA) issueServerCert(t testing.TB, dir string, ip net.IP) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: ip.String()},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{ip},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "web.crt"), filepath.Join(dir, "web.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
