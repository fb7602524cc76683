package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/attest/node/oidc"
	"writ.dev/writ/audit"
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
	out, err := s.issuer.issue(ctx, &issueRequest{
		Kind: kindX509, Anonymous: true, CSR: req.GetCsr(),
		Event: audit.EventPersonLogin, RefusedEvent: audit.EventPersonLoginRefused, LogMsg: "person signed in",
		Attest: func(ctx context.Context, r *issueRequest) error {
			res, err := s.people.Verify(ctx, req.GetIdToken())
			if errors.Is(err, oidc.ErrKeysUnavailable) {
				return status.Errorf(codes.Unavailable, "%v; retry later", err)
			}
			if err != nil {
				return status.Error(codes.PermissionDenied, err.Error())
			}
			id, err := identity.PersonID("email", s.td, res.Facts["email"])
			if err != nil {
				return status.Error(codes.PermissionDenied, err.Error())
			}
			r.ID, r.TTL = id, s.cfg.People.SVIDTTL.Duration
			r.Details = map[string]any{"email": res.Facts["email"], "issuer": res.Issuer}
			r.Claim = func(ctx context.Context) error {
				return loginReplayRefusal(s.store.CheckToken(ctx, res.Issuer, res.JTI, s.now()))
			}
			// The event is recorded with the token, which is accepted once.
			r.Commit = func(ctx context.Context, ev store.AuditEvent, _ *x509.Certificate) error {
				return loginReplayRefusal(s.store.UseToken(ctx, res.Issuer, res.JTI, res.Expiry, ev))
			}
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	return s.agentSVID(out.ID, out.Chain), nil
}

// loginReplayRefusal says why a sign-in's ID token is refused, or is nil.
func loginReplayRefusal(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrTokenUsed):
		return status.Error(codes.PermissionDenied, "this ID token was already used to sign in: sign in again")
	}
	return storeStatus(err)
}
