package gpu

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// baseSpec is what a runtime hands the injector: a deny-all device rule,
// the image's environment (CUDA images set NVIDIA_VISIBLE_DEVICES=all), a
// mount and a device of its own.
func baseSpec() *specs.Spec {
	return &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Args: []string{"python", "handler.py"},
			Env:  []string{"PATH=/usr/bin:/bin", "NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_DRIVER_CAPABILITIES=compute,utility"},
		},
		Root:   &specs.Root{Path: "rootfs"},
		Mounts: []specs.Mount{{Destination: "/proc", Type: "proc", Source: "proc"}},
		Linux: &specs.Linux{
			Devices: []specs.LinuxDevice{{Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229}},
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
		},
	}
}

func envMap(env []string) map[string]string {
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if _, dup := m[k]; dup {
			m[k] = "DUPLICATE"
			continue
		}
		m[k] = v
	}
	return m
}

func specJSON(t *testing.T, s *specs.Spec) string {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type devKey struct {
	path         string
	major, minor int64
}

// checkHostInjection checks that spec got exactly the GPUs with the given
// minors (in order) plus the fixture's control nodes, the matching cgroup
// rules, the driver mounts and the environment.
func checkHostInjection(t *testing.T, spec *specs.Spec, f hostFixture, minors []int, uuids []string) {
	t.Helper()
	// Devices: the image's own, then the GPUs, then control nodes; no
	// nvidia-uvm-tools (not on the fixture host).
	want := []devKey{{"/dev/fuse", 10, 229}}
	for _, m := range minors {
		want = append(want, devKey{fmt.Sprintf("/dev/nvidia%d", m), nvidiaMajor, int64(m)})
	}
	want = append(want,
		devKey{"/dev/nvidiactl", nvidiaMajor, 255},
		devKey{"/dev/nvidia-uvm", uvmMajor, 0},
		devKey{"/dev/nvidia-modeset", nvidiaMajor, 254})
	var got []devKey
	for _, d := range spec.Linux.Devices {
		got = append(got, devKey{d.Path, d.Major, d.Minor})
		if d.Path == "/dev/fuse" {
			continue
		}
		if d.Type != "c" || d.FileMode == nil || *d.FileMode != 0o666 || d.UID == nil || *d.UID != 0 || d.GID == nil || *d.GID != 0 {
			t.Errorf("device %s: type %q mode %v uid %v gid %v; want c 0666 0 0", d.Path, d.Type, d.FileMode, d.UID, d.GID)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("linux.devices =\n  %v\nwant\n  %v", got, want)
	}

	// Cgroup rules: the deny-all first, then one allow per node.
	rules := spec.Linux.Resources.Devices
	if len(rules) == 0 || rules[0].Allow || rules[0].Access != "rwm" {
		t.Fatalf("deny-all rule lost or moved: %+v", rules)
	}
	var allowed []devKey
	for _, r := range rules[1:] {
		if !r.Allow || r.Type != "c" || r.Access != "rwm" || r.Major == nil || r.Minor == nil {
			t.Errorf("unexpected rule %+v", r)
			continue
		}
		allowed = append(allowed, devKey{"", *r.Major, *r.Minor})
	}
	var wantAllowed []devKey
	for _, w := range want[1:] {
		wantAllowed = append(wantAllowed, devKey{"", w.major, w.minor})
	}
	if !reflect.DeepEqual(allowed, wantAllowed) {
		t.Errorf("allow rules = %v, want %v", allowed, wantAllowed)
	}
	for m := range 8 {
		if slices.Contains(minors, m) {
			continue
		}
		for _, r := range rules {
			if r.Major != nil && *r.Major == nvidiaMajor && r.Minor != nil && *r.Minor == int64(m) {
				t.Errorf("rule for GPU minor %d, which was not requested", m)
			}
		}
		for _, d := range spec.Linux.Devices {
			if d.Path == fmt.Sprintf("/dev/nvidia%d", m) {
				t.Errorf("device node for unrequested GPU minor %d", m)
			}
		}
	}

	// Mounts: /proc from the image, then every fixture driver file,
	// read-only, from its real file; nothing stale, dangling or unrelated.
	gotMounts := map[string]string{}
	for _, m := range spec.Mounts[1:] {
		gotMounts[m.Destination] = m.Source
		if m.Type != "bind" || !slices.Contains(m.Options, "ro") || !slices.Contains(m.Options, "rbind") || slices.Contains(m.Options, "rw") {
			t.Errorf("mount %s: type %q options %v; want a read-only bind", m.Destination, m.Type, m.Options)
		}
	}
	if spec.Mounts[0].Destination != "/proc" {
		t.Errorf("image mount lost: %+v", spec.Mounts[0])
	}
	if !reflect.DeepEqual(gotMounts, f.libs) {
		t.Errorf("driver mounts (dst -> src):\n  %v\nwant\n  %v", gotMounts, f.libs)
	}

	env := envMap(spec.Process.Env)
	idx := make([]string, len(uuids))
	for i := range uuids {
		idx[i] = fmt.Sprint(i)
	}
	for k, v := range map[string]string{
		EnvNvidiaVisibleDevices:      strings.Join(uuids, ","),
		EnvCUDAVisibleDevices:        strings.Join(idx, ","),
		EnvCUDADeviceOrder:           "PCI_BUS_ID",
		"PATH":                       "/usr/bin:/bin",
		"NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
	} {
		if env[k] != v {
			t.Errorf("env %s = %q, want %q", k, env[k], v)
		}
	}
}

func TestInjectHost(t *testing.T) {
	inv := dgxInventory(t)
	u := func(i int) string { return inv.Devices[i].UUID }
	for _, tc := range []struct {
		name     string
		realDev  bool // mknod the fixture nodes and stat them for real
		request  []string
		minors   []int
		wantEnvU []string
	}{
		{"GPUs 2 and 5, faked nodes", false, []string{u(2), u(5)}, []int{2, 5}, []string{u(2), u(5)}},
		{"GPUs 2 and 5, mknod nodes", true, []string{u(2), u(5)}, []int{2, 5}, []string{u(2), u(5)}},
		{"asked as 5, 2: still index order", false, []string{u(5), u(2)}, []int{2, 5}, []string{u(2), u(5)}},
		{"one GPU", false, []string{u(7)}, []int{7}, []string{u(7)}},
		{"all eight", false, inv.UUIDs(), []int{0, 1, 2, 3, 4, 5, 6, 7}, inv.UUIDs()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newHostFixture(t)
			in := f.injector(inv)
			if tc.realDev {
				mknodFixture(t, f.dev, fixtureNodes)
				in.stat = nil
			}
			spec := baseSpec()
			if err := in.Inject(spec, tc.request); err != nil {
				t.Fatalf("Inject: %v", err)
			}
			checkHostInjection(t, spec, f, tc.minors, tc.wantEnvU)

			// Injecting again (a retried start) changes nothing.
			before := specJSON(t, spec)
			if err := in.Inject(spec, tc.request); err != nil {
				t.Fatalf("second Inject: %v", err)
			}
			if after := specJSON(t, spec); after != before {
				t.Errorf("second Inject changed the spec:\n%s\n%s", before, after)
			}
		})
	}
}

// One Injector serves concurrent worker starts (run with -race).
func TestInjectConcurrent(t *testing.T) {
	inv := dgxInventory(t)
	f := newHostFixture(t)
	in := f.injector(inv)
	cdiDir := t.TempDir()
	writeCDISpec(t, cdiDir, filepath.Join(f.dev, "absent"), allNames(inv))
	inCDI := f.injector(inv)
	inCDI.CDISpecDirs = []string{cdiDir}
	var wg sync.WaitGroup
	for i := range 8 {
		for _, inj := range []*Injector{in, inCDI} {
			wg.Go(func() {
				spec := baseSpec()
				if err := inj.Inject(spec, []string{inv.Devices[i].UUID}); err != nil {
					t.Error(err)
					return
				}
				if got := envMap(spec.Process.Env)[EnvNvidiaVisibleDevices]; got != inv.Devices[i].UUID {
					t.Errorf("worker %d got %s", i, got)
				}
			})
		}
	}
	wg.Wait()
}

// NVML's minor, not its index, names the node.
func TestInjectHostMinorNotIndex(t *testing.T) {
	inv := dgxInventory(t)
	for i := range inv.Devices {
		inv.Devices[i].Minor = 7 - i
	}
	f := newHostFixture(t)
	spec := baseSpec()
	if err := f.injector(inv).Inject(spec, []string{inv.Devices[2].UUID, inv.Devices[5].UUID}); err != nil {
		t.Fatal(err)
	}
	// Index 2 is minor 5, index 5 minor 2; index order puts minor 5 first.
	checkHostInjection(t, spec, f, []int{5, 2}, []string{inv.Devices[2].UUID, inv.Devices[5].UUID})
}

func TestInjectEnv(t *testing.T) {
	inv := dgxInventory(t)
	f := newHostFixture(t)
	spec := baseSpec()
	spec.Process.Env = append(spec.Process.Env, "CUDA_VISIBLE_DEVICES=3", "CUDA_DEVICE_ORDER=FASTEST_FIRST", "NVIDIA_VISIBLE_DEVICES=void")
	if err := f.injector(inv).Inject(spec, []string{inv.Devices[1].UUID}); err != nil {
		t.Fatal(err)
	}
	env := envMap(spec.Process.Env)
	if env[EnvNvidiaVisibleDevices] != inv.Devices[1].UUID || env[EnvCUDAVisibleDevices] != "0" {
		t.Errorf("GPU variables not replaced: %v", spec.Process.Env)
	}
	if env[EnvCUDADeviceOrder] != "FASTEST_FIRST" {
		t.Errorf("CUDA_DEVICE_ORDER chosen by the image was overridden: %v", spec.Process.Env)
	}

	// No process at all: one is made to hold the environment.
	spec = &specs.Spec{}
	if err := f.injector(inv).Inject(spec, []string{inv.Devices[1].UUID}); err != nil {
		t.Fatal(err)
	}
	if spec.Process == nil || envMap(spec.Process.Env)[EnvCUDAVisibleDevices] != "0" || len(spec.Linux.Devices) != 4 {
		t.Errorf("spec without process/linux: %+v", spec)
	}
}

func TestInjectNoGPUs(t *testing.T) {
	f := newHostFixture(t)
	spec := baseSpec()
	before := specJSON(t, spec)
	if err := f.injector(dgxInventory(t)).Inject(spec, nil); err != nil {
		t.Fatal(err)
	}
	if specJSON(t, spec) != before {
		t.Error("Inject with no GPUs changed the spec")
	}
}

func TestInjectErrors(t *testing.T) {
	inv := dgxInventory(t)
	u := func(i int) string { return inv.Devices[i].UUID }
	without := func(name string) map[string]hostNode {
		m := map[string]hostNode{}
		for k, v := range fixtureNodes {
			if k != name {
				m[k] = v
			}
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		request []string
		edit    func(in *Injector, f hostFixture)
		want    string // substring of the error
		is      error  // and, if set, what it wraps
	}{
		{name: "unknown UUID", request: []string{u(2), "GPU-00000000-0000-0000-0000-000000000000"}, want: `unknown GPU "GPU-00000000-0000-0000-0000-000000000000"`},
		{name: "more GPUs than the host has", request: append(inv.UUIDs(), "GPU-extra"), want: "9 GPUs requested but the host has 8"},
		{name: "same GPU twice", request: []string{u(2), u(2)}, want: "requested twice"},
		{
			name: "host without GPUs", request: []string{u(0)},
			edit: func(in *Injector, _ hostFixture) {
				in.Inventory = Inventory{NoDriver: "NVML init: ERROR_LIBRARY_NOT_FOUND"}
			},
			want: "1 GPUs requested but the host has 0",
		},
		{
			name: "unhealthy GPU", request: []string{u(3)},
			edit: func(in *Injector, _ hostFixture) {
				in.Inventory.Devices[3].Err = errors.New("gpu 3: NVML memory info: ERROR_GPU_IS_LOST")
			},
			want: "unhealthy",
		},
		{
			name: "MIG GPU", request: []string{u(3)},
			edit: func(in *Injector, _ hostFixture) { in.Inventory.Devices[3].MIGEnabled = true },
			want: "MIG mode enabled",
		},
		{
			name: "GPU node missing", request: []string{u(2), u(5)},
			edit: func(in *Injector, f hostFixture) { in.stat = fakeStat(f.dev, without("nvidia5")) },
			want: "nvidia5", is: fs.ErrNotExist,
		},
		{
			name: "nvidiactl missing", request: []string{u(2)},
			edit: func(in *Injector, f hostFixture) { in.stat = fakeStat(f.dev, without("nvidiactl")) },
			want: "nvidiactl", is: fs.ErrNotExist,
		},
		{
			name: "GPU node with another minor", request: []string{u(2)},
			edit: func(in *Injector, f hostFixture) {
				nodes := without("nvidia2")
				nodes["nvidia2"] = hostNode{major: nvidiaMajor, minor: 3, perm: 0o666}
				in.stat = fakeStat(f.dev, nodes)
			},
			want: "nvidia2 has minor 3, NVML says 2",
		},
		{
			name: "no driver libraries", request: []string{u(2)},
			edit: func(in *Injector, _ hostFixture) { in.LibDirs = []string{"/nonexistent"} },
			want: "libcuda.so.1, libnvidia-ml.so.1 not found",
		},
		{
			name: "only the old driver's libraries", request: []string{u(2)},
			edit: func(in *Injector, f hostFixture) {
				in.Inventory.DriverVersion = "570.86.10"
			},
			want: "not found",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newHostFixture(t)
			in := f.injector(inv)
			in.Inventory.Devices = slices.Clone(inv.Devices)
			if tc.edit != nil {
				tc.edit(in, f)
			}
			spec := baseSpec()
			before := specJSON(t, spec)
			err := in.Inject(spec, tc.request)
			t.Logf("error: %v", err)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("err = %v, want it to wrap %v", err, tc.is)
			}
			if specJSON(t, spec) != before {
				t.Error("failed Inject changed the spec")
			}
		})
	}
	if err := (&Injector{Inventory: inv}).Inject(nil, []string{u(0)}); err == nil {
		t.Error("Inject(nil spec) succeeded")
	}
}

func TestLdconfigDirs(t *testing.T) {
	out := []byte(`1234 libs found in cache ` + "`/etc/ld.so.cache'" + `
	libnvidia-ml.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1
	libnvidia-ml.so.1 (libc6) => /usr/lib/i386-linux-gnu/libnvidia-ml.so.1
	libcuda.so.1 (libc6,x86-64) => /usr/lib64/nvidia/libcuda.so.1
	libcuda.so.1 (libc6,AArch64) => /usr/lib/aarch64-linux-gnu/libcuda.so.1
	libcuda.so (libc6,x86-64) => /usr/lib64/nvidia/libcuda.so
	libc.so.6 (libc6,x86-64, OS ABI: Linux 3.2.0) => /lib/x86_64-linux-gnu/libc.so.6
Cache generated by: ldconfig (Ubuntu GLIBC 2.39-0ubuntu8) stable release version 2.39
`)
	got := LdconfigDirs(out, DefaultLibPatterns)
	var want []string
	switch ldconfigFlag() {
	case "x86-64":
		want = []string{"/usr/lib/x86_64-linux-gnu", "/usr/lib64/nvidia"}
	case "AArch64":
		want = []string{"/usr/lib/aarch64-linux-gnu"}
	default:
		t.Skip("no ldconfig architecture flag known for this GOARCH")
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LdconfigDirs = %v, want %v", got, want)
	}
}

func TestStaleLib(t *testing.T) {
	for _, tc := range []struct {
		file, version string
		stale         bool
	}{
		{"/l/libcuda.so.550.54.15", "550.54.15", false},
		{"/l/libcuda.so.535.104.05", "550.54.15", true},
		{"/l/libnvidia-ml.so.390.157", "550.54.15", true},
		{"/l/libcuda.so.1", "550.54.15", false},
		{"/l/libnvidia-egl-wayland.so.1.1.13", "550.54.15", false},
		{"/l/libcuda.so.535.104.05", "", false},
	} {
		if got := staleLib(tc.file, tc.version); got != tc.stale {
			t.Errorf("staleLib(%s, %q) = %v, want %v", tc.file, tc.version, got, tc.stale)
		}
	}
}

// On merged-/usr hosts two configured directories are one; each library
// must still be mounted once.
func TestDriverMountsSymlinkedDir(t *testing.T) {
	f := newHostFixture(t)
	alias := filepath.Join(filepath.Dir(f.dev), "lib-alias")
	if err := os.Symlink(f.lib, alias); err != nil {
		t.Fatal(err)
	}
	mounts, err := driverMounts([]string{alias, f.lib, "/nonexistent"}, DefaultLibPatterns, []string{f.bin}, DefaultBinaries, driverVer, ctrLib(""))
	if err != nil {
		t.Fatal(err)
	}
	var dsts []string
	for _, m := range mounts {
		dsts = append(dsts, m.Destination)
	}
	var want []string
	for d := range f.libs {
		want = append(want, d)
	}
	sort.Strings(want)
	if !reflect.DeepEqual(dsts, want) {
		t.Errorf("mounts = %v, want %v", dsts, want)
	}
}
