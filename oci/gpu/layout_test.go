package gpu

import (
	"os"
	"path/filepath"
	"testing"
)

// nvidiaLayout is a fake host whose driver lives where GPU clouds put it:
// /usr/local/nvidia/{bin,lib64}, outside every standard directory, with
// /usr/bin/nvidia-smi a wrapper script (the decoy that was mounted before:
// exec of it fails with "no such file or directory" in an image without
// its interpreter).
type nvidiaLayout struct {
	root, lib64, bin, usrBin string
}

func newNvidiaLayout(t *testing.T) nvidiaLayout {
	t.Helper()
	root := t.TempDir()
	l := nvidiaLayout{
		root:   root,
		lib64:  filepath.Join(root, "usr/local/nvidia/lib64"),
		bin:    filepath.Join(root, "usr/local/nvidia/bin"),
		usrBin: filepath.Join(root, "usr/bin"),
	}
	for _, d := range []string{l.lib64, l.bin, l.usrBin} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, lib := range []string{"libcuda.so", "libnvidia-ml.so"} {
		if err := os.WriteFile(filepath.Join(l.lib64, lib+"."+driverVer), []byte("fake"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(lib+"."+driverVer, filepath.Join(l.lib64, lib+".1")); err != nil {
			t.Fatal(err)
		}
	}
	copyELF(t, filepath.Join(l.bin, "nvidia-smi"))
	wrapper := "#!/opt/provider/bin/sh\nexec /usr/local/nvidia/bin/nvidia-smi \"$@\"\n"
	if err := os.WriteFile(filepath.Join(l.usrBin, "nvidia-smi"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	// A tool whose only host copy is a link to a missing file, and one
	// that is a script everywhere: neither may be mounted.
	if err := os.Symlink("/nonexistent/nvidia-debugdump", filepath.Join(l.usrBin, "nvidia-debugdump")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.bin, "nvidia-persistenced"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return l
}

func mountMap(t *testing.T, libDirs, binDirs []string) map[string]string {
	t.Helper()
	mounts, err := driverMounts(libDirs, DefaultLibPatterns, binDirs, DefaultBinaries, driverVer, "/usr/lib64")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, m := range mounts {
		got[m.Destination] = m.Source
	}
	return got
}

// The driver's own nvidia-smi (an ELF file beside its libraries) is
// mounted at /usr/bin/nvidia-smi, not the host's /usr/bin wrapper script,
// even though /usr/bin comes first in the bin directories; the libraries
// go into the container's library directory under their own names.
func TestDriverMountsNvidiaLayout(t *testing.T) {
	l := newNvidiaLayout(t)
	got := mountMap(t, []string{l.lib64}, []string{l.usrBin})
	want := map[string]string{
		"/usr/bin/nvidia-smi":                     filepath.Join(l.bin, "nvidia-smi"),
		"/usr/lib64/libcuda.so.1":                 filepath.Join(l.lib64, "libcuda.so."+driverVer),
		"/usr/lib64/libcuda.so." + driverVer:      filepath.Join(l.lib64, "libcuda.so."+driverVer),
		"/usr/lib64/libnvidia-ml.so.1":            filepath.Join(l.lib64, "libnvidia-ml.so."+driverVer),
		"/usr/lib64/libnvidia-ml.so." + driverVer: filepath.Join(l.lib64, "libnvidia-ml.so."+driverVer),
	}
	if len(got) != len(want) {
		t.Errorf("mounts (dst -> src):\n  %v\nwant\n  %v", got, want)
	}
	for dst, src := range want {
		if got[dst] != src {
			t.Errorf("mount %s from %q, want %q", dst, got[dst], src)
		}
	}
}

// With only the wrapper script on the host, no nvidia-smi is mounted: a
// missing tool says so plainly in the container, a wrapper fails with a
// misleading "no such file or directory".
func TestDriverMountsSkipsScripts(t *testing.T) {
	l := newNvidiaLayout(t)
	if err := os.Remove(filepath.Join(l.bin, "nvidia-smi")); err != nil {
		t.Fatal(err)
	}
	got := mountMap(t, []string{l.lib64}, []string{l.usrBin})
	for dst, src := range got {
		if filepath.Dir(dst) == "/usr/bin" {
			t.Errorf("mounted %s from %s, want no tools (only scripts and dangling links on the host)", dst, src)
		}
	}
}

// A library of the same name in two host directories is mounted once,
// from the first directory that holds a current one.
func TestDriverMountsFirstDirWins(t *testing.T) {
	l := newNvidiaLayout(t)
	other := filepath.Join(l.root, "usr/lib64/nvidia")
	if err := os.MkdirAll(other, 0o755); err != nil {
		t.Fatal(err)
	}
	// A stale copy in the first directory is passed over.
	if err := os.WriteFile(filepath.Join(other, "libcuda.so.535.104.05"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("libcuda.so.535.104.05", filepath.Join(other, "libcuda.so.1")); err != nil {
		t.Fatal(err)
	}
	got := mountMap(t, []string{other, l.lib64}, nil)
	if want := filepath.Join(l.lib64, "libcuda.so."+driverVer); got["/usr/lib64/libcuda.so.1"] != want {
		t.Errorf("libcuda.so.1 from %q, want %q", got["/usr/lib64/libcuda.so.1"], want)
	}
}

func TestContainerLibDir(t *testing.T) {
	multiarch := "/usr/lib/" + multiarchTriplet()
	mk := func(dirs ...string) string {
		root := t.TempDir()
		for _, d := range dirs {
			if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		return root
	}
	debian := mk(multiarch, "/usr/lib64")
	rhel := mk("/usr/lib64", "/usr/lib")
	copiedDebian := mk("/lib/"+multiarchTriplet(), "/lib64")
	copiedRHEL := mk("/lib64")
	alpine := mk("/lib", "/usr/lib")
	bare := mk("/bin")
	// /usr/lib64 a symlink out of the image: not used.
	linked := mk("/usr")
	if err := os.Symlink("/usr/lib", filepath.Join(linked, "usr/lib64")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, rootfs, want string
	}{
		{"debian", debian, multiarch},
		{"rhel", rhel, "/usr/lib64"},
		{"copied Debian libraries", copiedDebian, "/lib/" + multiarchTriplet()},
		{"copied RHEL libraries", copiedRHEL, "/lib64"},
		{"alpine", alpine, "/usr/lib"},
		{"bare", bare, multiarch},
		{"symlinked", linked, multiarch},
		{"relative", "rootfs", multiarch},
		{"missing", filepath.Join(bare, "nope"), multiarch},
	} {
		if got := ContainerLibDir(tc.rootfs); got != tc.want {
			t.Errorf("%s: ContainerLibDir = %q, want %q", tc.name, got, tc.want)
		}
	}
}
