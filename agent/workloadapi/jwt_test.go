package workloadapi

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestJWTRateLimitIsResourceExhausted: when the server refuses a mint for
// the identity's issuance limit, the workload is told so with
// ResourceExhausted, not Unavailable, which clients retry at once as if
// the agent were down.
func TestJWTRateLimitIsResourceExhausted(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler)}
	limited := fmt.Errorf("minting: %w", status.Error(codes.ResourceExhausted, "too many SVIDs for spiffe://example.org/web"))
	if err := s.jwtSVIDError(context.Background(), limited); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a rate-limited mint: got %v, want ResourceExhausted", err)
	}
	other := status.Error(codes.Internal, "store down")
	if err := s.jwtSVIDError(context.Background(), other); status.Code(err) != codes.Unavailable {
		t.Errorf("another failure: got %v, want Unavailable", err)
	}
}
