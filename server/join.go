package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/attest/node/oidc"
	"writ.dev/writ/attest/node/x509pop"
	"writ.dev/writ/audit"

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

// joinByJWT admits an agent whose token an issuer the server trusts signed:
// the token is verified (signature, issuer, audience naming this trust
// domain, expiry, the issuer's rules), used once, and the agent's ID and
// selectors come from its claims.
func (s *Server) joinByJWT(ctx context.Context, req *writv1.JoinRequest) (*writv1.AgentSVID, error) {
	method := req.GetMethod()
	out, err := s.issuer.issue(ctx, &issueRequest{
		Kind: kindX509, Anonymous: true, JoinMethod: method, CSR: req.GetCsr(),
		Event: audit.EventAgentJoin, RefusedEvent: audit.EventAgentJoinRefused, LogMsg: "agent joined",
		RefusalDetails: map[string]any{"method": method},
		// An unknown method is refused here, after the source's rate
		// limit, so that guessing methods costs attempts too.
		Attest: func(ctx context.Context, r *issueRequest) error {
			v, ok := s.nodes.oidc[method]
			if !ok {
				return status.Errorf(codes.InvalidArgument, "method: %s is not a join method of this server (configured: %v)", identity.Quote(method), s.joinMethods())
			}
			res, err := v.Verify(ctx, req.GetJwt())
			if errors.Is(err, oidc.ErrKeysUnavailable) {
				s.log.Warn("join refused: the issuer's keys are unavailable", "method", method, "err", err)
				return status.Errorf(codes.Unavailable, "%v; retry later", err)
			}
			if err != nil {
				return status.Error(codes.PermissionDenied, err.Error())
			}
			r.ID = res.AgentID
			r.Details = map[string]any{"method": method, "issuer": res.Issuer, "facts": res.Facts}
			r.Claim = func(ctx context.Context) error {
				return joinReplayRefusal(s.store.CheckToken(ctx, res.Issuer, res.JTI, s.now()))
			}
			r.Commit = s.commitJoin(method, res.AgentID, res.Selectors, &store.JoinReplay{Issuer: res.Issuer, JTI: res.JTI, ExpiresAt: res.Expiry})
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	return s.agentSVID(out.ID, out.Chain), nil
}

// commitJoin records an agent that joined by attestation with its event
// and, when replay is set, spends its token.
func (s *Server) commitJoin(method string, id spiffeid.ID, sels []identity.Selector, replay *store.JoinReplay) func(context.Context, store.AuditEvent, *x509.Certificate) error {
	return func(ctx context.Context, ev store.AuditEvent, leaf *x509.Certificate) error {
		agent := store.Agent{SPIFFEID: id.String(), JoinMethod: method, Serial: serialHex(leaf), CertNotAfter: leaf.NotAfter}
		for _, sel := range sels {
			agent.Selectors = append(agent.Selectors, store.Selector{Type: sel.Type, Value: sel.Value})
		}
		_, err := s.store.JoinAgent(ctx, agent, replay, ev)
		return joinReplayRefusal(err)
	}
}

// joinReplayRefusal says why a join's token is refused, or is nil.
func joinReplayRefusal(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrTokenUsed):
		return status.Error(codes.PermissionDenied, "this token was already used to join: each token joins once; ask the issuer for a new one")
	}
	return storeStatus(err)
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
	out, err := s.issuer.issue(ctx, &issueRequest{
		Kind: kindX509, Anonymous: true, JoinMethod: JoinMethodX509PoP,
		Event: audit.EventAgentJoin, RefusedEvent: audit.EventAgentJoinRefused, LogMsg: "agent joined",
		RefusalDetails: map[string]any{"method": JoinMethodX509PoP},
		Attest: func(ctx context.Context, r *issueRequest) error {
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
				return status.Error(codes.PermissionDenied, err.Error())
			}
			// Never past the certificate the node proved.
			r.ID, r.NotAfter, r.CSR = res.AgentID, res.NotAfter, first.GetCsr()
			r.Details = map[string]any{"method": JoinMethodX509PoP, "facts": res.Facts}
			r.Commit = s.commitJoin(JoinMethodX509PoP, res.AgentID, res.Selectors, nil)
			return nil
		},
	})
	if err != nil {
		return err
	}
	return stream.Send(&writv1.CertificateJoinResponse{Svid: s.agentSVID(out.ID, out.Chain)})
}
