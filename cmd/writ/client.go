package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"writ.dev/writ/internal/quote"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	writv1 "writ.dev/writ/api/writ/v1"
	"writ.dev/writ/internal/peercred"
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

// socketOwnerEnv names further uids the client may accept as owners of
// the admin socket, like --socket-owner.
const socketOwnerEnv = "WRIT_SOCKET_OWNER"

// identityEnv picks the identity for the remote API, like --identity.
const identityEnv = "WRIT_IDENTITY"

// Identities a client command can present to a server's remote API.
const (
	identityLogin    = "login"    // what `writ login` saved
	identityWorkload = "workload" // this process's, from the SPIFFE Workload API
)

// socketHelp is the flag description shared by every client subcommand.
const socketHelp = "path of the server's admin `socket`"

// socketDefaultText is what help shows as the --socket default, because the
// real default depends on the environment and the working directory.
const socketDefaultText = "$" + socketEnv + ", else ./" + devSocket + " if it exists, else " + systemSocket

// target says which server a client command reaches and as whom: the
// admin socket as the local user, or a server's remote API over mTLS with
// an identity. Every client command takes the same flags for it.
type target struct {
	socket       string
	server       string
	identity     string
	socketOwners string
}

// resolve picks the admin socket or the remote server: the flags, then
// $WRIT_SOCKET, then $WRIT_SERVER, then the admin socket found by search.
func (t target) resolve() (socket, server string, err error) {
	switch {
	case t.socket != "" && t.server != "":
		return "", "", errors.New("give --socket (the admin socket) or --server (the remote API), not both")
	case t.server != "":
		return "", t.server, nil
	case t.socket == "" && os.Getenv(socketEnv) == "" && os.Getenv(serverEnv) != "":
		return "", os.Getenv(serverEnv), nil
	}
	if t.identity != "" {
		return "", "", errors.New("--identity is for the remote API: add --server HOST:PORT (or set " + serverEnv + ")")
	}
	socket, err = resolveSocket(t.socket)
	return socket, "", err
}

func (t target) identityKind() string {
	if t.identity != "" {
		return t.identity
	}
	if v := os.Getenv(identityEnv); v != "" {
		return v
	}
	return identityLogin
}

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

// client holds one connection to the server.
type client struct {
	socket string // what was dialled, for messages: the socket path or host:port
	remote bool   // over mTLS with an identity rather than on the admin socket
	// identity is who the client is on the remote API; nil on the socket.
	identity *remoteIdentity
	conn     *grpc.ClientConn
	entries  writv1.EntryServiceClient
	svids    writv1.SVIDServiceClient
	bundles  writv1.BundleServiceClient
	status   writv1.StatusServiceClient
}

// dial connects to the server t names: the admin socket (authorized by the
// peer credentials of this process; no TLS, no tokens, never off the
// machine), or a server's remote API over mTLS with an identity, the way
// agents and workloads reach it.
func dial(t target) (*client, error) {
	socket, server, err := t.resolve()
	if err != nil {
		return nil, err
	}
	if server != "" {
		return dialRemote(server, t.identityKind())
	}
	return dialSocket(socket, t.socketOwners)
}

func dialSocket(socket, extraOwners string) (*client, error) {
	owners, err := parseOwners(extraOwners)
	if err != nil {
		return nil, err
	}
	// grpc.NewClient connects lazily; checking the path first turns the most
	// common mistake (server not running) into a plain message.
	fi, err := os.Stat(socket)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no writ server socket at %s; %s", socket, startHint)
		}
		return nil, fmt.Errorf("cannot use socket %s: %v; %s", socket, err, startHint)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if err := checkSocketOwner(socket, "owned by", st.Uid, os.Geteuid(), owners); err != nil {
			return nil, err
		}
	}
	// The file's owner can change between the check and the connection; the
	// kernel's account of the process that accepted it cannot, so every
	// connection is checked again by who serves it.
	dialer := func(ctx context.Context, _ string) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "unix", socket)
		if err != nil {
			return nil, err
		}
		uc, ok := conn.(*net.UnixConn)
		if !ok {
			conn.Close()
			return nil, fmt.Errorf("%s is not a unix socket", socket)
		}
		cred, err := peercred.Read(uc)
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("cannot tell who serves %s: %w", socket, err)
		}
		if err := checkSocketOwner(socket, "served by a process of", uint32(cred.UID), os.Geteuid(), owners); err != nil {
			conn.Close()
			return nil, err
		}
		return conn, nil
	}
	// An eager first connection reports a foreign server in plain words
	// rather than as gRPC's "connection error".
	if c, err := dialer(context.Background(), ""); err != nil {
		var foreign *foreignSocketError
		if errors.As(err, &foreign) {
			return nil, err
		}
	} else {
		c.Close()
	}
	conn, err := grpc.NewClient("passthrough:///localhost",
		grpc.WithContextDialer(dialer),
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

// foreignSocketError is an admin socket that belongs to someone the
// invoking user has not said to trust.
type foreignSocketError struct {
	socket, how string
	uid         uint32
	self        int
}

func (e *foreignSocketError) Error() string {
	return fmt.Sprintf("refusing the admin socket %s: it is %s uid %d, neither root nor you (uid %d), so it may be another user's server "+
		"that would see and answer what you send; if it is the server you mean, pass --socket-owner %d (or set %s=%d)",
		e.socket, e.how, e.uid, e.self, e.uid, socketOwnerEnv, e.uid)
}

// checkSocketOwner admits an admin socket whose owner (or serving process)
// is root, the invoking user, or a uid the user named. A socket found by
// search in the working directory may belong to anyone who could write
// there; root talking to it would hand that user its commands.
func checkSocketOwner(socket, how string, owner uint32, self int, extra []uint32) error {
	if owner == 0 || int64(owner) == int64(self) || slices.Contains(extra, owner) {
		return nil
	}
	return &foreignSocketError{socket: socket, how: how, uid: owner, self: self}
}

// parseOwners reads --socket-owner: uids or user names, comma-separated.
func parseOwners(s string) ([]uint32, error) {
	var out []uint32
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if n, err := strconv.ParseUint(f, 10, 32); err == nil {
			out = append(out, uint32(n))
			continue
		}
		u, err := user.Lookup(f)
		if err != nil {
			return nil, fmt.Errorf("socket-owner: %s is neither a uid nor a known user name: give a number or a user of this machine", quote.Max(f, 64))
		}
		n, err := strconv.ParseUint(u.Uid, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("socket-owner: user %s has the uid %q, not a number", u.Username, u.Uid)
		}
		out = append(out, uint32(n))
	}
	return out, nil
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

// dialRemote connects to a server's remote API over mTLS with an identity.
func dialRemote(addr, kind string) (*client, error) {
	id, err := loadIdentity(kind)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(id.clientTLS())),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(maxMessageSize), grpc.MaxCallRecvMsgSize(maxMessageSize)))
	if err != nil {
		return nil, fmt.Errorf("cannot connect to writ server at %s: %v", addr, err)
	}
	c := newClient(addr, conn)
	c.remote, c.identity = true, id
	return c, nil
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
		if c.remote {
			// The server's per-RPC table keeps administration on the admin
			// socket; say where else to go.
			return fmt.Errorf("permission denied: %s; the server does not let remote identities do this: run it on the server's machine with --socket (its admin socket)", msg)
		}
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
