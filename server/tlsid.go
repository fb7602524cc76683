package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"writ.dev/writ/ca"
	"writ.dev/writ/identity"
)

// serverSVIDTTL is the lifetime of the certificate the server presents to
// remote callers; it is renewed at half life.
const serverSVIDTTL = time.Hour

// serverSVID is the server's own X.509-SVID for its remote listener. Its key
// is made in memory at start and never written anywhere.
type serverSVID struct {
	s   *Server
	id  spiffeid.ID
	cur atomic.Pointer[x509svid.SVID]
	// signedBy is the authority certificate that signed cur, so a CA rotation
	// triggers a renewal.
	signedBy atomic.Pointer[x509.Certificate]
}

func newServerSVID(s *Server) *serverSVID {
	id, _ := identity.ServerID(s.td, s.serverID)
	return &serverSVID{s: s, id: id}
}

// ID is the SPIFFE ID the server presents.
func (t *serverSVID) ID() spiffeid.ID { return t.id }

func (t *serverSVID) rotate() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	auth := t.s.x509.Active()
	chain, err := auth.SignX509SVID(ca.X509SVIDParams{PublicKey: key.Public(), SPIFFEID: t.id, TTL: serverSVIDTTL}, t.s.now())
	if err != nil {
		return fmt.Errorf("server SVID: %w", err)
	}
	t.cur.Store(&x509svid.SVID{ID: t.id, Certificates: chain, PrivateKey: key})
	t.signedBy.Store(auth.Cert)
	return nil
}

func (t *serverSVID) needsRenewal(now time.Time) bool {
	cur := t.cur.Load()
	if cur == nil || t.signedBy.Load() != t.s.x509.Active().Cert {
		return true
	}
	leaf := cur.Certificates[0]
	half := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	return !now.Before(half)
}

func (t *serverSVID) run(ctx context.Context) {
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if t.needsRenewal(t.s.now()) {
				if err := t.rotate(); err != nil {
					t.s.log.Error("renewing the server SVID failed; will retry", "err", err)
				}
			}
		}
	}
}

// GetX509SVID implements x509svid.Source.
func (t *serverSVID) GetX509SVID() (*x509svid.SVID, error) {
	if c := t.cur.Load(); c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("server SVID not ready")
}

// GetX509BundleForTrustDomain implements x509bundle.Source with the live
// bundle, so roots added by rotation or by other servers are trusted at once.
func (t *serverSVID) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != t.s.td {
		return nil, fmt.Errorf("trust domain %s is not served here (this is %s)", td, t.s.td)
	}
	return x509bundle.FromX509Authorities(td, t.s.x509.Bundle()), nil
}

// tlsConfig asks every remote caller for an X.509-SVID of this trust
// domain and verifies one when given. A caller without one may still
// connect: joining agents have no SVID yet, and the bundle is public. What
// each caller may do is decided per RPC (authz.go), and every method but
// those two requires an SVID.
func (t *serverSVID) tlsConfig() *tls.Config {
	c := tlsconfig.TLSServerConfig(t)
	c.ClientAuth = tls.RequestClientCert
	verify := tlsconfig.VerifyPeerCertificate(t, tlsconfig.AuthorizeMemberOf(t.s.td))
	c.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return nil
		}
		return verify(raw, chains)
	}
	return c
}
