package container

import (
	"fmt"
	"strings"
	"writ.dev/writ/internal/quote"

	"writ.dev/writ/attest/workload/internal/procfs"
	"writ.dev/writ/identity"
)

// idLen is the length of a container id: 64 lowercase hex digits, which
// docker, containerd and CRI-O all use.
const idLen = 64

// scopePrefixes are the prefixes runtimes give a container's cgroup name,
// as "docker-<id>.scope" with the systemd cgroup driver or "crio-<id>"
// with cgroupfs.
var scopePrefixes = []struct{ prefix, runtime string }{
	{"docker-", "docker"},
	{"cri-containerd-", "containerd"},
	{"crio-", "cri-o"},
}

// conmonPrefix starts the cgroup name of CRI-O's conmon, the monitor that
// runs beside a container. It carries the container's id but is not the
// container.
const conmonPrefix = "crio-conmon-"

// finding is what one cgroup path says about the container a process is
// in. The zero value means no container.
type finding struct {
	id, runtime string
	podUID, qos string
	// conmon is set when the process is the conmon of container id.
	conmon bool
}

// selectorsOf returns the selectors of a process in cgroups cgs. On cgroup
// v1 there is a line per hierarchy, and lines that name no container (a
// hierarchy the runtime does not use) are passed over; lines that name one
// must name the same.
func selectorsOf(cgs []procfs.Cgroup) ([]identity.Selector, error) {
	var found finding
	var from procfs.Cgroup
	for _, cg := range cgs {
		f, err := parsePath(cg.Path)
		if err != nil {
			return nil, fmt.Errorf("%s cgroup %s: %w", cg.Label(), quote.String(cg.Path), err)
		}
		if f == (finding{}) {
			continue
		}
		if found != (finding{}) && f != found {
			return nil, fmt.Errorf("%s puts the process in %s but %s puts it in %s; refusing to pick one",
				from.Label(), found, cg.Label(), f)
		}
		found, from = f, cg
	}
	return found.selectors(), nil
}

// parsePath finds the innermost container in cgroup path: with docker in
// docker, or Kubernetes in a container, the process is in the container
// nearest to it. It also finds the container's pod, if the container's
// cgroup is in a Kubernetes pod's.
func parsePath(path string) (finding, error) {
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for i := len(segs) - 1; i >= 0; i-- {
		f, ok := containerSegment(segs[:i], segs[i])
		if !ok {
			continue
		}
		if f.conmon {
			return f, nil
		}
		uid, qos, err := podOf(segs[:i])
		if err != nil {
			return finding{}, err
		}
		f.podUID, f.qos = uid, qos
		return f, nil
	}
	return finding{}, nil
}

// containerSegment reads one cgroup name, seg, below the cgroups above.
// A bare id is docker's own cgroupfs layout ("/docker/<id>") or a
// Kubernetes runtime's ("/kubepods/burstable/pod<uid>/<id>"), which does
// not say which runtime.
func containerSegment(above []string, seg string) (finding, bool) {
	if id, ok := idAfter(seg, conmonPrefix); ok {
		return finding{id: id, conmon: true}, true
	}
	for _, p := range scopePrefixes {
		if id, ok := idAfter(seg, p.prefix); ok {
			return finding{id: id, runtime: p.runtime}, true
		}
	}
	if !isID(seg) {
		return finding{}, false
	}
	f := finding{id: seg}
	if len(above) > 0 && above[len(above)-1] == "docker" {
		f.runtime = "docker"
	}
	return f, true
}

// idAfter returns the container id in seg, prefix + id with or without a
// ".scope" suffix.
func idAfter(seg, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(seg, prefix)
	if !ok {
		return "", false
	}
	rest = strings.TrimSuffix(rest, ".scope")
	return rest, isID(rest)
}

func isID(s string) bool {
	return len(s) == idLen && isLowerHex(s)
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !(s[i] >= '0' && s[i] <= '9' || s[i] >= 'a' && s[i] <= 'f') {
			return false
		}
	}
	return true
}

// podOf returns the uid and QoS class of the Kubernetes pod whose cgroup
// is the last of above, the parent of a container's cgroup, or "" if it is
// not a pod's. A container nested in another container of a pod is not
// reported as the pod's: only the pod's own containers are.
func podOf(above []string) (uid, qos string, err error) {
	if len(above) == 0 {
		return "", "", nil
	}
	seg := above[len(above)-1]
	if name, ok := strings.CutSuffix(seg, ".slice"); ok {
		return systemdPod(name)
	}
	return cgroupfsPod(above[:len(above)-1], seg)
}

// systemdPod reads a pod slice name of the kubelet's systemd cgroup
// driver, without ".slice": "kubepods-burstable-pod<uid>" or, for a
// guaranteed pod, "kubepods-pod<uid>", perhaps after a prefix ending in
// '-' when the kubelet's cgroup root is not the root. systemd gives '-' a
// meaning in slice names, so the kubelet writes the uid's dashes as '_'.
func systemdPod(name string) (uid, qos string, err error) {
	i := strings.LastIndex(name, "-pod")
	if i < 0 {
		return "", "", nil
	}
	qos, ok := systemdQOS(name[:i])
	if !ok {
		return "", "", nil
	}
	return checkPodUID(strings.ReplaceAll(name[i+len("-pod"):], "_", "-"), qos)
}

// systemdQOS returns the QoS class named by head, the pod slice name
// before "-pod".
func systemdQOS(head string) (string, bool) {
	for _, c := range []struct{ suffix, qos string }{
		{"kubepods", "guaranteed"},
		{"kubepods-burstable", "burstable"},
		{"kubepods-besteffort", "besteffort"},
	} {
		if rest, ok := strings.CutSuffix(head, c.suffix); ok && (rest == "" || strings.HasSuffix(rest, "-")) {
			return c.qos, true
		}
	}
	return "", false
}

// cgroupfsPod reads a pod cgroup name of the kubelet's cgroupfs driver,
// "pod<uid>", in "kubepods/burstable", "kubepods/besteffort" or, for a
// guaranteed pod, directly in "kubepods".
func cgroupfsPod(above []string, seg string) (uid, qos string, err error) {
	raw, ok := strings.CutPrefix(seg, "pod")
	if !ok {
		return "", "", nil
	}
	n := len(above)
	switch {
	case n >= 1 && above[n-1] == "kubepods":
		qos = "guaranteed"
	case n >= 2 && above[n-2] == "kubepods" && (above[n-1] == "burstable" || above[n-1] == "besteffort"):
		qos = above[n-1]
	default:
		return "", "", nil
	}
	return checkPodUID(raw, qos)
}

// checkPodUID refuses a pod uid that Kubernetes would not have made: a
// lowercase UUID, or for a static pod the 32 hex digits of a hash.
func checkPodUID(uid, qos string) (string, string, error) {
	if isUUID(uid) || len(uid) == 32 && isLowerHex(uid) {
		return uid, qos, nil
	}
	return "", "", fmt.Errorf("pod uid %s is neither a lowercase UUID nor 32 hex digits, "+
		"which are what Kubernetes gives pods; refusing to guess which pod this is", quote.Max(uid, 80))
}

// isUUID reports whether s is a UUID in lowercase 8-4-4-4-12 form.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if s[i] != '-' {
				return false
			}
		} else if !isLowerHex(s[i : i+1]) {
			return false
		}
	}
	return true
}

// String describes f in errors.
func (f finding) String() string {
	if f.conmon {
		return "the conmon of container " + f.id
	}
	s := "container " + f.id
	if f.runtime != "" {
		s += " (" + f.runtime + ")"
	}
	if f.podUID != "" {
		s += " of pod " + f.podUID + " (" + f.qos + ")"
	}
	return s
}

// selectors returns f's selectors: none for no container or for conmon.
func (f finding) selectors() []identity.Selector {
	if f.id == "" || f.conmon {
		return nil
	}
	values := []string{"id:" + f.id}
	if f.podUID != "" {
		values = append(values, "pod_uid:"+f.podUID, "qos:"+f.qos)
	}
	if f.runtime != "" {
		values = append(values, "runtime:"+f.runtime)
	}
	sels := make([]identity.Selector, len(values))
	for i, v := range values {
		sels[i] = identity.Selector{Type: SelectorType, Value: v}
	}
	return sels
}
