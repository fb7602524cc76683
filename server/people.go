package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/attest/node/oidc"
	"writ.dev/writ/ca"
	"writ.dev/writ/identity"
	"writ.dev/writ/store"
)

// PeopleConfig lets people sign in with `writ login` against the company's
// identity provider. Their SVIDs are spiffe://TD/person/DOMAIN/LOCAL for a
// verified email LOCAL@DOMAIN, both lowercased (identity.PersonID).
type PeopleConfig struct {
	// Issuer is the identity provider; empty disables sign-in.
	Issuer string `yaml:"issuer"`
	// ClientID is the public client `writ login` uses (no secret); ID
	// tokens must be issued to it.
	ClientID string `yaml:"client_id"`
	// JWKSFile, when set, holds the issuer's keys instead of discovery.
	JWKSFile string `yaml:"jwks_file"`
	// Allow says who may sign in, by rules over email, email_domain,
	// email_local (each fact: glob); a rule's facts must all match.
	Allow []oidc.Rule `yaml:"allow"`
	// SVIDTTL is the lifetime of a person's SVID; default 8h.
	SVIDTTL Duration `yaml:"svid_ttl"`
}

// DefaultPersonSVIDTTL is a working day: a person signs in once a day.
const DefaultPersonSVIDTTL = 8 * time.Hour

// issuerConfig is the person profile of the OIDC verifier.
func (p PeopleConfig) issuerConfig() oidc.IssuerConfig {
	return oidc.IssuerConfig{Name: "people", Profile: oidc.ProfilePerson, Issuer: p.Issuer, JWKSFile: p.JWKSFile, Audience: p.ClientID, Allow: p.Allow}
}

func (p *PeopleConfig) validate(td spiffeid.TrustDomain, maxTTL time.Duration) []error {
	if p.Issuer == "" {
		if p.ClientID != "" || p.JWKSFile != "" || len(p.Allow) > 0 {
			return []error{errors.New("people.issuer: is required when people is configured: the identity provider's issuer URL")}
		}
		return nil
	}
	var errs []error
	if p.ClientID == "" {
		errs = append(errs, errors.New("people.client_id: is required: the public client 'writ login' signs in as"))
	}
	if p.SVIDTTL.Duration == 0 {
		p.SVIDTTL.Duration = min(DefaultPersonSVIDTTL, maxTTL)
	}
	if p.SVIDTTL.Duration > maxTTL {
		errs = append(errs, fmt.Errorf("people.svid_ttl: %s is more than svid.max_x509_ttl %s", p.SVIDTTL, Duration{maxTTL}))
	}
	ic := p.issuerConfig()
	if err := ic.Validate(td); err != nil {
		errs = append(errs, fmt.Errorf("people.%w", err))
	}
	return errs
}

func (s *Server) loadPeople(ctx context.Context) error {
	if s.cfg.People.Issuer == "" {
		return nil
	}
	v, err := oidc.NewVerifier(ctx, s.cfg.People.issuerConfig(), s.td, oidc.WithClock(s.now), oidc.WithLeeway(s.cfg.MaxClockSkew.Duration))
	if err != nil {
		return fmt.Errorf("people: %w", err)
	}
	s.people = v
	return nil
}

type personService struct {
	writv1.UnimplementedPersonServiceServer
	s *Server
}

func (ps *personService) GetLoginConfig(context.Context, *writv1.GetLoginConfigRequest) (*writv1.LoginConfig, error) {
	c := ps.s.cfg.People
	if c.Issuer == "" {
		return nil, status.Error(codes.FailedPrecondition, "sign-in is not configured on this server: set people.issuer and people.client_id")
	}
	return &writv1.LoginConfig{Issuer: c.Issuer, ClientId: c.ClientID, SvidTtlSeconds: int64(c.SVIDTTL.Duration / time.Second)}, nil
}

// Login verifies a person's ID token (signature, issuer, audience, expiry,
// a verified email the rules allow, used once) and signs their CSR.
func (ps *personService) Login(ctx context.Context, req *writv1.LoginRequest) (*writv1.AgentSVID, error) {
	s := ps.s
	if s.people == nil {
		return nil, status.Error(codes.FailedPrecondition, "sign-in is not configured on this server: set people.issuer and people.client_id")
	}
	res, err := s.people.Verify(ctx, req.GetIdToken())
	if errors.Is(err, oidc.ErrKeysUnavailable) {
		return nil, status.Errorf(codes.Unavailable, "%v; retry later", err)
	}
	if err != nil {
		return nil, s.refuseLogin(ctx, err.Error())
	}
	id, err := identity.PersonID("email", s.td, res.Facts["email"])
	if err != nil {
		return nil, s.refuseLogin(ctx, err.Error())
	}
	if err := s.checkIssue(ctx, id, "x509"); err != nil {
		return nil, err
	}
	pub, err := ca.ParseCSR(req.GetCsr())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	chain, err := s.x509.Active().SignX509SVID(ca.X509SVIDParams{PublicKey: pub, SPIFFEID: id, TTL: s.cfg.People.SVIDTTL.Duration}, s.now())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "signing: %v", err)
	}
	ev, err := s.event(ctx, "person.login", id.String(), map[string]any{
		"email": res.Facts["email"], "issuer": res.Issuer, "serial": serialHex(chain[0]), "not_after": chain[0].NotAfter.UTC(),
	})
	if err != nil {
		return nil, err
	}
	if err := s.recordOnce(ctx, res, ev); err != nil {
		return nil, err
	}
	s.metrics.issued.WithLabelValues("x509").Inc()
	s.log.Info("person signed in", "spiffe_id", id.String(), "expires", chain[0].NotAfter.UTC().Format(time.RFC3339))
	return s.agentSVID(id, chain), nil
}

// recordOnce records the login's event together with its token, which is
// accepted once.
func (s *Server) recordOnce(ctx context.Context, res oidc.Result, ev []byte) error {
	err := s.store.UseToken(ctx, res.Issuer, res.JTI, res.Expiry, ev)
	if errors.Is(err, store.ErrTokenUsed) {
		return s.refuseLogin(ctx, "this ID token was already used to sign in: sign in again")
	}
	if err != nil {
		return storeStatus(err)
	}
	return nil
}

func (s *Server) refuseLogin(ctx context.Context, reason string) error {
	if ev, err := s.event(ctx, "person.login.refused", "", map[string]any{"reason": reason}); err == nil {
		if err := s.record(ctx, ev); err != nil {
			return err
		}
	}
	s.log.Warn("sign-in refused", "reason", reason, "peer", peerAddr(ctx))
	return status.Error(codes.PermissionDenied, reason)
}
