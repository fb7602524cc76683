package systemd

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"writ.dev/writ/attest/workload"
	"writ.dev/writ/attest/workload/internal/procfs"
	"writ.dev/writ/attest/workload/internal/proctest"
	"writ.dev/writ/identity"
)

const fakePID = 4242

var fakePeer = workload.Peer{PID: fakePID, UID: 1000, GID: 1000}

const dockerID = "3f4e2a9c1b7d8e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f"

// recorded are /proc/PID/cgroup files as hosts write them, and the
// selectors each must give.
var recorded = []struct {
	name, cgroup string
	want         []string
}{
	{"v2 service", "0::/system.slice/nginx.service\n",
		[]string{"systemd:slice:system.slice", "systemd:unit:nginx.service"}},
	{"v1 service", "12:memory:/system.slice/nginx.service\n3:cpu,cpuacct:/system.slice/nginx.service\n1:name=systemd:/system.slice/nginx.service\n",
		[]string{"systemd:slice:system.slice", "systemd:unit:nginx.service"}},
	{"v1 with an unused v2 hierarchy", "12:memory:/\n1:name=systemd:/system.slice/cron.service\n0::/\n",
		[]string{"systemd:slice:system.slice", "systemd:unit:cron.service"}},
	{"hybrid", "1:name=systemd:/system.slice/sshd.service\n0::/system.slice/sshd.service\n",
		[]string{"systemd:slice:system.slice", "systemd:unit:sshd.service"}},
	{"session scope", "0::/user.slice/user-1000.slice/session-3.scope\n",
		[]string{"systemd:slice:user-1000.slice", "systemd:unit:session-3.scope"}},
	{"docker scope", "0::/system.slice/docker-" + dockerID + ".scope\n",
		[]string{"systemd:slice:system.slice", "systemd:unit:docker-" + dockerID + ".scope"}},
	{"user unit", "0::/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service\n",
		[]string{"systemd:slice:user-1000.slice", "systemd:unit:user@1000.service", "systemd:user_slice:app.slice", "systemd:user_unit:foo.service"}},
	{"user manager itself", "0::/user.slice/user-1000.slice/user@1000.service/init.scope\n",
		[]string{"systemd:slice:user-1000.slice", "systemd:unit:user@1000.service", "systemd:user_unit:init.scope"}},
	{"user manager slice without a unit", "1:name=systemd:/user.slice/user-1000.slice/user@1000.service/app.slice\n",
		[]string{"systemd:slice:user-1000.slice", "systemd:unit:user@1000.service"}},
	{"init", "0::/init.scope\n",
		[]string{"systemd:slice:-.slice", "systemd:unit:init.scope"}},
	{"escaped and template names", `0::/system.slice/system-systemd\x2dfsck.slice/systemd-fsck@dev-disk-by\x2duuid-1234.service` + "\n",
		[]string{`systemd:slice:system-systemd\x2dfsck.slice`, `systemd:unit:systemd-fsck@dev-disk-by\x2duuid-1234.service`}},
	{"delegated subtree", "0::/system.slice/docker-" + dockerID + ".scope/system.slice/nginx.service\n",
		[]string{"systemd:slice:system.slice", "systemd:unit:docker-" + dockerID + ".scope"}},
	{"kubernetes", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice/cri-containerd-" + dockerID + ".scope\n",
		[]string{"systemd:slice:kubepods-burstable-pod1234_5678.slice", "systemd:unit:cri-containerd-" + dockerID + ".scope"}},
	{"root", "0::/\n", nil},
	{"slice only", "1:name=systemd:/system.slice\n", nil},
	{"no systemd", "12:memory:/docker/" + dockerID + "\n4:cpu:/docker/" + dockerID + "\n", nil},
	{"cgroupfs container", "0::/docker/" + dockerID + "\n", nil},
	{"other namespace", "0::/../../system.slice/nginx.service\n", nil},
}

func TestAttestRecorded(t *testing.T) {
	for _, tc := range recorded {
		t.Run(tc.name, func(t *testing.T) {
			a := fakeAttestor(t, tc.cgroup)
			sels, err := a.Attest(context.Background(), fakePeer)
			if err != nil {
				t.Fatal(err)
			}
			checkSelectors(t, sels)
			if got := selectorStrings(sels); !slices.Equal(got, tc.want) {
				t.Errorf("Attest = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestAttestRefusesInvalidUnitNames(t *testing.T) {
	for name, cgroup := range map[string]string{
		"space":               "0::/system.slice/my app.service\n",
		"non-ASCII":           "0::/system.slice/caf\u00e9.service\n",
		"control character":   "0::/system.slice/a\x1b[31m.service\n",
		"bad slice":           "0::/sys tem.slice/nginx.service\n",
		"too long":            "0::/system.slice/" + strings.Repeat("a", 250) + ".service\n",
		"empty name":          "0::/system.slice/.service\n",
		"two @":               "0::/system.slice/a@b@c.service\n",
		"bad user unit":       "0::/user.slice/user-1000.slice/user@1000.service/app.slice/f%o.service\n",
		"bad name=systemd v1": "1:name=systemd:/system.slice/a*b.scope\n0::/system.slice/ok.service\n",
	} {
		t.Run(name, func(t *testing.T) {
			a := fakeAttestor(t, cgroup)
			sels, err := a.Attest(context.Background(), fakePeer)
			if err == nil {
				t.Fatalf("Attest = %v, want an error", sels)
			}
			if !strings.Contains(err.Error(), "unit name") || !strings.Contains(err.Error(), strconv.Itoa(fakePID)) {
				t.Errorf("error %q should name the pid and say the unit name is invalid", err)
			}
		})
	}
}

func TestAttestRefusesMalformedCgroupFile(t *testing.T) {
	a := fakeAttestor(t, "system.slice/nginx.service\n")
	if sels, err := a.Attest(context.Background(), fakePeer); err == nil || !strings.Contains(err.Error(), "cgroup") {
		t.Fatalf("Attest = %v, %v; want an error about the cgroup file", sels, err)
	}
}

func TestAttestRefusesReusedPID(t *testing.T) {
	tree := proctest.NewTree(t)
	tree.AddProcess(t, fakePID, 5000, recorded[0].cgroup)
	a := New(Options{ProcRoot: tree.Root})
	a.beforeRecheck = func() { tree.SetStart(t, fakePID, 5001) }
	sels, err := a.Attest(context.Background(), fakePeer)
	if err == nil || !strings.Contains(err.Error(), "reused") {
		t.Fatalf("Attest = %v, %v; want an error saying the pid was reused", sels, err)
	}
}

func TestAttestRefusesProcessExitingDuringAttestation(t *testing.T) {
	tree := proctest.NewTree(t)
	tree.AddProcess(t, fakePID, 5000, recorded[0].cgroup)
	a := New(Options{ProcRoot: tree.Root})
	a.beforeRecheck = func() { tree.Remove(t, fakePID) }
	sels, err := a.Attest(context.Background(), fakePeer)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("Attest = %v, %v; want an error saying the process exited", sels, err)
	}
}

func TestAttestMissingProcess(t *testing.T) {
	a := fakeAttestor(t, recorded[0].cgroup)
	sels, err := a.Attest(context.Background(), workload.Peer{PID: fakePID + 1})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("Attest = %v, %v; want an error saying the process exited", sels, err)
	}
}

// TestAttestOwnProcess attests the test itself, which may run in any unit
// or none, so only checks that it succeeds with valid selectors.
func TestAttestOwnProcess(t *testing.T) {
	sels, err := New(Options{}).Attest(context.Background(), workload.Peer{PID: os.Getpid(), UID: os.Getuid(), GID: os.Getgid()})
	if err != nil {
		t.Fatal(err)
	}
	checkSelectors(t, sels)
	t.Logf("selectors: %v", sels)
}

func FuzzParseCgroup(f *testing.F) {
	for _, tc := range recorded {
		f.Add(tc.cgroup)
	}
	f.Add("0::/user.slice/user-1000.slice/user@1000.service/a\\x2db.slice/b@c.service/x\n")
	if data, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		f.Add(string(data))
	}
	f.Fuzz(func(t *testing.T, data string) {
		cgs, err := procfs.ParseCgroup([]byte(data))
		if err != nil {
			return
		}
		sels, err := selectorsOf(cgs)
		if err != nil {
			return
		}
		checkSelectors(t, sels)
	})
}

// fakeAttestor returns an Attestor over a fake /proc holding one process
// with the given cgroup file.
func fakeAttestor(t *testing.T, cgroup string) *Attestor {
	t.Helper()
	tree := proctest.NewTree(t)
	tree.AddProcess(t, fakePID, 5000, cgroup)
	return New(Options{ProcRoot: tree.Root})
}

// checkSelectors checks that sels are selectors the rest of writ accepts,
// of this attestor's type, in canonical order.
func checkSelectors(t *testing.T, sels []identity.Selector) {
	t.Helper()
	for i, sel := range sels {
		if err := identity.ValidateSelector("selectors["+strconv.Itoa(i)+"]", sel); err != nil {
			t.Errorf("invalid selector: %v", err)
		}
		if sel.Type != SelectorType {
			t.Errorf("selector %s is not of type %q", sel, SelectorType)
		}
	}
	if !slices.IsSortedFunc(sels, func(a, b identity.Selector) int { return strings.Compare(a.Value, b.Value) }) {
		t.Errorf("selectors are not sorted: %v", sels)
	}
}

func selectorStrings(sels []identity.Selector) []string {
	var ss []string
	for _, sel := range sels {
		ss = append(ss, sel.String())
	}
	return ss
}
