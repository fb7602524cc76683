package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
)

func runWatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newCommand("writ watch",
		"Watch over a dual-controlled task: a task whose access was approved under a review rule with\n"+
			"dual_control grants only while enough eligible watchers hold a session. This command holds\n"+
			"yours, as the identity --server and --identity present, sending heartbeats until interrupted.\n"+
			"When it stops (interrupted, killed, cut off) you no longer count, and the task's grants pause\n"+
			"or the task closes, as its rule says. Prints the task's watchers whenever they change.\n"+
			"Ends by itself, with status 0, when the task closes or expires or its dual control ends.",
		"writ watch TASK [--delegation-token FILE]")
	token := c.fs.String("delegation-token", "", delegationTokenHelp)
	t := c.socketFlag()
	taskID, done, err := c.parseOperand(args, stdout, "task ID")
	if done || err != nil {
		return err
	}
	first := &writv1.WatchTaskRequest{TaskId: taskID}
	if *token != "" {
		if first.DelegationToken, err = readTokenFile("delegation-token", *token); err != nil {
			return err
		}
	}
	cl, err := dial(*t)
	if err != nil {
		return err
	}
	defer cl.Close()
	return watchTask(ctx, cl, first, stdout)
}

// watchTask holds the session until ctx ends (a clean leave) or the server
// ends it.
func watchTask(ctx context.Context, cl *client, first *writv1.WatchTaskRequest, stdout io.Writer) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := writv1.NewWatchServiceClient(cl.conn).WatchTask(sctx)
	if err != nil {
		return cl.explain(err)
	}
	if err := stream.Send(first); err != nil {
		return cl.explain(watchErr(stream, err))
	}
	st, err := stream.Recv()
	if err != nil {
		return cl.explain(err)
	}
	printWatchStatus(stdout, st)
	// Two beats per heartbeat interval: one late packet does not lapse
	// the session, which ends after two intervals without one.
	every := time.Duration(max(st.GetHeartbeatSeconds(), 1)) * time.Second / 2
	statuses := make(chan *writv1.WatchTaskStatus)
	ended := make(chan error, 1)
	go func() {
		for {
			st, err := stream.Recv()
			if err != nil {
				ended <- err
				return
			}
			select {
			case statuses <- st:
			case <-sctx.Done():
				return
			}
		}
	}()
	tick := time.NewTicker(every)
	defer tick.Stop()
	last := st
	for {
		select {
		case <-ctx.Done():
			stream.CloseSend()
			fmt.Fprintf(stdout, "stopped watching task %s\n", first.GetTaskId())
			return nil
		case err := <-ended:
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("the server ended the watch of task %s: watch again", first.GetTaskId())
			}
			return cl.explain(err)
		case st := <-statuses:
			if st.GetEnded() {
				stream.CloseSend()
				fmt.Fprintf(stdout, "stopped watching task %s: %s\n", first.GetTaskId(), st.GetEndedWhy())
				return nil
			}
			if st.GetLive() != last.GetLive() || !slices.Equal(st.GetPresent(), last.GetPresent()) {
				printWatchStatus(stdout, st)
			}
			last = st
		case <-tick.C:
			if err := stream.Send(&writv1.WatchTaskRequest{}); err != nil {
				return cl.explain(watchErr(stream, err))
			}
		}
	}
}

// watchErr returns the server's status when a send failed because the
// stream ended: Send reports only io.EOF.
func watchErr(stream writv1.WatchService_WatchTaskClient, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	if _, rerr := stream.Recv(); rerr != nil && !errors.Is(rerr, io.EOF) {
		return rerr
	}
	return status.Error(codes.Unavailable, "the server ended the watch")
}

func printWatchStatus(w io.Writer, st *writv1.WatchTaskStatus) {
	state := "paused"
	if st.GetLive() {
		state = "live"
	}
	present := "nobody"
	if len(st.GetPresent()) > 0 {
		present = strings.Join(st.GetPresent(), ", ")
	}
	fmt.Fprintf(w, "watching task %s: %d of %d watchers present (%s); grants %s; on leave: %s\n",
		st.GetTaskId(), len(st.GetPresent()), st.GetCount(), present, state, st.GetOnLeave())
}
