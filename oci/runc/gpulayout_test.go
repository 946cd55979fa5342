package runc

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/emberhq/ember/internal/debroot"
	"github.com/emberhq/ember/oci/gpu"
)

// debPackages must stay the package list of tests/pyworker_test.go: the
// cached tree of a purpose is keyed by its packages, and a build with
// another list would replace that test's tree.
var debPackages = []string{"python3", "python3-aiohttp"}

const fakeDriver = "580.95.05"

// fakeDriverHost lays out a host whose driver is only in
// /usr/local/nvidia/{bin,lib64} (no loader cache entry, no standard
// directory), as on the GPU cloud machine of issue 11: shared objects
// built with cc, an ELF nvidia-smi, a wrapper script at /usr/bin/nvidia-smi
// that must not be mounted, and fake /dev nodes (195:0, 195:255; creating
// them needs no driver). It returns the injector serving that host.
func fakeDriverHost(t *testing.T) *gpu.Injector {
	t.Helper()
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler (cc) to build the fake driver libraries")
	}
	root := t.TempDir()
	lib64 := filepath.Join(root, "usr/local/nvidia/lib64")
	bin := filepath.Join(root, "usr/local/nvidia/bin")
	usrBin := filepath.Join(root, "usr/bin")
	dev := filepath.Join(root, "dev")
	for _, d := range []string{lib64, bin, usrBin, dev} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	build := func(out string, src string, args ...string) {
		t.Helper()
		c := filepath.Join(t.TempDir(), "src.c")
		if err := os.WriteFile(c, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(cc, append(args, "-o", out, c)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("cc %s: %v\n%s", filepath.Base(out), err, b)
		}
	}
	for _, lib := range []string{"libcuda", "libnvidia-ml"} {
		real := filepath.Join(lib64, lib+".so."+fakeDriver)
		sym := strings.ReplaceAll(lib, "-", "_")
		build(real, "int ember_fake_"+sym+"(void) { return 4242; }\n",
			"-shared", "-fPIC", "-Wl,-soname,"+lib+".so.1")
		if err := os.Symlink(filepath.Base(real), filepath.Join(lib64, lib+".so.1")); err != nil {
			t.Fatal(err)
		}
	}
	build(filepath.Join(bin, "nvidia-smi"),
		"#include <stdio.h>\nint main(void) { puts(\"fake nvidia-smi of the driver\"); return 0; }\n")
	wrapper := "#!/opt/provider/bin/sh\nexec /usr/local/nvidia/bin/nvidia-smi \"$@\"\n"
	if err := os.WriteFile(filepath.Join(usrBin, "nvidia-smi"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, minor := range map[string]uint32{"nvidia0": 0, "nvidiactl": 255} {
		if err := unix.Mknod(filepath.Join(dev, name), unix.S_IFCHR|0o666, int(unix.Mkdev(195, minor))); err != nil {
			t.Skipf("mknod %s: %v", name, err)
		}
	}
	return &gpu.Injector{
		Inventory: gpu.Inventory{
			DriverVersion: fakeDriver,
			Devices:       []gpu.Device{{Index: 0, UUID: "GPU-fake-0", Name: "Fake GPU", Minor: 0}},
		},
		DevDir:      dev,
		LibDirs:     []string{lib64},
		BinDirs:     []string{usrBin},
		CDISpecDirs: []string{},
	}
}

// A worker of a plain Debian image (no LD_LIBRARY_PATH, nothing about the
// driver in its loader cache) finds libcuda.so.1 with dlopen and runs the
// driver's nvidia-smi, on a host that keeps both in /usr/local/nvidia.
func TestGPUDriverLayoutInRealContainer(t *testing.T) {
	requireContainers(t)
	inj := fakeDriverHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	deb, err := debroot.Get(ctx, debroot.Spec{Purpose: "python", Packages: debPackages})
	if errors.Is(err, debroot.ErrUnavailable) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	e := newTestRuntime(t, func(o *Options) {
		o.Images = StaticImages{"debian": {Layers: []string{deb.Dir}}}
		o.Devices = inj
	})
	spec := e.spec()
	spec.Image = "debian"
	spec.GPUs = []string{"GPU-fake-0"}
	spec.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	spec.Command = []string{"/bin/sh", "-c", `set -e
echo "LD_LIBRARY_PATH=[$LD_LIBRARY_PATH]"
nvidia-smi
python3 -c 'import ctypes; print("libcuda answers", ctypes.CDLL("libcuda.so.1").ember_fake_libcuda())'
python3 -c 'import ctypes; print("libnvidia-ml answers", ctypes.CDLL("libnvidia-ml.so.1").ember_fake_libnvidia_ml())'
ls -l /dev/nvidia0 /dev/nvidiactl`}
	st, log := e.run(t, spec, time.Minute)
	t.Logf("worker log:\n%s", log)
	if st.Code != 0 {
		t.Fatalf("worker exit %s", st)
	}
	for _, want := range []string{
		"LD_LIBRARY_PATH=[]",
		"fake nvidia-smi of the driver",
		"libcuda answers 4242",
		"libnvidia-ml answers 4242",
		"/dev/nvidia0",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("worker log lacks %q", want)
		}
	}
}
