package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a writ server or agent running as its own process, so its memory
// can be read from /proc and its clients pay the real cost of a socket.
type proc struct {
	name   string
	cmd    *exec.Cmd
	log    string // file holding its stdout and stderr, shown when it fails
	exited chan struct{}
}

// start runs bin with args and env added to ours; output goes to a log file
// in dir rather than our terminal, so the report stays readable.
func start(name, bin, dir string, env []string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() { cmd.Wait(); logFile.Close(); close(p.exited) }()
	return p, nil
}

// stop asks politely, then kills: a stuck child must not outlive the run.
func (p *proc) stop() {
	if p == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// failed reports whether the process has already exited, with its log.
func (p *proc) failed() error {
	select {
	case <-p.exited:
		b, _ := os.ReadFile(p.log)
		return fmt.Errorf("%s exited: %s", p.name, tail(string(b), 2000))
	default:
		return nil
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// waitSocket waits until something accepts on a unix socket, or p dies.
func waitSocket(ctx context.Context, p *proc, path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err := p.failed(); err != nil {
			return err
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s: socket %s did not come up within %v", p.name, path, timeout)
}

// rssKB reads VmRSS from /proc/PID/status, the resident memory a node's
// operator sees in top or a container's usage.
func rssKB(p *proc) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "VmRSS:" {
			return strconv.ParseInt(fields[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", p.cmd.Process.Pid)
}

// cli runs one writ client command against the admin socket.
func cli(ctx context.Context, bin string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("writ %s: %v: %s", strings.Join(args[:2], " "), err, tail(stderr.String(), 2000))
	}
	return stdout.Bytes(), nil
}

type joinToken struct {
	Token   string `json:"token"`
	AgentID string `json:"agent_id"`
}

func createToken(ctx context.Context, bin, socket string) (joinToken, error) {
	var tok joinToken
	out, err := cli(ctx, bin, "token", "create", "--socket", socket, "--json")
	if err != nil {
		return tok, err
	}
	if err := json.Unmarshal(out, &tok); err != nil || tok.Token == "" {
		return tok, fmt.Errorf("token create: unexpected output %q: %v", out, err)
	}
	return tok, nil
}

// freeAddr picks a loopback port nobody holds right now; the small race
// until the server binds it is acceptable for a benchmark.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// buildWrit compiles the writ binary when -writ is not given.
func buildWrit(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "writ")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "writ.dev/writ/cmd/writ")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v: %s", err, out)
	}
	return bin, nil
}
