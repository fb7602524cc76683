package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
)

const (
	// socketEnv names the environment variable that points the client at the
	// server's admin socket when --socket is not given.
	socketEnv = "WRIT_SOCKET"
	// devSocket is where `writ dev` puts its admin socket, relative to the
	// directory it runs in.
	devSocket = ".writ/admin.sock"
	// systemSocket is where an installed `writ server` listens by default.
	systemSocket = "/var/lib/writ/admin.sock"

	// maxMessageSize bounds both directions: a batch of 100,000 entries is
	// tens of megabytes, far above gRPC's 4 MiB default.
	maxMessageSize = 64 << 20
)

// socketHelp is the flag description shared by every client subcommand.
const socketHelp = "path of the server's admin `socket`"

// socketDefaultText is what help shows as the --socket default, because the
// real default depends on the environment and the working directory.
const socketDefaultText = "$" + socketEnv + ", else ./" + devSocket + " if it exists, else " + systemSocket

// resolveSocket picks the admin socket: the flag, then the environment, then
// the socket of a `writ dev` started in this directory, then the system path.
// The result is absolute so that error messages say exactly what was tried.
func resolveSocket(flagValue string) (string, error) {
	p := flagValue
	if p == "" {
		p = os.Getenv(socketEnv)
	}
	if p == "" {
		if _, err := os.Stat(devSocket); err == nil {
			p = devSocket
		} else {
			p = systemSocket
		}
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("socket path %q: %w", p, err)
	}
	return abs, nil
}

// client holds one connection to the server's admin API.
type client struct {
	socket  string
	conn    *grpc.ClientConn
	entries writv1.EntryServiceClient
	svids   writv1.SVIDServiceClient
	bundles writv1.BundleServiceClient
	status  writv1.StatusServiceClient
}

// dial connects to the admin socket named by the --socket flag value (or the
// fallbacks of resolveSocket). The admin socket is authorized by the peer
// credentials of the connecting process, so the channel carries no TLS and no
// tokens; it never leaves the machine.
//
// With no socket named and $WRIT_SERVER set, it reaches that server's remote
// API instead, over mTLS with the identity `writ login` saved: a person
// reaches the server the way agents and workloads do.
func dial(socketFlag string) (*client, error) {
	if addr := os.Getenv(serverEnv); addr != "" && socketFlag == "" && os.Getenv(socketEnv) == "" {
		return dialRemote(addr)
	}
	socket, err := resolveSocket(socketFlag)
	if err != nil {
		return nil, err
	}
	// grpc.NewClient connects lazily; checking the path first turns the most
	// common mistake (server not running) into a plain message.
	if _, err := os.Stat(socket); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no writ server socket at %s; %s", socket, startHint)
		}
		return nil, fmt.Errorf("cannot use socket %s: %v; %s", socket, err, startHint)
	}
	conn, err := grpc.NewClient("unix://"+socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallSendMsgSize(maxMessageSize),
			grpc.MaxCallRecvMsgSize(maxMessageSize),
		),
	)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to writ server at %s: %v; %s", socket, err, startHint)
	}
	return newClient(socket, conn), nil
}

func newClient(target string, conn *grpc.ClientConn) *client {
	return &client{
		socket:  target,
		conn:    conn,
		entries: writv1.NewEntryServiceClient(conn),
		svids:   writv1.NewSVIDServiceClient(conn),
		bundles: writv1.NewBundleServiceClient(conn),
		status:  writv1.NewStatusServiceClient(conn),
	}
}

// dialRemote connects to a server's remote API with the saved identity.
func dialRemote(addr string) (*client, error) {
	tlsCfg, err := remoteTLS()
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(maxMessageSize), grpc.MaxCallRecvMsgSize(maxMessageSize)))
	if err != nil {
		return nil, fmt.Errorf("cannot connect to writ server at %s: %v", addr, err)
	}
	return newClient(addr, conn), nil
}

const startHint = "start the server (`writ server`, or `writ dev` for a local trial) or point --socket or " + socketEnv + " at its admin socket"

func (c *client) Close() error { return c.conn.Close() }

// explain turns a gRPC error into a sentence for a person: the server's own
// message, prefixed with what kind of failure it was when the message alone
// would not say so.
func (c *client) explain(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := st.Message()
	switch st.Code() {
	case codes.Unavailable:
		if strings.Contains(msg, "permission denied") {
			// The socket's file mode kept us out before the server could
			// even look at our credentials.
			return fmt.Errorf("permission denied connecting to the writ server at %s: %s; run the command as a user allowed to use the admin socket", c.socket, msg)
		}
		return fmt.Errorf("cannot reach the writ server at %s: %s; %s", c.socket, msg, startHint)
	case codes.PermissionDenied:
		return fmt.Errorf("permission denied: %s", msg)
	case codes.Unauthenticated:
		return fmt.Errorf("not authenticated: %s", msg)
	case codes.DeadlineExceeded:
		return fmt.Errorf("timed out waiting for the writ server at %s: %s", c.socket, msg)
	case codes.Canceled:
		return fmt.Errorf("canceled: %s", msg)
	case codes.Unimplemented:
		return fmt.Errorf("the server at %s does not support this request (is it an older writ?): %s", c.socket, msg)
	case codes.ResourceExhausted:
		return fmt.Errorf("request too large or server busy: %s", msg)
	case codes.Aborted:
		return fmt.Errorf("conflict: %s; run the command again", msg)
	case codes.Internal, codes.Unknown, codes.DataLoss:
		return fmt.Errorf("server error: %s", msg)
	default:
		// InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, ...:
		// the server's message already says what was wrong.
		return errors.New(msg)
	}
}
