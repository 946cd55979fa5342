// Package runc is Ember's container runtime: every worker is an OCI bundle
// run by runc's libcontainer, embedded in emberd (no runc binary).
//
// A worker's life:
//
//  1. its image is resolved (oci.Images) to read-only layer directories;
//  2. an overlay is mounted, by emberd, at <Dir>/rootfs: lowerdir = the
//     layers, upperdir and workdir private to the worker in <Dir>, so that
//     everything the worker writes lands in <Dir>/upper;
//  3. the OCI spec is built (package bundle) and written to
//     <Dir>/config.json (mode 0600: it holds the worker's API token);
//  4. libcontainer creates the container (state under Options.StateDir,
//     cgroup under Options.CgroupParent, cgroupfs driver unless PID 1 is
//     systemd) and runs its init process, whose stdout and stderr are the
//     worker's log file, directly: the container keeps writing its log
//     when emberd is gone. A goroutine keeps the log under a size cap by
//     rotation (Options.LogMaxBytes x Options.LogMaxFiles);
//  5. when the worker exits: its exit status is read (OOM kills from the
//     memory cgroup's counter), the container is destroyed (cgroups, state),
//     the overlay is unmounted and <Dir>/upper, work, rootfs, etc are
//     removed. Only then is Done closed.
//
// Containers outlive emberd: a restarted emberd finds those an earlier run
// left with Runtime.Leftovers, and adopts or destroys them.
//
// The binary that uses this package must call InitIfChild first thing in
// main: libcontainer starts containers by re-executing /proc/self/exe init.
package runc

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	// Device cgroup rules (without it libcontainer fails on any spec that
	// lists devices).
	_ "github.com/opencontainers/cgroups/devices"
	// The C constructor that runs before the Go runtime in "init" (joins
	// namespaces and so on).
	_ "github.com/opencontainers/runc/libcontainer/nsenter"

	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/oci/bundle"
)

// InitIfChild runs libcontainer's container init when this process is one,
// and returns at once otherwise. libcontainer starts a container by
// re-executing the running binary as "<argv0> init"; that process must run
// libcontainer.Init before anything else happens (no flag parsing, no
// goroutines, no logging). Call it first thing in main, and in TestMain of
// any test binary that starts containers. In the init process it does not
// return.
func InitIfChild() {
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init() // does not return
	}
}

// Defaults of Options.
const (
	DefaultStateDir     = "/run/ember/runc"
	DefaultCgroupParent = "/ember"
	DefaultSystemdSlice = "system.slice"
	DefaultLogMaxBytes  = 10 << 20
	DefaultLogMaxFiles  = 3
	DefaultLogInterval  = time.Second
)

// Options configure a Runtime.
type Options struct {
	// Images resolves a worker's image. Required.
	Images oci.Images
	// Devices gives workers their GPUs; nil means a worker that asks for
	// GPUs fails to start.
	Devices oci.DeviceInjector
	// StateDir is libcontainer's state root: one directory per container.
	// Default DefaultStateDir, on tmpfs, so that it does not outlive the
	// containers across a reboot.
	StateDir string
	// CgroupDriver is "cgroupfs" or "systemd"; empty means systemd when
	// the machine was booted with systemd (PID 1), else cgroupfs.
	CgroupDriver string
	// CgroupParent is where worker cgroups go: a path for cgroupfs
	// (default "/ember": /sys/fs/cgroup/<controller>/ember/<id>), a slice
	// for systemd (default "system.slice": unit ember-<id>.scope).
	CgroupParent string
	// Limits are the defaults for a worker's zero oci.Resources; nil
	// means bundle.HostLimits of this machine.
	Limits *bundle.Limits
	// LogMaxBytes caps a worker's log file; when it grows past the cap it
	// is rotated to LOG.1 (LOG.1 to LOG.2, ...). Default 10 MiB.
	LogMaxBytes int64
	// LogMaxFiles is how many files a worker's log may span, the live one
	// included. Default 3.
	LogMaxFiles int
	// LogCheckInterval is how often the log size is checked. Default 1 s:
	// the cap may be overshot by what the worker writes in that time.
	LogCheckInterval time.Duration
	// HostEtc is where the host's hosts and resolv.conf are read from for
	// workers on the host network. Default "/etc".
	HostEtc string
	// Logger receives the runtime's own messages. Default slog.Default().
	Logger *slog.Logger
	// AllowNoSeccomp lets New succeed in a binary built without the
	// seccomp tag, whose workers then run without a seccomp profile (a
	// root worker could, for one, create user namespaces). For
	// development builds and tests only; New fails without it.
	AllowNoSeccomp bool
	// Init is the host path of ember-init, run as PID 1 of every worker
	// container whose spec does not say NoInit (see bundle.Options.Init);
	// New checks that it is an executable file. Empty: no init.
	Init string
}

// DefaultInit is where the packages install ember-init.
const DefaultInit = "/usr/lib/ember/ember-init"

// Runtime runs workers as containers. It implements oci.Runtime.
type Runtime struct {
	images       oci.Images
	devices      oci.DeviceInjector
	stateDir     string
	systemd      bool
	cgroupParent string
	anchor       *freezeAnchor // nil unless cgroup v1 with cgroupfs
	limits       bundle.Limits
	host         bundle.Host
	logMax       int64
	logFiles     int
	logInterval  time.Duration
	hostEtc      string
	init         string
	log          *slog.Logger

	warnSeccomp sync.Once

	stopReaper chan struct{}
	reaperDone chan struct{}
	closeOnce  sync.Once
}

var _ oci.Runtime = (*Runtime)(nil)

// New returns a Runtime.
//
// It makes this process a child subreaper (PR_SET_CHILD_SUBREAPER): a
// descendant orphaned below emberd (runc's intermediate init stages when
// libcontainer fails half-way, the double-forked children of anything
// emberd runs outside a PID namespace) is re-parented to emberd instead of
// PID 1, which on some machines reaps orphans only after seconds and under
// systemd sits outside emberd's cgroup. Workers' own orphans stay inside
// their PID namespace, reaped by the worker's init. (The init of a
// container whose emberd died goes to the next subreaper above that
// emberd, or PID 1, never to a restarted emberd: which is why an adopted
// worker's exit status is usually unknown.) A subreaper must reap what it
// inherits, and os/exec and libcontainer wait only for their own children,
// so New also starts a reaper of orphaned zombies (see reapOrphans); Close
// stops it.
//
// Without the seccomp build tag New fails unless o.AllowNoSeccomp is set.
func New(o Options) (*Runtime, error) {
	if o.Images == nil {
		return nil, errors.New("runc runtime: no image store")
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("runc runtime: emberd must run as root to run containers")
	}
	if o.Init != "" {
		if err := checkInit(o.Init); err != nil {
			return nil, err
		}
	}
	r := &Runtime{
		images:       o.Images,
		devices:      o.Devices,
		stateDir:     cmp.Or(o.StateDir, DefaultStateDir),
		cgroupParent: o.CgroupParent,
		logMax:       o.LogMaxBytes,
		logFiles:     o.LogMaxFiles,
		logInterval:  o.LogCheckInterval,
		hostEtc:      cmp.Or(o.HostEtc, "/etc"),
		init:         o.Init,
		log:          o.Logger,
		stopReaper:   make(chan struct{}),
		reaperDone:   make(chan struct{}),
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	if r.logMax <= 0 {
		r.logMax = DefaultLogMaxBytes
	}
	if r.logFiles <= 0 {
		r.logFiles = DefaultLogMaxFiles
	}
	if r.logInterval <= 0 {
		r.logInterval = DefaultLogInterval
	}
	switch o.CgroupDriver {
	case "":
		r.systemd = bootedWithSystemd()
	case "systemd":
		r.systemd = true
	case "cgroupfs":
	default:
		return nil, fmt.Errorf("runc runtime: cgroup driver %q: must be cgroupfs or systemd", o.CgroupDriver)
	}
	if r.cgroupParent == "" {
		r.cgroupParent = DefaultCgroupParent
		if r.systemd {
			r.cgroupParent = DefaultSystemdSlice
		}
	}
	if !filepath.IsAbs(r.stateDir) {
		return nil, fmt.Errorf("runc runtime: state dir %q is not an absolute path", r.stateDir)
	}
	if err := os.MkdirAll(r.stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("runc runtime: create state dir: %w", err)
	}
	host, err := probeHost()
	if err != nil {
		return nil, fmt.Errorf("runc runtime: %w", err)
	}
	r.host = host
	if o.Limits != nil {
		r.limits = *o.Limits
	} else {
		r.limits = hostLimits()
	}
	if !SeccompEnabled() {
		if !o.AllowNoSeccomp {
			return nil, errors.New("runc runtime: this binary was built without seccomp support (go build -tags seccomp, with cgo and libseccomp-dev)")
		}
		r.log.Warn("built without the seccomp tag: workers run without a seccomp profile")
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("runc runtime: become a child subreaper: %w", err)
	}
	go r.reapOrphans()
	r.anchor = newFreezeAnchor(r.cgroupParent, r.systemd)
	return r, nil
}

// Close stops the runtime's background work. Running workers are left
// alone: they keep running, and Leftovers finds them.
func (r *Runtime) Close() error {
	r.closeOnce.Do(func() {
		close(r.stopReaper)
		r.anchor.release()
	})
	<-r.reaperDone
	return nil
}

// Name implements oci.Runtime.
func (*Runtime) Name() string { return "runc" }

// SeccompEnabled reports whether this binary can apply seccomp profiles
// (built with the seccomp tag, cgo and libseccomp).
func SeccompEnabled() bool { return seccompCompiled }

// StartTimings are the durations of the phases of a worker's start.
type StartTimings struct {
	Resolve time.Duration // image store lookup
	Mount   time.Duration // overlay mount (and the worker's dirs)
	Spec    time.Duration // OCI spec, config.json, libcontainer config
	Create  time.Duration // libcontainer.Create
	Start   time.Duration // container.Run: runc init, namespaces, cgroups, exec
	Total   time.Duration
}

// Start implements oci.Runtime: it returns once the worker's process has
// been exec'd. ctx bounds the start only, not the worker's life.
func (r *Runtime) Start(ctx context.Context, spec oci.Spec) (oci.Worker, error) {
	w, err := r.start(ctx, spec)
	if err != nil {
		return nil, err
	}
	return w, nil
}

var validID = regexp.MustCompile(`^[\w+.-]+$`)

// Until one container has started, starts take turns. On cgroup v1,
// libcontainer's blkio controller is a process-wide value that finds out
// its file names on the first Set and caches them in plain fields (the
// cgroups module's fs/blkio.go, detectWeightFilenames): two first starts
// at once write them together, a data race. Once a start has succeeded
// the names are known and only read, so later starts run side by side.
var (
	firstStartMu   sync.Mutex
	firstStartDone atomic.Bool
)

// runContainer runs c's init process, one at a time until a start has
// succeeded (firstStartMu).
func runContainer(c *libcontainer.Container, proc *libcontainer.Process) error {
	if firstStartDone.Load() {
		return c.Run(proc)
	}
	firstStartMu.Lock()
	defer firstStartMu.Unlock()
	if err := c.Run(proc); err != nil {
		return err
	}
	firstStartDone.Store(true)
	return nil
}

// paths are the files of a worker under its Dir.
type paths struct {
	dir, rootfs, upper, work, links, etc, config string
}

func workerPaths(dir string) paths {
	return paths{
		dir:    dir,
		rootfs: filepath.Join(dir, "rootfs"),
		upper:  filepath.Join(dir, "upper"),
		work:   filepath.Join(dir, "work"),
		links:  filepath.Join(dir, "l"),
		etc:    filepath.Join(dir, "etc"),
		config: filepath.Join(dir, "config.json"),
	}
}

func (r *Runtime) start(ctx context.Context, spec oci.Spec) (w *Worker, retErr error) {
	t0 := time.Now()
	var tm StartTimings
	if !validID.MatchString(spec.ID) || spec.ID == "." || spec.ID == ".." {
		return nil, fmt.Errorf("runc runtime: worker id %q: only letters, digits, '_', '+', '-' and '.' are allowed", spec.ID)
	}
	if spec.Image == "" {
		return nil, errors.New("runc runtime: the endpoint has no image")
	}
	if !filepath.IsAbs(spec.Dir) {
		return nil, fmt.Errorf("runc runtime: worker dir %q is not an absolute path", spec.Dir)
	}
	if spec.LogPath == "" {
		return nil, errors.New("runc runtime: the worker has no log path")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start worker %s: %w", spec.ID, err)
	}

	rootfs, err := r.images.Resolve(spec.Image)
	if err != nil {
		return nil, fmt.Errorf("start worker %s: image %s: %w", spec.ID, spec.Image, err)
	}
	tm.Resolve = time.Since(t0)

	t := time.Now()
	p := workerPaths(spec.Dir)
	if err := os.MkdirAll(p.dir, 0o750); err != nil {
		return nil, fmt.Errorf("start worker %s: %w", spec.ID, err)
	}
	var made []string
	for _, d := range []string{p.rootfs, p.upper, p.work} {
		// upper's mode becomes the mode of the container's "/". Mkdir, not
		// MkdirAll: never reuse (or, on failure, remove) another's dirs.
		if err := os.Mkdir(d, 0o755); err != nil {
			for _, m := range made {
				os.Remove(m)
			}
			return nil, fmt.Errorf("start worker %s: %w", spec.ID, err)
		}
		made = append(made, d)
	}
	if err := mountOverlay(rootfs.Layers, p); err != nil {
		removeWorkerFiles(p)
		return nil, fmt.Errorf("start worker %s: %w", spec.ID, err)
	}
	defer func() {
		if retErr != nil {
			if err := cleanupFiles(p); err != nil {
				r.log.Error("clean up after a failed start", "worker", spec.ID, "err", err)
			}
		}
	}()
	tm.Mount = time.Since(t)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start worker %s: %w", spec.ID, err)
	}

	t = time.Now()
	cfg, ociSpec, err := r.config(spec, rootfs.Config, p)
	if err != nil {
		return nil, fmt.Errorf("start worker %s: %w", spec.ID, err)
	}
	tm.Spec = time.Since(t)

	t = time.Now()
	c, err := libcontainer.Create(r.stateDir, spec.ID, cfg)
	if err != nil {
		return nil, fmt.Errorf("start worker %s: create container: %w", spec.ID, err)
	}
	tm.Create = time.Since(t)
	defer func() {
		if retErr != nil {
			_ = c.Signal(unix.SIGKILL)
			if err := c.Destroy(); err != nil {
				r.log.Error("destroy container after a failed start", "worker", spec.ID, "err", err)
			}
		}
	}()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start worker %s: %w", spec.ID, err)
	}

	t = time.Now()
	logf, err := openLog(spec.LogPath)
	if err != nil {
		return nil, fmt.Errorf("start worker %s: %w", spec.ID, err)
	}
	// The container gets its own copies of the descriptor; ours is not
	// needed once it runs (the rotator works on the path).
	defer logf.Close()
	proc, err := newProcess(ociSpec.Process)
	if err != nil {
		return nil, fmt.Errorf("start worker %s: %w", spec.ID, err)
	}
	proc.Stdout, proc.Stderr = logf, logf
	proc.Init = true
	if err := runContainer(c, proc); err != nil {
		return nil, fmt.Errorf("start worker %s: run container: %w", spec.ID, err)
	}
	tm.Start = time.Since(t)
	pid, err := proc.Pid()
	if err != nil {
		_ = c.Signal(unix.SIGKILL)
		_, _ = proc.Wait()
		return nil, fmt.Errorf("start worker %s: %w", spec.ID, err)
	}
	st, err := c.State()
	if err != nil {
		_ = c.Signal(unix.SIGKILL)
		_, _ = proc.Wait()
		return nil, fmt.Errorf("start worker %s: container state: %w", spec.ID, err)
	}
	tm.Total = time.Since(t0)

	w = newWorker(r, c, pid, p, spec.LogPath, st.CgroupPaths, cfg.Cgroups.Resources.Memory)
	w.timings = tm
	go w.run(func() oci.ExitStatus {
		ps, err := proc.Wait()
		return exitStatus(ps, err)
	})
	return w, nil
}

// config builds the worker's OCI spec, writes it to config.json and turns it
// into libcontainer's config.
func (r *Runtime) config(spec oci.Spec, img oci.ImageConfig, p paths) (*configs.Config, *specs.Spec, error) {
	network := cmp.Or(spec.Network, bundle.NetworkHost)
	hostname := spec.ID
	if network == bundle.NetworkHost {
		if h, err := os.Hostname(); err == nil {
			hostname = h
		}
	}
	if err := bundle.WriteEtc(p.etc, network, hostname, r.hostEtc); err != nil {
		return nil, nil, err
	}
	s, err := bundle.Build(bundle.Options{
		Spec:        spec,
		Image:       img,
		Rootfs:      p.rootfs,
		EtcDir:      p.etc,
		Hostname:    hostname,
		CgroupsPath: r.cgroupsPath(spec.ID),
		Limits:      r.limits,
		Host:        r.host,
		Devices:     r.devices,
		Init:        r.init,
	})
	if err != nil {
		return nil, nil, err
	}
	if !SeccompEnabled() {
		s.Linux.Seccomp = nil
	}
	if err := writeConfig(p.config, s); err != nil {
		return nil, nil, err
	}
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{
		CgroupName:       spec.ID,
		UseSystemdCgroup: r.systemd,
		Spec:             s,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("libcontainer config: %w", err)
	}
	// specconv labels the bundle with the daemon's working directory.
	for i, l := range cfg.Labels {
		if strings.HasPrefix(l, "bundle=") {
			cfg.Labels[i] = "bundle=" + p.dir
		}
	}
	return cfg, s, nil
}

func (r *Runtime) cgroupsPath(id string) string {
	if r.systemd {
		return r.cgroupParent + ":ember:" + id
	}
	return filepath.Join(r.cgroupParent, id)
}

// newProcess turns the spec's process into libcontainer's (as runc's own
// newProcess does).
func newProcess(p *specs.Process) (*libcontainer.Process, error) {
	nnp := p.NoNewPrivileges
	lp := &libcontainer.Process{
		Args:            p.Args,
		Env:             p.Env,
		UID:             int(p.User.UID),
		GID:             int(p.User.GID),
		Cwd:             p.Cwd,
		NoNewPrivileges: &nnp,
	}
	for _, g := range p.User.AdditionalGids {
		lp.AdditionalGroups = append(lp.AdditionalGroups, int(g))
	}
	if c := p.Capabilities; c != nil {
		lp.Capabilities = &configs.Capabilities{
			Bounding:    c.Bounding,
			Effective:   c.Effective,
			Permitted:   c.Permitted,
			Inheritable: c.Inheritable,
			Ambient:     c.Ambient,
		}
	}
	for _, rl := range p.Rlimits {
		typ, ok := rlimitTypes[rl.Type]
		if !ok {
			return nil, fmt.Errorf("unknown rlimit %q", rl.Type)
		}
		lp.Rlimits = append(lp.Rlimits, configs.Rlimit{Type: typ, Hard: rl.Hard, Soft: rl.Soft})
	}
	return lp, nil
}

var rlimitTypes = map[string]int{
	"RLIMIT_NOFILE":  unix.RLIMIT_NOFILE,
	"RLIMIT_NPROC":   unix.RLIMIT_NPROC,
	"RLIMIT_CORE":    unix.RLIMIT_CORE,
	"RLIMIT_STACK":   unix.RLIMIT_STACK,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK,
}

// bootedWithSystemd is sd_booted(3): systemd is PID 1.
func bootedWithSystemd() bool {
	fi, err := os.Lstat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

// probeHost reads what the spec depends on about this machine.
func probeHost() (bundle.Host, error) {
	var h bundle.Host
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return h, fmt.Errorf("uname: %w", err)
	}
	k, err := bundle.ParseKernelVersion(unix.ByteSliceToString(u.Release[:]))
	if err != nil {
		return h, err
	}
	h.Kernel = k
	h.CgroupV2 = cgroups.IsCgroup2UnifiedMode()
	if !h.CgroupV2 {
		// cgroup v1 limits swap only with swap accounting (memsw files).
		if _, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"); err != nil {
			h.NoSwapLimit = true
		}
	}
	return h, nil
}

// hostLimits are bundle.HostLimits of this machine.
func hostLimits() bundle.Limits {
	var memTotal int64
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		memTotal = int64(si.Totalram) * int64(si.Unit)
	}
	var pidMax int64
	if b, err := os.ReadFile("/proc/sys/kernel/pid_max"); err == nil {
		pidMax, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	var noFile uint64
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil && rl.Max != unix.RLIM_INFINITY {
		noFile = rl.Max
	}
	return bundle.HostLimits(memTotal, pidMax, noFile)
}

// writeConfig writes the bundle's config.json. Mode 0600: the environment
// holds the worker's API token.
func writeConfig(path string, s *specs.Spec) error {
	b, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		return fmt.Errorf("encode config.json: %w", err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write config.json: %w", err)
	}
	return nil
}

// checkInit refuses an init that is not an absolute path to an executable
// regular file: every worker would otherwise fail to start, each with the
// same error, long after emberd said it was ready.
func checkInit(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("runc runtime: worker init %q: not an absolute path", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("runc runtime: worker init: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("runc runtime: worker init %s: not an executable file (mode %v)", path, fi.Mode())
	}
	return nil
}
