package container

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

var fakePeer = workload.Peer{PID: fakePID, UID: 0, GID: 0}

const (
	id            = "3f4e2a9c1b7d8e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f"
	outerID       = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	podUID        = "1234abcd-5678-90ab-cdef-1234567890ab"
	podUIDSystemd = "1234abcd_5678_90ab_cdef_1234567890ab"
	// staticPodUID is the hash the kubelet gives a static pod.
	staticPodUID = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
)

// v1 returns a cgroup v1 file with every hierarchy at path, as a container
// runtime leaves them.
func v1(path string) string {
	return "12:pids:" + path + "\n11:memory:" + path + "\n4:cpu,cpuacct:" + path +
		"\n2:devices:" + path + "\n1:name=systemd:" + path + "\n"
}

func sels(values ...string) []string {
	for i, v := range values {
		values[i] = "container:" + v
	}
	return values
}

// recorded are /proc/PID/cgroup files as hosts write them, and the
// selectors each must give.
var recorded = []struct {
	name, cgroup string
	want         []string
}{
	{"docker cgroupfs v1", "12:memory:/docker/" + id + "\n",
		sels("id:"+id, "runtime:docker")},
	{"docker cgroupfs v1, all hierarchies", v1("/docker/" + id),
		sels("id:"+id, "runtime:docker")},
	{"docker cgroupfs v2", "0::/docker/" + id + "\n",
		sels("id:"+id, "runtime:docker")},
	{"docker systemd v2", "0::/system.slice/docker-" + id + ".scope\n",
		sels("id:"+id, "runtime:docker")},
	{"docker systemd v1", v1("/system.slice/docker-"+id+".scope") + "0::/\n",
		sels("id:"+id, "runtime:docker")},
	{"containerd kubernetes cgroupfs v1", v1("/kubepods/burstable/pod" + podUID + "/" + id),
		sels("id:"+id, "pod_uid:"+podUID, "qos:burstable")},
	{"containerd kubernetes cgroupfs v2", "0::/kubepods/besteffort/pod" + podUID + "/" + id + "\n",
		sels("id:"+id, "pod_uid:"+podUID, "qos:besteffort")},
	{"containerd kubernetes systemd v2", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + podUIDSystemd + ".slice/cri-containerd-" + id + ".scope\n",
		sels("id:"+id, "pod_uid:"+podUID, "qos:burstable", "runtime:containerd")},
	{"containerd kubernetes systemd v1", v1("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + podUIDSystemd + ".slice/cri-containerd-" + id + ".scope"),
		sels("id:"+id, "pod_uid:"+podUID, "qos:besteffort", "runtime:containerd")},
	{"cri-o systemd v2", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + podUIDSystemd + ".slice/crio-" + id + ".scope\n",
		sels("id:"+id, "pod_uid:"+podUID, "qos:burstable", "runtime:cri-o")},
	{"cri-o cgroupfs v1", v1("/kubepods/burstable/pod" + podUID + "/crio-" + id),
		sels("id:"+id, "pod_uid:"+podUID, "qos:burstable", "runtime:cri-o")},
	{"cri-o conmon systemd v2", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + podUIDSystemd + ".slice/crio-conmon-" + id + ".scope\n",
		nil},
	{"cri-o conmon cgroupfs v1", v1("/kubepods/burstable/pod" + podUID + "/crio-conmon-" + id),
		nil},
	{"guaranteed cgroupfs", "0::/kubepods/pod" + podUID + "/" + id + "\n",
		sels("id:"+id, "pod_uid:"+podUID, "qos:guaranteed")},
	{"guaranteed systemd", "0::/kubepods.slice/kubepods-pod" + podUIDSystemd + ".slice/cri-containerd-" + id + ".scope\n",
		sels("id:"+id, "pod_uid:"+podUID, "qos:guaranteed", "runtime:containerd")},
	{"static pod", "0::/kubepods/burstable/pod" + staticPodUID + "/" + id + "\n",
		sels("id:"+id, "pod_uid:"+staticPodUID, "qos:burstable")},
	{"docker in docker", v1("/docker/" + outerID + "/docker/" + id),
		sels("id:"+id, "runtime:docker")},
	{"kind node", "0::/system.slice/docker-" + outerID + ".scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod" + podUIDSystemd + ".slice/cri-containerd-" + id + ".scope\n",
		sels("id:"+id, "pod_uid:"+podUID, "qos:burstable", "runtime:containerd")},
	{"kubernetes in a docker container, cgroupfs", "0::/docker/" + outerID + "/kubepods/burstable/pod" + podUID + "/" + id + "\n",
		sels("id:"+id, "pod_uid:"+podUID, "qos:burstable")},
	{"docker in a pod's container", "0::/kubepods/burstable/pod" + podUID + "/" + outerID + "/docker/" + id + "\n",
		sels("id:"+id, "runtime:docker")},
	{"systemd inside a container", "0::/system.slice/docker-" + id + ".scope/init.scope\n",
		sels("id:"+id, "runtime:docker")},
	{"pod slice outside kubepods", "0::/system.slice/foo-pod" + podUIDSystemd + ".slice/docker-" + id + ".scope\n",
		sels("id:"+id, "runtime:docker")},
	{"pod cgroup outside kubepods", "0::/pods/pod" + podUID + "/" + id + "\n",
		sels("id:" + id)},
	{"host service", "0::/system.slice/nginx.service\n", nil},
	{"v1 host", v1("/user.slice/user-1000.slice/session-3.scope"), nil},
	{"root", "0::/\n", nil},
	{"short id", "0::/docker/" + id[:63] + "\n", nil},
	{"uppercase id", "0::/docker/" + strings.ToUpper(id) + "\n", nil},
	{"pod without a container", "0::/kubepods/burstable/pod" + podUID + "\n", nil},
}

func TestAttestRecorded(t *testing.T) {
	for _, tc := range recorded {
		t.Run(tc.name, func(t *testing.T) {
			a := fakeAttestor(t, tc.cgroup)
			got, err := a.Attest(context.Background(), fakePeer)
			if err != nil {
				t.Fatal(err)
			}
			checkSelectors(t, got)
			if got := selectorStrings(got); !slices.Equal(got, tc.want) {
				t.Errorf("Attest =\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestAttestRefusesDisagreeingHierarchies(t *testing.T) {
	for name, cgroup := range map[string]string{
		"two ids":          "12:memory:/docker/" + id + "\n4:cpu:/docker/" + outerID + "\n",
		"v1 and v2":        "1:name=systemd:/docker/" + id + "\n0::/system.slice/docker-" + outerID + ".scope\n",
		"conmon and other": "12:memory:/kubepods/burstable/pod" + podUID + "/crio-conmon-" + outerID + "\n4:cpu:/kubepods/burstable/pod" + podUID + "/crio-" + id + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			a := fakeAttestor(t, cgroup)
			got, err := a.Attest(context.Background(), fakePeer)
			if err == nil {
				t.Fatalf("Attest = %v, want an error", got)
			}
			if !strings.Contains(err.Error(), id) || !strings.Contains(err.Error(), outerID) {
				t.Errorf("error %q should name both container ids", err)
			}
		})
	}
}

func TestAttestRefusesBadPodUID(t *testing.T) {
	for name, cgroup := range map[string]string{
		"cgroupfs underscores": "0::/kubepods/burstable/pod" + podUIDSystemd + "/" + id + "\n",
		"cgroupfs uppercase":   "0::/kubepods/pod" + strings.ToUpper(podUID) + "/" + id + "\n",
		"systemd not a uuid":   "0::/kubepods.slice/kubepods-pod12_34.slice/cri-containerd-" + id + ".scope\n",
		"systemd empty":        "0::/kubepods.slice/kubepods-burstable-pod.slice/crio-" + id + ".scope\n",
	} {
		t.Run(name, func(t *testing.T) {
			a := fakeAttestor(t, cgroup)
			got, err := a.Attest(context.Background(), fakePeer)
			if err == nil || !strings.Contains(err.Error(), "pod uid") || !strings.Contains(err.Error(), strconv.Itoa(fakePID)) {
				t.Fatalf("Attest = %v, %v; want an error naming the pid and the pod uid", got, err)
			}
		})
	}
}

func TestAttestRefusesMalformedCgroupFile(t *testing.T) {
	a := fakeAttestor(t, "docker/"+id+"\n")
	if got, err := a.Attest(context.Background(), fakePeer); err == nil || !strings.Contains(err.Error(), "cgroup") {
		t.Fatalf("Attest = %v, %v; want an error about the cgroup file", got, err)
	}
}

func TestAttestRefusesReusedPID(t *testing.T) {
	tree := proctest.NewTree(t)
	tree.AddProcess(t, fakePID, 5000, recorded[0].cgroup)
	a := New(Options{ProcRoot: tree.Root})
	a.beforeRecheck = func() { tree.SetStart(t, fakePID, 5001) }
	got, err := a.Attest(context.Background(), fakePeer)
	if err == nil || !strings.Contains(err.Error(), "reused") {
		t.Fatalf("Attest = %v, %v; want an error saying the pid was reused", got, err)
	}
}

func TestAttestRefusesProcessExitingDuringAttestation(t *testing.T) {
	tree := proctest.NewTree(t)
	tree.AddProcess(t, fakePID, 5000, recorded[0].cgroup)
	a := New(Options{ProcRoot: tree.Root})
	a.beforeRecheck = func() { tree.Remove(t, fakePID) }
	got, err := a.Attest(context.Background(), fakePeer)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("Attest = %v, %v; want an error saying the process exited", got, err)
	}
}

func TestAttestMissingProcess(t *testing.T) {
	a := fakeAttestor(t, recorded[0].cgroup)
	got, err := a.Attest(context.Background(), workload.Peer{PID: fakePID + 1})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("Attest = %v, %v; want an error saying the process exited", got, err)
	}
}

// TestAttestOwnProcess attests the test itself, which may run in a
// container or not, so only checks that it succeeds with valid selectors.
func TestAttestOwnProcess(t *testing.T) {
	got, err := New(Options{}).Attest(context.Background(), workload.Peer{PID: os.Getpid(), UID: os.Getuid(), GID: os.Getgid()})
	if err != nil {
		t.Fatal(err)
	}
	checkSelectors(t, got)
	t.Logf("selectors: %v", got)
}

func FuzzParseCgroup(f *testing.F) {
	for _, tc := range recorded {
		f.Add(tc.cgroup)
	}
	f.Add("0::/kubepods/burstable/pod" + podUIDSystemd + "/" + id + "\n")
	if data, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		f.Add(string(data))
	}
	f.Fuzz(func(t *testing.T, data string) {
		cgs, err := procfs.ParseCgroup([]byte(data))
		if err != nil {
			return
		}
		got, err := selectorsOf(cgs)
		if err != nil {
			return
		}
		checkSelectors(t, got)
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
