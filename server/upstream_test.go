package server

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	writv1 "writ.dev/writ/api/writ/v1"
)

type pkiCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newPKICA(t *testing.T, cn string, parent *pkiCA, ttl time.Duration) *pkiCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		Subject:               pkix.Name{Organization: []string{"Example Corp"}, CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	issuer, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &pkiCA{cert: cert, key: key}
}

func writeFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func certsPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// upstreamFiles writes a root, an issuing CA under an intermediate, and the
// issuing CA's key, as a company PKI team would hand them over.
func upstreamFiles(t *testing.T, dir string) (root *pkiCA, cfg UpstreamConfig) {
	t.Helper()
	root = newPKICA(t, "Example Root CA", nil, 10*365*24*time.Hour)
	mid := newPKICA(t, "Example Policy CA", root, 5*365*24*time.Hour)
	issuing := newPKICA(t, "Example Issuing CA", mid, 365*24*time.Hour)
	keyDER, err := x509.MarshalPKCS8PrivateKey(issuing.key)
	if err != nil {
		t.Fatal(err)
	}
	cfg = UpstreamConfig{
		CertFile:   filepath.Join(dir, "upstream.pem"),
		KeyFile:    filepath.Join(dir, "upstream.key"),
		BundleFile: filepath.Join(dir, "roots.pem"),
	}
	writeFile(t, cfg.CertFile, certsPEM(issuing.cert, mid.cert), 0o644)
	writeFile(t, cfg.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	writeFile(t, cfg.BundleFile, certsPEM(root.cert), 0o644)
	return root, cfg
}

func TestServerUnderUpstreamCA(t *testing.T) {
	cfg := testConfig(t)
	root, up := upstreamFiles(t, t.TempDir())
	cfg.CA.Upstream = up
	srv := startServer(t, cfg)

	// The bundle GetBundle serves is the upstream root, nothing else.
	_, b := adminBundle(t, srv)
	auths := b.X509Authorities()
	if len(auths) != 1 || !auths[0].Equal(root.cert) {
		t.Fatalf("GetBundle has %d X.509 authorities, want the upstream root only", len(auths))
	}

	svid := mintSVID(t, srv, "spiffe://"+testTD+"/workload")
	if len(svid.Certificates) != 4 {
		t.Fatalf("SVID chain has %d certificates, want leaf, writ CA, issuing CA, policy CA", len(svid.Certificates))
	}
	bundle := x509bundle.FromX509Authorities(srv.TrustDomain(), auths)
	if id, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil || id != svid.ID {
		t.Fatalf("x509svid.Verify against the upstream root from GetBundle = %v, %v", id, err)
	}

	// The remote listener presents a chain that verifies against the
	// upstream root too, and accepts callers holding such chains.
	tlsCfg := tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(srv.tlsID.ID()))
	cc, err := grpc.NewClient(srv.ListenAddr().String(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := writv1.NewBundleServiceClient(cc).GetBundle(context.Background(), &writv1.GetBundleRequest{}); err != nil {
		t.Fatalf("GetBundle over mTLS under an upstream CA: %v", err)
	}
}

func TestServerUpstreamRestartKeepsIntermediate(t *testing.T) {
	cfg := testConfig(t)
	_, up := upstreamFiles(t, t.TempDir())
	cfg.CA.Upstream = up
	ctx := context.Background()
	srv, err := New(ctx, cfg, Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	first := srv.x509.Active().Cert
	srv.closeResources()
	srv, err = New(ctx, cfg, Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.closeResources()
	if !srv.x509.Active().Cert.Equal(first) {
		t.Fatal("a restart replaced the intermediate")
	}
}

func TestUpstreamConfigErrors(t *testing.T) {
	dir := t.TempDir()
	_, up := upstreamFiles(t, dir)
	readable := filepath.Join(dir, "readable.key")
	data, err := os.ReadFile(up.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, readable, data, 0o640)
	for _, tc := range []struct {
		name string
		up   UpstreamConfig
		want []string
	}{
		{"cert only", UpstreamConfig{CertFile: up.CertFile}, []string{"ca.upstream.key_file: is required", "ca.upstream.bundle_file: is required"}},
		{"no bundle", UpstreamConfig{CertFile: up.CertFile, KeyFile: up.KeyFile}, []string{"ca.upstream.bundle_file: is required"}},
		{"group-readable key", UpstreamConfig{CertFile: up.CertFile, KeyFile: readable, BundleFile: up.BundleFile}, []string{"ca.upstream.key_file:", "chmod 600"}},
		{"missing cert", UpstreamConfig{CertFile: filepath.Join(dir, "nope.pem"), KeyFile: up.KeyFile, BundleFile: up.BundleFile}, []string{"ca.upstream.cert_file:", "no such file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.CA.Upstream = tc.up
			err := cfg.Validate()
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Fatalf("Validate = %v, want it to contain %q", err, w)
				}
			}
		})
	}

	// Files that pass validation but not loading stop New with the key named.
	cfg := testConfig(t)
	other := t.TempDir()
	_, otherUp := upstreamFiles(t, other)
	cfg.CA.Upstream = UpstreamConfig{CertFile: up.CertFile, KeyFile: otherUp.KeyFile, BundleFile: up.BundleFile}
	if _, err := New(context.Background(), cfg, Options{Logger: quietLogger()}); err == nil ||
		!strings.Contains(err.Error(), "ca.upstream") || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("New with a mismatched upstream key = %v", err)
	}

	// The YAML keys are the documented ones.
	parsed, err := ParseConfig(strings.NewReader("ca:\n  upstream:\n    cert_file: /a\n    key_file: /b\n    bundle_file: /c\n"))
	if err != nil {
		t.Fatal(err)
	}
	if parsed.CA.Upstream != (UpstreamConfig{CertFile: "/a", KeyFile: "/b", BundleFile: "/c"}) {
		t.Fatalf("parsed %+v", parsed.CA.Upstream)
	}
}
