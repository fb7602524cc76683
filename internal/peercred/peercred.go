// Package peercred authenticates the process at the other end of a unix
// socket by the kernel's account of it (SO_PEERCRED), as gRPC transport
// credentials. The server's admin socket and the agent's Workload API both
// rest on it: the caller cannot forge what the kernel reports.
package peercred

import (
	"context"
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
)

// Cred is the kernel's account of a peer process: its uid, gid and pid at
// the time it connected.
type Cred struct {
	UID, GID, PID int
}

// AuthType implements credentials.AuthInfo.
func (Cred) AuthType() string { return "peercred" }

// Credentials returns server-side transport credentials for unix sockets:
// no handshake, and the peer's Cred as the connection's AuthInfo.
func Credentials() credentials.TransportCredentials { return transport{} }

type transport struct{}

func (transport) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return nil, nil, errors.New("peercred: not a unix socket connection")
	}
	cred, err := Read(uc)
	if err != nil {
		return nil, nil, err
	}
	return conn, cred, nil
}

func (transport) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("peercred: server-side only")
}

func (transport) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}

func (c transport) Clone() credentials.TransportCredentials { return c }

func (transport) OverrideServerName(string) error { return nil }

// Read returns the credentials of uc's peer.
func Read(uc *net.UnixConn) (Cred, error) {
	raw, err := uc.SyscallConn()
	if err != nil {
		return Cred{}, fmt.Errorf("peercred: %w", err)
	}
	var ucred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		ucred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Cred{}, fmt.Errorf("peercred: %w", err)
	}
	if serr != nil {
		return Cred{}, fmt.Errorf("peercred: SO_PEERCRED: %w", serr)
	}
	return Cred{UID: int(ucred.Uid), GID: int(ucred.Gid), PID: int(ucred.Pid)}, nil
}
