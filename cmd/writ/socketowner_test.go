package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestCheckSocketOwner(t *testing.T) {
	for _, tt := range []struct {
		owner uint32
		self  int
		extra []uint32
		ok    bool
	}{
		{owner: 0, self: 1000, ok: true},                           // root's server
		{owner: 1000, self: 1000, ok: true},                        // one's own
		{owner: 1000, self: 0, ok: false},                          // root in a user's directory
		{owner: 2000, self: 1000, ok: false},                       // another user's
		{owner: 2000, self: 1000, extra: []uint32{2000}, ok: true}, // named with --socket-owner
	} {
		err := checkSocketOwner("/x/admin.sock", "owned by", tt.owner, tt.self, tt.extra)
		if (err == nil) != tt.ok {
			t.Errorf("owner %d self %d extra %v: err = %v, want ok=%v", tt.owner, tt.self, tt.extra, err, tt.ok)
		}
		var foreign *foreignSocketError
		if err != nil && (!errors.As(err, &foreign) || !strings.Contains(err.Error(), "--socket-owner")) {
			t.Errorf("refusal does not say what to do: %v", err)
		}
	}
}

func TestParseOwners(t *testing.T) {
	got, err := parseOwners("4242, root")
	if err != nil || len(got) != 2 || got[0] != 4242 || got[1] != 0 {
		t.Fatalf("parseOwners = %v, %v", got, err)
	}
	if _, err := parseOwners("no-such-user-" + strings.Repeat("x", 200)); err == nil || len(err.Error()) > 200 {
		t.Fatalf("unknown user: %v", err)
	}
}

// TestForeignAdminSocketRefused: root in a directory owned by another uid
// must not send its commands to that uid's server, whether the socket was
// found by search or named.
func TestForeignAdminSocketRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("giving a socket to another uid needs root; TestCheckSocketOwner covers the rule")
	}
	_, sock := startFake(t)
	dir := filepath.Dir(sock)
	// The layout of `writ dev` run by someone else in this directory.
	if err := os.MkdirAll(filepath.Join(dir, ".writ"), 0o755); err != nil {
		t.Fatal(err)
	}
	devSock := filepath.Join(dir, devSocket)
	if err := os.Rename(sock, devSock); err != nil {
		t.Fatal(err)
	}
	const other = 4242
	if err := os.Lchown(devSock, other, other); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	t.Setenv(socketEnv, "")
	t.Setenv(serverEnv, "")
	t.Setenv(socketOwnerEnv, "")

	for _, args := range [][]string{nil, {"--socket", devSock}} {
		var out bytes.Buffer
		err := runStatus(context.Background(), args, &out, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "refusing the admin socket "+devSock) || !strings.Contains(err.Error(), "uid 4242") {
			t.Errorf("status %v with a socket owned by uid %d: err = %v, output %q", args, other, err, out.String())
		}
	}
	// Named on purpose, it is used.
	var out bytes.Buffer
	if err := runStatus(context.Background(), []string{"--socket-owner", "4242"}, &out, &bytes.Buffer{}); err != nil || !strings.Contains(out.String(), "example.org") {
		t.Errorf("with --socket-owner 4242: %v %q", err, out.String())
	}
}

// listenHelperEnv makes the test binary a process that only listens on a
// unix socket, run as another uid by TestAdminSocketServedByAnotherUID.
const listenHelperEnv = "WRIT_TEST_LISTEN_HELPER"

func listenHelper(path string) {
	l, err := net.Listen("unix", path)
	if err != nil {
		os.Exit(3)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			os.Exit(0)
		}
		defer c.Close()
	}
}

// TestAdminSocketServedByAnotherUID: a socket file that looks right (owned
// by root) but is served by a process of another uid is refused, by the
// kernel's account of the process that accepted the connection.
func TestAdminSocketServedByAnotherUID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("running a process as another uid needs root; TestCheckSocketOwner covers the rule")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := shortTempDir(t)
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	// The test binary's own directory may be closed to other uids.
	helper := filepath.Join(dir, "helper")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(helper, data, 0o755); err != nil {
		t.Fatal(err)
	}
	const other = 4243
	sock := filepath.Join(dir, "admin.sock")
	cmd := exec.Command(helper)
	cmd.Env = append(os.Environ(), listenHelperEnv+"="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: other, Gid: other}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the helper never listened")
		}
	}
	// The file now passes the owner check; only the peer check is left.
	if err := os.Lchown(sock, 0, 0); err != nil {
		t.Fatal(err)
	}
	err = runStatus(context.Background(), []string{"--socket", sock}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "served by a process of uid 4243") {
		t.Fatalf("socket served by uid %d: err = %v", other, err)
	}
}
