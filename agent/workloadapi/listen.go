package workloadapi

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Listen binds the Workload API's unix socket at path. A socket file left
// by an agent that died is replaced; a live agent's socket, or a file that
// is not a socket, is refused rather than removed.
//
// The socket is made mode 0666: every local process may ask, and
// attestation decides what it gets. A missing directory is created 0755
// (less the umask) for the same reason, but an existing one keeps the mode
// its owner chose, since narrowing access there is an operator's decision.
//
// The directory must be writable only by this process's user (or root):
// whoever else could write there could swap the socket for their own and
// hand workloads false identities. That matters for shared places such as
// the temporary directory.
func Listen(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("workload API socket: creating its directory: %w; choose another path with --socket", err)
	}
	if err := checkSocketDir(dir); err != nil {
		return nil, err
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("workload API socket: %w", err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, fmt.Errorf("workload API socket: making it reachable by every local process: %w", err)
	}
	return ln, nil
}

func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("workload API socket: %w", err)
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("workload API socket: %s exists and is not a socket; remove it or choose another path", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("workload API socket: another agent is listening on %s; stop it or choose another path", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("workload API socket: removing the stale socket %s: %w", path, err)
	}
	return nil
}
