package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/audit"
)

// backupChunkBytes keeps each message well under the gRPC message limit.
const backupChunkBytes = 1 << 20

// onlineBackup is a store that can copy itself while in use (SQLite).
type onlineBackup interface {
	Backup(ctx context.Context, path string) error
}

// storeService serves StoreService from the store and the data dir, where
// the copy is made before it is streamed: the server never writes a file
// at a path a caller names.
type storeService struct {
	writv1.UnimplementedStoreServiceServer
	s *Server
}

func (v *storeService) Backup(_ *writv1.BackupRequest, stream writv1.StoreService_BackupServer) error {
	s := v.s
	ctx := stream.Context()
	b, ok := s.store.(onlineBackup)
	if !ok {
		return status.Errorf(codes.FailedPrecondition, "the %s store is backed up with its own tools (for PostgreSQL: pg_dump), not through writ", s.cfg.Store.Engine)
	}
	// A copy of the whole store leaves the server: that is recorded first,
	// and the copy holds its own record.
	ev, err := s.event(ctx, audit.EventStoreBackup, s.cfg.Store.Engine, nil)
	if err != nil {
		return err
	}
	if err := s.record(ctx, ev); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.cfg.DataDir, "backup-*.db")
	if err != nil {
		return status.Errorf(codes.Internal, "backup: %v", err)
	}
	path := tmp.Name()
	tmp.Close()
	defer os.Remove(path)
	if err := b.Backup(ctx, path); err != nil {
		s.log.Error("backup failed", "err", err)
		return status.Errorf(codes.Internal, "backup: %v", err)
	}
	f, err := os.Open(path)
	if err != nil {
		return status.Errorf(codes.Internal, "backup: %v", err)
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return status.Errorf(codes.Internal, "backup: %v", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return status.Errorf(codes.Internal, "backup: %v", err)
	}
	buf := make([]byte, backupChunkBytes)
	for first := true; ; first = false {
		n, rerr := io.ReadFull(f, buf)
		if n > 0 || first {
			msg := &writv1.BackupChunk{Data: buf[:n]}
			if first {
				msg.Size, msg.Sha256 = size, h.Sum(nil)
			}
			if err := stream.Send(msg); err != nil {
				return err
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return status.Errorf(codes.Internal, "backup: %v", rerr)
		}
	}
	s.log.Info("store backed up", "bytes", size, "caller", callerString(ctx))
	return nil
}
