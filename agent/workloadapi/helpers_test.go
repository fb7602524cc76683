package workloadapi

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	pb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"writ.dev/writ/attest/workload"
	"writ.dev/writ/identity"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

const jwtKeyID = "jwt-key-1"

// testCA issues X.509-SVIDs and signs JWT-SVIDs for td.
type testCA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	jwtKey *ecdsa.PrivateKey
	serial atomic.Int64
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	ca := &testCA{key: newKey(t), jwtKey: newKey(t)}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	ca.cert = createCert(t, tmpl, tmpl, &ca.key.PublicKey, ca.key)
	ca.serial.Store(1)
	return ca
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func createCert(t *testing.T, tmpl, parent *x509.Certificate, pub, signer any) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// issue returns a fresh X.509-SVID for path in td, with a new serial.
func (ca *testCA) issue(t *testing.T, path string) X509SVID {
	t.Helper()
	id := spiffeid.RequireFromPath(td, path)
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial.Add(1)),
		URIs:         []*url.URL{id.URL()},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	return X509SVID{SPIFFEID: id, Chain: []*x509.Certificate{createCert(t, tmpl, ca.cert, &key.PublicKey, ca.key)}, Key: key}
}

func (ca *testCA) mintJWT(id spiffeid.ID, audience []string) (string, error) {
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: ca.jwtKey, KeyID: jwtKeyID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	now := time.Now()
	return jwt.Signed(signer).Claims(jwt.Claims{
		Subject:  id.String(),
		Audience: audience,
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(time.Hour)),
	}).Serialize()
}

// fakeSource serves whatever SVIDs and bundles a test sets, to any caller.
type fakeSource struct {
	ca *testCA

	mu             sync.Mutex
	svids          []X509SVID
	svidsChanged   chan struct{}
	federated      []*x509bundle.Bundle
	bundlesChanged chan struct{}
	gotSels        []identity.Selector
}

func newFakeSource(ca *testCA, svids ...X509SVID) *fakeSource {
	return &fakeSource{ca: ca, svids: svids, svidsChanged: make(chan struct{}), bundlesChanged: make(chan struct{})}
}

func (f *fakeSource) X509SVIDs(sels []identity.Selector) ([]X509SVID, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gotSels = sels
	return slices.Clone(f.svids), f.svidsChanged
}

func (f *fakeSource) Bundles() (*x509bundle.Set, *jwtbundle.Set, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	x509Set := x509bundle.NewSet(x509bundle.FromX509Authorities(td, []*x509.Certificate{f.ca.cert}))
	for _, b := range f.federated {
		x509Set.Add(b)
	}
	jwtSet := jwtbundle.NewSet(jwtbundle.FromJWTAuthorities(td, map[string]crypto.PublicKey{jwtKeyID: &f.ca.jwtKey.PublicKey}))
	return x509Set, jwtSet, f.bundlesChanged
}

func (f *fakeSource) JWTSVIDs(_ context.Context, _ []identity.Selector, id spiffeid.ID, audience []string) ([]JWTSVID, error) {
	f.mu.Lock()
	svids := slices.Clone(f.svids)
	f.mu.Unlock()
	var out []JWTSVID
	for _, svid := range svids {
		if !id.IsZero() && svid.SPIFFEID != id {
			continue
		}
		token, err := f.ca.mintJWT(svid.SPIFFEID, audience)
		if err != nil {
			return nil, err
		}
		out = append(out, JWTSVID{SPIFFEID: svid.SPIFFEID, Token: token, Hint: svid.Hint})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w for %q", ErrNoIdentity, id)
	}
	return out, nil
}

// setSVIDs replaces the SVIDs every caller holds, as a rotation or a lock
// would, and says so.
func (f *fakeSource) setSVIDs(svids ...X509SVID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.svids = svids
	close(f.svidsChanged)
	f.svidsChanged = make(chan struct{})
}

func (f *fakeSource) addFederated(b *x509bundle.Bundle) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.federated = append(f.federated, b)
	close(f.bundlesChanged)
	f.bundlesChanged = make(chan struct{})
}

func (f *fakeSource) selectorsSeen() []identity.Selector {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gotSels
}

// fixedAttest attests every caller as sels, recording the last peer.
func fixedAttest(sels ...identity.Selector) (AttestFunc, func() workload.Peer) {
	var mu sync.Mutex
	var last workload.Peer
	attest := func(_ context.Context, p workload.Peer) ([]identity.Selector, error) {
		mu.Lock()
		defer mu.Unlock()
		last = p
		return sels, nil
	}
	return attest, func() workload.Peer {
		mu.Lock()
		defer mu.Unlock()
		return last
	}
}

// serve runs a Server for src on a fresh socket until the test ends and
// returns its go-spiffe address.
func serve(t *testing.T, src Source, attest AttestFunc) (string, *Server) {
	t.Helper()
	dir, err := os.MkdirTemp("", "wl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "agent.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Config{Source: src, Attest: attest})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "unix://" + path, srv
}

// rawClient is the generated client, for what go-spiffe's client will not
// do (omit the security header) or hides (status codes of streams).
func rawClient(t *testing.T, addr string) pb.SpiffeWorkloadAPIClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewSpiffeWorkloadAPIClient(conn)
}

func withHeader(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, securityHeader, "true")
}
