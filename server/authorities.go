package server

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/ca/rotation"
)

// caService exposes both authorities' rotation journals and incident verbs.
type caService struct {
	writv1.UnimplementedCAServiceServer
	s *Server
}

// authorityManager is what the X.509 and JWT managers have in common.
type authorityManager interface {
	Authorities() []rotation.AuthorityStatus
	Prepare(ctx context.Context, actor string) (rotation.AuthorityStatus, error)
	Activate(ctx context.Context, actor, id string) (rotation.AuthorityStatus, error)
	Taint(ctx context.Context, actor, id string) (rotation.AuthorityStatus, error)
	Revoke(ctx context.Context, actor, id string) (rotation.AuthorityStatus, error)
}

func (cs *caService) manager(kind string) (authorityManager, error) {
	switch kind {
	case "x509":
		return cs.s.x509, nil
	case "jwt":
		return cs.s.jwt, nil
	}
	return nil, status.Errorf(codes.InvalidArgument, "kind: %q is not an authority kind: use x509 or jwt", kind)
}

func (cs *caService) ListAuthorities(context.Context, *writv1.ListAuthoritiesRequest) (*writv1.ListAuthoritiesResponse, error) {
	resp := &writv1.ListAuthoritiesResponse{}
	for _, kind := range []string{"x509", "jwt"} {
		m, _ := cs.manager(kind)
		for _, a := range m.Authorities() {
			resp.Authorities = append(resp.Authorities, cs.toProto(kind, a))
		}
	}
	return resp, nil
}

func (cs *caService) PrepareAuthority(ctx context.Context, req *writv1.AuthorityRequest) (*writv1.Authority, error) {
	if req.GetId() != "" {
		return nil, status.Error(codes.InvalidArgument, "id: prepare makes a new authority; leave id empty")
	}
	return cs.do(ctx, req, "prepared", func(m authorityManager, actor string) (rotation.AuthorityStatus, error) {
		return m.Prepare(ctx, actor)
	})
}

func (cs *caService) ActivateAuthority(ctx context.Context, req *writv1.AuthorityRequest) (*writv1.Authority, error) {
	return cs.do(ctx, req, "activated", func(m authorityManager, actor string) (rotation.AuthorityStatus, error) {
		return m.Activate(ctx, actor, req.GetId())
	})
}

func (cs *caService) TaintAuthority(ctx context.Context, req *writv1.AuthorityRequest) (*writv1.Authority, error) {
	if req.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "id: is required: name the authority to taint")
	}
	return cs.do(ctx, req, "tainted", func(m authorityManager, actor string) (rotation.AuthorityStatus, error) {
		return m.Taint(ctx, actor, req.GetId())
	})
}

func (cs *caService) RevokeAuthority(ctx context.Context, req *writv1.AuthorityRequest) (*writv1.Authority, error) {
	if req.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "id: is required: name the authority to revoke")
	}
	return cs.do(ctx, req, "revoked", func(m authorityManager, actor string) (rotation.AuthorityStatus, error) {
		return m.Revoke(ctx, actor, req.GetId())
	})
}

// do runs one verb on the named kind's manager; the manager writes the
// verb's audit event with the caller as actor.
func (cs *caService) do(ctx context.Context, req *writv1.AuthorityRequest, what string, verb func(authorityManager, string) (rotation.AuthorityStatus, error)) (*writv1.Authority, error) {
	m, err := cs.manager(req.GetKind())
	if err != nil {
		return nil, err
	}
	actor := cs.s.actor()
	if c, ok := CallerFrom(ctx); ok {
		actor = c.Actor()
	}
	a, err := verb(m, actor)
	switch {
	case errors.Is(err, rotation.ErrNoSuchAuthority):
		return nil, status.Error(codes.NotFound, err.Error())
	case errors.Is(err, rotation.ErrAuthorityState):
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	case err != nil:
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	cs.s.log.Info("authority "+what, "kind", req.GetKind(), "id", a.ID, "state", a.State, "caller", callerString(ctx))
	return cs.toProto(req.GetKind(), a), nil
}

func (cs *caService) toProto(kind string, a rotation.AuthorityStatus) *writv1.Authority {
	out := &writv1.Authority{
		Kind:      kind,
		Id:        a.ID,
		State:     string(a.State),
		NotBefore: a.NotBefore.Unix(),
		NotAfter:  a.NotAfter.Unix(),
		Tainted:   a.Tainted,
		Revoked:   a.Revoked,
		ServerId:  cs.s.serverID,
	}
	if a.Cert != nil {
		out.CertDer = a.Cert.Raw
	}
	return out
}
