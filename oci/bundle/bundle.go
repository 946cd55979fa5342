// Package bundle builds the OCI runtime spec (a bundle's config.json) of a
// worker container from its image's config and the worker's oci.Spec.
//
// It is spec generation only: nothing here mounts, starts or needs root.
// The one thing it reads is the root filesystem's /etc/passwd and
// /etc/group, to resolve the image's user, through an os.Root so that a
// hostile image cannot point them at the host's files.
//
// What a worker gets (see Build for the details and the defaults):
//
//   - argv: oci.Spec.Command when set, replacing the image's Entrypoint
//     and Cmd both (as `docker run --entrypoint X IMAGE args...` does);
//     else Entrypoint followed by Cmd.
//   - env: the image's Env, overridden key by key by oci.Spec.Env (the
//     RunPod worker environment wins); PATH from the image when the worker
//     env has none, a default PATH when neither has one; HOME from the
//     user's passwd entry and HOSTNAME when unset.
//   - user: the image's User ("", "name", "uid", "name:group", "uid:gid"),
//     names resolved against the rootfs (see ResolveUser).
//   - namespaces: pid, mount, ipc, uts always; network "host" (the default)
//     shares the host's, "none" gets its own with only lo up; cgroup on
//     cgroup v2 only (as Docker does).
//   - limits: memory (no swap), CFS quota from CPUs, pids, with Limits as
//     the defaults for zero fields.
//   - hardening: no_new_privs, a capability set narrower than Docker's, the
//     Docker-like seccomp profile of DefaultSeccomp, masked and read-only
//     /proc and /sys paths, read-only /sys and /sys/fs/cgroup, a device
//     cgroup that denies everything but runc's default devices.
//   - mounts: /proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, /sys,
//     /sys/fs/cgroup, /runpod-volume (read-write bind of VolumeDir) and
//     /etc/hosts, /etc/resolv.conf, /etc/hostname (read-only binds of the
//     files WriteEtc writes).
//   - GPUs: handed to the DeviceInjector; asking for GPUs without one is an
//     error.
package bundle

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/sys/user"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/emberhq/ember/oci"
)

// DefaultPath is the PATH of a worker when neither the image nor the worker
// environment has one (Docker's default).
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// VolumeMountPoint is where oci.Spec.VolumeDir appears in the container.
const VolumeMountPoint = "/runpod-volume"

// Network modes of oci.Spec.Network.
const (
	NetworkHost = "host"
	NetworkNone = "none"
)

// Annotations the spec carries; libcontainer keeps them as the container's
// labels ("key=value"), which is how a later emberd finds out what a
// container left behind was.
const (
	AnnotationWorker   = "org.emberhq.worker"
	AnnotationEndpoint = "org.emberhq.endpoint"
	AnnotationImage    = "org.emberhq.image"
	AnnotationLogPath  = "org.emberhq.log-path"
	AnnotationDir      = "org.emberhq.dir"
	AnnotationMemory   = "org.emberhq.memory-limit"
)

// Options are the inputs of Build.
type Options struct {
	// Spec is the worker.
	Spec oci.Spec
	// Image is the config of the worker's image.
	Image oci.ImageConfig
	// Rootfs is the absolute path of the worker's root filesystem (the
	// mounted overlay). The image's user is resolved against its
	// /etc/passwd and /etc/group.
	Rootfs string
	// EtcDir holds the hosts, resolv.conf and hostname files that WriteEtc
	// wrote; each is bound read-only over /etc/<name>. Empty: none.
	EtcDir string
	// Hostname is the container's hostname. Empty: the host's with host
	// networking (the UTS namespace starts as a copy of it), the worker id
	// with network "none".
	Hostname string
	// CgroupsPath is the OCI cgroupsPath: "/ember/<id>" for the cgroupfs
	// driver, "slice:prefix:name" for the systemd driver. Empty: runc's
	// default (the container id, under the caller's own cgroup).
	CgroupsPath string
	// Limits fill in the zero fields of Spec.Resources.
	Limits Limits
	// Host describes the machine.
	Host Host
	// Devices gives the container its GPUs. Required when Spec.GPUs is set.
	Devices oci.DeviceInjector
	// Init is the host path of an init (ember-init) that runs as the
	// container's PID 1 in front of the worker's argv, bound read-only at
	// InitMountPoint. Empty, or Spec.NoInit: the argv's first program is
	// PID 1 itself.
	Init string
}

// InitMountPoint is where Options.Init appears in the container: under
// /dev, a tmpfs of the container's own (as podman puts catatonit there),
// so that nothing is created in the image's filesystem and no image path
// is shadowed.
const InitMountPoint = "/dev/init"

// Host is what the spec depends on about the machine.
type Host struct {
	// Kernel is the running kernel's version. Like Docker, ptrace and
	// process_vm_readv/writev are allowed from 4.8 on (older kernels let
	// ptrace bypass seccomp); the zero value counts as older.
	Kernel KernelVersion
	// CgroupV2 gives the container a private cgroup namespace (Docker's
	// default on cgroup v2; on v1 it shares the host's).
	CgroupV2 bool
	// NoSwapLimit says the memory cgroup cannot limit swap (cgroup v1
	// without swap accounting): the spec then sets no memory+swap limit.
	NoSwapLimit bool
	// Arch is a GOARCH naming the seccomp architectures; empty means
	// runtime.GOARCH.
	Arch string
}

// KernelVersion is a kernel's major.minor.
type KernelVersion struct{ Major, Minor int }

// AtLeast reports whether k >= major.minor.
func (k KernelVersion) AtLeast(major, minor int) bool {
	return k.Major > major || (k.Major == major && k.Minor >= minor)
}

// ParseKernelVersion reads the major.minor out of a uname release such as
// "6.18.44-fc-v782".
func ParseKernelVersion(release string) (KernelVersion, error) {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return KernelVersion{}, fmt.Errorf("kernel release %q: want major.minor", release)
	}
	major, err := strconv.Atoi(parts[0])
	if err != nil {
		return KernelVersion{}, fmt.Errorf("kernel release %q: %w", release, err)
	}
	minorDigits := parts[1]
	if i := strings.IndexFunc(minorDigits, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minorDigits = minorDigits[:i]
	}
	minor, err := strconv.Atoi(minorDigits)
	if err != nil {
		return KernelVersion{}, fmt.Errorf("kernel release %q: %w", release, err)
	}
	return KernelVersion{major, minor}, nil
}

// Build returns the OCI runtime spec of a worker.
func Build(o Options) (*specs.Spec, error) {
	if o.Spec.ID == "" {
		return nil, errors.New("bundle: the worker has no id")
	}
	if !filepath.IsAbs(o.Rootfs) {
		return nil, fmt.Errorf("bundle: rootfs %q is not an absolute path", o.Rootfs)
	}
	network := o.Spec.Network
	if network == "" {
		network = NetworkHost
	}
	if network != NetworkHost && network != NetworkNone {
		return nil, fmt.Errorf("bundle: network %q: must be %q or %q", network, NetworkHost, NetworkNone)
	}
	args, err := Args(o.Image, o.Spec.Command)
	if err != nil {
		return nil, err
	}
	if o.withInit() {
		// "--": an entrypoint whose name starts with "-" stays the
		// entrypoint.
		args = append([]string{InitMountPoint, "--"}, args...)
	}
	u, err := ResolveUser(o.Rootfs, o.Image.User)
	if err != nil {
		return nil, err
	}
	hostname := o.Hostname
	if hostname == "" && network == NetworkNone {
		hostname = o.Spec.ID
		if len(hostname) > 63 {
			hostname = hostname[:63]
		}
	}
	env, err := MergeEnv(o.Image.Env, o.Spec.Env)
	if err != nil {
		return nil, err
	}
	env = setDefault(env, "HOME", cmp.Or(u.Home, "/"))
	if hostname != "" {
		env = setDefault(env, "HOSTNAME", hostname)
	}
	cwd := o.Image.WorkingDir
	if cwd == "" {
		cwd = "/"
	} else if !path.IsAbs(cwd) {
		cwd = "/" + cwd
	}
	res := o.Limits.Resolve(o.Spec.Resources)
	caps := Capabilities(u.Uid)

	s := &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: o.Rootfs},
		Process: &specs.Process{
			User: specs.User{
				UID:            uint32(u.Uid),
				GID:            uint32(u.Gid),
				AdditionalGids: toUint32s(u.Sgids),
			},
			Args:            args,
			Env:             env,
			Cwd:             path.Clean(cwd),
			Capabilities:    caps,
			NoNewPrivileges: true,
			Rlimits:         o.Limits.rlimits(),
		},
		Hostname:    hostname,
		Mounts:      mounts(o, res),
		Annotations: annotations(o.Spec, res),
		Linux: &specs.Linux{
			CgroupsPath:   o.CgroupsPath,
			Resources:     resources(res, !o.Host.NoSwapLimit),
			Namespaces:    namespaces(network, o.Host.CgroupV2),
			MaskedPaths:   slices.Clone(MaskedPaths),
			ReadonlyPaths: slices.Clone(ReadonlyPaths),
			Seccomp:       DefaultSeccomp(cmp.Or(o.Host.Arch, runtime.GOARCH), o.Host.Kernel, caps.Bounding),
		},
	}
	if o.Limits.OOMScoreAdj != 0 {
		adj := o.Limits.OOMScoreAdj
		s.Process.OOMScoreAdj = &adj
	}
	if len(o.Spec.GPUs) > 0 {
		if o.Devices == nil {
			return nil, fmt.Errorf("bundle: the worker asks for %d GPU(s) and this runtime has no GPU support (no device injector)", len(o.Spec.GPUs))
		}
		if err := o.Devices.Inject(s, slices.Clone(o.Spec.GPUs)); err != nil {
			return nil, fmt.Errorf("bundle: give the worker its GPUs: %w", err)
		}
	}
	return s, nil
}

func (o Options) withInit() bool { return o.Init != "" && !o.Spec.NoInit }

// Args is the worker's argv: command, when set, replaces the image's
// Entrypoint and Cmd both (like `docker run --entrypoint`, which also drops
// the image's Cmd); else it is Entrypoint followed by Cmd.
func Args(img oci.ImageConfig, command []string) ([]string, error) {
	var args []string
	if len(command) > 0 {
		args = slices.Clone(command)
	} else {
		args = append(slices.Clone(img.Entrypoint), img.Cmd...)
	}
	if len(args) == 0 || args[0] == "" {
		return nil, errors.New("bundle: nothing to run: the endpoint has no command and the image no entrypoint or cmd")
	}
	return args, nil
}

// MergeEnv is the worker's environment: the image's variables, each
// replaced by the worker environment's value of the same key, then the
// worker environment's other variables in their order. The image's PATH
// stays unless the worker environment sets one; DefaultPath is used when
// neither does. A later duplicate key wins. Entries must be KEY=VALUE.
func MergeEnv(image, worker []string) ([]string, error) {
	out := make([]string, 0, len(image)+len(worker)+1)
	index := make(map[string]int, cap(out))
	add := func(kv, from string) error {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("bundle: %s environment entry %q is not KEY=VALUE", from, kv)
		}
		if strings.IndexByte(kv, 0) >= 0 {
			return fmt.Errorf("bundle: %s environment entry for %s holds a NUL byte", from, k)
		}
		if i, ok := index[k]; ok {
			out[i] = kv
			return nil
		}
		index[k] = len(out)
		out = append(out, kv)
		return nil
	}
	for _, kv := range image {
		if err := add(kv, "image"); err != nil {
			return nil, err
		}
	}
	for _, kv := range worker {
		if err := add(kv, "worker"); err != nil {
			return nil, err
		}
	}
	if _, ok := index["PATH"]; !ok {
		out = append(out, "PATH="+DefaultPath)
	}
	return out, nil
}

func setDefault(env []string, key, value string) []string {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return env
		}
	}
	return append(env, key+"="+value)
}

// ResolveUser resolves an image's user ("", "name", "uid", "name:group",
// "uid:gid", "uid:group", "name:gid") against rootfs's /etc/passwd and
// /etc/group, with Docker's rules: the empty user is root; a numeric uid
// need not exist (its gid is then 0 unless given); a name must exist; when
// no group is given the user's supplementary groups come from /etc/group
// (runc's rule: a given group replaces them all). The files are opened
// through an os.Root, so symlinks cannot lead out of the rootfs.
func ResolveUser(rootfs, spec string) (*user.ExecUser, error) {
	defaults := &user.ExecUser{Uid: 0, Gid: 0, Home: "/"}
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return nil, fmt.Errorf("bundle: open rootfs: %w", err)
	}
	defer root.Close()
	passwd, closeP := openIn(root, "etc/passwd")
	defer closeP()
	group, closeG := openIn(root, "etc/group")
	defer closeG()
	u, err := user.GetExecUser(spec, defaults, passwd, group)
	if err != nil {
		return nil, fmt.Errorf("bundle: image user %q: %w", spec, err)
	}
	if u.Uid < 0 || u.Gid < 0 {
		return nil, fmt.Errorf("bundle: image user %q: negative id", spec)
	}
	return u, nil
}

// openIn opens a file inside root; a missing or unreadable file is a nil
// reader (GetExecUser then resolves numeric ids only).
func openIn(root *os.Root, name string) (io.Reader, func()) {
	f, err := root.Open(name)
	if err != nil {
		return nil, func() {}
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, func() {}
	}
	return f, func() { f.Close() }
}

func annotations(s oci.Spec, r Resolved) map[string]string {
	a := map[string]string{
		AnnotationWorker:  s.ID,
		AnnotationLogPath: s.LogPath,
		AnnotationDir:     s.Dir,
	}
	if s.Endpoint != "" {
		a[AnnotationEndpoint] = s.Endpoint
	}
	if s.Image != "" {
		a[AnnotationImage] = s.Image
	}
	if r.MemoryBytes > 0 {
		a[AnnotationMemory] = strconv.FormatInt(r.MemoryBytes, 10)
	}
	return a
}

func namespaces(network string, cgroupNS bool) []specs.LinuxNamespace {
	ns := []specs.LinuxNamespace{
		{Type: specs.PIDNamespace},
		{Type: specs.MountNamespace},
		{Type: specs.IPCNamespace},
		{Type: specs.UTSNamespace},
	}
	if network == NetworkNone {
		// A fresh network namespace; libcontainer brings up lo in it.
		ns = append(ns, specs.LinuxNamespace{Type: specs.NetworkNamespace})
	}
	if cgroupNS {
		ns = append(ns, specs.LinuxNamespace{Type: specs.CgroupNamespace})
	}
	return ns
}

func toUint32s(ids []int) []uint32 {
	if len(ids) == 0 {
		return nil
	}
	out := make([]uint32, 0, len(ids))
	for _, id := range ids {
		if id >= 0 {
			out = append(out, uint32(id))
		}
	}
	return out
}
