package procfs

import (
	"os"
	"slices"
	"strings"
	"testing"
)

func TestParseCgroup(t *testing.T) {
	data := "12:memory:/docker/abc\n4:cpu,cpuacct:/a:b\n1:name=systemd:/system.slice/x.service\n0::/\n"
	got, err := ParseCgroup([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	want := []Cgroup{
		{HierarchyID: 12, Controllers: []string{"memory"}, Path: "/docker/abc"},
		{HierarchyID: 4, Controllers: []string{"cpu", "cpuacct"}, Path: "/a:b"},
		{HierarchyID: 1, Controllers: []string{"name=systemd"}, Path: "/system.slice/x.service"},
		{HierarchyID: 0, Path: "/"},
	}
	if !slices.EqualFunc(got, want, func(a, b Cgroup) bool {
		return a.HierarchyID == b.HierarchyID && slices.Equal(a.Controllers, b.Controllers) && a.Path == b.Path
	}) {
		t.Fatalf("ParseCgroup = %+v, want %+v", got, want)
	}
	if !got[3].Unified() || got[2].Unified() {
		t.Errorf("Unified: only the 0:: line is the v2 hierarchy")
	}
}

func TestParseCgroupRefusesMalformed(t *testing.T) {
	for name, bad := range map[string]string{
		"empty":            "",
		"blank line":       "0::/\n\n",
		"two fields":       "0:/\n",
		"relative path":    "0::system.slice\n",
		"no path":          "0::\n",
		"bad id":           "x::/\n",
		"negative id":      "-1::/\n",
		"repeated":         "0::/\n0::/a\n",
		"v1 numbered zero": "0:memory:/\n",
		"control chars":    "0::/a\x1b[31m\n1:\x00:x\n",
	} {
		if got, err := ParseCgroup([]byte(bad)); err == nil {
			t.Errorf("%s: ParseCgroup = %+v, want an error", name, got)
		} else {
			checkParseError(t, err)
		}
	}
}

func TestParseCgroupOwnProcess(t *testing.T) {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Skipf("no /proc/self/cgroup: %v", err)
	}
	if _, err := ParseCgroup(data); err != nil {
		t.Fatalf("ParseCgroup(%q): %v", data, err)
	}
}

func FuzzParseCgroup(f *testing.F) {
	f.Add("0::/system.slice/nginx.service\n")
	f.Add("12:memory:/docker/x\n1:name=systemd:/a:b\n0::/\n")
	f.Add("0::/\n0::/\n")
	if data, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		f.Add(string(data))
	}
	f.Fuzz(func(t *testing.T, data string) {
		cgs, err := ParseCgroup([]byte(data))
		if err != nil {
			checkParseError(t, err)
			return
		}
		for _, cg := range cgs {
			if !strings.HasPrefix(cg.Path, "/") {
				t.Fatalf("accepted path %q not starting with '/'", cg.Path)
			}
		}
	})
}
