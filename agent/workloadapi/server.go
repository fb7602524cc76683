package workloadapi

import (
	"context"
	"log/slog"
	"net"
	"sync"

	pb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"writ.dev/writ/attest/workload"
	"writ.dev/writ/identity"
	"writ.dev/writ/internal/peercred"
)

// securityHeader is the metadata every Workload API request must carry. A
// browser or proxy tricked into forwarding a request (SSRF) cannot add it,
// which is why the spec requires it.
const securityHeader = "workload.spiffe.io"

// Server is a SPIFFE Workload API server. Its RPC methods implement
// pb.SpiffeWorkloadAPIServer; they rely on peer credentials, so register it
// only on a gRPC server using peercred.Credentials, as Serve does.
type Server struct {
	pb.UnimplementedSpiffeWorkloadAPIServer

	src    Source
	attest AttestFunc
	log    *slog.Logger
	grpc   *grpc.Server

	// stopping is closed when the server stops, ending every stream:
	// streams never end on their own, so a graceful stop would otherwise
	// wait for every workload to hang up.
	stopping chan struct{}
	stopOnce sync.Once
}

// New returns a server for cfg. It panics if cfg lacks a Source or an
// Attest function, since a server without them could only refuse.
func New(cfg Config) *Server {
	if cfg.Source == nil || cfg.Attest == nil {
		panic("workloadapi.New: Config.Source and Config.Attest are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		src:      cfg.Source,
		attest:   cfg.Attest,
		log:      log,
		grpc:     grpc.NewServer(grpc.Creds(peercred.Credentials())),
		stopping: make(chan struct{}),
	}
	pb.RegisterSpiffeWorkloadAPIServer(s.grpc, s)
	return s
}

// Serve serves the Workload API on ln, normally from Listen, until Stop or
// GracefulStop. It returns nil after a stop.
func (s *Server) Serve(ln net.Listener) error {
	return s.grpc.Serve(ln)
}

// GracefulStop ends every stream (workloads see Unavailable and reconnect
// to the next agent), lets unary calls in flight finish, then returns.
func (s *Server) GracefulStop() {
	s.endStreams()
	s.grpc.GracefulStop()
}

// Stop closes every connection at once.
func (s *Server) Stop() {
	s.endStreams()
	s.grpc.Stop()
}

func (s *Server) endStreams() {
	s.stopOnce.Do(func() { close(s.stopping) })
}

// caller checks the security header and attests the calling process,
// returning its selectors or the status to refuse the call with.
func (s *Server) caller(ctx context.Context) ([]identity.Selector, error) {
	if err := checkSecurityHeader(ctx); err != nil {
		return nil, err
	}
	p, err := peerOf(ctx)
	if err != nil {
		return nil, err
	}
	sels, err := s.attest(ctx, p)
	if err != nil {
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		s.log.Warn("workload attestation failed", "pid", p.PID, "uid", p.UID, "err", err)
		return nil, status.Errorf(codes.Unavailable,
			"attesting the calling process (pid %d) failed: %v; retry, and if it persists see the agent's log", p.PID, err)
	}
	return sels, nil
}

func checkSecurityHeader(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(securityHeader); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

// peerOf returns the kernel's account of the caller.
func peerOf(ctx context.Context) (workload.Peer, error) {
	if p, ok := peer.FromContext(ctx); ok {
		if cred, ok := p.AuthInfo.(peercred.Cred); ok {
			return workload.Peer{PID: cred.PID, UID: cred.UID, GID: cred.GID}, nil
		}
	}
	return workload.Peer{}, status.Error(codes.PermissionDenied,
		"the calling process could not be identified: the Workload API must be served on a unix socket with peer credentials")
}

// logged logs err if it reveals a fault in the agent rather than a refusal
// the workload is told about, and returns it.
func (s *Server) logged(rpc string, err error) error {
	if status.Code(err) == codes.Internal {
		s.log.Error("Workload API call failed", "rpc", rpc, "err", err)
	}
	return err
}
