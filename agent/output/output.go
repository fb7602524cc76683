// Package output writes a workload's identity to files, for programs that
// cannot speak the SPIFFE Workload API: CI jobs, legacy servers, anything
// that reads a certificate and key from disk.
//
// The layout is defined here once (SVIDFile, KeyFile, BundleFile and
// jwt-<audience>.token per JWT-SVID) and every command that writes SVID
// files writes through this package, so users see the same files whichever
// way they got them.
package output

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"writ.dev/writ/internal/atomicfile"
)

// DefaultReloadTimeout bounds a reload command when Options.ReloadTimeout is
// zero, so a hung command cannot stall later rotations forever.
const DefaultReloadTimeout = 30 * time.Second

// Options configure a Writer.
type Options struct {
	// Dir receives the files. It is created with mode 0700 if missing and
	// refused if group or others may write to it, since whoever can write
	// there can replace the identity the workload uses.
	Dir string
	// ReloadCommand is run, without a shell, after files change, with the
	// directory in the environment as WRIT_OUTPUT_DIR. Empty means none.
	ReloadCommand []string
	// ReloadTimeout bounds one run of ReloadCommand; zero means
	// DefaultReloadTimeout.
	ReloadTimeout time.Duration
	// Logger receives the reload command's output; nil discards it.
	Logger *slog.Logger
}

// Writer keeps one directory up to date with the material given to Write.
// It is safe for concurrent use; Writes are serialised.
type Writer struct {
	dir     string
	reload  []string
	timeout time.Duration
	log     *slog.Logger

	// mu serialises Writes, so files and the state below always describe
	// the same Write.
	mu sync.Mutex
	// written maps each file name to the bytes this Writer last put there.
	// It is how unchanged files are skipped and how stale JWT files are
	// told apart from files others keep in the directory.
	written map[string][]byte
	// reloadPending is set when files changed and the reload command has
	// not yet succeeded since, so a failed reload is retried by the next
	// Write rather than leaving the workload on old files until the next
	// rotation.
	reloadPending bool
}

// New checks opts and prepares the directory; nothing is written until Write.
func New(opts Options) (*Writer, error) {
	dir, err := prepareDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	reload, err := checkReloadCommand(opts.ReloadCommand)
	if err != nil {
		return nil, err
	}
	timeout := opts.ReloadTimeout
	if timeout < 0 {
		return nil, fmt.Errorf("output: reload timeout %s is negative: use a positive duration, or zero for the default %s", timeout, DefaultReloadTimeout)
	}
	if timeout == 0 {
		timeout = DefaultReloadTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Writer{
		dir:     dir,
		reload:  reload,
		timeout: timeout,
		log:     log,
		written: make(map[string][]byte),
	}, nil
}

// Dir is the absolute path of the directory the Writer fills.
func (w *Writer) Dir() string { return w.dir }

// prepareDir makes dir absolute, so the reload command gets a path that
// works from any working directory, creates it if missing and refuses one
// that group or others may write to.
func prepareDir(dir string) (string, error) {
	if dir == "" {
		return "", errors.New("output: directory is empty: name a directory for the identity files")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("output: directory %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", fmt.Errorf("output: cannot create directory: %w", err)
	}
	info, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("output: %w", err)
	}
	if !info.IsDir() {
		return "", fmt.Errorf("output: %s is not a directory", abs)
	}
	if perm := info.Mode().Perm(); perm&0o022 != 0 {
		return "", fmt.Errorf("output: directory %s is writable by group or others (mode %04o): run chmod 700 %s, or use another directory", abs, perm, abs)
	}
	return abs, nil
}

// checkReloadCommand resolves the program now, so a typo in the
// configuration shows up at start-up rather than at the first rotation.
func checkReloadCommand(argv []string) ([]string, error) {
	if len(argv) == 0 {
		return nil, nil
	}
	if argv[0] == "" {
		return nil, errors.New("output: reload command has an empty program name: give the program as its first word")
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return nil, fmt.Errorf("output: reload command %q cannot be run: %w: give an absolute path or put it on PATH", argv[0], err)
	}
	return append([]string{path}, argv[1:]...), nil
}

// Write brings the directory in line with m and runs the reload command if
// any file changed. It returns whether it wrote or removed anything.
//
// Files whose bytes are already on disk as this Writer last wrote them are
// left alone, so an identical Write touches nothing; the first Write of a
// Writer always writes. A Material that fails its checks is refused before
// any file is touched. If the reload command fails, the files stay written,
// the error is returned and the next Write runs the command again.
func (w *Writer) Write(ctx context.Context, m Material) (changed bool, err error) {
	files, err := m.encode()
	if err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("output: nothing was written: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	changed, err = w.sync(files)
	if err != nil {
		return changed, err
	}
	if !w.reloadPending {
		return changed, nil
	}
	if err := w.runReload(ctx); err != nil {
		return changed, err
	}
	w.reloadPending = false
	return changed, nil
}

// sync writes the files that differ, in the order given, then removes JWT
// files this Writer wrote earlier that files no longer names.
func (w *Writer) sync(files []file) (changed bool, err error) {
	want := make(map[string]bool, len(files))
	for _, f := range files {
		want[f.name] = true
		if w.current(f) {
			continue
		}
		if err := atomicfile.Write(filepath.Join(w.dir, f.name), f.data, f.perm); err != nil {
			return changed, fmt.Errorf("output: %w; files written before it are in place", err)
		}
		w.written[f.name] = f.data
		w.reloadPending = w.reload != nil
		changed = true
	}
	removed, err := w.removeStale(want)
	if removed {
		w.reloadPending = w.reload != nil
	}
	return changed || removed, err
}

// current reports whether f is on disk exactly as this Writer last wrote it.
// Reading the file back, not only remembering it, repairs a file someone
// edited, deleted or chmodded behind the Writer's back.
func (w *Writer) current(f file) bool {
	prev, ok := w.written[f.name]
	if !ok || !bytes.Equal(prev, f.data) {
		return false
	}
	path := filepath.Join(w.dir, f.name)
	info, err := os.Lstat(path)
	if err != nil || !info.Mode().IsRegular() || info.Mode().Perm() != f.perm {
		return false
	}
	data, err := os.ReadFile(path)
	return err == nil && bytes.Equal(data, f.data)
}

// removeStale deletes the JWT files this Writer wrote that are no longer
// wanted. Only names in w.written are candidates, so files others keep in
// the directory, even ones that look like JWT files, are never touched.
func (w *Writer) removeStale(want map[string]bool) (removed bool, err error) {
	for name := range w.written {
		if want[name] || !strings.HasPrefix(name, jwtFilePrefix) {
			continue
		}
		err := os.Remove(filepath.Join(w.dir, name))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("output: remove stale JWT file: %w: remove it by hand or fix the directory's permissions", err)
		}
		delete(w.written, name)
		removed = true
	}
	if !removed {
		return false, nil
	}
	if err := atomicfile.SyncDir(w.dir); err != nil {
		return true, fmt.Errorf("output: sync %s after removing stale JWT files: %w", w.dir, err)
	}
	return true, nil
}
