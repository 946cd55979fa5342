package gpu

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// DefaultLibPatterns are the driver's user-space libraries a CUDA worker
// needs: libnvidia-container's "utility" and "compute" capability sets
// (what CUDA base images ask for with NVIDIA_DRIVER_CAPABILITIES). Graphics
// and video libraries are left out; add them to Injector.LibPatterns for
// workers that decode video on the GPU (libnvcuvid.so*,
// libnvidia-encode.so*, libnvidia-opticalflow.so*).
//
// The patterns end in "*" so that the unversioned development link
// (libcuda.so, which Triton looks for), the SONAME link (libcuda.so.1,
// which the loader opens) and the versioned file are all mounted.
var DefaultLibPatterns = []string{
	// utility
	"libnvidia-ml.so*",
	"libnvidia-cfg.so*",
	// compute
	"libcuda.so*",
	"libcudadebugger.so*",
	"libnvidia-opencl.so*",
	"libnvidia-gpucomp.so*",
	"libnvidia-ptxjitcompiler.so*",
	"libnvidia-fatbinaryloader.so*",
	"libnvidia-allocator.so*",
	"libnvidia-compiler.so*",
	"libnvidia-nvvm.so*",
	"libnvidia-pkcs11*.so*",
}

// requiredLibs must be among the mounted files, or no CUDA program can run
// in the container: the injection fails instead of producing a container
// that has the device nodes but no driver.
var requiredLibs = []string{"libcuda.so.1", "libnvidia-ml.so.1"}

// DefaultBinaries are the driver's tools mounted into GPU containers.
// nvidia-smi is what worker images and operators use to check a GPU; the
// others are mounted when present because libnvidia-container's utility
// set has them.
var DefaultBinaries = []string{"nvidia-smi", "nvidia-debugdump", "nvidia-persistenced"}

// DefaultBinDirs are searched for DefaultBinaries, in order, after the
// bin directory beside the driver's libraries (see driverMounts).
var DefaultBinDirs = []string{"/usr/bin", "/usr/local/bin", "/bin"}

// containerBinDir is where the driver's tools are mounted in every
// container: it is on the PATH of every image (the host's bin directory,
// /usr/local/nvidia/bin for instance, usually is not).
const containerBinDir = "/usr/bin"

// multiarchTriplet is Debian's library directory name for this
// architecture.
func multiarchTriplet() string {
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64-linux-gnu"
	case "arm64":
		return "aarch64-linux-gnu"
	case "ppc64le":
		return "powerpc64le-linux-gnu"
	default:
		return runtime.GOARCH + "-linux-gnu"
	}
}

// ldconfigFlag is how `ldconfig -p` marks a library of this architecture:
// 32-bit compatibility copies of the driver (i386) are listed too, and
// must not be picked.
func ldconfigFlag() string {
	switch runtime.GOARCH {
	case "amd64":
		return "x86-64"
	case "arm64":
		return "AArch64"
	default:
		return ""
	}
}

// DefaultLibDirs are the directories searched when Injector.LibDirs is
// nil: the places distributions and NVIDIA's installer put the driver's
// libraries, and the directories that hold driver libraries according to
// the host's `ldconfig -p` (run once per process: a driver moved to a new
// directory needs a restart of emberd, as the new driver does anyway).
//
// /usr/local/nvidia/lib64 is where GPU clouds (and NVIDIA's own container
// images) keep a driver installed outside the distribution, and
// /usr/lib64/nvidia is RHEL's packaged driver; neither is always in the
// host's loader cache.
func DefaultLibDirs() []string {
	t := multiarchTriplet()
	dirs := []string{"/usr/lib/" + t, "/lib/" + t, "/usr/lib64", "/lib64",
		"/usr/local/nvidia/lib64", "/usr/lib64/nvidia", "/usr/lib"}
	for _, d := range ldconfigDirs() {
		if !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

var ldconfigDirs = sync.OnceValue(func() []string {
	bin, err := exec.LookPath("ldconfig")
	if err != nil {
		bin = "/sbin/ldconfig"
	}
	out, err := exec.Command(bin, "-p").Output()
	if err != nil {
		// Without ldconfig the static directories still cover the usual
		// layouts.
		return nil
	}
	return LdconfigDirs(out, DefaultLibPatterns)
})

// LdconfigDirs returns the directories that hold, according to the output
// of `ldconfig -p`, a library of this architecture whose name matches one
// of patterns (filepath.Match syntax). It lets a host with the driver in an
// unusual place (/usr/lib64/nvidia, /opt/...) be served without
// configuration.
func LdconfigDirs(ldconfigP []byte, patterns []string) []string {
	flag := ldconfigFlag()
	var dirs []string
	sc := bufio.NewScanner(bytes.NewReader(ldconfigP))
	for sc.Scan() {
		// "\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1"
		line := strings.TrimSpace(sc.Text())
		left, path, ok := strings.Cut(line, " => ")
		if !ok || !filepath.IsAbs(path) {
			continue
		}
		name, flags, _ := strings.Cut(left, " ")
		if flag != "" && !strings.Contains(flags, flag) {
			continue
		}
		if !matchesAny(name, patterns) {
			continue
		}
		if d := filepath.Dir(path); !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

func matchesAny(name string, patterns []string) bool {
	for _, p := range patterns {
		if ok, _ := filepath.Match(p, name); ok {
			return true
		}
	}
	return false
}

// driverVersioned matches a library file named with a driver version
// ("libcuda.so.550.54.15", "libnvidia-ml.so.390.157"): driver versions
// start at 3 digits, which tells them from the third-party libraries some
// drivers ship (libnvidia-egl-wayland.so.1.1.13).
var driverVersioned = regexp.MustCompile(`\.so\.([0-9]{3,}(?:\.[0-9]+)+)$`)

// staleLib says whether file (a resolved library path) belongs to another
// driver than version. Old versions stay behind after some upgrades
// (.run installer over packages, or the reverse); mounting them is at best
// clutter and at worst lets a program load a library that does not match
// the kernel module ("Failed to initialize NVML: Driver/library version
// mismatch").
func staleLib(file, version string) bool {
	if version == "" {
		return false
	}
	m := driverVersioned.FindStringSubmatch(filepath.Base(file))
	return m != nil && m[1] != version
}

// roBind is how driver files are mounted: read-only, so that a worker
// cannot alter the host's driver; nosuid and nodev because nothing there
// needs them. Not noexec: libraries are mapped executable.
func roBind(dst, src string) specs.Mount {
	return specs.Mount{
		Destination: dst,
		Type:        "bind",
		Source:      src,
		Options:     []string{"rbind", "ro", "nosuid", "nodev", "rprivate"},
	}
}

// canonicalDirs resolves symlinks in dirs and drops missing and repeated
// ones. On merged-/usr hosts /lib/x86_64-linux-gnu is
// /usr/lib/x86_64-linux-gnu; without this every library would be mounted
// twice.
func canonicalDirs(dirs []string) ([]string, error) {
	var out []string
	for _, d := range dirs {
		r, err := filepath.EvalSymlinks(d)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("library dir %s: %w", d, err)
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out, nil
}

// ContainerLibDir is the directory of the image at rootfs (a host path)
// that the driver's libraries are mounted into: a directory on the image's
// loader search path, so that libcuda.so.1 is found whatever the image's
// LD_LIBRARY_PATH and /etc/ld.so.cache say. glibc's loader falls back to
// its system directories for a library that is neither on
// LD_LIBRARY_PATH nor in the cache: the multiarch directories on Debian
// and Ubuntu, /lib64 and /usr/lib64 on RHEL, Fedora and SUSE (and /lib,
// /usr/lib for musl). The first of those the image has as a real
// directory is taken, in that order (a Debian image has a /usr/lib64 for
// its loader's link, a RHEL image no multiarch directory; an image made of
// copied host libraries may have only /lib/x86_64-linux-gnu or /lib64). A
// symlink there does not count: it could point out of the image. An image
// with none, or a rootfs that cannot be read, gets the multiarch
// directory, which runc creates.
func ContainerLibDir(rootfs string) string {
	t := multiarchTriplet()
	multiarch := "/usr/lib/" + t
	if !filepath.IsAbs(rootfs) {
		return multiarch
	}
	for _, d := range []string{multiarch, "/lib/" + t, "/usr/lib64", "/lib64", "/usr/lib", "/lib"} {
		if fi, err := os.Lstat(filepath.Join(rootfs, d)); err == nil && fi.IsDir() {
			return d
		}
	}
	return multiarch
}

// driverMounts finds the driver's libraries and binaries on the host and
// returns read-only bind mounts for them, sorted by destination.
//
// Libraries are mounted into ctrLibDir (see ContainerLibDir) under their
// own names, whatever host directory holds them; when two library
// directories hold a file of the same name, the first (in libDirs order)
// that is not stale wins. Binaries are mounted into containerBinDir. They
// are looked for first in the bin directory beside each library directory
// that holds a required library (/usr/local/nvidia/bin for
// /usr/local/nvidia/lib64: the driver's own tools), then in binDirs; only
// ELF executables of this machine count, so that a wrapper script (whose
// interpreter the image may lack: exec then fails with "no such file or
// directory") is never mounted in place of the driver's binary.
//
// Symlinked files are mounted from their target, so the container gets
// real files and does not depend on runc's handling of symlinked mount
// sources. It fails when a library in requiredLibs is not found.
func driverMounts(libDirs, libPatterns, binDirs, binaries []string, driverVersion, ctrLibDir string) ([]specs.Mount, error) {
	dirs, err := canonicalDirs(libDirs)
	if err != nil {
		return nil, err
	}
	byDst := map[string]specs.Mount{}
	// driverDirs are the library directories that hold a required
	// library: where the driver is installed.
	var driverDirs []string
	for _, dir := range dirs {
		for _, pat := range libPatterns {
			matches, err := filepath.Glob(filepath.Join(dir, pat))
			if err != nil {
				return nil, fmt.Errorf("library pattern %q: %w", pat, err)
			}
			for _, m := range matches {
				name := filepath.Base(m)
				dst := path.Join(ctrLibDir, name)
				if _, seen := byDst[dst]; seen {
					continue
				}
				src, ok, err := regularTarget(m)
				if err != nil {
					return nil, err
				}
				if !ok || staleLib(src, driverVersion) {
					continue
				}
				byDst[dst] = roBind(dst, src)
				if slices.Contains(requiredLibs, name) && !slices.Contains(driverDirs, dir) {
					driverDirs = append(driverDirs, dir)
				}
			}
		}
	}
	var missing []string
	for _, req := range requiredLibs {
		if _, ok := byDst[path.Join(ctrLibDir, req)]; !ok {
			missing = append(missing, req)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("NVIDIA driver libraries %s not found in %s (for driver %q); set the library directories",
			strings.Join(missing, ", "), strings.Join(libDirs, ":"), driverVersion)
	}

	var search []string
	for _, d := range driverDirs {
		search = append(search, filepath.Join(filepath.Dir(d), "bin"))
	}
	bdirs, err := canonicalDirs(append(search, binDirs...))
	if err != nil {
		return nil, err
	}
	for _, name := range binaries {
		for _, dir := range bdirs {
			src, ok, err := executableTarget(filepath.Join(dir, name))
			if err != nil {
				return nil, err
			}
			if ok {
				dst := path.Join(containerBinDir, name)
				byDst[dst] = roBind(dst, src)
				break
			}
		}
	}

	out := make([]specs.Mount, 0, len(byDst))
	for _, m := range byDst {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b specs.Mount) int { return strings.Compare(a.Destination, b.Destination) })
	return out, nil
}

// regularTarget resolves p to the regular file it is or links to. ok is
// false, with no error, when p is missing, dangling or not a regular file:
// those are skipped, not fatal.
func regularTarget(p string) (string, bool, error) {
	r, err := filepath.EvalSymlinks(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("driver file %s: %w", p, err)
	}
	fi, err := os.Stat(r)
	if err != nil {
		return "", false, fmt.Errorf("driver file %s: %w", p, err)
	}
	return r, fi.Mode().IsRegular(), nil
}

// elfMachine is the ELF machine of this architecture's executables (0 when
// not known here: any machine is accepted then).
func elfMachine() elf.Machine {
	switch runtime.GOARCH {
	case "amd64":
		return elf.EM_X86_64
	case "arm64":
		return elf.EM_AARCH64
	case "ppc64le":
		return elf.EM_PPC64
	default:
		return 0
	}
}

// executableTarget is regularTarget for a program: ok also needs the
// file to be executable and an ELF executable (or position-independent
// executable) of this machine. Scripts, 32-bit builds and files of another
// architecture are skipped, not fatal.
func executableTarget(p string) (string, bool, error) {
	r, ok, err := regularTarget(p)
	if err != nil || !ok {
		return "", false, err
	}
	fi, err := os.Stat(r)
	if err != nil {
		return "", false, fmt.Errorf("driver tool %s: %w", p, err)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return "", false, nil
	}
	f, err := os.Open(r)
	if err != nil {
		return "", false, fmt.Errorf("driver tool %s: %w", p, err)
	}
	defer f.Close()
	magic := make([]byte, len(elf.ELFMAG))
	if _, err := io.ReadFull(f, magic); err != nil || string(magic) != elf.ELFMAG {
		return "", false, nil // not ELF: a script or a wrapper
	}
	ef, err := elf.NewFile(f)
	if err != nil {
		return "", false, nil // a damaged ELF file
	}
	if ef.Type != elf.ET_EXEC && ef.Type != elf.ET_DYN {
		return "", false, nil
	}
	if m := elfMachine(); m != 0 && ef.Machine != m {
		return "", false, nil
	}
	return r, true, nil
}
