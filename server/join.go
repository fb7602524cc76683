package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/attest/node/oidc"
	"writ.dev/writ/attest/node/x509pop"
	"writ.dev/writ/ca"
	"writ.dev/writ/identity"
	"writ.dev/writ/store"
)

// JoinMethodX509PoP is the join method (and join-method lock value) of
// agents that prove possession of a certificate from a trusted CA.
const JoinMethodX509PoP = "x509pop"

// NodeAttestationConfig configures the join methods that need no secret:
// tokens from identity providers the server trusts (CI systems, any OIDC
// issuer, Kubernetes clusters) and certificates from trusted CAs.
type NodeAttestationConfig struct {
	OIDC    []oidc.IssuerConfig `yaml:"oidc"`
	X509PoP x509pop.Config      `yaml:"x509pop"`
}

func (n *NodeAttestationConfig) validate(td spiffeid.TrustDomain) []error {
	var errs []error
	seen := map[string]bool{JoinMethodToken: true, JoinMethodX509PoP: true}
	for i := range n.OIDC {
		c := &n.OIDC[i]
		if err := c.Validate(td); err != nil {
			errs = append(errs, fmt.Errorf("node_attestation.oidc[%d].%w", i, err))
			continue
		}
		if seen[c.Name] {
			errs = append(errs, fmt.Errorf("node_attestation.oidc[%d].name: %q is taken: each join method needs its own name", i, c.Name))
		}
		seen[c.Name] = true
	}
	if n.X509PoP.BundleFile != "" {
		if err := n.X509PoP.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("node_attestation.x509pop.%w", err))
		}
	}
	return errs
}

// nodeAttestors are the verifiers of the configured join methods.
type nodeAttestors struct {
	oidc map[string]*oidc.Verifier
	x509 *x509pop.Verifier
}

func (s *Server) loadNodeAttestors(ctx context.Context) error {
	s.nodes = &nodeAttestors{oidc: map[string]*oidc.Verifier{}}
	for _, c := range s.cfg.NodeAttestation.OIDC {
		v, err := oidc.NewVerifier(ctx, c, s.td, oidc.WithClock(s.now), oidc.WithLeeway(s.cfg.MaxClockSkew.Duration))
		if err != nil {
			return fmt.Errorf("join method %q: %w", c.Name, err)
		}
		s.nodes.oidc[c.Name] = v
	}
	if s.cfg.NodeAttestation.X509PoP.BundleFile != "" {
		v, err := x509pop.LoadVerifier(s.cfg.NodeAttestation.X509PoP, s.td, x509pop.WithClock(s.now))
		if err != nil {
			return fmt.Errorf("join method x509pop: %w", err)
		}
		s.nodes.x509 = v
	}
	if names := slices.Sorted(maps.Keys(s.nodes.oidc)); len(names) > 0 || s.nodes.x509 != nil {
		s.log.Info("join methods", "token", true, "oidc", names, "x509pop", s.nodes.x509 != nil)
	}
	return nil
}

// refuseJoin records a refused join and returns the error for the caller.
func (s *Server) refuseJoin(ctx context.Context, method, subject, reason string) error {
	if ev, err := s.event(ctx, "agent.join.refused", subject, map[string]any{"method": method, "reason": reason}); err == nil {
		if err := s.record(ctx, ev); err != nil {
			return err
		}
	}
	s.log.Warn("agent join refused", "method", method, "reason", reason, "peer", peerAddr(ctx))
	return status.Error(codes.PermissionDenied, reason)
}

// joinByJWT admits an agent whose token an issuer the server trusts signed:
// the token is verified (signature, issuer, audience naming this trust
// domain, expiry, the issuer's rules), used once, and the agent's ID and
// selectors come from its claims.
func (s *Server) joinByJWT(ctx context.Context, req *writv1.JoinRequest) (*writv1.AgentSVID, error) {
	method := req.GetMethod()
	v, ok := s.nodes.oidc[method]
	if !ok {
		return nil, status.Errorf(codes.InvalidArgument, "method: %q is not a join method of this server (configured: %v)", method, s.joinMethods())
	}
	if err := s.locks.checkJoin(method); err != nil {
		return nil, s.refuseJoin(ctx, method, "", status.Convert(err).Message())
	}
	res, err := v.Verify(ctx, req.GetJwt())
	if errors.Is(err, oidc.ErrKeysUnavailable) {
		s.log.Warn("join refused: the issuer's keys are unavailable", "method", method, "err", err)
		return nil, status.Errorf(codes.Unavailable, "%v; retry later", err)
	}
	if err != nil {
		return nil, s.refuseJoin(ctx, method, "", err.Error())
	}
	facts := map[string]any{"method": method, "issuer": res.Issuer, "facts": res.Facts}
	return s.admitAgent(ctx, method, res.AgentID, res.Selectors, time.Time{}, req.GetCsr(),
		&store.JoinReplay{Issuer: res.Issuer, JTI: res.JTI, ExpiresAt: res.Expiry}, facts)
}

// admitAgent signs the agent's first certificate and records the agent.
// notAfter, when set, caps the certificate (x509pop: never past the
// certificate the node proved).
func (s *Server) admitAgent(ctx context.Context, method string, id spiffeid.ID, sels []identity.Selector, notAfter time.Time, csr []byte, replay *store.JoinReplay, details map[string]any) (*writv1.AgentSVID, error) {
	if err := s.checkIssue(ctx, id, "x509"); err != nil {
		return nil, err
	}
	pub, err := ca.ParseCSR(csr)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	ttl := s.cfg.SVID.X509TTL.Duration
	if !notAfter.IsZero() {
		left := notAfter.Sub(s.now())
		if left <= 0 {
			return nil, s.refuseJoin(ctx, method, id.String(), "the certificate proved expires now")
		}
		ttl = min(ttl, left)
	}
	chain, err := s.x509.Active().SignX509SVID(ca.X509SVIDParams{PublicKey: pub, SPIFFEID: id, TTL: ttl}, s.now())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "signing: %v", err)
	}
	s.metrics.issued.WithLabelValues("x509").Inc()
	details["serial"], details["not_after"] = serialHex(chain[0]), chain[0].NotAfter.UTC()
	ev, err := s.event(ctx, "agent.join", id.String(), details)
	if err != nil {
		return nil, err
	}
	agent := store.Agent{SPIFFEID: id.String(), JoinMethod: method, Serial: serialHex(chain[0]), CertNotAfter: chain[0].NotAfter}
	for _, sel := range sels {
		agent.Selectors = append(agent.Selectors, store.Selector{Type: sel.Type, Value: sel.Value})
	}
	if _, err := s.store.JoinAgent(ctx, agent, replay, ev); err != nil {
		if errors.Is(err, store.ErrTokenUsed) {
			return nil, s.refuseJoin(ctx, method, id.String(), "this token was already used to join: each token joins once; ask the issuer for a new one")
		}
		return nil, storeStatus(err)
	}
	s.log.Info("agent joined", "agent_id", id.String(), "method", method, "peer", peerAddr(ctx))
	return s.agentSVID(id, chain), nil
}

func (s *Server) joinMethods() []string {
	out := []string{JoinMethodToken}
	out = append(out, slices.Sorted(maps.Keys(s.nodes.oidc))...)
	if s.nodes.x509 != nil {
		out = append(out, JoinMethodX509PoP)
	}
	return out
}

// JoinWithCertificate is the x509pop join: the node sends its certificate
// chain and a CSR, signs the fresh nonce the server answers with, and gets
// its SVID if the certificate chains to a trusted CA and the signature is
// good. The stream keeps the nonce on the server that made it.
func (as *agentService) JoinWithCertificate(stream grpc.BidiStreamingServer[writv1.CertificateJoinRequest, writv1.CertificateJoinResponse]) error {
	s := as.s
	ctx := stream.Context()
	v := s.nodes.x509
	if v == nil {
		return status.Error(codes.FailedPrecondition, "this server does not accept x509pop joins: configure node_attestation.x509pop.bundle_file")
	}
	if err := s.locks.checkJoin(JoinMethodX509PoP); err != nil {
		return s.refuseJoin(ctx, JoinMethodX509PoP, "", status.Convert(err).Message())
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	ch := v.NewChallenge()
	if err := stream.Send(&writv1.CertificateJoinResponse{Nonce: ch.Nonce}); err != nil {
		return err
	}
	second, err := stream.Recv()
	if err != nil {
		return err
	}
	res, err := v.Verify(ch, x509pop.Response{Chain: first.GetChain(), Signature: second.GetSignature()})
	if err != nil {
		return s.refuseJoin(ctx, JoinMethodX509PoP, "", err.Error())
	}
	details := map[string]any{"method": JoinMethodX509PoP, "facts": res.Facts}
	svid, err := s.admitAgent(ctx, JoinMethodX509PoP, res.AgentID, res.Selectors, res.NotAfter, first.GetCsr(), nil, details)
	if err != nil {
		return err
	}
	return stream.Send(&writv1.CertificateJoinResponse{Svid: svid})
}
