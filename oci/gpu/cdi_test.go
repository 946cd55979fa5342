package gpu

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// cdiDevice is one device of the fixture CDI spec.
type cdiDevice struct {
	name  string
	minor int
}

// writeCDISpec writes an nvidia.com/gpu spec shaped like nvidia-ctk's:
// per-device nodes, and spec-wide env, control node, library mount and
// createContainer hooks. Device node host paths point into hostDev, where
// no node exists, so the CDI library takes the stated numbers (no root
// needed).
func writeCDISpec(t *testing.T, dir, hostDev string, devs []cdiDevice) {
	t.Helper()
	var b strings.Builder
	b.WriteString("cdiVersion: \"0.6.0\"\nkind: nvidia.com/gpu\ndevices:\n")
	for _, d := range devs {
		fmt.Fprintf(&b, `- name: %q
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia%d
      hostPath: %s/nvidia%d
      type: c
      major: 195
      minor: %d
`, d.name, d.minor, hostDev, d.minor, d.minor)
	}
	fmt.Fprintf(&b, `containerEdits:
  env:
  - NVIDIA_VISIBLE_DEVICES=void
  - NVIDIA_CTK_LIBCUDA_DIR=/usr/lib/x86_64-linux-gnu
  deviceNodes:
  - path: /dev/nvidiactl
    hostPath: %s/nvidiactl
    type: c
    major: 195
    minor: 255
  mounts:
  - hostPath: /usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15
    containerPath: /usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15
    options: [ro, nosuid, nodev, rbind, rprivate]
  - hostPath: /usr/bin/nvidia-smi
    containerPath: /usr/bin/nvidia-smi
    options: [ro, nosuid, nodev, rbind, rprivate]
  hooks:
  - hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
    args: [nvidia-cdi-hook, create-symlinks, --link, libcuda.so.1::/usr/lib/x86_64-linux-gnu/libcuda.so]
  - hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
    args: [nvidia-cdi-hook, update-ldcache, --folder, /usr/lib/x86_64-linux-gnu]
`, hostDev)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nvidia.yaml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// allNames gives every GPU its UUID and index names, as nvidia-ctk's
// default naming strategy does.
func allNames(inv Inventory) []cdiDevice {
	var out []cdiDevice
	for _, d := range inv.Devices {
		out = append(out, cdiDevice{d.UUID, d.Minor}, cdiDevice{fmt.Sprint(d.Index), d.Minor})
	}
	return out
}

func TestInjectCDI(t *testing.T) {
	inv := dgxInventory(t)
	u := func(i int) string { return inv.Devices[i].UUID }
	for _, tc := range []struct {
		name string
		devs []cdiDevice
	}{
		{"UUID and index names", allNames(inv)},
		{"UUID names only", []cdiDevice{{u(2), 2}, {u(5), 5}, {u(0), 0}}},
		{"index names only", []cdiDevice{{"2", 2}, {"5", 5}, {"0", 0}}},
		{"type-index names", []cdiDevice{{"gpu2", 2}, {"gpu5", 5}, {"gpu0", 0}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newHostFixture(t)
			cdiDir := filepath.Join(t.TempDir(), "run-cdi")
			writeCDISpec(t, cdiDir, filepath.Join(f.dev, "absent"), tc.devs)
			in := f.injector(inv)
			// The static dir is missing: a dir that does not exist is fine.
			in.CDISpecDirs = []string{filepath.Join(t.TempDir(), "etc-cdi"), cdiDir}

			if uses, err := in.UsesCDI(); !uses || err != nil {
				t.Fatalf("UsesCDI = %v, %v; want true, nil", uses, err)
			}
			spec := baseSpec()
			if err := in.Inject(spec, []string{u(5), u(2)}); err != nil {
				t.Fatalf("Inject: %v", err)
			}

			// Devices: exactly what the spec says for GPUs 2 and 5, plus its
			// nvidiactl; none of the fixture host's nodes (nvidia-uvm,
			// nvidia-modeset), which only the NVML path would add.
			var paths []string
			for _, d := range spec.Linux.Devices {
				paths = append(paths, d.Path)
			}
			sort.Strings(paths)
			if want := []string{"/dev/fuse", "/dev/nvidia2", "/dev/nvidia5", "/dev/nvidiactl"}; !reflect.DeepEqual(paths, want) {
				t.Errorf("devices = %v, want %v", paths, want)
			}
			var allowed []string
			for _, r := range spec.Linux.Resources.Devices[1:] {
				if !r.Allow || r.Type != "c" || r.Access != "rwm" {
					t.Errorf("rule %+v", r)
				}
				allowed = append(allowed, fmt.Sprintf("%d:%d", *r.Major, *r.Minor))
			}
			sort.Strings(allowed)
			if want := []string{"195:2", "195:255", "195:5"}; !reflect.DeepEqual(allowed, want) {
				t.Errorf("allow rules = %v, want %v", allowed, want)
			}
			if spec.Linux.Resources.Devices[0].Allow {
				t.Errorf("deny-all rule moved: %+v", spec.Linux.Resources.Devices)
			}

			// Mounts: the spec's, not the fixture's libraries.
			var dsts []string
			for _, m := range spec.Mounts {
				dsts = append(dsts, m.Destination)
				if strings.HasPrefix(m.Source, f.lib) || strings.HasPrefix(m.Source, f.bin) {
					t.Errorf("NVML-path mount %s in a CDI injection", m.Source)
				}
			}
			sort.Strings(dsts)
			if want := []string{"/proc", "/usr/bin/nvidia-smi", "/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15"}; !reflect.DeepEqual(dsts, want) {
				t.Errorf("mounts = %v, want %v", dsts, want)
			}

			// Hooks, in the spec's order.
			if spec.Hooks == nil || len(spec.Hooks.CreateContainer) != 2 ||
				spec.Hooks.CreateContainer[0].Args[1] != "create-symlinks" ||
				spec.Hooks.CreateContainer[1].Args[1] != "update-ldcache" ||
				spec.Hooks.CreateContainer[0].Path != "/usr/bin/nvidia-cdi-hook" {
				t.Errorf("hooks = %+v", spec.Hooks)
			}

			// Env: the spec's own, and ours over its "void".
			env := envMap(spec.Process.Env)
			for k, v := range map[string]string{
				"NVIDIA_CTK_LIBCUDA_DIR": "/usr/lib/x86_64-linux-gnu",
				EnvNvidiaVisibleDevices:  u(2) + "," + u(5),
				EnvCUDAVisibleDevices:    "0,1",
				EnvCUDADeviceOrder:       "PCI_BUS_ID",
				"PATH":                   "/usr/bin:/bin",
			} {
				if env[k] != v {
					t.Errorf("env %s = %q, want %q (env %v)", k, env[k], v, spec.Process.Env)
				}
			}
		})
	}
}

func TestInjectCDIErrors(t *testing.T) {
	inv := dgxInventory(t)
	u := func(i int) string { return inv.Devices[i].UUID }
	for _, tc := range []struct {
		name    string
		devs    []cdiDevice
		request []string
		edit    func(in *Injector, f hostFixture)
		want    []string // substrings of the error
	}{
		{
			name:    "GPU missing from the specs",
			devs:    []cdiDevice{{u(2), 2}, {"2", 2}},
			request: []string{u(2), u(5)},
			want:    []string{"GPU " + u(5) + " (index 5, /dev/nvidia5) is not in the CDI specs", "nvidia.com/gpu=" + u(2), "regenerate"},
		},
		{
			name:    "UUID name on another GPU's node",
			devs:    []cdiDevice{{u(2), 3}, {u(5), 5}},
			request: []string{u(2), u(5)},
			want:    []string{"GPU " + u(2) + " is /dev/nvidia2 but CDI device nvidia.com/gpu=" + u(2), "minors [3]", "stale"},
		},
		{
			name:    "index name on another GPU's node is not trusted",
			devs:    []cdiDevice{{"2", 3}, {"5", 5}},
			request: []string{u(2)},
			want:    []string{"not in the CDI specs", "nvidia.com/gpu=2", "minors [3]"},
		},
		{
			name:    "unknown UUID even if the specs have it",
			devs:    []cdiDevice{{"GPU-11111111-2222-3333-4444-555555555555", 2}},
			request: []string{"GPU-11111111-2222-3333-4444-555555555555"},
			want:    []string{"unknown GPU"},
		},
		{
			name:    "stale major for a node the host has",
			devs:    allNames(inv),
			request: []string{u(2)},
			edit: func(in *Injector, f hostFixture) {
				// The spec's nvidiactl host path is f.dev/absent/nvidiactl.
				in.stat = fakeStat(filepath.Join(f.dev, "absent"), map[string]hostNode{
					"nvidiactl": {major: 196, minor: 255, perm: 0o666},
				})
			},
			want: []string{"CDI spec says /dev/nvidiactl is 195:255 but the host's", "196:255", "stale"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newHostFixture(t)
			cdiDir := t.TempDir()
			writeCDISpec(t, cdiDir, filepath.Join(f.dev, "absent"), tc.devs)
			in := f.injector(inv)
			in.CDISpecDirs = []string{cdiDir}
			if tc.edit != nil {
				tc.edit(in, f)
			}
			spec := baseSpec()
			before := specJSON(t, spec)
			err := in.Inject(spec, tc.request)
			if err == nil {
				t.Fatal("Inject succeeded")
			}
			t.Logf("error: %v", err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v\nwant it to contain %q", err, w)
				}
			}
			if specJSON(t, spec) != before {
				t.Error("failed Inject changed the spec (the NVML path must not stand in)")
			}
		})
	}
}

// With real nodes (root), CDI fills in numbers the spec leaves out from
// the host, as for nvidia-ctk specs that only give paths.
func TestInjectCDIHostNodes(t *testing.T) {
	inv := dgxInventory(t)
	f := newHostFixture(t)
	mknodFixture(t, f.dev, fixtureNodes)
	cdiDir := t.TempDir()
	spec := fmt.Sprintf(`cdiVersion: "0.6.0"
kind: nvidia.com/gpu
devices:
- name: %q
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia4
      hostPath: %s/nvidia4
containerEdits:
  deviceNodes:
  - path: /dev/nvidia-uvm
    hostPath: %s/nvidia-uvm
`, inv.Devices[4].UUID, f.dev, f.dev)
	if err := os.WriteFile(filepath.Join(cdiDir, "nvidia.yaml"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	in := f.injector(inv)
	in.stat = nil
	in.CDISpecDirs = []string{cdiDir}
	s := baseSpec()
	if err := in.Inject(s, []string{inv.Devices[4].UUID}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range s.Linux.Devices[1:] {
		got = append(got, fmt.Sprintf("%s %s %d:%d", d.Path, d.Type, d.Major, d.Minor))
	}
	sort.Strings(got)
	if want := []string{fmt.Sprintf("/dev/nvidia-uvm c %d:0", uvmMajor), "/dev/nvidia4 c 195:4"}; !reflect.DeepEqual(got, want) {
		t.Errorf("devices = %v, want %v", got, want)
	}
}

// Specs that do not describe NVIDIA GPUs, or do not load, leave the
// injection to the NVML path; UsesCDI reports the broken file.
func TestCDIFallback(t *testing.T) {
	inv := dgxInventory(t)
	for _, tc := range []struct {
		name    string
		files   map[string]string
		wantErr string
	}{
		{"no spec files", nil, ""},
		{"another vendor's spec", map[string]string{"fpga.yaml": "cdiVersion: \"0.6.0\"\nkind: vendor.com/fpga\ndevices:\n- name: f0\n  containerEdits:\n    env: [FPGA=0]\n"}, ""},
		{"broken nvidia spec", map[string]string{"nvidia.yaml": "cdiVersion: \"9.9.9\"\nkind: nvidia.com/gpu\ndevices: []\n"}, "nvidia.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newHostFixture(t)
			dir := t.TempDir()
			for name, body := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			in := f.injector(inv)
			in.CDISpecDirs = []string{dir}
			uses, err := in.UsesCDI()
			if uses {
				t.Error("UsesCDI = true")
			}
			if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("UsesCDI error = %v, want one naming %q", err, tc.wantErr)
			}
			spec := baseSpec()
			if err := in.Inject(spec, []string{inv.Devices[2].UUID, inv.Devices[5].UUID}); err != nil {
				t.Fatal(err)
			}
			checkHostInjection(t, spec, f, []int{2, 5}, []string{inv.Devices[2].UUID, inv.Devices[5].UUID})
		})
	}

	// CDI off entirely.
	if uses, err := (&Injector{CDISpecDirs: []string{}}).UsesCDI(); uses || err != nil {
		t.Errorf("UsesCDI with CDI off = %v, %v", uses, err)
	}
}
