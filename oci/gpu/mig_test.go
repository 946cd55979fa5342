package gpu

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/emberhq/ember/oci/gpu/gputest"
)

const (
	mig0a = "MIG-11111111-1111-1111-1111-111111111111"
	mig0b = "MIG-22222222-2222-2222-2222-222222222222"
	mig1  = "MIG-33333333-3333-3333-3333-333333333333"
)

// migInventory is a DGX A100 whose GPU 0 has two instances (slots 0 and
// 2, slot 1 empty) and GPU 1 one; GPUs 2-7 are whole.
func migInventory(t *testing.T, edit func(*server.Server)) Inventory {
	t.Helper()
	s := gputest.MIGServer(map[int][]gputest.Instance{
		0: {
			{Index: 0, UUID: mig0a, Name: "NVIDIA A100-SXM4-40GB MIG 1g.5gb", MemoryBytes: 5 << 30, GPUInstance: 13, ComputeInstance: 0},
			{Index: 2, UUID: mig0b, Name: "NVIDIA A100-SXM4-40GB MIG 3g.20gb", MemoryBytes: 20 << 30, GPUInstance: 2, ComputeInstance: 0},
		},
		1: {{Index: 0, UUID: mig1, Name: "NVIDIA A100-SXM4-40GB MIG 7g.40gb", MemoryBytes: 40 << 30, GPUInstance: 0, ComputeInstance: 0}},
	})
	if edit != nil {
		edit(s)
	}
	inv, err := Discover(s)
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func TestDiscoverMIG(t *testing.T) {
	inv := migInventory(t, nil)
	if len(inv.Devices) != 8 || !inv.Devices[0].MIGEnabled || !inv.Devices[1].MIGEnabled || inv.Devices[2].MIGEnabled {
		t.Fatalf("devices: %+v", inv.Devices)
	}
	if len(inv.MIGDevices) != 3 {
		t.Fatalf("MIG devices: %+v, want 3", inv.MIGDevices)
	}
	a, b := inv.MIGDevices[0], inv.MIGDevices[1]
	if a.UUID != mig0a || a.MIG.Index != 0 || a.MIG.GPUInstance != 13 || a.MIG.ComputeInstance != 0 ||
		a.MIG.ParentUUID != inv.Devices[0].UUID || a.Minor != inv.Devices[0].Minor || a.MemoryTotal != 5<<30 || !a.Healthy() {
		t.Errorf("first instance: %+v %+v", a, a.MIG)
	}
	if b.UUID != mig0b || b.MIG.Index != 2 || b.MemoryTotal != 20<<30 || !strings.Contains(b.Name, "3g.20gb") {
		t.Errorf("second instance: %+v %+v", b, b.MIG)
	}
	u := inv.UUIDs()
	if len(u) != 9 || slices.Contains(u, inv.Devices[0].UUID) || slices.Contains(u, inv.Devices[1].UUID) {
		t.Errorf("UUIDs() = %v; want 6 whole GPUs and 3 instances, no GPU in MIG mode", u)
	}
	if u[6] != mig0a || u[7] != mig0b || u[8] != mig1 {
		t.Errorf("UUIDs() = %v; want the instances last, by parent and slot", u)
	}
	if d, ok := inv.Lookup(mig1); !ok || d.MIG == nil || d.MIG.ParentUUID != inv.Devices[1].UUID {
		t.Errorf("Lookup(%s) = %+v, %v", mig1, d, ok)
	}
	// Free memory for placement is asked of NVML by the instance's UUID.
	s := gputest.MIGServer(map[int][]gputest.Instance{0: {{Index: 0, UUID: mig0a, MemoryBytes: 5 << 30}}})
	if free, err := FreeMemory(s, mig0a); err != nil || free != 5<<30 {
		t.Errorf("FreeMemory(%s) = %d, %v", mig0a, free, err)
	}
}

// An instance that fails a query is listed but not allocatable; a GPU
// whose instances cannot be counted is marked bad (and offers none).
func TestDiscoverMIGErrors(t *testing.T) {
	inv := migInventory(t, func(s *server.Server) {
		d := s.Devices[1].(*server.Device)
		inner := d.GetMigDeviceHandleByIndexFunc
		d.GetMigDeviceHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) {
			if i == 0 {
				return nil, nvml.ERROR_GPU_IS_LOST
			}
			return inner(i)
		}
		s.Devices[2].(*server.Device).MigMode = nvml.DEVICE_MIG_ENABLE
		s.Devices[2].(*server.Device).GetMaxMigDeviceCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
	})
	var lost *Device
	for i := range inv.MIGDevices {
		if inv.MIGDevices[i].MIG.ParentUUID == inv.Devices[1].UUID {
			lost = &inv.MIGDevices[i]
		}
	}
	if lost == nil || !errors.Is(lost.Err, nvml.ERROR_GPU_IS_LOST) {
		t.Errorf("instance of GPU 1: %+v", lost)
	}
	if inv.Devices[2].Healthy() {
		t.Errorf("GPU 2 (MIG instances not countable) is healthy: %+v", inv.Devices[2])
	}
	if u := inv.UUIDs(); len(u) != 7 {
		t.Errorf("UUIDs() = %v; want 5 whole GPUs and GPU 0's 2 instances", u)
	}
}

// migStat serves the fixture's nodes plus the MIG capability nodes
// (major 235, dynamic on a real host) under dev/nvidia-caps.
func migStat(dev string) func(string) (hostNode, error) {
	base := fakeStat(dev, fixtureNodes)
	return func(p string) (hostNode, error) {
		if filepath.Dir(p) == filepath.Join(dev, "nvidia-caps") {
			switch filepath.Base(p) {
			case "nvidia-cap21":
				return hostNode{major: 235, minor: 21, perm: 0o444}, nil
			case "nvidia-cap22":
				return hostNode{major: 235, minor: 22, perm: 0o444}, nil
			}
			return hostNode{}, &fs.PathError{Op: "stat", Path: p, Err: fs.ErrNotExist}
		}
		return base(p)
	}
}

// migMinorsFixture is the driver's table for GPU minor 0's instance
// (GI 13, CI 0) and others that must not be given.
const migMinorsFixture = `config 1
monitor 2
gpu0/gi2/access 3
gpu0/gi2/ci0/access 4
gpu0/gi13/access 21
gpu0/gi13/ci0/access 22
gpu1/gi0/access 30
gpu1/gi0/ci0/access 31
`

func TestInjectMIG(t *testing.T) {
	f := newHostFixture(t)
	inv := migInventory(t, nil)
	minors := filepath.Join(t.TempDir(), "mig-minors")
	if err := os.WriteFile(minors, []byte(migMinorsFixture), 0o444); err != nil {
		t.Fatal(err)
	}
	in := f.injector(inv)
	in.stat = migStat(f.dev)
	in.MIGMinors = minors

	spec := baseSpec()
	if err := in.Inject(spec, []string{mig0a}); err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, d := range spec.Linux.Devices {
		paths = append(paths, d.Path)
	}
	for _, want := range []string{"/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-caps/nvidia-cap21", "/dev/nvidia-caps/nvidia-cap22"} {
		if !slices.Contains(paths, want) {
			t.Errorf("devices %v lack %s", paths, want)
		}
	}
	for _, bad := range []string{"/dev/nvidia1", "/dev/nvidia-caps/nvidia-cap1", "/dev/nvidia-caps/nvidia-cap2", "/dev/nvidia-caps/nvidia-cap3"} {
		if slices.Contains(paths, bad) {
			t.Errorf("devices %v include %s", paths, bad)
		}
	}
	allowed := map[[2]int64]bool{}
	for _, r := range spec.Linux.Resources.Devices {
		if r.Allow && r.Major != nil && r.Minor != nil {
			allowed[[2]int64{*r.Major, *r.Minor}] = true
		}
	}
	if !allowed[[2]int64{235, 21}] || !allowed[[2]int64{235, 22}] || !allowed[[2]int64{nvidiaMajor, 0}] || allowed[[2]int64{nvidiaMajor, 1}] {
		t.Errorf("cgroup allows %v; want 235:21, 235:22 and 195:0, not 195:1", allowed)
	}
	env := envMap(spec.Process.Env)
	if env[EnvNvidiaVisibleDevices] != mig0a || env[EnvCUDAVisibleDevices] != "0" {
		t.Errorf("env %v", env)
	}

	for _, tc := range []struct {
		name  string
		uuids []string
		edit  func(*Injector)
		want  string
	}{
		{"two instances", []string{mig0a, mig1}, nil, "only GPU"},
		{"instance and a GPU", []string{inv.Devices[3].UUID, mig0b}, nil, "only GPU"},
		{"parent in MIG mode", []string{inv.Devices[0].UUID}, nil, mig0b},
		{"no table", []string{mig0a}, func(in *Injector) { in.MIGMinors = filepath.Join(t.TempDir(), "none") }, "nvidia-caps"},
		{"instance gone from the table", []string{mig0b}, func(in *Injector) {
			p := filepath.Join(t.TempDir(), "mig-minors")
			os.WriteFile(p, []byte("gpu0/gi13/access 21\n"), 0o444)
			in.MIGMinors = p
		}, "gpu0/gi2/access"},
		{"no capability node", []string{mig0b}, nil, "nvidia-cap3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := f.injector(inv)
			in.stat = migStat(f.dev)
			in.MIGMinors = minors
			if tc.edit != nil {
				tc.edit(in)
			}
			s := baseSpec()
			before := specJSON(t, s)
			err := in.Inject(s, tc.uuids)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Inject(%v) = %v, want an error naming %q", tc.uuids, err, tc.want)
			}
			if specJSON(t, s) != before {
				t.Error("a failed injection changed the spec")
			}
		})
	}
}
