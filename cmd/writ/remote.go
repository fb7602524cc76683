package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
	"writ.dev/writ/internal/quote"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"writ.dev/writ/agent/output"
)

// workloadFetchTimeout bounds the wait for the local agent.
const workloadFetchTimeout = 10 * time.Second

// remoteIdentity is who a client command is when it reaches a server over
// mTLS: an X.509-SVID and the bundle that verifies the server.
type remoteIdentity struct {
	svid   *x509svid.SVID
	bundle x509bundle.Source
	td     spiffeid.TrustDomain
	// workload is set when the identity came from the Workload API, which
	// can also mint JWT-SVIDs for it.
	workload bool
}

func (r *remoteIdentity) clientTLS() *tls.Config {
	return tlsconfig.MTLSClientConfig(r.svid, r.bundle, serverAuthorizer(r.td))
}

// loadIdentity reads the identity of the given kind.
func loadIdentity(kind string) (*remoteIdentity, error) {
	switch kind {
	case identityLogin:
		return loginIdentity()
	case identityWorkload:
		ctx, cancel := context.WithTimeout(context.Background(), workloadFetchTimeout)
		defer cancel()
		return workloadIdentity(ctx)
	}
	return nil, fmt.Errorf("identity: %s is not an identity; use %s ('writ login') or %s (the Workload API)", quote.String(kind), identityLogin, identityWorkload)
}

// loginIdentity is what `writ login` saved.
func loginIdentity() (*remoteIdentity, error) {
	dir, err := identityDir()
	if err != nil {
		return nil, err
	}
	svid, err := x509svid.Load(filepath.Join(dir, output.SVIDFile), filepath.Join(dir, output.KeyFile))
	if err != nil {
		return nil, fmt.Errorf("no saved identity in %s (%v): run 'writ login', or pass --identity %s to use this process's workload identity", dir, err, identityWorkload)
	}
	if !time.Now().Before(svid.Certificates[0].NotAfter) {
		return nil, fmt.Errorf("the saved identity %s expired at %s: run 'writ login' again", svid.ID, svid.Certificates[0].NotAfter.UTC().Format(time.RFC3339))
	}
	td := svid.ID.TrustDomain()
	bundle, err := x509bundle.Load(td, filepath.Join(dir, output.BundleFile))
	if err != nil {
		return nil, err
	}
	return &remoteIdentity{svid: svid, bundle: bundle, td: td}, nil
}

// workloadIdentity asks the local agent for this process's identity over
// the SPIFFE Workload API, as any workload would.
func workloadIdentity(ctx context.Context) (*remoteIdentity, error) {
	if os.Getenv(workloadapi.SocketEnv) == "" {
		return nil, fmt.Errorf("--identity %s needs the Workload API: set %s (e.g. unix:///var/lib/writ-agent/agent.sock; writ dev prints it)", identityWorkload, workloadapi.SocketEnv)
	}
	x, err := workloadapi.FetchX509Context(ctx)
	if err != nil {
		return nil, fmt.Errorf("fetching this process's identity from the Workload API: %w (is the agent running, and is there a rule for this process?)", err)
	}
	if len(x.SVIDs) == 0 {
		return nil, errors.New("the Workload API gave this process no identity: add a rule for it")
	}
	svid := x.DefaultSVID()
	return &remoteIdentity{svid: svid, bundle: x.Bundles, td: svid.ID.TrustDomain(), workload: true}, nil
}
