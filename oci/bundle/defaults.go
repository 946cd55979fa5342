package bundle

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/emberhq/ember/oci"
)

// Defaults the runtime applies (see HostLimits).
const (
	// CPUPeriod is the CFS period, in microseconds, of a CPU quota.
	CPUPeriod = 100_000
	// MinCPUQuota is the smallest quota the kernel accepts (1 ms).
	MinCPUQuota = 1_000
	// DefaultOOMScoreAdj makes the kernel's global OOM killer pick a
	// worker before emberd (whose score is not raised).
	DefaultOOMScoreAdj = 500
	// MaxDefaultPids caps the default pids limit.
	MaxDefaultPids = 32768
	// MinDefaultPids is the floor of the default pids limit.
	MinDefaultPids = 1024
	// MinShmBytes is the smallest /dev/shm (Docker's whole default).
	MinShmBytes = 64 << 20
)

// Limits are the runtime's defaults for the zero fields of oci.Resources
// (a negative field means "explicitly unlimited"), and the limits that
// oci.Spec does not carry.
type Limits struct {
	// MemoryBytes is the memory limit of a worker whose Resources say 0;
	// 0 here means no limit.
	MemoryBytes int64
	// CPUs is the CPU quota of a worker whose Resources say 0; 0 means
	// none.
	CPUs float64
	// PidsLimit is the pids limit of a worker whose Resources say 0; 0
	// means none.
	PidsLimit int64
	// NoFile is RLIMIT_NOFILE, soft and hard; 0 leaves it inherited.
	NoFile uint64
	// OOMScoreAdj is the workers' oom_score_adj; 0 leaves it inherited.
	OOMScoreAdj int
}

// HostLimits returns the runtime's default Limits on a machine with
// memTotal bytes of RAM, kernel.pid_max pidMax and, for the daemon, a hard
// RLIMIT_NOFILE of noFile (any of them 0 when unknown):
//
//   - memory: memTotal minus a reserve for the host (10 %, at least
//     512 MiB, at most 4 GiB; half of memTotal on very small machines), so
//     that one worker alone cannot drive the machine, and emberd, into the
//     kernel's global OOM killer. It protects the host; it is not a
//     sizing limit. No swap.
//   - CPUs: no quota. CPU time is work-conserving; a quota only caps a
//     worker's throughput, so it is set only when the endpoint asks.
//   - pids: pidMax/4, within [1024, 32768]: a fork bomb cannot use up the
//     host's pids. Threads count.
//   - nofile: the daemon's hard limit, soft and hard (raising it further
//     would need CAP_SYS_RESOURCE).
//   - oom_score_adj: 500.
func HostLimits(memTotal, pidMax int64, noFile uint64) Limits {
	l := Limits{NoFile: noFile, OOMScoreAdj: DefaultOOMScoreAdj}
	if memTotal > 0 {
		reserve := min(max(memTotal/10, 512<<20), 4<<30)
		if reserve > memTotal/2 {
			reserve = memTotal / 2
		}
		l.MemoryBytes = (memTotal - reserve) &^ (1<<20 - 1) // whole MiB
	}
	l.PidsLimit = MaxDefaultPids
	if pidMax > 0 {
		l.PidsLimit = min(max(pidMax/4, MinDefaultPids), MaxDefaultPids)
	}
	return l
}

// Resolved are a worker's effective limits; 0 means unlimited.
type Resolved struct {
	MemoryBytes int64
	CPUs        float64
	PidsLimit   int64
}

// Resolve applies l's defaults to r: a zero field takes the default, a
// negative one means unlimited.
func (l Limits) Resolve(r oci.Resources) Resolved {
	var out Resolved
	switch {
	case r.MemoryBytes > 0:
		out.MemoryBytes = r.MemoryBytes
	case r.MemoryBytes == 0:
		out.MemoryBytes = max(l.MemoryBytes, 0)
	}
	switch {
	case r.CPUs > 0:
		out.CPUs = r.CPUs
	case r.CPUs == 0:
		out.CPUs = max(l.CPUs, 0)
	}
	switch {
	case r.PidsLimit > 0:
		out.PidsLimit = r.PidsLimit
	case r.PidsLimit == 0:
		out.PidsLimit = max(l.PidsLimit, 0)
	}
	return out
}

func (l Limits) rlimits() []specs.POSIXRlimit {
	if l.NoFile == 0 {
		return nil
	}
	return []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: l.NoFile, Hard: l.NoFile}}
}

// CPUQuota is the CFS quota, in microseconds per CPUPeriod, of cpus CPUs.
func CPUQuota(cpus float64) int64 {
	return max(int64(cpus*CPUPeriod+0.5), MinCPUQuota)
}

func resources(r Resolved, swapLimit bool) *specs.LinuxResources {
	lr := &specs.LinuxResources{
		// Deny every device; libcontainer then allows its default set
		// (null, zero, full, random, urandom, tty, ptmx and pts), and a
		// DeviceInjector adds rules for the GPUs.
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
	}
	if r.MemoryBytes > 0 {
		limit := r.MemoryBytes
		lr.Memory = &specs.LinuxMemory{Limit: &limit}
		if swapLimit {
			// memory+swap == memory: no swap.
			swap := r.MemoryBytes
			lr.Memory.Swap = &swap
		}
	}
	if r.CPUs > 0 {
		quota := CPUQuota(r.CPUs)
		period := uint64(CPUPeriod)
		lr.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	if r.PidsLimit > 0 {
		pids := r.PidsLimit
		lr.Pids = &specs.LinuxPids{Limit: &pids}
	}
	return lr
}

// DefaultCapabilities are a worker's capabilities when it runs as root:
// Podman's default set, which is Docker's less CAP_MKNOD (the device cgroup
// forbids new devices anyway), CAP_NET_RAW (raw sockets on the host's
// network) and CAP_AUDIT_WRITE.
var DefaultCapabilities = []string{
	"CAP_CHOWN",
	"CAP_DAC_OVERRIDE",
	"CAP_FOWNER",
	"CAP_FSETID",
	"CAP_KILL",
	"CAP_NET_BIND_SERVICE",
	"CAP_SETFCAP",
	"CAP_SETGID",
	"CAP_SETPCAP",
	"CAP_SETUID",
	"CAP_SYS_CHROOT",
}

// Capabilities is the capability set of a worker running as uid: the
// bounding set is DefaultCapabilities; root also has them effective and
// permitted, other users none (as Docker does since 20.10). Inheritable
// and ambient sets are empty.
func Capabilities(uid int) *specs.LinuxCapabilities {
	c := &specs.LinuxCapabilities{Bounding: append([]string(nil), DefaultCapabilities...)}
	if uid == 0 {
		c.Effective = append([]string(nil), DefaultCapabilities...)
		c.Permitted = append([]string(nil), DefaultCapabilities...)
	}
	return c
}

// MaskedPaths are hidden from workers (Docker's list): /dev/null is bound
// over files, an empty read-only tmpfs over directories.
var MaskedPaths = []string{
	"/proc/acpi",
	"/proc/asound",
	"/proc/interrupts",
	"/proc/kcore",
	"/proc/keys",
	"/proc/latency_stats",
	"/proc/sched_debug",
	"/proc/scsi",
	"/proc/timer_list",
	"/proc/timer_stats",
	"/sys/devices/virtual/powercap",
	"/sys/firmware",
}

// ReadonlyPaths are remounted read-only (Docker's list).
var ReadonlyPaths = []string{
	"/proc/bus",
	"/proc/fs",
	"/proc/irq",
	"/proc/sys",
	"/proc/sysrq-trigger",
}

// Etc files WriteEtc writes and Build binds read-only over /etc/<name>.
var EtcFiles = []string{"hosts", "resolv.conf", "hostname"}

// ShmBytes is the size of a worker's /dev/shm: half its memory limit, at
// least MinShmBytes (PyTorch's DataLoader and NCCL need far more than
// Docker's 64 MiB). tmpfs pages are charged to the worker's memory cgroup,
// so a large /dev/shm cannot take more than the limit. 0 (no memory limit)
// means the kernel's tmpfs default, half of RAM.
func ShmBytes(memoryLimit int64) int64 {
	if memoryLimit <= 0 {
		return 0
	}
	return max(memoryLimit/2&^(1<<20-1), MinShmBytes)
}

func mounts(o Options, r Resolved) []specs.Mount {
	shm := []string{"nosuid", "noexec", "nodev", "mode=1777"}
	if size := ShmBytes(r.MemoryBytes); size > 0 {
		shm = append(shm, "size="+strconv.FormatInt(size, 10))
	}
	m := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: shm},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
	}
	if o.Spec.VolumeDir != "" {
		m = append(m, specs.Mount{
			Destination: VolumeMountPoint, Type: "bind", Source: o.Spec.VolumeDir,
			Options: []string{"rbind", "rw", "nosuid", "nodev", "rprivate"},
		})
	}
	if o.withInit() {
		m = append(m, specs.Mount{
			Destination: InitMountPoint, Type: "bind", Source: o.Init,
			Options: []string{"bind", "ro", "nosuid", "nodev", "rprivate"},
		})
	}
	if o.EtcDir != "" {
		for _, name := range EtcFiles {
			src := filepath.Join(o.EtcDir, name)
			if _, err := os.Stat(src); err != nil {
				continue
			}
			m = append(m, specs.Mount{
				Destination: "/etc/" + name, Type: "bind", Source: src,
				Options: []string{"bind", "ro", "nosuid", "nodev", "noexec", "rprivate"},
			})
		}
	}
	return m
}

// WriteEtc writes the hosts, resolv.conf and hostname files of a worker
// into dir (created if needed), for Options.EtcDir. With host networking
// hosts and resolv.conf are copies of hostEtc's (normally "/etc": the
// worker resolves names like the host, and reaches emberd on loopback);
// with network "none" hosts maps only localhost and the hostname, and
// resolv.conf is empty. hostname is the worker's hostname.
func WriteEtc(dir, network, hostname, hostEtc string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bundle: create etc dir: %w", err)
	}
	var hosts, resolv []byte
	switch network {
	case "", NetworkHost:
		var err error
		if hosts, err = os.ReadFile(filepath.Join(hostEtc, "hosts")); err != nil {
			hosts = localHosts(hostname)
		}
		if resolv, err = os.ReadFile(filepath.Join(hostEtc, "resolv.conf")); err != nil {
			resolv = nil
		}
	case NetworkNone:
		hosts = localHosts(hostname)
	default:
		return fmt.Errorf("bundle: network %q: must be %q or %q", network, NetworkHost, NetworkNone)
	}
	files := map[string][]byte{
		"hosts":       hosts,
		"resolv.conf": resolv,
		"hostname":    []byte(hostname + "\n"),
	}
	for _, name := range EtcFiles {
		if err := os.WriteFile(filepath.Join(dir, name), files[name], 0o644); err != nil {
			return fmt.Errorf("bundle: write %s: %w", name, err)
		}
	}
	return nil
}

func localHosts(hostname string) []byte {
	s := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if hostname != "" {
		s += "127.0.1.1\t" + hostname + "\n"
	}
	return []byte(s)
}
