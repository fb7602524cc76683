package server

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
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
	id, err := adminMintID(s, req.GetSpiffeId())
	if err != nil {
		return nil, err
	}
	dns, err := identity.ValidateDNSNames("dns_names", req.GetDnsNames())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	out, err := s.issuer.issue(ctx, &issueRequest{
		Kind: kindX509, ID: id, Admin: true, CSR: req.GetCsr(), DNSNames: dns, RequestedSeconds: req.GetTtlSeconds(),
		Details: map[string]any{"dns_names": dns},
		LogMsg:  "x509-svid minted",
	})
	if err != nil {
		return nil, err
	}
	resp := &writv1.MintX509SVIDResponse{ExpiresAt: out.Expiry.Unix()}
	for _, c := range out.Chain {
		resp.CertChain = append(resp.CertChain, c.Raw)
	}
	for _, c := range s.x509.Bundle() {
		resp.Bundle = append(resp.Bundle, c.Raw)
	}
	return resp, nil
}

// MintJWTSVID signs a JWT-SVID for any ID of the trust domain, for
// administrators like MintX509SVID.
func (v *svidService) MintJWTSVID(ctx context.Context, req *writv1.MintJWTSVIDRequest) (*writv1.MintJWTSVIDResponse, error) {
	s := v.s
	id, err := adminMintID(s, req.GetSpiffeId())
	if err != nil {
		return nil, err
	}
	out, err := s.issuer.issue(ctx, &issueRequest{
		Kind: kindJWT, ID: id, Admin: true, Audience: req.GetAudience(), RequestedSeconds: req.GetTtlSeconds(),
		LogMsg: "jwt-svid minted",
	})
	if err != nil {
		return nil, err
	}
	return &writv1.MintJWTSVIDResponse{Token: out.Token, ExpiresAt: out.Expiry.Unix()}, nil
}

// adminMintID is the ID an administrator asks to mint: of the trust
// domain and not reserved.
func adminMintID(s *Server, raw string) (spiffeid.ID, error) {
	id, err := identity.ParseIDInTrustDomain("spiffe_id", raw, s.td)
	if err != nil {
		return spiffeid.ID{}, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := checkNotReserved("spiffe_id", id); err != nil {
		return spiffeid.ID{}, status.Error(codes.InvalidArgument, err.Error())
	}
	return id, nil
}

// requestedTTL turns a requested TTL into the one to issue: zero takes
// the default; above the cap is refused rather than silently shortened, so
// the caller learns the limit.
func requestedTTL(seconds int64, def, max time.Duration, setting string) (time.Duration, error) {
	if seconds == 0 {
		return def, nil
	}
	if seconds < 0 || seconds > int64(max/time.Second) {
		return 0, &identity.FieldError{Field: "ttl_seconds", Msg: fmt.Sprintf("%d is out of range: 1 to %d (%s %s), or 0 for the default %s", seconds, int64(max/time.Second), setting, max, def)}
	}
	return time.Duration(seconds) * time.Second, nil
}

// jwtIssuer is the "iss" of JWT-SVIDs: the OIDC issuer while discovery is
// served, so cloud IAMs can find the keys, and none otherwise.
func (s *Server) jwtIssuer() string {
	if s.cfg.OIDCAddress == "" {
		return ""
	}
	return s.cfg.OIDCIssuer
}

type bundleService struct {
	writv1.UnimplementedBundleServiceServer
	s *Server
}

func (b *bundleService) GetBundle(ctx context.Context, _ *writv1.GetBundleRequest) (*writv1.Bundle, error) {
	return b.s.bundleProto()
}

// bundleProto is the trust bundle as the API carries it.
func (s *Server) bundleProto() (*writv1.Bundle, error) {
	// One snapshot for every field, so the document matches the lists.
	certs, keys := s.x509.Bundle(), s.jwt.Keys()
	out := &writv1.Bundle{TrustDomain: s.td.Name()}
	for _, c := range certs {
		out.X509Authorities = append(out.X509Authorities, c.Raw)
	}
	for _, k := range keys {
		der, err := x509.MarshalPKIXPublicKey(k.PublicKey)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "JWT key %s: %v", k.KeyID, err)
		}
		out.JwtAuthorities = append(out.JwtAuthorities, &writv1.JWTKey{KeyId: k.KeyID, PublicKey: der, ExpiresAt: k.NotAfter.Unix()})
	}
	doc, err := s.spiffeBundleDocument(certs, keys)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	out.SpiffeBundle = doc
	out.TaintedX509Authorities = s.x509.TaintedAuthorityIDs()
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
