package workloadapi

import (
	"context"
	"errors"

	pb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// FetchJWTSVID returns JWT-SVIDs for the requested audience: one per
// identity the caller holds, or only the requested SPIFFE ID's.
func (s *Server) FetchJWTSVID(ctx context.Context, req *pb.JWTSVIDRequest) (*pb.JWTSVIDResponse, error) {
	sels, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	if len(req.Audience) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience is required: name the services the JWT-SVID is meant for")
	}
	var id spiffeid.ID
	if req.SpiffeId != "" {
		if id, err = spiffeid.FromString(req.SpiffeId); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "spiffe_id %q is not a SPIFFE ID: %v", req.SpiffeId, err)
		}
	}
	svids, err := s.src.JWTSVIDs(ctx, sels, id, req.Audience)
	if err != nil {
		return nil, s.jwtSVIDError(ctx, err)
	}
	if len(svids) == 0 {
		return nil, errNoIdentity
	}
	resp := &pb.JWTSVIDResponse{Svids: make([]*pb.JWTSVID, 0, len(svids))}
	for _, svid := range svids {
		resp.Svids = append(resp.Svids, &pb.JWTSVID{SpiffeId: svid.SPIFFEID.String(), Svid: svid.Token, Hint: svid.Hint})
	}
	return resp, nil
}

// jwtSVIDError turns a Source.JWTSVIDs failure into the status the
// workload sees.
func (s *Server) jwtSVIDError(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, ErrNoIdentity):
		return status.Error(codes.PermissionDenied, err.Error())
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	case status.Code(err) == codes.ResourceExhausted:
		// The server's issuance limit for this identity: the workload asks
		// too often, and retrying at once would only be refused again.
		return status.Errorf(codes.ResourceExhausted, "minting JWT-SVIDs: %s; ask less often (JWT-SVIDs are cached until half their life)", status.Convert(err).Message())
	}
	s.log.Warn("minting JWT-SVIDs failed", "err", err)
	return status.Errorf(codes.Unavailable, "minting JWT-SVIDs failed: %v; retry shortly", err)
}

// FetchJWTBundles streams the JWT bundles (JWKS documents) of the agent's
// trust domain and of every federated one, now and after every change.
func (s *Server) FetchJWTBundles(_ *pb.JWTBundlesRequest, stream grpc.ServerStreamingServer[pb.JWTBundlesResponse]) error {
	ctx := stream.Context()
	if _, err := s.caller(ctx); err != nil {
		return err
	}
	return s.logged("FetchJWTBundles", watch(ctx, s.stopping, s.jwtBundlesResponse, stream.Send))
}

func (s *Server) jwtBundlesResponse() (*pb.JWTBundlesResponse, changes, error) {
	_, set, ch := s.src.Bundles()
	if set == nil || set.Len() == 0 {
		return nil, changes{ch}, errNoBundle
	}
	resp := &pb.JWTBundlesResponse{Bundles: make(map[string][]byte, set.Len())}
	for _, b := range set.Bundles() {
		jwks, err := b.Marshal()
		if err != nil {
			return nil, changes{ch}, status.Errorf(codes.Internal, "encoding the JWT bundle of %q: %v; this is a bug in the agent", b.TrustDomain(), err)
		}
		resp.Bundles[b.TrustDomain().IDString()] = jwks
	}
	return resp, changes{ch}, nil
}

// ValidateJWTSVID checks a JWT-SVID's signature against the agent's JWT
// bundles, its expiry and that audience is among its audiences, for
// workloads that would rather not validate tokens themselves.
func (s *Server) ValidateJWTSVID(ctx context.Context, req *pb.ValidateJWTSVIDRequest) (*pb.ValidateJWTSVIDResponse, error) {
	if _, err := s.caller(ctx); err != nil {
		return nil, err
	}
	switch {
	case req.Audience == "":
		return nil, status.Error(codes.InvalidArgument, "audience is required: give the audience this workload accepts")
	case req.Svid == "":
		return nil, status.Error(codes.InvalidArgument, "svid is required: give the JWT-SVID to validate")
	}
	_, set, _ := s.src.Bundles()
	if set == nil {
		return nil, errNoBundle
	}
	svid, err := jwtsvid.ParseAndValidate(req.Svid, set, []string{req.Audience})
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "the JWT-SVID is not valid: %v", err)
	}
	claims, err := structpb.NewStruct(svid.Claims)
	if err != nil {
		return nil, s.logged("ValidateJWTSVID", status.Errorf(codes.Internal, "encoding the claims of a valid JWT-SVID: %v", err))
	}
	return &pb.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: claims}, nil
}
