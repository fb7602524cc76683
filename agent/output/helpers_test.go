package output

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"
)

// pki is a root CA, an intermediate and a way to issue leaves under it.
type pki struct {
	root, inter *x509.Certificate
	interKey    crypto.Signer
}

func newKey(t *testing.T) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func issue(t *testing.T, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}

func caTemplate(name string) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	rootKey := newKey(t)
	tmpl := caTemplate("root")
	root := issue(t, tmpl, tmpl, rootKey.Public(), rootKey) // self-signed
	interKey := newKey(t)
	inter := issue(t, caTemplate("intermediate"), root, interKey.Public(), rootKey)
	return &pki{root: root, inter: inter, interKey: interKey}
}

// material issues a fresh leaf for spiffe://example.org/workload.
func (p *pki) material(t *testing.T, jwts ...JWT) Material {
	t.Helper()
	key := newKey(t)
	leaf := issue(t, &x509.Certificate{
		SerialNumber: newSerial(),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		URIs:         []*url.URL{{Scheme: "spiffe", Host: "example.org", Path: "/workload"}},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, p.inter, key.Public(), p.interKey)
	return Material{
		Chain:  []*x509.Certificate{leaf, p.inter},
		Key:    key,
		Bundle: []*x509.Certificate{p.root},
		JWTs:   jwts,
	}
}

// syncBuffer lets the logger and the test share a buffer under -race.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newWriter(t *testing.T, opts Options) (*Writer, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	if opts.Dir == "" {
		opts.Dir = filepath.Join(t.TempDir(), "out")
	}
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	w, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return w, logs
}

func mustWrite(t *testing.T, w *Writer, m Material) bool {
	t.Helper()
	changed, err := w.Write(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return changed
}

// markerCommand appends $WRIT_OUTPUT_DIR to marker each time it runs.
func markerCommand(marker string) []string {
	return []string{"/bin/sh", "-c", `echo "$WRIT_OUTPUT_DIR" >> "$1"`, "sh", marker}
}

// runs is how many times markerCommand ran, checking each run saw dir.
func runs(t *testing.T, marker, dir string) int {
	t.Helper()
	b, err := os.ReadFile(marker)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
	for _, l := range lines {
		if string(l) != dir {
			t.Fatalf("reload command saw WRIT_OUTPUT_DIR=%q, want %q", l, dir)
		}
	}
	return len(lines)
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func perm(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}
