package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// UpstreamHTTPClient is the client a front end reaches an https upstream
// with: the gateway's own X.509-SVID as its client certificate, so the
// upstream can require mTLS without any static secret, and the upstream
// accepted when its certificate verifies either as a web PKI certificate
// for the host dialled or as an X.509-SVID of the gateway's trust domain.
// It never follows a proxy from the environment: tool arguments go to the
// upstream named and nowhere else.
func UpstreamHTTPClient(src Source) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.TLSClientConfig = UpstreamTLSConfig(src)
	return &http.Client{Transport: t}
}

// PinnedUpstreamHTTPClient is UpstreamHTTPClient for an upstream named by
// its SPIFFE ID: the upstream must present an X.509-SVID of the trust
// bundle for exactly that ID; a web PKI certificate or another workload's
// SVID is refused.
func PinnedUpstreamHTTPClient(src Source, want spiffeid.ID) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.TLSClientConfig = UpstreamTLSConfig(src)
	t.TLSClientConfig.VerifyConnection = func(cs tls.ConnectionState) error {
		return verifyPinnedUpstream(cs, src, want, time.Now())
	}
	return &http.Client{Transport: t}
}

func verifyPinnedUpstream(cs tls.ConnectionState, src Source, want spiffeid.ID, now time.Time) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the upstream presented no certificate")
	}
	raw := make([][]byte, len(cs.PeerCertificates))
	for i, c := range cs.PeerCertificates {
		raw[i] = c.Raw
	}
	id, _, err := x509svid.ParseAndVerify(raw, src, x509svid.WithTime(now))
	if err != nil {
		return fmt.Errorf("the upstream's certificate is not an X.509-SVID of the trust bundle: %v", err)
	}
	if id != want {
		return fmt.Errorf("the upstream is %s, not %s (upstream_id)", id, want)
	}
	return nil
}

// UpstreamTLSConfig is UpstreamHTTPClient's TLS.
func UpstreamTLSConfig(src Source) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			s, err := src.GetX509SVID()
			if err != nil {
				return nil, fmt.Errorf("the gateway's SVID: %w", err)
			}
			c := &tls.Certificate{PrivateKey: s.PrivateKey, Leaf: s.Certificates[0]}
			for _, cert := range s.Certificates {
				c.Certificate = append(c.Certificate, cert.Raw)
			}
			return c, nil
		},
		// Verification is done below, accepting either of two kinds of
		// certificate; the standard check alone would refuse an SVID,
		// which names no host.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyUpstream(cs, src, time.Now())
		},
	}
}

func verifyUpstream(cs tls.ConnectionState, src Source, now time.Time) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the upstream presented no certificate")
	}
	opts := x509.VerifyOptions{DNSName: cs.ServerName, CurrentTime: now, Intermediates: x509.NewCertPool()}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	webErr := func() error { _, err := cs.PeerCertificates[0].Verify(opts); return err }()
	if webErr == nil {
		return nil
	}
	raw := make([][]byte, len(cs.PeerCertificates))
	for i, c := range cs.PeerCertificates {
		raw[i] = c.Raw
	}
	own, err := src.GetX509SVID()
	if err != nil {
		return fmt.Errorf("the gateway's SVID: %w", err)
	}
	id, _, err := x509svid.ParseAndVerify(raw, src, x509svid.WithTime(now))
	if err != nil {
		return fmt.Errorf("the upstream's certificate is neither valid for %s (%v) nor an X.509-SVID of the trust bundle (%v)", cs.ServerName, webErr, err)
	}
	if !id.MemberOf(own.ID.TrustDomain()) {
		return fmt.Errorf("the upstream is %s, not a workload of %s", id, own.ID.TrustDomain())
	}
	return nil
}
