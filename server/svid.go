package server

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/ca"
	"writ.dev/writ/identity"
)

type svidService struct {
	writv1.UnimplementedSVIDServiceServer
	s *Server
}

// MintX509SVID signs an X.509-SVID for any ID of the trust domain. It is for
// administrators (bootstrapping, tests, break-glass); workloads get theirs
// from an agent by attestation.
func (v *svidService) MintX509SVID(ctx context.Context, req *writv1.MintX509SVIDRequest) (*writv1.MintX509SVIDResponse, error) {
	s := v.s
	id, err := identity.ParseIDInTrustDomain("spiffe_id", req.GetSpiffeId(), s.td)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	ttl, err := s.x509TTL(req.GetTtlSeconds())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	dns, err := identity.ValidateDNSNames("dns_names", req.GetDnsNames())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	pub, err := ca.ParseCSR(req.GetCsr())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	chain, err := s.x509.Active().SignX509SVID(ca.X509SVIDParams{PublicKey: pub, SPIFFEID: id, DNSNames: dns, TTL: ttl}, s.now())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "signing: %v", err)
	}
	s.metrics.issued.WithLabelValues("x509").Inc()
	resp := &writv1.MintX509SVIDResponse{ExpiresAt: chain[0].NotAfter.Unix()}
	for _, c := range chain {
		resp.CertChain = append(resp.CertChain, c.Raw)
	}
	for _, c := range s.x509.Bundle() {
		resp.Bundle = append(resp.Bundle, c.Raw)
	}
	s.log.Info("x509-svid minted", "spiffe_id", id.String(), "serial", chain[0].SerialNumber.Text(16),
		"expires", chain[0].NotAfter.UTC().Format(time.RFC3339), "caller", callerString(ctx))
	return resp, nil
}

// x509TTL turns a requested TTL into the one to issue: zero takes the default;
// above the cap is refused rather than silently shortened, so the caller
// learns the limit.
func (s *Server) x509TTL(seconds int64) (time.Duration, error) {
	max := s.cfg.SVID.MaxX509TTL.Duration
	if seconds == 0 {
		return s.cfg.SVID.X509TTL.Duration, nil
	}
	if seconds < 0 || seconds > int64(max/time.Second) {
		return 0, &identity.FieldError{Field: "ttl_seconds", Msg: fmt.Sprintf("%d is out of range: 1 to %d (svid.max_x509_ttl %s), or 0 for the default %s", seconds, int64(max/time.Second), max, s.cfg.SVID.X509TTL)}
	}
	return time.Duration(seconds) * time.Second, nil
}

type bundleService struct {
	writv1.UnimplementedBundleServiceServer
	s *Server
}

func (b *bundleService) GetBundle(ctx context.Context, _ *writv1.GetBundleRequest) (*writv1.Bundle, error) {
	out := &writv1.Bundle{TrustDomain: b.s.td.Name()}
	for _, c := range b.s.x509.Bundle() {
		out.X509Authorities = append(out.X509Authorities, c.Raw)
	}
	return out, nil
}

type statusService struct {
	writv1.UnimplementedStatusServiceServer
	s *Server
}

func (st *statusService) GetStatus(ctx context.Context, _ *writv1.GetStatusRequest) (*writv1.Status, error) {
	s := st.s
	rev, err := s.store.Revision(ctx)
	if err != nil {
		return nil, storeStatus(err)
	}
	return &writv1.Status{
		TrustDomain: s.td.Name(),
		ServerId:    s.serverID,
		Version:     s.version,
		Revision:    rev,
		CaNotAfter:  s.x509.Active().Cert.NotAfter.Unix(),
		StoreEngine: s.cfg.Store.Engine,
	}, nil
}
