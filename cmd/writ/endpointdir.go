package main

import (
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"syscall"
)

// checkEndpointDir refuses a Workload API socket whose directory sits in a
// directory anyone may create entries in (such as /tmp) but belongs to
// neither root, the invoking user, nor a uid the user named. writ dev's
// default socket lives in /tmp/writ-dev-UID: another user who creates that
// directory first could serve a socket there and hand this user's
// workloads an identity and a trust bundle of their choosing. Sockets in
// directories only their owner can populate (/run/writ) are not affected.
func checkEndpointDir(addr string, self int, extra []uint32) error {
	u, err := url.Parse(addr)
	if err != nil || u.Scheme != "unix" {
		return nil // go-spiffe reports malformed and TCP addresses itself
	}
	path := u.Path
	if path == "" {
		path = u.Opaque
	}
	dir := filepath.Dir(filepath.Clean(path))
	parent, err := os.Lstat(filepath.Dir(dir))
	if err != nil || parent.Mode()&0o002 == 0 {
		return nil // not in a directory others may write into
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil // nothing there yet: the dial fails with its own message
		}
		return fmt.Errorf("cannot check the Workload API socket's directory %s: %v", dir, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("refusing the Workload API socket in %s: the directory is a symlink in a directory anyone can write to, so someone else may have placed it", dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if st.Uid == 0 || int64(st.Uid) == int64(self) || slices.Contains(extra, st.Uid) {
		return nil
	}
	return fmt.Errorf("refusing the Workload API socket in %s: the directory belongs to uid %d, neither root nor you (uid %d), and sits where anyone can create directories, "+
		"so its socket may be another user's, handing you an identity and trust bundle of their choosing; if that agent is the one you mean, pass --socket-owner %d",
		dir, st.Uid, self, st.Uid)
}
