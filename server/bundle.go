package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"writ.dev/writ/ca"
)

// DefaultBundleRefreshHint is how often federated trust domains are asked to
// fetch the bundle again. With the default CA lifetime of 24h a successor
// authority is published hours before it matters, so minutes are plenty,
// and it keeps a fleet of fetchers from loading the endpoint.
const DefaultBundleRefreshHint = 5 * time.Minute

// maxBundleDocumentBytes bounds a bundle document read from outside. A
// trust domain with dozens of authorities needs tens of kilobytes.
const maxBundleDocumentBytes = 1 << 20

// bundleSequence derives spiffe_sequence from the authorities themselves
// rather than from a counter, so every server sharing a store, and the same
// server after a restart, publishes the same number for the same content
// without coordinating.
//
// X.509 authorities and JWT keys are counted apart: under an upstream PKI the
// X.509 authorities are the upstream roots, which outlive every JWT key, so a
// single "latest expiry" would hide JWT rotations. For each kind the number
// takes the latest NotAfter (Unix seconds) and how many of that kind end in
// that second; spiffe_sequence is the sum of the two latest expiries shifted
// left by sequenceTieBits, plus the two counts.
//
// Every authority is made with the configured lifetime at the moment it is
// made, so a successor of either kind (this server's rotation, or another
// server's CA or JWT key) ends no earlier than those of its kind published
// before it: it raises its kind's latest NotAfter, which raises the sum by at
// least one step of 1<<sequenceTieBits (more than any change in the counts),
// or it joins that second and raises the count. While nothing is added the
// number stays put. An authority leaves the bundle only after it has expired,
// and never one ending in its kind's latest second, so a removal never lowers
// the number; it does not raise it either, which is harmless because a
// consumer still holding the expired authority trusts nothing more than
// before. An authority ending before the newest of its kind (a server
// configured with a shorter ca.ttl) joins without raising the number;
// consumers still pick it up at the next refresh hint.
func bundleSequence(x509Authorities []*x509.Certificate, jwtKeys []ca.JWTKey) uint64 {
	var x, j latestExpiry
	for _, c := range x509Authorities {
		x.see(c.NotAfter)
	}
	for _, k := range jwtKeys {
		j.see(k.NotAfter)
	}
	if x.sec <= 0 && j.sec <= 0 {
		return 0
	}
	return uint64(max(x.sec, 0)+max(j.sec, 0))<<sequenceTieBits + min(x.ties+j.ties, 1<<sequenceTieBits-1)
}

// latestExpiry tracks the latest NotAfter seen and how many share it.
type latestExpiry struct {
	sec  int64
	ties uint64
}

func (l *latestExpiry) see(notAfter time.Time) {
	switch sec := notAfter.Unix(); {
	case sec > l.sec:
		l.sec, l.ties = sec, 1
	case sec == l.sec:
		l.ties++
	}
}

// sequenceTieBits leaves room in spiffe_sequence for counting authorities
// that end in the same second; Unix seconds need far fewer than the other
// 48 bits.
const sequenceTieBits = 16

// spiffeBundle is a SPIFFE bundle of the trust domain holding certs and
// keys, normally the live union of every server's X.509 authorities and JWT
// keys (s.x509.Bundle(), s.jwt.Keys()).
func (s *Server) spiffeBundle(certs []*x509.Certificate, keys []ca.JWTKey) (*spiffebundle.Bundle, error) {
	b := spiffebundle.New(s.td)
	for _, c := range certs {
		b.AddX509Authority(c)
	}
	for _, k := range keys {
		if err := b.AddJWTAuthority(k.KeyID, k.PublicKey); err != nil {
			return nil, fmt.Errorf("bundle: JWT key %q: %w", k.KeyID, err)
		}
	}
	b.SetRefreshHint(s.cfg.Bundle.RefreshHint.Duration)
	b.SetSequenceNumber(bundleSequence(certs, keys))
	return b, nil
}

// spiffeBundleDocument is the SPIFFE bundle format's JSON of certs and keys.
func (s *Server) spiffeBundleDocument(certs []*x509.Certificate, keys []ca.JWTKey) ([]byte, error) {
	b, err := s.spiffeBundle(certs, keys)
	if err != nil {
		return nil, err
	}
	doc, err := b.Marshal()
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	return doc, nil
}

// ParseSPIFFEBundle reads a SPIFFE bundle document of trust domain td, as
// fetched from a bundle endpoint or given by an operator. It refuses
// oversized input and documents without any authority, since trusting an
// empty bundle would make every SVID of td fail verification.
func ParseSPIFFEBundle(td spiffeid.TrustDomain, doc []byte) (*spiffebundle.Bundle, error) {
	if td.IsZero() {
		return nil, errors.New("SPIFFE bundle: no trust domain given")
	}
	if len(doc) == 0 {
		return nil, fmt.Errorf("SPIFFE bundle for %s: document is empty", td)
	}
	if len(doc) > maxBundleDocumentBytes {
		return nil, fmt.Errorf("SPIFFE bundle for %s: document is %d bytes, more than the %d allowed", td, len(doc), maxBundleDocumentBytes)
	}
	b, err := spiffebundle.Parse(td, doc)
	if err != nil {
		return nil, fmt.Errorf("SPIFFE bundle for %s: not a valid bundle document (a JWK Set with x509-svid and jwt-svid keys): %w", td, err)
	}
	if len(b.X509Authorities()) == 0 && len(b.JWTAuthorities()) == 0 {
		return nil, fmt.Errorf("SPIFFE bundle for %s: document holds no X.509 or JWT authority", td)
	}
	if hint, ok := b.RefreshHint(); ok && hint < 0 {
		return nil, fmt.Errorf("SPIFFE bundle for %s: spiffe_refresh_hint %v is negative", td, hint)
	}
	return b, nil
}

// bundleEndpointHandler serves the bundle document at GET / for federated
// trust domains. It is built per request from the live bundle, so a
// rotation or another server's new authority shows at once.
func (s *Server) bundleEndpointHandler() http.Handler {
	mux := http.NewServeMux()
	maxAge := "max-age=" + strconv.Itoa(int(s.cfg.Bundle.RefreshHint.Seconds()))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		doc, err := s.spiffeBundleDocument(s.x509.Bundle(), s.jwt.Keys())
		if err != nil {
			s.log.Error("bundle endpoint", "err", err)
			http.Error(w, "bundle unavailable", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, "+maxAge)
		_, _ = w.Write(doc)
	})
	return mux
}

// bundleEndpointTLS is the TLS configuration of the bundle endpoint for its
// profile. Neither profile asks the fetcher for a certificate: the bundle
// is public, what matters is that the fetcher can authenticate the server.
func (s *Server) bundleEndpointTLS() (*tls.Config, error) {
	switch s.cfg.BundleEndpoint.Profile {
	case ProfileHTTPSWeb:
		cert, err := tls.LoadX509KeyPair(s.cfg.BundleEndpoint.CertFile, s.cfg.BundleEndpoint.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("bundle_endpoint: loading cert_file and key_file: %w", err)
		}
		return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
	default:
		return tlsconfig.TLSServerConfig(s.tlsID), nil
	}
}

// BundleEndpointAddr is the bundle endpoint address once started, or nil.
func (s *Server) BundleEndpointAddr() net.Addr { return addrOf(s.bundleLn) }

// ServerSPIFFEID is the SPIFFE ID the server presents on its TLS listeners,
// including the https_spiffe bundle endpoint.
func (s *Server) ServerSPIFFEID() spiffeid.ID { return s.tlsID.ID() }
