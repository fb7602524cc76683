package workloadapi

import (
	"crypto/x509"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	pb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"writ.dev/writ/identity"
)

// errNoIdentity refuses a caller that holds no SVID. The text is the one
// SPIFFE clients and operators know from other Workload API servers.
var errNoIdentity = status.Error(codes.PermissionDenied, "no identity issued")

// errNoBundle refuses requests the agent cannot answer before it has
// received its trust domain's bundle. Unavailable, so clients retry.
var errNoBundle = status.Error(codes.Unavailable, "the agent has no trust bundle yet; retry shortly")

// FetchX509SVID streams the caller's X.509-SVIDs, with the bundle of each
// one's trust domain and the federated bundles, now and after every change.
// When the caller holds no identity, or no longer holds any, the stream
// ends with PermissionDenied and the client retries later.
func (s *Server) FetchX509SVID(_ *pb.X509SVIDRequest, stream grpc.ServerStreamingServer[pb.X509SVIDResponse]) error {
	ctx := stream.Context()
	sels, err := s.caller(ctx)
	if err != nil {
		return err
	}
	next := func() (*pb.X509SVIDResponse, changes, error) { return s.x509SVIDResponse(sels) }
	return s.logged("FetchX509SVID", watch(ctx, s.stopping, next, stream.Send))
}

// FetchX509Bundles streams the X.509 bundles of the agent's trust domain
// and of every federated one, now and after every change.
func (s *Server) FetchX509Bundles(_ *pb.X509BundlesRequest, stream grpc.ServerStreamingServer[pb.X509BundlesResponse]) error {
	ctx := stream.Context()
	if _, err := s.caller(ctx); err != nil {
		return err
	}
	return s.logged("FetchX509Bundles", watch(ctx, s.stopping, s.x509BundlesResponse, stream.Send))
}

func (s *Server) x509SVIDResponse(sels []identity.Selector) (*pb.X509SVIDResponse, changes, error) {
	svids, svidsChanged := s.src.X509SVIDs(sels)
	set, _, bundlesChanged := s.src.Bundles()
	ch := changes{svidsChanged, bundlesChanged}
	if len(svids) == 0 {
		return nil, ch, errNoIdentity
	}
	if set == nil {
		return nil, ch, errNoBundle
	}
	resp, err := newX509SVIDResponse(svids, set)
	return resp, ch, err
}

// newX509SVIDResponse gives each SVID its own trust domain's bundle and
// every other bundle as federated, the split go-spiffe's X509Source and
// Envoy rebuild a bundle set from.
func newX509SVIDResponse(svids []X509SVID, set *x509bundle.Set) (*pb.X509SVIDResponse, error) {
	resp := &pb.X509SVIDResponse{}
	own := make(map[spiffeid.TrustDomain]bool)
	// One encoding of each bundle, shared by every SVID of its trust
	// domain: a workload with thousands of SVIDs gets one copy in memory.
	bundles := make(map[spiffeid.TrustDomain][]byte)
	for _, svid := range svids {
		m, err := marshalX509SVID(svid, set, bundles)
		if err != nil {
			return nil, err
		}
		resp.Svids = append(resp.Svids, m)
		own[svid.SPIFFEID.TrustDomain()] = true
	}
	for _, b := range set.Bundles() {
		if own[b.TrustDomain()] {
			continue
		}
		if resp.FederatedBundles == nil {
			resp.FederatedBundles = make(map[string][]byte)
		}
		resp.FederatedBundles[b.TrustDomain().IDString()] = concatDER(b.X509Authorities())
	}
	return resp, nil
}

func marshalX509SVID(svid X509SVID, set *x509bundle.Set, bundles map[spiffeid.TrustDomain][]byte) (*pb.X509SVID, error) {
	if len(svid.Chain) == 0 && len(svid.ChainDER) == 0 {
		return nil, status.Errorf(codes.Internal, "the agent holds no certificate for %s; this is a bug in the agent", svid.SPIFFEID)
	}
	chain := svid.ChainDER
	if len(chain) == 0 {
		chain = concatDER(svid.Chain)
	}
	key := svid.KeyDER
	if len(key) == 0 {
		var err error
		if key, err = x509.MarshalPKCS8PrivateKey(svid.Key); err != nil {
			return nil, status.Errorf(codes.Internal, "encoding the private key of %s: %v; this is a bug in the agent", svid.SPIFFEID, err)
		}
	}
	td := svid.SPIFFEID.TrustDomain()
	der, ok := bundles[td]
	if !ok {
		bundle, found := set.Get(td)
		if !found {
			return nil, status.Errorf(codes.Unavailable, "the agent has no X.509 bundle for trust domain %q yet; retry shortly", td)
		}
		der = concatDER(bundle.X509Authorities())
		bundles[td] = der
	}
	return &pb.X509SVID{
		SpiffeId:    svid.SPIFFEID.String(),
		X509Svid:    chain,
		X509SvidKey: key,
		Bundle:      der,
		Hint:        svid.Hint,
	}, nil
}

func (s *Server) x509BundlesResponse() (*pb.X509BundlesResponse, changes, error) {
	set, _, ch := s.src.Bundles()
	if set == nil || set.Len() == 0 {
		return nil, changes{ch}, errNoBundle
	}
	resp := &pb.X509BundlesResponse{Bundles: make(map[string][]byte, set.Len())}
	for _, b := range set.Bundles() {
		resp.Bundles[b.TrustDomain().IDString()] = concatDER(b.X509Authorities())
	}
	return resp, changes{ch}, nil
}

// concatDER is the protocol's encoding of a list of certificates: their
// DER encodings back to back, which x509.ParseCertificates splits again.
func concatDER(certs []*x509.Certificate) []byte {
	var n int
	for _, c := range certs {
		n += len(c.Raw)
	}
	out := make([]byte, 0, n)
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}
