package workloadapi

import (
	"context"
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
func watch[T proto.Message](ctx context.Context, stopping <-chan struct{}, next func() (T, changes, error), send func(T) error) error {
	var last T
	sent := false
	for {
		msg, ch, err := next()
		if err != nil {
			return err
		}
		if !sent || !proto.Equal(last, msg) {
			if err := send(msg); err != nil {
				return err
			}
			last, sent = msg, true
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
