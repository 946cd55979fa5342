package gpu

import (
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"golang.org/x/sys/unix"
)

const (
	nvidiaMajor = 195
	uvmMajor    = 508 // dynamic on a real host
	driverVer   = "550.54.15"
)

// fixtureNodes are the device nodes of the fake host: eight GPUs and the
// control nodes, but no nvidia-uvm-tools, so the test can see that absent
// optional nodes are skipped.
var fixtureNodes = map[string]hostNode{
	"nvidiactl":      {major: nvidiaMajor, minor: 255, perm: 0o666},
	"nvidia-uvm":     {major: uvmMajor, minor: 0, perm: 0o666},
	"nvidia-modeset": {major: nvidiaMajor, minor: 254, perm: 0o666},
}

func init() {
	for i := range 8 {
		fixtureNodes["nvidia"+strconv.Itoa(i)] = hostNode{major: nvidiaMajor, minor: int64(i), perm: 0o666}
	}
}

// fakeStat serves nodes (by base name, under dir) without root.
func fakeStat(dir string, nodes map[string]hostNode) func(string) (hostNode, error) {
	return func(p string) (hostNode, error) {
		if filepath.Dir(p) == dir {
			if n, ok := nodes[filepath.Base(p)]; ok {
				return n, nil
			}
		}
		return hostNode{}, &fs.PathError{Op: "stat", Path: p, Err: fs.ErrNotExist}
	}
}

// mknodFixture makes nodes as real character devices under dir; it skips
// the test when that is not possible (not root, or no CAP_MKNOD).
func mknodFixture(t *testing.T, dir string, nodes map[string]hostNode) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("making device nodes with mknod needs root (CI runs as root)")
	}
	for name, n := range nodes {
		dev := unix.Mkdev(uint32(n.major), uint32(n.minor))
		if err := unix.Mknod(filepath.Join(dir, name), unix.S_IFCHR|uint32(n.perm), int(dev)); err != nil {
			t.Skipf("mknod %s: %v (no CAP_MKNOD here?)", name, err)
		}
		// mknod's mode is cut by the umask; the fixture wants it exact.
		if err := os.Chmod(filepath.Join(dir, name), n.perm); err != nil {
			t.Fatal(err)
		}
	}
}

// hostFixture is a fake host: a /dev, a library dir and a bin dir.
type hostFixture struct {
	dev, lib, bin string
	// libs are the mounts the injection must add: destination -> source.
	libs map[string]string
}

// ctrLib is the container directory the fixture's libraries go to (the
// specs in these tests have a relative rootfs, see ContainerLibDir).
func ctrLib(name string) string { return path.Join("/usr/lib", multiarchTriplet(), name) }

// copyELF copies a small real executable of this machine to dst (fake
// driver tools must be ELF files to be mounted).
func copyELF(t *testing.T, dst string) {
	t.Helper()
	b, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Skipf("no /bin/true to copy as a fake driver tool: %v", err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

func newHostFixture(t *testing.T) hostFixture {
	t.Helper()
	root := t.TempDir()
	f := hostFixture{
		dev:  filepath.Join(root, "dev"),
		lib:  filepath.Join(root, "usr/lib/x86_64-linux-gnu"),
		bin:  filepath.Join(root, "usr/bin"),
		libs: map[string]string{},
	}
	for _, d := range []string{f.dev, f.lib, f.bin} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	file := func(p string, mode os.FileMode) {
		if err := os.WriteFile(p, []byte("fake "+filepath.Base(p)), mode); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, p string) {
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, lib := range []string{"libcuda.so", "libnvidia-ml.so", "libnvidia-ptxjitcompiler.so"} {
		real := filepath.Join(f.lib, lib+"."+driverVer)
		file(real, 0o644)
		link(lib+"."+driverVer, filepath.Join(f.lib, lib+".1"))
		f.libs[ctrLib(lib+"."+driverVer)] = real
		f.libs[ctrLib(lib+".1")] = real
	}
	link("libcuda.so.1", filepath.Join(f.lib, "libcuda.so"))
	f.libs[ctrLib("libcuda.so")] = filepath.Join(f.lib, "libcuda.so."+driverVer)
	// Left behind by the previous driver: must not be mounted.
	file(filepath.Join(f.lib, "libcuda.so.535.104.05"), 0o644)
	file(filepath.Join(f.lib, "libnvidia-ml.so.535.104.05"), 0o644)
	// Dangling link and a library that is not the driver's.
	link("libnvidia-cfg.so.535.104.05", filepath.Join(f.lib, "libnvidia-cfg.so.1"))
	file(filepath.Join(f.lib, "libfoo.so.1"), 0o644)

	for _, b := range []string{"nvidia-smi", "nvidia-debugdump"} {
		copyELF(t, filepath.Join(f.bin, b))
		f.libs["/usr/bin/"+b] = filepath.Join(f.bin, b)
	}
	file(filepath.Join(f.bin, "unrelated-tool"), 0o755)
	return f
}

// injector returns an Injector on the fixture with CDI off and the
// device nodes faked (use mknodFixture and clear stat for real ones).
func (f hostFixture) injector(inv Inventory) *Injector {
	return &Injector{
		Inventory:   inv,
		DevDir:      f.dev,
		LibDirs:     []string{f.lib},
		BinDirs:     []string{f.bin},
		CDISpecDirs: []string{},
		stat:        fakeStat(f.dev, fixtureNodes),
	}
}

func dgxInventory(t *testing.T) Inventory {
	t.Helper()
	inv, err := Discover(dgxh100.New())
	if err != nil {
		t.Fatal(err)
	}
	return inv
}
