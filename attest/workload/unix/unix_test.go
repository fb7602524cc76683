package unix

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"writ.dev/writ/attest/workload"
	"writ.dev/writ/attest/workload/internal/procfs"
	"writ.dev/writ/attest/workload/internal/proctest"
	"writ.dev/writ/identity"
)

// attest runs a.Attest and checks that every selector it returns is one
// the rest of writ accepts.
func attest(t *testing.T, a *Attestor, p workload.Peer) ([]identity.Selector, error) {
	t.Helper()
	sels, err := a.Attest(context.Background(), p)
	for i, sel := range sels {
		if err := identity.ValidateSelector("selectors["+strconv.Itoa(i)+"]", sel); err != nil {
			t.Errorf("invalid selector: %v", err)
		}
		if sel.Type != SelectorType {
			t.Errorf("selector %s is not of type %q", sel, SelectorType)
		}
	}
	return sels, err
}

func mustAttest(t *testing.T, a *Attestor, p workload.Peer) []identity.Selector {
	t.Helper()
	sels, err := attest(t, a, p)
	if err != nil {
		t.Fatalf("Attest(%+v): %v", p, err)
	}
	return sels
}

// valuesWithPrefix returns the values of sels starting with prefix, with
// the prefix removed.
func valuesWithPrefix(sels []identity.Selector, prefix string) []string {
	var vs []string
	for _, sel := range sels {
		if v, ok := strings.CutPrefix(sel.Value, prefix); ok {
			vs = append(vs, v)
		}
	}
	return vs
}

// only returns the single value of sels with prefix, failing the test if
// there is not exactly one.
func only(t *testing.T, sels []identity.Selector, prefix string) string {
	t.Helper()
	vs := valuesWithPrefix(sels, prefix)
	if len(vs) != 1 {
		t.Fatalf("%d selectors with prefix %q in %v, want 1", len(vs), prefix, sels)
	}
	return vs[0]
}

func hashOf(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func self() workload.Peer {
	return workload.Peer{PID: os.Getpid(), UID: os.Getuid(), GID: os.Getgid()}
}

func TestAttestOwnProcess(t *testing.T) {
	a := New(Options{})
	sels := mustAttest(t, a, self())

	if got := only(t, sels, "uid:"); got != strconv.Itoa(os.Getuid()) {
		t.Errorf("uid = %s, want %d", got, os.Getuid())
	}
	if got := only(t, sels, "gid:"); got != strconv.Itoa(os.Getgid()) {
		t.Errorf("gid = %s, want %d", got, os.Getgid())
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe, err = filepath.EvalSymlinks(exe)
	if err != nil {
		t.Fatal(err)
	}
	if got := only(t, sels, "path:"); got != exe {
		t.Errorf("path = %s, want %s", got, exe)
	}
	if got, want := only(t, sels, "sha256:"), hashOf(t, exe); got != want {
		t.Errorf("sha256 = %s, want %s", got, want)
	}
	groups, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, g := range groups {
		want = append(want, strconv.Itoa(g))
	}
	slices.Sort(want)
	want = slices.Compact(want)
	got := valuesWithPrefix(sels, "supplementary_gid:")
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("supplementary gids = %v, want %v", got, want)
	}
	if u, err := user.LookupId(strconv.Itoa(os.Getuid())); err == nil {
		if got := only(t, sels, "user:"); got != u.Username {
			t.Errorf("user = %s, want %s", got, u.Username)
		}
	}
	if g, err := user.LookupGroupId(strconv.Itoa(os.Getgid())); err == nil {
		if got := only(t, sels, "group:"); got != g.Name {
			t.Errorf("group = %s, want %s", got, g.Name)
		}
	}
	if !slices.IsSortedFunc(sels, func(a, b identity.Selector) int { return strings.Compare(a.Value, b.Value) }) {
		t.Errorf("selectors are not sorted: %v", sels)
	}
}

func TestAttestChildProcess(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skipf("no sleep command: %v", err)
	}
	want, err := filepath.EvalSymlinks(sleep)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sleep, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	sels := mustAttest(t, New(Options{}), workload.Peer{PID: cmd.Process.Pid, UID: os.Getuid(), GID: os.Getgid()})
	if got := only(t, sels, "path:"); got != want {
		t.Errorf("path = %s, want %s", got, want)
	}
	if got := only(t, sels, "sha256:"); got != hashOf(t, want) {
		t.Errorf("sha256 = %s, want the digest of %s", got, want)
	}
}

func TestAttestExitedChild(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skipf("cannot run true: %v", err)
	}
	_, err := attest(t, New(Options{}), workload.Peer{PID: cmd.Process.Pid, UID: os.Getuid(), GID: os.Getgid()})
	if err == nil {
		t.Skip("the exited child's pid was already reused")
	}
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "exited") {
		t.Errorf("error %q should say the process exited", err)
	}
}

// TestAttestOtherUsersProcess needs an unprivileged agent: it attests pid
// 1, owned by another user, whose executable the agent may not read.
func TestAttestOtherUsersProcess(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root may read every process's executable")
	}
	proc, err := procfs.Open("/proc", 1)
	if err != nil {
		t.Skipf("cannot read the start time of pid 1: %v", err)
	}
	st, err := readStatus(proc)
	if err != nil {
		t.Skipf("cannot read the status of pid 1: %v", err)
	}
	if st.UID == uint32(os.Geteuid()) {
		t.Skip("pid 1 belongs to this test's user")
	}
	if _, err := os.Readlink("/proc/1/exe"); !errors.Is(err, fs.ErrPermission) {
		t.Skipf("readlink /proc/1/exe did not fail for permission: %v", err)
	}
	sels := mustAttest(t, New(Options{}), workload.Peer{PID: 1, UID: int(st.UID), GID: int(st.GID)})
	if got := valuesWithPrefix(sels, "path:"); len(got) != 0 {
		t.Errorf("path selectors %v, want none", got)
	}
	if got := valuesWithPrefix(sels, "sha256:"); len(got) != 0 {
		t.Errorf("sha256 selectors %v, want none", got)
	}
	only(t, sels, "uid:")
}

func TestAttestRefusesBadPeer(t *testing.T) {
	for _, p := range []workload.Peer{{PID: 0}, {PID: -1}, {PID: 1, UID: -1}, {PID: 1, GID: 1 << 33}} {
		if sels, err := attest(t, New(Options{}), p); err == nil {
			t.Errorf("Attest(%+v) = %v, want an error", p, sels)
		}
	}
}

// fakeProc is a fake /proc/PID directory.
type fakeProc struct {
	root, dir, exe string
	pid            int
	peer           workload.Peer
}

const fakePID = 4242

// newFakeProc makes a fake process with the given command name, running
// as uid 1000, gid 100 and groups 4 and 5000, whose exe links to a real file.
func newFakeProc(t *testing.T, comm string) *fakeProc {
	t.Helper()
	root := t.TempDir()
	fp := &fakeProc{
		root: root,
		dir:  filepath.Join(root, strconv.Itoa(fakePID)),
		exe:  filepath.Join(t.TempDir(), "server"),
		pid:  fakePID,
		peer: workload.Peer{PID: fakePID, UID: 1000, GID: 100},
	}
	if err := os.Mkdir(fp.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fp.writeStat(t, comm, 5000)
	fp.writeStatus(t, procStatus{UID: 1000, GID: 100, Groups: []uint32{4, 5000}})
	fp.writeExe(t, "#!/bin/true\n")
	fp.linkExe(t, fp.exe)
	return fp
}

func (fp *fakeProc) writeStat(t *testing.T, comm string, start uint64) {
	t.Helper()
	writeFile(t, filepath.Join(fp.dir, "stat"), proctest.StatLine(fp.pid, comm, start))
}

func (fp *fakeProc) writeStatus(t *testing.T, st procStatus) {
	t.Helper()
	writeFile(t, filepath.Join(fp.dir, "status"), statusText(st))
}

func (fp *fakeProc) writeExe(t *testing.T, content string) {
	t.Helper()
	writeFile(t, fp.exe, content)
}

func (fp *fakeProc) linkExe(t *testing.T, target string) {
	t.Helper()
	link := filepath.Join(fp.dir, "exe")
	if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeNames resolves ids below 5000 to "name<id>" and no others, so tests
// do not depend on the host's user database.
func fakeNames(k nameKey) (string, bool, error) {
	if k.id >= 5000 {
		return "", false, nil
	}
	return "name" + formatID(k.id), true, nil
}

// newFakeAttestor returns an Attestor over fp's tree with fake names, and
// the buffer its debug log goes to.
func newFakeAttestor(fp *fakeProc, opts Options) (*Attestor, *bytes.Buffer) {
	var logs bytes.Buffer
	opts.ProcRoot = fp.root
	opts.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a := New(opts)
	a.names.lookup = fakeNames
	return a, &logs
}

func selectorStrings(sels []identity.Selector) []string {
	ss := make([]string, len(sels))
	for i, sel := range sels {
		ss[i] = sel.String()
	}
	return ss
}

func TestAttestFakeProcess(t *testing.T) {
	// A command name that would fool a parser splitting at the first ')'
	// or at spaces.
	fp := newFakeProc(t, "evil) (S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20")
	a, _ := newFakeAttestor(fp, Options{})
	got := selectorStrings(mustAttest(t, a, fp.peer))
	want := []string{
		"unix:gid:100",
		"unix:group:name100",
		"unix:path:" + fp.exe,
		"unix:sha256:" + hashOf(t, fp.exe),
		"unix:supplementary_gid:4",
		"unix:supplementary_gid:5000",
		"unix:supplementary_group:name4",
		"unix:uid:1000",
		"unix:user:name1000",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Attest =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestAttestRefusesChangedIdentity(t *testing.T) {
	for name, st := range map[string]procStatus{
		"uid": {UID: 0, GID: 100},
		"gid": {UID: 1000, GID: 0},
	} {
		t.Run(name, func(t *testing.T) {
			fp := newFakeProc(t, "sleep")
			fp.writeStatus(t, st)
			a, _ := newFakeAttestor(fp, Options{})
			sels, err := attest(t, a, fp.peer)
			if err == nil {
				t.Fatalf("Attest = %v, want an error", sels)
			}
			if !strings.Contains(err.Error(), "changed identity") || !strings.Contains(err.Error(), strconv.Itoa(fakePID)) {
				t.Errorf("error %q should name the pid and say it changed identity", err)
			}
		})
	}
}

func TestAttestRefusesReusedPID(t *testing.T) {
	fp := newFakeProc(t, "sleep")
	a, _ := newFakeAttestor(fp, Options{})
	a.beforeRecheck = func() { fp.writeStat(t, "sleep", 5001) }
	sels, err := attest(t, a, fp.peer)
	if err == nil {
		t.Fatalf("Attest = %v, want an error", sels)
	}
	if !strings.Contains(err.Error(), "reused") || !strings.Contains(err.Error(), strconv.Itoa(fakePID)) {
		t.Errorf("error %q should name the pid and say it was reused", err)
	}
}

func TestAttestRefusesProcessExitingDuringAttestation(t *testing.T) {
	fp := newFakeProc(t, "sleep")
	a, _ := newFakeAttestor(fp, Options{})
	a.beforeRecheck = func() {
		if err := os.RemoveAll(fp.dir); err != nil {
			t.Fatal(err)
		}
	}
	sels, err := attest(t, a, fp.peer)
	if err == nil {
		t.Fatalf("Attest = %v, want an error", sels)
	}
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "exited") {
		t.Errorf("error %q should say the process exited", err)
	}
}

func TestAttestMissingProcess(t *testing.T) {
	fp := newFakeProc(t, "sleep")
	a, _ := newFakeAttestor(fp, Options{})
	sels, err := attest(t, a, workload.Peer{PID: fakePID + 1, UID: 1000, GID: 100})
	if err == nil {
		t.Fatalf("Attest = %v, want an error", sels)
	}
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "pid 4243") || !strings.Contains(err.Error(), "exited") {
		t.Errorf("error %q should name the pid and say the process exited", err)
	}
}

func TestAttestRefusesGarbageStat(t *testing.T) {
	fp := newFakeProc(t, "sleep")
	writeFile(t, filepath.Join(fp.dir, "stat"), "4242 sleep S 1\n")
	a, _ := newFakeAttestor(fp, Options{})
	if sels, err := attest(t, a, fp.peer); err == nil || !strings.Contains(err.Error(), "stat") {
		t.Fatalf("Attest = %v, %v; want an error about stat", sels, err)
	}
}

func TestAttestDeletedExecutable(t *testing.T) {
	fp := newFakeProc(t, "sleep")
	fp.linkExe(t, fp.exe+" (deleted)")
	a, logs := newFakeAttestor(fp, Options{})
	sels := mustAttest(t, a, fp.peer)
	for _, prefix := range []string{"path:", "sha256:"} {
		if got := valuesWithPrefix(sels, prefix); len(got) != 0 {
			t.Errorf("%s selectors %v for a deleted executable, want none", prefix, got)
		}
	}
	only(t, sels, "uid:")
	if !strings.Contains(logs.String(), "deleted") {
		t.Errorf("debug log %q does not say the executable was deleted", logs)
	}
}

func TestAttestExecutableOverSizeCap(t *testing.T) {
	fp := newFakeProc(t, "sleep")
	fp.writeExe(t, strings.Repeat("x", 100))
	a, logs := newFakeAttestor(fp, Options{MaxExecutableSize: 99})
	sels := mustAttest(t, a, fp.peer)
	if got := valuesWithPrefix(sels, "sha256:"); len(got) != 0 {
		t.Errorf("sha256 selectors %v for an executable over the cap, want none", got)
	}
	if got := only(t, sels, "path:"); got != fp.exe {
		t.Errorf("path = %s, want %s", got, fp.exe)
	}
	if !strings.Contains(logs.String(), "bigger than") {
		t.Errorf("debug log %q does not say the executable was too big", logs)
	}

	a, _ = newFakeAttestor(fp, Options{MaxExecutableSize: 100})
	only(t, mustAttest(t, a, fp.peer), "sha256:")
}

func TestAttestHashDisabled(t *testing.T) {
	fp := newFakeProc(t, "sleep")
	a, _ := newFakeAttestor(fp, Options{DisableExecutableHash: true})
	sels := mustAttest(t, a, fp.peer)
	if got := valuesWithPrefix(sels, "sha256:"); len(got) != 0 {
		t.Errorf("sha256 selectors %v with hashing disabled, want none", got)
	}
	only(t, sels, "path:")
	if n := a.digests.hashes.Load(); n != 0 {
		t.Errorf("hashed %d files with hashing disabled", n)
	}
}

func TestAttestOmitsPathThatCannotBeASelector(t *testing.T) {
	fp := newFakeProc(t, "sleep")
	fp.exe = filepath.Join(filepath.Dir(fp.exe), "two\nlines")
	fp.writeExe(t, "binary")
	fp.linkExe(t, fp.exe)
	a, _ := newFakeAttestor(fp, Options{})
	sels := mustAttest(t, a, fp.peer)
	if got := valuesWithPrefix(sels, "path:"); len(got) != 0 {
		t.Errorf("path selectors %q, want none", got)
	}
	if got := only(t, sels, "sha256:"); got != hashOf(t, fp.exe) {
		t.Errorf("sha256 = %s, want the digest of the executable", got)
	}
}

func TestAttestCancelled(t *testing.T) {
	fp := newFakeProc(t, "sleep")
	a, _ := newFakeAttestor(fp, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	sels, err := a.Attest(ctx, fp.peer)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Attest with a cancelled context = %v, %v; want context.Canceled", sels, err)
	}
}

func TestDigestCache(t *testing.T) {
	fp := newFakeProc(t, "sleep")
	a, _ := newFakeAttestor(fp, Options{})

	first := only(t, mustAttest(t, a, fp.peer), "sha256:")
	if again := only(t, mustAttest(t, a, fp.peer), "sha256:"); again != first {
		t.Errorf("second sha256 = %s, want %s", again, first)
	}
	if n := a.digests.hashes.Load(); n != 1 {
		t.Errorf("hashed %d times for two attestations of one file, want 1", n)
	}

	// A new size is a new file version.
	fp.writeExe(t, "#!/bin/false\n# longer\n")
	second := only(t, mustAttest(t, a, fp.peer), "sha256:")
	if second != hashOf(t, fp.exe) || second == first {
		t.Errorf("sha256 after the file grew = %s, want %s", second, hashOf(t, fp.exe))
	}
	if n := a.digests.hashes.Load(); n != 2 {
		t.Errorf("hashed %d times after the file changed, want 2", n)
	}

	// So is a new mtime with the same size.
	fp.writeExe(t, "#!/bin/false\n# LONGER\n")
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(fp.exe, future, future); err != nil {
		t.Fatal(err)
	}
	third := only(t, mustAttest(t, a, fp.peer), "sha256:")
	if third != hashOf(t, fp.exe) || third == second {
		t.Errorf("sha256 after the file was rewritten = %s, want %s", third, hashOf(t, fp.exe))
	}
	if n := a.digests.hashes.Load(); n != 3 {
		t.Errorf("hashed %d times after the file was rewritten, want 3", n)
	}
}

func TestDigestCacheIsBounded(t *testing.T) {
	c := newDigestCache()
	for i := range digestCacheSize + 10 {
		c.put(fileKey{ino: uint64(i)}, "d")
	}
	if n := len(c.digests); n != digestCacheSize {
		t.Errorf("cache holds %d digests, want %d", n, digestCacheSize)
	}
	c.put(fileKey{ino: 1 << 40}, "newest")
	if d, ok := c.get(fileKey{ino: 1 << 40}); !ok || d != "newest" {
		t.Errorf("newest entry = %q, %v; want it kept", d, ok)
	}
}

// cancellingReader is an endless file that cancels its context once read.
type cancellingReader struct{ cancel context.CancelFunc }

func (r cancellingReader) Read(p []byte) (int, error) {
	r.cancel()
	return len(p), nil
}

func TestHashFileStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	if d, err := hashFile(ctx, cancellingReader{cancel}); !errors.Is(err, context.Canceled) {
		t.Fatalf("hashFile = %q, %v; want context.Canceled", d, err)
	}
}
