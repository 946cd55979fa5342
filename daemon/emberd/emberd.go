// Package emberd is the daemon's wiring: it assembles the scheduler, the
// worker runtime, the HTTP surface (RunPod client and worker APIs, REST
// gateway) and the gRPC server from Options, and runs them until told to
// stop (Run). The emberd command (daemon/cmd/emberd) is only its front
// door: it reads flags and the config file into Options, calls Run, and
// passes reloads on.
//
// Besides the wiring it holds what belongs to the daemon's process and to
// no API: listeners and their TLS, systemd notification, the journal, the
// network namespace, reloads, and the preload folder (preload.go, which
// creates endpoints through the scheduler). Business rules live below it
// (the scheduler, daemon/imagesvc, daemon/authz); the transports
// (daemon/httpapi, daemon/grpcapi) must not import it.
package emberd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/emberhq/ember/daemon/httpapi"
	apikeys "github.com/emberhq/ember/daemon/keys"
	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/oci/cudackpt"
	"github.com/emberhq/ember/oci/gpu"
	"github.com/emberhq/ember/oci/image"
	"github.com/emberhq/ember/oci/process"
	"github.com/emberhq/ember/oci/runc"
	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/store"
)

// Options are emberd's settings (flags).
type Options struct {
	DataDir    string
	Listen     string
	GRPCListen string
	Runtime    string
	// WorkerInit is the host path of ember-init, PID 1 of every runc
	// worker whose endpoint does not turn it off; empty: none
	// (--worker-init).
	WorkerInit string
	APIKeyFile string
	// DebugListen, when set, serves net/http/pprof there, and POST
	// /debug/wedge?for=5s, which holds the scheduler lock that long (a
	// fault-injection hook to test the systemd watchdog).
	DebugListen string
	// PreloadDir holds image archives and endpoint definitions to import
	// and create at start (default DATA-DIR/preload); see preload.go.
	PreloadDir string
	// RegistryCertsDir is the certs.d folder of per-registry CAs and
	// client certificates for image pulls (--registry-certs-dir), and
	// RegistryAuthFile the docker config.json of registry credentials
	// (--registry-auth-file, "" for none); both are read at each pull.
	RegistryCertsDir, RegistryAuthFile string
	// TLS is "off" or "auto" (--tls); TLSCert and TLSKey are PEM files to
	// serve instead (--tls-cert, --tls-key, re-read on SIGHUP). See
	// daemon/tlsconf.
	TLS, TLSCert, TLSKey string
	// InsecureListen allows plain HTTP and gRPC on addresses other than
	// loopback, which are otherwise refused without TLS (tls.go).
	InsecureListen bool

	// Tunables are the scheduler's settings that a reload (SIGHUP)
	// applies at once (reload.go).
	scheduler.Tunables
	// MinFreeDiskMB: below this much free space on the data disk, new work
	// is refused with 507 (0: 64). DiskReserveMB: below this much, every
	// write is refused (0: 32); it must be smaller.
	MinFreeDiskMB int
	DiskReserveMB int
	// MaxConnections caps concurrent client connections (REST and gRPC
	// together); past it a reserve keeps the worker API and the probes
	// reachable (daemon/connlimit). 0 sizes it from the open-files limit.
	MaxConnections int
	// RateLimits are the rate limits of RunPod's client operations, as
	// ratelimit.Parse reads them: "" for RunPod's defaults, "off", or
	// overrides such as "run=5/10s:2". Reloadable.
	RateLimits string

	// Version is emberd's version (main.version, set at build time), for
	// ember_build_info; not a flag.
	Version string

	Logger *slog.Logger
	// Reloads delivers new settings (SIGHUP): the scheduler's tunables are
	// applied at once; the rest is reported as needing a restart.
	Reloads <-chan Options
	// Ready, if set, is called once the store is recovered and every
	// listener is up.
	Ready func(httpAddr, grpcAddr string)
}

// LoadOrCreateKey reads the admin key from path, creating the file (0600,
// synced) with a new random key when it does not exist. An existing file
// must be readable by its owner only and hold a key of at least
// keys.MinAdminKeyLen characters: emberd refuses to start otherwise, and
// the error says how to fix it. Errors never quote the key.
func LoadOrCreateKey(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		fi, err := os.Stat(path)
		if err != nil {
			return "", fmt.Errorf("API key file: %w", err)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			return "", fmt.Errorf("API key file %s has mode %#o: group or others can read or change the admin key; run `chmod 600 %s` and start emberd again", path, perm, path)
		}
		k := strings.TrimSpace(string(b))
		if k == "" {
			return "", fmt.Errorf("API key file %s is empty: delete it to have a new key made at the next start, or write a key of at least %d characters", path, apikeys.MinAdminKeyLen)
		}
		if n := utf8.RuneCountInString(k); n < apikeys.MinAdminKeyLen {
			return "", fmt.Errorf("API key file %s holds a key of %d characters, under the %d emberd accepts: delete the file to have a new one made at the next start, or write a longer key", path, n, apikeys.MinAdminKeyLen)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read API key file: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return "", fmt.Errorf("create key dir: %w", err)
	}
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	key := "ember_" + hex.EncodeToString(raw[:])
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", fmt.Errorf("create API key file: %w", err)
	}
	if _, err := f.WriteString(key + "\n"); err != nil {
		f.Close()
		return "", fmt.Errorf("write API key file %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", fmt.Errorf("sync API key file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("write API key file %s: %w", path, err)
	}
	return key, nil
}

// workerRuntime is what the daemon needs of the chosen runtime.
// parkHelperCloseWait bounds how long emberd's shutdown waits for the
// CUDA checkpoint helper's calls under way.
const parkHelperCloseWait = 30 * time.Second

type workerRuntime struct {
	rt     oci.Runtime
	images *image.Store // nil for the process runtime
	gpus   []scheduler.GPU
	close  func() error
	adopt  func(store.WorkerRecord) (oci.Worker, error) // nil: nothing to take back
	sweep  func()                                       // destroys what was not taken back
	// freeMemory reads a GPU's free memory (NVML); watchGPUs reports GPUs
	// that go bad until ctx ends. Both nil without GPUs.
	freeMemory func(uuid string) (uint64, error)
	watchGPUs  func(ctx context.Context, report func(uuid, reason string))
	gpuStats   func(uuid string) (httpapi.GPUStats, error)
	// gpuPark is the CUDA driver's checkpoint API, for parking GPU workers
	// (scheduler/park.go): the ember-ckpt helper process (oci/cudackpt's
	// Helper, started on first use). Nil without GPUs or NVML, so that
	// parking is unsupported and endpoints asking for it are refused.
	gpuPark cudackpt.Driver
}

// imageExists is the scheduler's check that an endpoint's image is
// imported (and whole); nil for the process runtime, which has no images.
func (wr *workerRuntime) imageExists() func(ref string) error {
	if wr.images == nil {
		return nil
	}
	return func(ref string) error {
		_, err := wr.images.Resolve(ref)
		return err
	}
}

// newRuntime opens the worker runtime: the process runtime, or the runc
// runtime with its image store and GPU inventory. Containers left by an
// earlier emberd are destroyed deliberately: their workers' credentials
// died with it, and their jobs were re-queued by recovery.
func newRuntime(ctx context.Context, o Options, log *slog.Logger) (*workerRuntime, error) {
	switch o.Runtime {
	case "process":
		return &workerRuntime{rt: process.New(), close: func() error { return nil }, sweep: func() {}}, nil
	case "runc":
	default:
		return nil, fmt.Errorf("--runtime %q: must be process or runc", o.Runtime)
	}
	images, err := image.Open(filepath.Join(o.DataDir, "images"), image.Options{})
	if err != nil {
		return nil, fmt.Errorf("open image store: %w", err)
	}
	inv, err := gpu.Discover(nvml.New())
	if err != nil {
		images.Close()
		return nil, fmt.Errorf("GPU inventory: %w", err)
	}
	if inv.NoDriver != "" {
		log.Info("no NVIDIA driver: workers run without GPUs", "reason", inv.NoDriver)
	} else {
		log.Info("GPUs found", "count", len(inv.Devices), "driver", inv.DriverVersion, "cuda", inv.CUDAVersion())
	}
	rt, err := runc.New(runc.Options{Images: images, Devices: &gpu.Injector{Inventory: inv}, Logger: log, Init: o.WorkerInit})
	if err != nil {
		images.Close()
		return nil, fmt.Errorf("--runtime runc: %w (--worker-init names ember-init, or is empty to run workers without an init; use --runtime process to run workers as plain host processes)", err)
	}
	if o.WorkerInit == "" {
		log.Warn("--worker-init is empty: worker entrypoints run as PID 1 with no init (zombies stay, shell entrypoints may not pass SIGTERM on)")
	}
	left, err := rt.Leftovers(ctx)
	if err != nil {
		log.Warn("list containers left by an earlier emberd", "err", err)
	}
	leftovers := make(map[string]*runc.Leftover, len(left))
	for _, l := range left {
		leftovers[l.ID] = l
	}
	gpus := schedulerGPUs(inv)
	closeNVML := func() {}
	wr := &workerRuntime{rt: rt, images: images, gpus: gpus}
	if len(gpus) > 0 {
		// Kept initialised for the daemon's life: placement reads free
		// memory, and initialising NVML per query would be slow.
		lib := nvml.New()
		if ret := lib.Init(); ret == nvml.SUCCESS {
			park := cudackpt.NewHelper(cudackpt.HelperConfig{NVML: lib, Logger: log})
			wr.gpuPark = park
			closeNVML = func() {
				// Calls under way (a checkpoint of many GiB) may finish.
				if err := park.Close(parkHelperCloseWait); err != nil {
					log.Warn("stop the CUDA checkpoint helper", "err", err)
				}
				lib.Shutdown()
			}
			wr.freeMemory = func(uuid string) (uint64, error) { return gpu.FreeMemory(lib, uuid) }
			wr.gpuStats = func(uuid string) (httpapi.GPUStats, error) {
				st, err := gpu.Stats(lib, uuid)
				return httpapi.GPUStats(st), err
			}
		} else {
			log.Warn("NVML init for live GPU queries failed: gpuMemoryMb placement checks are off", "err", ret)
		}
		targets := healthTargets(inv, gpus)
		uuids := make([]string, 0, len(targets))
		for u := range targets {
			uuids = append(uuids, u)
		}
		slices.Sort(uuids)
		wr.watchGPUs = func(ctx context.Context, report func(uuid, reason string)) {
			each := func(uuid, reason string) {
				for _, u := range targets[uuid] {
					report(u, reason)
				}
			}
			if err := gpu.WatchHealth(ctx, lib, uuids, each); err != nil {
				log.Warn("GPU health watch stopped: XID errors will not take GPUs out of placement", "err", err)
			}
		}
	}
	wr.close = func() error {
		err := errors.Join(rt.Close(), images.Close())
		closeNVML()
		return err
	}
	// Containers that outlived an earlier emberd: the scheduler takes back
	// those it has records of (adopt); the rest are destroyed deliberately
	// once it has (sweep).
	wr.adopt = func(rec store.WorkerRecord) (oci.Worker, error) {
		l, ok := leftovers[rec.ID]
		if !ok {
			return nil, nil
		}
		w, err := l.Adopt()
		if err != nil {
			return nil, err
		}
		delete(leftovers, rec.ID)
		return w, nil
	}
	wr.sweep = func() {
		for id, l := range leftovers {
			if err := l.Destroy(ctx); err != nil {
				log.Warn("destroy leftover worker container", "worker", id, "err", err)
			} else {
				log.Info("destroyed worker container left by an earlier emberd", "worker", id)
			}
		}
	}
	return wr, nil
}

// workerBase turns the listen address into the URL workers use: a wildcard
// host becomes loopback, since workers run on this machine.
func workerBase(addr net.Addr) string {
	host, port, _ := net.SplitHostPort(addr.String())
	ip := net.ParseIP(host)
	if host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

func pprofMux() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("/debug/pprof/", pprof.Index)
	m.HandleFunc("/debug/pprof/profile", pprof.Profile)
	m.HandleFunc("/debug/pprof/trace", pprof.Trace)
	m.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	m.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	return m
}

// lazyHandler holds requests until the real handler is set, except the
// probes: /healthz answers at once, /readyz says 503 while the queue is
// being recovered and again once the daemon is shutting down.
type lazyHandler struct {
	ready    chan struct{}
	h        http.Handler
	stopping atomic.Bool
	// diskWait is set while the store cannot be opened for want of disk
	// space: requests are answered 507 with it instead of being held.
	diskWait atomic.Pointer[scheduler.InsufficientStorageError]
	// disk is the scheduler's free-space readiness (nil until it is open).
	disk func() error
	// tls and insecure are shown by /healthz, as httpapi shows them.
	tls      func() httpapi.TLSStatus
	insecure bool
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(b)
}

func (l *lazyHandler) set(h http.Handler) {
	l.h = h
	close(l.ready)
}

// readiness is httpapi.Config.Ready.
func (l *lazyHandler) readiness() error {
	if l.stopping.Load() {
		return errors.New("shutting down: draining workers")
	}
	if l.disk != nil {
		return l.disk()
	}
	return nil
}

func (l *lazyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case <-l.ready:
		l.h.ServeHTTP(w, r)
		return
	default:
	}
	switch strings.Trim(r.URL.Path, "/") {
	case "healthz":
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "tls": l.tls(), "insecureListen": l.insecure})
		return
	case "readyz":
		body := map[string]any{"status": "starting", "error": "recovering the job queue"}
		if se := l.diskWait.Load(); se != nil {
			body["error"], body["freeBytes"], body["neededBytes"] = se.Error(), se.Free, se.Needed
		}
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	if se := l.diskWait.Load(); se != nil {
		// Holding the request until space returns could take hours.
		writeJSON(w, http.StatusInsufficientStorage, map[string]any{"error": se.Error(), "freeBytes": se.Free, "neededBytes": se.Needed})
		return
	}
	select {
	case <-l.ready:
		l.h.ServeHTTP(w, r)
	case <-r.Context().Done():
	}
}

// openScheduler opens the job store (Badger, in the data directory) and the
// scheduler on it, waiting while the data disk has no room to open the
// store (a start on a full disk): emberd then keeps answering /healthz,
// says in /readyz and in 507s why it waits (and in systemd's STATUS=,
// extending its start timeout), and goes on by itself once space is freed,
// instead of exiting into a restart loop.
func openScheduler(ctx context.Context, lazy *lazyHandler, log *slog.Logger, cfg scheduler.Config) (*scheduler.Scheduler, error) {
	opts, err := scheduler.StoreOptions(cfg)
	if err != nil {
		return nil, err
	}
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	var lastExtend time.Time
	for {
		st, err := store.OpenBadger(opts)
		var sched *scheduler.Scheduler
		if err == nil {
			cfg.Store = st
			sched, err = scheduler.Open(cfg) // closes st if it fails
		}
		var se *scheduler.InsufficientStorageError
		if !errors.As(err, &se) {
			lazy.diskWait.Store(nil)
			return sched, err
		}
		if lazy.diskWait.Swap(se) == nil {
			log.Error("data disk full: waiting for free space to open the job store", "err", err, "free_bytes", se.Free, "needed_bytes", se.Needed)
		}
		// Under systemd, the wait must not run into TimeoutStartSec (which
		// would kill emberd and start it again on the same full disk).
		if time.Since(lastExtend) >= 10*time.Second {
			lastExtend = time.Now()
			if err := sdNotify("EXTEND_TIMEOUT_USEC=30000000\nSTATUS=waiting for disk space: " + se.Error()); err != nil {
				log.Debug("sd_notify", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for disk space: %w", err)
		case <-t.C:
		}
	}
}
