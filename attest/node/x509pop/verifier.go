package x509pop

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
	"writ.dev/writ/internal/quote"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	// NonceSize is the length of a challenge nonce: 256 random bits, so a
	// nonce is never issued twice.
	NonceSize = 32
	// ChallengeTTL is how long a node has to answer a challenge: long
	// enough for a slow link or a hardware key, short enough that few
	// challenges are outstanding at once.
	ChallengeTTL = time.Minute
	// maxPending bounds the challenges a Verifier remembers. When it is
	// reached the oldest is forgotten, so a flood of join attempts costs
	// bounded memory; the caller should rate-limit challenges so that the
	// flood cannot push out honest ones.
	maxPending = 10000
)

// Verifier checks join attempts against the configured CAs. It is safe for
// concurrent use; use one per server, since it remembers the challenges it
// issued.
type Verifier struct {
	td     spiffeid.TrustDomain
	roots  *x509.CertPool
	nodeID nodeIDTemplate
	now    func() time.Time

	mu      sync.Mutex
	pending map[string]time.Time // unused nonce -> expiry
	issued  []issuedNonce        // in issue order, for pruning and eviction
}

type issuedNonce struct {
	nonce   string
	expires time.Time
}

// An Option changes how LoadVerifier builds a Verifier.
type Option func(*Verifier)

// WithClock makes the Verifier read the time from now instead of
// time.Now, for challenge expiry and certificate validity; tests use it to
// move time without waiting.
func WithClock(now func() time.Time) Option {
	return func(v *Verifier) { v.now = now }
}

// LoadVerifier validates c, reads its bundle and returns a Verifier that
// issues agent IDs in td.
func LoadVerifier(c Config, td spiffeid.TrustDomain, opts ...Option) (*Verifier, error) {
	tmpl, err := c.check()
	if err != nil {
		return nil, err
	}
	if td.IsZero() {
		return nil, errors.New("x509pop: no trust domain given: agent IDs are made in the server's trust domain; pass it")
	}
	roots, err := loadBundle(c.BundleFile)
	if err != nil {
		return nil, err
	}
	v := &Verifier{td: td, roots: roots, nodeID: tmpl, now: time.Now, pending: make(map[string]time.Time)}
	for _, opt := range opts {
		opt(v)
	}
	return v, nil
}

// loadBundle reads the PEM CA certificates in path. Anything other than a
// CA certificate is refused: a leaf in the bundle would be trusted to vouch
// for other certificates, and a private key in it is a leaked key.
func loadBundle(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fieldErr("bundle_file", fmt.Sprintf("%v; give a readable PEM file of CA certificates", err))
	}
	pool := x509.NewCertPool()
	n := 0
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		n++
		cert, problem := parseBundleBlock(block)
		if problem != "" {
			return nil, fieldErr("bundle_file", fmt.Sprintf("%s: PEM block %d %s", path, n, problem))
		}
		pool.AddCert(cert)
	}
	if n == 0 {
		return nil, fieldErr("bundle_file", fmt.Sprintf("%s holds no PEM certificates; give the CA certificates that issue node certificates", path))
	}
	return pool, nil
}

// parseBundleBlock reads one bundle block, or says what is wrong with it
// without echoing its content.
func parseBundleBlock(block *pem.Block) (*x509.Certificate, string) {
	if block.Type != "CERTIFICATE" {
		return nil, fmt.Sprintf("is a %s, not a CERTIFICATE; the bundle holds only CA certificates: remove it", quote.String(block.Type))
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Sprintf("is not a valid certificate: %v", err)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Sprintf("(subject %s) is not a CA certificate; list the CA that issued the node certificates instead", quote.String(cert.Subject.String()))
	}
	return cert, ""
}

// Challenge is the server's fresh nonce for one join attempt.
type Challenge struct {
	Nonce   []byte
	Expires time.Time
}

// NewChallenge issues a nonce for one join attempt and remembers it until
// it is used or expires.
func (v *Verifier) NewChallenge() Challenge {
	nonce := make([]byte, NonceSize)
	rand.Read(nonce)
	now := v.now()
	c := Challenge{Nonce: nonce, Expires: now.Add(ChallengeTTL)}

	v.mu.Lock()
	defer v.mu.Unlock()
	v.prune(now)
	for len(v.issued) >= maxPending {
		delete(v.pending, v.issued[0].nonce)
		v.issued = v.issued[1:]
	}
	v.pending[string(nonce)] = c.Expires
	v.issued = append(v.issued, issuedNonce{string(nonce), c.Expires})
	return c
}

// take consumes nonce: whatever the outcome of the attempt, the nonce can
// never be used again. The expiry recorded at issue is the one that counts,
// so a challenge rebuilt from the wire cannot be given a longer life.
func (v *Verifier) take(nonce []byte, now time.Time) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	expires, ok := v.pending[string(nonce)]
	delete(v.pending, string(nonce))
	v.prune(now)
	switch {
	case !ok:
		return errors.New("x509pop: the challenge was not issued by this server, was already used or has expired: request a new challenge and sign that")
	case !now.Before(expires):
		return fmt.Errorf("x509pop: the challenge expired at %s: request a new challenge and answer it within %s",
			expires.UTC().Format(time.RFC3339), ChallengeTTL)
	}
	return nil
}

// prune forgets the challenges that have expired by now. Challenges are
// issued in expiry order, so only the front of the queue needs looking at.
// v.mu must be held.
func (v *Verifier) prune(now time.Time) {
	for len(v.issued) > 0 && !now.Before(v.issued[0].expires) {
		delete(v.pending, v.issued[0].nonce)
		v.issued = v.issued[1:]
	}
}
