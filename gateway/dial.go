package gateway

import (
	"context"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffegrpc/grpccredentials"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"writ.dev/writ/identity"
)

// Source is the gateway's own identity, kept current: its X.509-SVID and
// the trust bundle it verifies callers and the server with. A
// workloadapi.X509Source is one.
type Source interface {
	x509svid.Source
	x509bundle.Source
}

// WorkloadSource fetches the gateway's identity from the SPIFFE Workload
// API at socket (e.g. unix:///run/writ/agent.sock), and keeps it renewed.
// Close it when done.
func WorkloadSource(ctx context.Context, socket string, timeout time.Duration) (*workloadapi.X509Source, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(socket)))
	if err != nil {
		return nil, fmt.Errorf("gateway: fetching the gateway's identity from the Workload API at %s: %w (is the agent running, and is there a rule for the gateway's process?)", socket, err)
	}
	return src, nil
}

// Dial connects to the writ server at address over mTLS with the
// gateway's identity, accepting only a writ server of trust domain td.
func Dial(address string, src Source, td spiffeid.TrustDomain) (*grpc.ClientConn, error) {
	creds := grpccredentials.MTLSClientCredentials(src, src, tlsconfig.AdaptMatcher(func(id spiffeid.ID) error {
		if !id.MemberOf(td) || !identity.IsServerID(id) {
			return fmt.Errorf("%s is not a writ server of %s", id, td)
		}
		return nil
	}))
	return grpc.NewClient(address, grpc.WithTransportCredentials(creds),
		// The server allows a ping every 30 s; the decision stream's own
		// heartbeats detect a lost server sooner.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}))
}
