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
	if err := checkNotReserved("spiffe_id", id); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.checkIssue(ctx, id, "x509"); err != nil {
		return nil, err
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
	ev, err := s.event(ctx, "svid.x509.mint", id.String(), map[string]any{
		"serial": chain[0].SerialNumber.Text(16), "not_after": chain[0].NotAfter.UTC(), "dns_names": dns,
		"ca": fmt.Sprintf("%x", chain[0].AuthorityKeyId),
	})
	if err != nil {
		return nil, err
	}
	if err := s.record(ctx, ev); err != nil {
		return nil, err
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

// MintJWTSVID signs a JWT-SVID for any ID of the trust domain, for
// administrators like MintX509SVID.
func (v *svidService) MintJWTSVID(ctx context.Context, req *writv1.MintJWTSVIDRequest) (*writv1.MintJWTSVIDResponse, error) {
	s := v.s
	id, err := identity.ParseIDInTrustDomain("spiffe_id", req.GetSpiffeId(), s.td)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := checkNotReserved("spiffe_id", id); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.checkIssue(ctx, id, "jwt"); err != nil {
		return nil, err
	}
	ttl, err := s.jwtTTL(req.GetTtlSeconds())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return s.mintJWT(ctx, id.String(), req.GetAudience(), ttl, nil)
}

// mintJWT signs a JWT-SVID for id and records its event before answering.
// details are added to the event.
func (s *Server) mintJWT(ctx context.Context, id string, audience []string, ttl time.Duration, details map[string]any) (*writv1.MintJWTSVIDResponse, error) {
	spiffeID, err := spiffeid.FromString(id)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.checkIssue(ctx, spiffeID, "jwt"); err != nil {
		return nil, err
	}
	if len(audience) == 0 {
		return nil, status.Error(codes.InvalidArgument, (&identity.FieldError{Field: "audience", Msg: "is empty: name at least one party that may accept the token"}).Error())
	}
	for i, aud := range audience {
		if aud == "" {
			return nil, status.Error(codes.InvalidArgument, (&identity.FieldError{Field: fmt.Sprintf("audience[%d]", i), Msg: "is empty"}).Error())
		}
	}
	now := s.now()
	authority := s.jwt.Active()
	tok, err := authority.SignJWTSVID(ca.JWTSVIDParams{SPIFFEID: spiffeID, Audience: audience, TTL: ttl, Issuer: s.jwtIssuer()}, now)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "signing: %v", err)
	}
	// SignJWTSVID clamps exp the same way, in whole seconds.
	expiry := now.Add(ttl)
	if expiry.After(authority.NotAfter) {
		expiry = authority.NotAfter
	}
	exp := expiry.Unix()
	d := map[string]any{"kid": authority.KeyID, "audience": audience, "exp": exp}
	for k, v := range details {
		d[k] = v
	}
	ev, err := s.event(ctx, "svid.jwt.mint", id, d)
	if err != nil {
		return nil, err
	}
	if err := s.record(ctx, ev); err != nil {
		return nil, err
	}
	s.metrics.issued.WithLabelValues("jwt").Inc()
	s.log.Info("jwt-svid minted", "spiffe_id", id, "audience", audience, "kid", authority.KeyID,
		"expires", time.Unix(exp, 0).UTC().Format(time.RFC3339), "caller", callerString(ctx))
	return &writv1.MintJWTSVIDResponse{Token: tok, ExpiresAt: exp}, nil
}

// checkIssue refuses issuance for id while a lock names it or this
// server's clock is off; a refusal by lock is itself an audit event.
func (s *Server) checkIssue(ctx context.Context, id spiffeid.ID, kind string) error {
	if err := s.clock.checkIssue(); err != nil {
		s.log.Warn("issuance refused", "spiffe_id", id.String(), "reason", err, "caller", callerString(ctx))
		return err
	}
	err := s.locks.checkIssue(id)
	if err == nil {
		return nil
	}
	s.log.Warn("issuance refused", "spiffe_id", id.String(), "reason", err, "caller", callerString(ctx))
	if status.Code(err) == codes.PermissionDenied {
		if ev, evErr := s.event(ctx, "svid."+kind+".refused", id.String(), map[string]any{"reason": status.Convert(err).Message()}); evErr == nil {
			if recErr := s.record(ctx, ev); recErr != nil {
				return recErr
			}
		}
	}
	return err
}

// x509TTL and jwtTTL turn a requested TTL into the one to issue: zero takes
// the default; above the cap is refused rather than silently shortened, so
// the caller learns the limit.
func (s *Server) x509TTL(seconds int64) (time.Duration, error) {
	return requestedTTL(seconds, s.cfg.SVID.X509TTL.Duration, s.cfg.SVID.MaxX509TTL.Duration, "svid.max_x509_ttl")
}

func (s *Server) jwtTTL(seconds int64) (time.Duration, error) {
	return requestedTTL(seconds, s.cfg.SVID.JWTTTL.Duration, s.cfg.SVID.MaxJWTTTL.Duration, "svid.max_jwt_ttl")
}

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
