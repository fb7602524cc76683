package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// devSocketPath is where `writ dev` serves the Workload API unless told
// otherwise, and where `writ fetch` looks when given no address: one rule
// for both sides, so they never disagree. A runtime directory of the
// user's own ($XDG_RUNTIME_DIR) comes first: nobody else can create
// entries there, so nobody can put a socket of theirs in the way. Without
// one, TMPDIR/writ-dev-UID, which the agent and `writ fetch` each check is
// not another user's.
func devSocketPath() string {
	if dir := os.Getenv("XDG_RUNTIME_DIR"); usableRuntimeDir(dir, os.Geteuid()) {
		return filepath.Join(dir, "writ", "agent.sock")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("writ-dev-%d", os.Getuid()), "agent.sock")
}

// usableRuntimeDir reports whether dir is a runtime directory as the XDG
// Base Directory specification requires one: an absolute path to a
// directory that uid owns with mode 0700. Anything else is not trusted to
// keep other users out, and the caller falls back.
func usableRuntimeDir(dir string, uid int) bool {
	if dir == "" || !filepath.IsAbs(dir) {
		return false
	}
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int64(st.Uid) == int64(uid)
}
