//go:build unix

package workloadapi

import (
	"fmt"
	"os"
	"syscall"
)

// checkSocketDir refuses a socket directory another user could write to.
func checkSocketDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("workload API socket: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("workload API socket: %s is not a directory (a symbolic link is refused too); choose another path with --socket", dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("workload API socket: directory %s belongs to uid %d, who could replace the socket; choose a directory of your own with --socket", dir, st.Uid)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("workload API socket: directory %s is writable by other users (mode %o), who could replace the socket; remove their write access or choose another path with --socket", dir, fi.Mode().Perm())
	}
	return nil
}
