package output

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"time"
)

const (
	// outputLimit bounds how much of the reload command's output is kept
	// for the log: the end, where errors usually are.
	outputLimit = 4 << 10
	// waitDelay bounds the wait for the command's output after it exits or
	// is killed, in case a child it started keeps the pipes open.
	waitDelay = 5 * time.Second
	// EnvOutputDir names the environment variable that tells the reload
	// command which directory changed.
	EnvOutputDir = "WRIT_OUTPUT_DIR"
)

// errReloadTimeout tells the reload timeout apart from the caller's context
// ending, which is reported as it is.
var errReloadTimeout = errors.New("timed out")

// runReload runs the reload command, if any, within the reload timeout and
// logs the end of its output.
func (w *Writer) runReload(ctx context.Context) error {
	if w.reload == nil {
		return nil
	}
	ctx, cancel := context.WithTimeoutCause(ctx, w.timeout, errReloadTimeout)
	defer cancel()
	out := &tail{limit: outputLimit}
	cmd := exec.CommandContext(ctx, w.reload[0], w.reload[1:]...)
	cmd.Env = append(os.Environ(), EnvOutputDir+"="+w.dir)
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.WaitDelay = waitDelay
	start := time.Now()
	err := cmd.Run()
	attrs := []any{"command", w.reload, "dir", w.dir, "duration", time.Since(start), "output", out.String()}
	if err == nil {
		w.log.Info("reload command finished", attrs...)
		return nil
	}
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errReloadTimeout):
		err = fmt.Errorf("%w after %s (set a longer reload timeout if it needs more)", errReloadTimeout, w.timeout)
	case cause != nil:
		err = fmt.Errorf("stopped: %w", cause)
	}
	w.log.Error("reload command failed", append(attrs, "error", err)...)
	return fmt.Errorf("output: reload command %q failed: %w; the files in %s are written, its output is in the log, and the next Write runs it again", w.reload[0], err, w.dir)
}

// tail keeps the last limit bytes written to it.
type tail struct {
	mu      sync.Mutex
	limit   int
	buf     []byte
	dropped bool
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.limit; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.dropped = true
	}
	return len(p), nil
}

// String is the kept output, marked when earlier output was dropped.
func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dropped {
		return "[earlier output dropped]\n" + string(t.buf)
	}
	return string(t.buf)
}
