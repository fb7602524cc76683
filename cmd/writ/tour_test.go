package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The README tests run the writ binary, built once, the way a user runs
// it: as a separate process, with its arguments as the README writes them.
var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

func TestMain(m *testing.M) {
	if path := os.Getenv(listenHelperEnv); path != "" {
		listenHelper(path)
		return
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// writBinary builds the writ binary once per test run and returns the
// directory holding it, to put on PATH.
func writBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "writ-bin"); binErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, "writ"), ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binDir
}

// shell runs command lines with sh in dir, with the writ binary first on
// PATH and the environment the lines export.
type shell struct {
	t   *testing.T
	dir string
	env map[string]string
}

func newShell(t *testing.T, dir string) *shell {
	bin := writBinary(t)
	return &shell{t: t, dir: dir, env: map[string]string{
		"PATH": bin + string(os.PathListSeparator) + os.Getenv("PATH"),
		"HOME": dir,
		// Nothing from the test's own environment picks the server.
		"WRIT_SOCKET": "", "WRIT_SERVER": "", "SPIFFE_ENDPOINT_SOCKET": "", "WRIT_IDENTITY_DIR": filepath.Join(dir, "identity"),
	}}
}

func (s *shell) environ() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ours := s.env[k]; !ours {
			env = append(env, kv)
		}
	}
	for k, v := range s.env {
		env = append(env, k+"="+v)
	}
	return env
}

func (s *shell) command(line string) *exec.Cmd {
	cmd := exec.Command("sh", "-c", line)
	cmd.Dir = s.dir
	cmd.Env = s.environ()
	return cmd
}

// run runs one line and returns its standard output; a non-zero exit fails
// the test with what the command printed.
func (s *shell) run(line string) string {
	s.t.Helper()
	if k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "="); strings.HasPrefix(line, "export ") && ok {
		s.env[k] = strings.TrimSpace(s.output("printf %s " + v))
		return ""
	}
	return s.output(line)
}

func (s *shell) output(line string) string {
	s.t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := s.command(line)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		s.t.Fatalf("$ %s\n%v\nstdout: %s\nstderr: %s", line, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// fails runs one line that must fail and returns what it printed on stderr.
func (s *shell) fails(line string) string {
	s.t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := s.command(line)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err == nil {
		s.t.Fatalf("$ %s\nsucceeded, want a refusal: %s", line, stdout.String())
	}
	return stderr.String()
}

// start runs a long-lived command in the background until the test ends,
// and waits for the unix socket it serves to accept connections.
func (s *shell) start(line, socket string) {
	s.t.Helper()
	var out syncBuffer
	cmd := s.command("exec " + line)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			s.t.Errorf("%s did not stop within 20s of SIGTERM", line)
		}
	})
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case <-done:
			s.t.Fatalf("%s exited: %s", line, out.String())
		default:
		}
		if c, err := dialUnix(socket); err == nil {
			c.Close()
			return
		}
	}
	s.t.Fatalf("%s: %s never came up: %s", line, socket, out.String())
}

// readmeBlock returns the first fenced block of lang after the text marker
// in README.md.
func readmeBlock(t *testing.T, marker, lang string) string {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), marker)
	if !ok {
		t.Fatalf("README.md has no %q", marker)
	}
	_, rest, ok = strings.Cut(rest, "```"+lang+"\n")
	if !ok {
		t.Fatalf("README.md has no %s block after %q", lang, marker)
	}
	block, _, _ := strings.Cut(rest, "```")
	return block
}

// commandLines splits a shell block into commands: continuations joined,
// comments and blank lines dropped.
func commandLines(block string) []string {
	var out []string
	var cur string
	for _, l := range strings.Split(block, "\n") {
		if i := strings.Index(l, "  #"); i >= 0 {
			l = l[:i]
		}
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cur += strings.TrimSuffix(l, "\\")
			continue
		}
		if l = strings.TrimSpace(cur + l); l != "" {
			out = append(out, l)
		}
		cur = ""
	}
	return out
}

var entryIDLine = regexp.MustCompile(`(?m)^ID:\s+(\S+)`)

// TestReadmeTour runs README.md's quick tour, command by command as
// written, against `writ dev`: users found README verbs failing while unit
// tests passed.
func TestReadmeTour(t *testing.T) {
	dir := shortTempDir(t)
	sh := newShell(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(readmeBlock(t, "A batch file is YAML or JSON:", "yaml")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "guard.cedar"), []byte(readmeBlock(t, "and a guardrail file is Cedar", "cedar")), 0o600); err != nil {
		t.Fatal(err)
	}
	// As the tour starts it, on ports of its own so tests can run side by side.
	start := commandLines(readmeBlock(t, "Start a local trust domain and leave it running:", "sh"))
	if len(start) != 1 || start[0] != "go run ./cmd/writ dev" {
		t.Fatalf("the tour starts writ dev differently now: %q; update this test", start)
	}
	sh.start("writ dev --listen 127.0.0.1:0 --ops-address 127.0.0.1:0", filepath.Join(dir, ".writ", "admin.sock"))

	_, haveOpenSSL := exec.LookPath("openssl")
	var id string
	ran := map[string]bool{}
	for _, line := range commandLines(readmeBlock(t, "In another terminal (`make build` first", "sh")) {
		if strings.HasPrefix(line, "openssl ") && haveOpenSSL != nil {
			continue
		}
		if strings.Contains(line, "<ID>") {
			if id == "" {
				t.Fatalf("%s: no entry ID was printed before it", line)
			}
			line = strings.ReplaceAll(line, "<ID>", id)
		}
		out := sh.run(line)
		if m := entryIDLine.FindStringSubmatch(out); m != nil && id == "" {
			id = m[1]
		}
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "writ" {
			verb := f[1]
			if len(f) >= 3 && !strings.HasPrefix(f[2], "-") {
				verb += " " + f[2]
			}
			ran[verb] = true
		}
	}
	// The verbs users reported failing are in the tour and ran.
	for _, verb := range []string{"status", "entry create", "entry update", "svid mint", "lock create", "audit tail", "audit verify", "policy validate"} {
		if !ran[verb] {
			t.Errorf("the README tour no longer runs writ %s", verb)
		}
	}

	// The first-terminal hint: any SPIFFE client gets an SVID from the agent.
	for _, line := range commandLines(readmeBlock(t, "In another terminal any SPIFFE client gets an SVID:", "sh")) {
		if strings.HasPrefix(line, "openssl ") && haveOpenSSL != nil {
			continue
		}
		sh.run(strings.ReplaceAll(line, "go run ./cmd/writ", "writ"))
	}
	if _, err := os.Stat(filepath.Join(dir, "id", "svid.key")); err != nil {
		t.Errorf("writ fetch --out ./id: %v", err)
	}
}

func dialUnix(path string) (net.Conn, error) { return net.Dial("unix", path) }
