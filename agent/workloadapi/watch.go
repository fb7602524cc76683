package workloadapi

import (
	"context"
	"crypto/sha256"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// coalesceDelay is how long a stream waits after a change before it reads
// the new answer, so that a burst of changes (many SVIDs rotating, a batch
// of rules) reaches the workload as one message rather than dozens. The
// answer is read after the wait, so the last state is always the one sent.
const coalesceDelay = 50 * time.Millisecond

// errStopping ends streams when the server stops. Unavailable, because
// SPIFFE clients reconnect on it, to this agent's successor.
var errStopping = status.Error(codes.Unavailable, "the agent is shutting down; reconnect")

// changes are the change channels an answer depends on; a nil one never
// fires. Two suffice: an X509SVIDResponse depends on the SVIDs and on the
// bundles.
type changes [2]<-chan struct{}

// watch sends next's answer now and again after every change until the
// client leaves, the server stops, or next fails, whose error ends the
// stream. An answer equal to the last one sent is not sent again: a change
// notification only says the answer may have changed.
//
// Only a digest of the last answer is kept: a workload holding thousands of
// SVIDs would otherwise keep a copy of all of them per open stream.
func watch[T proto.Message](ctx context.Context, stopping <-chan struct{}, next func() (T, changes, error), send func(T) error) error {
	var last [sha256.Size]byte
	sent := false
	for {
		msg, ch, err := next()
		if err != nil {
			return err
		}
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
		if err != nil {
			return status.Errorf(codes.Internal, "encoding the answer: %v", err)
		}
		sum := sha256.Sum256(b)
		if !sent || sum != last {
			if err := send(msg); err != nil {
				return err
			}
			last, sent = sum, true
		}
		if err := waitForChange(ctx, stopping, ch); err != nil {
			return err
		}
	}
}

// waitForChange returns nil coalesceDelay after one of ch fires, or the
// status ending the stream.
func waitForChange(ctx context.Context, stopping <-chan struct{}, ch changes) error {
	select {
	case <-ch[0]:
	case <-ch[1]:
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-stopping:
		return errStopping
	}
	t := time.NewTimer(coalesceDelay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-stopping:
		return errStopping
	}
}
