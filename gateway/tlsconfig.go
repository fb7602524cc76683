package gateway

import (
	"crypto/tls"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// ServerTLSConfig is the TLS a front end listens with: the gateway's own
// X.509-SVID, kept current by src, and a client certificate required and
// verified as an X.509-SVID against src's bundle. Which callers may do
// what is the server's decision, so any SVID of the bundle completes the
// handshake.
func ServerTLSConfig(src Source) *tls.Config {
	cfg := tlsconfig.MTLSServerConfig(src, src, tlsconfig.AuthorizeAny())
	cfg.MinVersion = tls.VersionTLS12
	return cfg
}
