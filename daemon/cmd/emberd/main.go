// Command emberd is Ember's daemon: a RunPod-Serverless-compatible job queue
// and worker runtime for machines people own.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/emberhq/ember/daemon/config"
	"github.com/emberhq/ember/daemon/emberd"
	"github.com/emberhq/ember/daemon/grpcapi"
	"github.com/emberhq/ember/daemon/ratelimit"
	"github.com/emberhq/ember/daemon/tlsconf"
	"github.com/emberhq/ember/oci/runc"
	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/limits"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// First: libcontainer starts each container by re-running this binary
	// as "emberd init", which must do nothing else.
	runc.InitIfChild()
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	var s settings
	fs := newFlagSet(&s)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "emberd: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if err := loadConfig(fs, s.configPath); err != nil {
		// One line per problem: Apply reports every bad key at once.
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(os.Stderr, "emberd: %s\n", line)
		}
		return 2
	}
	if err := checkSettings(s.options()); err != nil {
		fmt.Fprintf(os.Stderr, "emberd: %v\n", err)
		return 2
	}
	if s.showVersion {
		fmt.Println("emberd", version)
		return 0
	}
	o := s.options()
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(s.logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "emberd: --log-level %q: %v\n", s.logLevel, err)
		return 2
	}
	var level slog.LevelVar // SIGHUP may change it
	level.Set(lvl)
	o.Logger = emberd.NewLogger(&level)
	o.Version = version
	grpcapi.Version = version
	if os.Getenv("GOGC") == "" {
		// A long queue is many small live objects and a burst of /run
		// traffic is much short-lived garbage; collecting at 50 % growth
		// instead of 100 % keeps emberd at about 135 MB with 100,000 jobs
		// queued instead of about 205 MB, for a few percent more CPU.
		debug.SetGCPercent(50)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	reloads := make(chan emberd.Options, 1)
	o.Reloads = reloads
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go reloadOnHUP(ctx, args, hup, &level, reloads, o.Logger)
	if err := emberd.Run(ctx, o); err != nil {
		o.Logger.Error("emberd failed", "err", err)
		return 1
	}
	return 0
}

// settings are what emberd's flags set.
type settings struct {
	opts        emberd.Options
	logLevel    string
	showVersion bool
	configPath  string
	// maxUnreadStreamMiB is --max-unread-stream-mib; options gives it to
	// the scheduler in bytes.
	maxUnreadStreamMiB int
	// parkMemoryMB is --park-memory-mb; options gives it to the scheduler
	// in bytes (0: its default share of the host's memory).
	parkMemoryMB int
}

// options are the daemon's settings as the flags set them.
func (s *settings) options() emberd.Options {
	o := s.opts
	o.MaxUnreadStream = int64(s.maxUnreadStreamMiB) << 20
	o.ParkMemory = int64(s.parkMemoryMB) << 20
	return o
}

// newFlagSet defines emberd's flags, writing into s. Every flag but
// --config and --version can also be set from the --config file, by name;
// packaging/ember.toml lists them all (a test keeps it in step).
func newFlagSet(s *settings) *flag.FlagSet {
	fs := flag.NewFlagSet("emberd", flag.ContinueOnError)
	o := &s.opts
	fs.StringVar(&o.DataDir, "data-dir", "/var/lib/ember", "directory for the job store, worker scratch space and logs")
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:7080", "HOST:PORT for the REST API (RunPod client API, /v1 gateway) and the worker API")
	fs.StringVar(&o.GRPCListen, "grpc-listen", "127.0.0.1:7081", "HOST:PORT for the gRPC API")
	fs.StringVar(&o.Runtime, "runtime", "runc", "worker runtime: runc (OCI containers from imported images, with GPUs) or process (the endpoint's command as a plain host process, for development)")
	fs.StringVar(&o.WorkerInit, "worker-init", runc.DefaultInit, "ember-init, run as PID 1 of every runc worker container (bound read-only at /dev/init) unless its endpoint sets init false: it passes stop signals to the entrypoint's process group and reaps zombies; empty: no init")
	fs.StringVar(&o.TLS, "tls", "off", "TLS on the REST and gRPC listeners: off, or auto (emberd makes its own CA and a server certificate under DATA-DIR/tls, renews it, and logs the CA's fingerprint); for your own certificate give --tls-cert and --tls-key instead")
	fs.StringVar(&o.TLSCert, "tls-cert", "", "PEM file of the server certificate chain (server certificate first) to serve on the REST and gRPC listeners, with --tls-key; re-read on SIGHUP")
	fs.StringVar(&o.TLSKey, "tls-key", "", "PEM file of the --tls-cert certificate's private key; re-read on SIGHUP")
	fs.BoolVar(&o.InsecureListen, "insecure-listen", false, "allow --listen and --grpc-listen on addresses other than loopback without TLS (refused otherwise): API keys and job data then cross the network in cleartext")
	fs.StringVar(&o.APIKeyFile, "api-key-file", "", "file holding the admin API key; created (mode 0600) with a new random key if missing (default DATA-DIR/api.key)")
	fs.DurationVar(&o.TakeHold, "take-hold", 20*time.Second, "how long an empty job-take long-poll is held before 204 (under the SDK's 90 s)")
	fs.DurationVar(&o.StopHold, "stop-hold", 20*time.Second, "how long an empty job-stop long-poll is held before 204 (under the SDK's 90 s)")
	fs.DurationVar(&o.PingInterval, "ping-interval", 10*time.Second, "heartbeat interval given to workers (RUNPOD_PING_INTERVAL)")
	fs.DurationVar(&o.LeaseGrace, "lease-grace", 0, "how long a taken job may be missing from its worker's pings before it is re-queued (default 3 ping intervals)")
	fs.DurationVar(&o.RunRetention, "run-retention", 30*time.Minute, "how long results of /run jobs stay readable")
	fs.DurationVar(&o.SyncRetention, "sync-retention", time.Minute, "how long results of /runsync jobs stay readable")
	fs.DurationVar(&o.WebhookRetryDelay, "webhook-retry-delay", 10*time.Second, "delay between webhook attempts (3 attempts in all)")
	fs.DurationVar(&o.StopGrace, "stop-grace", 30*time.Second, "how long a stopping worker may drain before it is killed")
	fs.IntVar(&o.MaxAttempts, "max-attempts", 3, "how many times a job is handed to a worker before it fails")
	fs.IntVar(&o.MaxStartFailures, "max-start-failures", scheduler.DefaultMaxStartFailures, "how many workers of an endpoint in a row may fail to start (or exit before their first job-take) before its queued jobs fail with the reason")
	fs.IntVar(&o.MinFreeDiskMB, "min-free-disk-mb", limits.DefaultMinFreeDisk>>20, "free space (MiB) on the data disk below which new work (jobs, endpoints, keys, images) is refused with 507")
	fs.IntVar(&o.DiskReserveMB, "disk-reserve-mb", limits.DefaultDiskReserve>>20, "free space (MiB) on the data disk below which every write is refused, so the store never faults on a full disk; at most --min-free-disk-mb")
	fs.IntVar(&s.maxUnreadStreamMiB, "max-unread-stream-mib", limits.MaxUnreadStream>>20, "MiB of a job's stream output that may wait unread by /stream; a chunk past it is refused and the job fails")
	fs.IntVar(&s.parkMemoryMB, "park-memory-mb", 0, fmt.Sprintf("host memory (MiB) that parked GPU workers' GPU state may take in all (endpoint gpuPark); a park past it, or past the host's MemAvailable, is not done and the worker is stopped instead (default 0: %d%% of the host's memory)", limits.DefaultParkMemoryPercent))
	fs.IntVar(&o.MaxConnections, "max-connections", 0, "cap on concurrent client connections, REST and gRPC together; idle ones are closed first past it, and an eighth more (16 to 1024) are held for the worker API and /healthz, /readyz (default half the open-files limit, at most 8192)")
	fs.StringVar(&o.RateLimits, "rate-limits", "", "rate limits per key, endpoint and operation (runsync, run, status, stream, cancel, purge-queue, openai): off, or comma-separated OP=N/DURATION[:CONCURRENT] or OP=off overriding RunPod's defaults, e.g. run=500/10s:100 (default RunPod's: run=1000/10s:200, runsync, status, stream and openai 2000/10s:400, cancel=100/10s:20, purge-queue=2/10s); reloaded on SIGHUP")
	fs.StringVar(&o.PreloadDir, "preload-dir", "", "folder of image archives, templates (*.template.json) and endpoint definitions (*.json) imported and created at start, once each (default DATA-DIR/preload)")
	fs.StringVar(&o.RegistryCertsDir, "registry-certs-dir", "/etc/ember/certs.d", "folder of per-registry TLS files for image pulls, as docker and containerd lay it out: HOST[:PORT]/*.crt are CAs trusted besides the system's, HOST[:PORT]/client.cert and client.key a client certificate (a missing folder is none)")
	fs.StringVar(&o.RegistryAuthFile, "registry-auth-file", "", "docker config.json whose \"auths\" give registry credentials for image pulls that carry none (default: none)")
	fs.StringVar(&o.DebugListen, "debug-listen", "", "HOST:PORT to serve Go's pprof profiles on (off when empty; keep it on loopback)")
	fs.StringVar(&s.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&s.showVersion, "version", false, "print the version and exit (after checking the --config file, if any)")
	fs.StringVar(&s.configPath, "config", "", "TOML file setting any of these flags by name (key = value); the command line wins over it (default: none)")
	return fs
}

// checkSettings refuses values the flag types accept but emberd cannot use.
func checkSettings(o emberd.Options) error {
	if o.MaxStartFailures < 1 {
		return fmt.Errorf("--max-start-failures %d: must be at least 1", o.MaxStartFailures)
	}
	if o.ParkMemory < 0 {
		return fmt.Errorf("--park-memory-mb %d: must be 0 (the default share of the host's memory) or more", o.ParkMemory>>20)
	}
	if _, err := tlsconf.SelectMode(o.TLS, o.TLSCert, o.TLSKey); err != nil {
		return err
	}
	if _, err := ratelimit.Parse(o.RateLimits); err != nil {
		return fmt.Errorf("--%w", err)
	}
	return nil
}

// loadConfig sets the flags of fs that the command line did not set from
// the config file at path; "" means no file.
func loadConfig(fs *flag.FlagSet, path string) error {
	if path == "" {
		return nil
	}
	explicit := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	f, err := config.Load(path)
	if err != nil {
		return err
	}
	return f.Apply(fs, explicit)
}

// reloadOnHUP re-reads the command line and the --config file on each
// SIGHUP (systemctl reload): the log level and the scheduler's settings
// change at once; settings that need a restart are reported. A file with
// errors is refused whole, saying where, and the running settings stay.
func reloadOnHUP(ctx context.Context, args []string, hup <-chan os.Signal, level *slog.LevelVar, reloads chan<- emberd.Options, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		var s settings
		fs := newFlagSet(&s)
		fs.SetOutput(io.Discard)
		err := fs.Parse(args)
		if err == nil {
			err = loadConfig(fs, s.configPath)
		}
		var lvl slog.Level
		if err == nil {
			if e := lvl.UnmarshalText([]byte(s.logLevel)); e != nil {
				err = fmt.Errorf("log-level %q: %w", s.logLevel, e)
			}
		}
		if err == nil {
			err = checkSettings(s.options())
		}
		if err != nil {
			log.Error("reload refused: keeping the running settings", "config", s.configPath, "err", err)
			continue
		}
		if lvl != level.Level() {
			log.Info("reloaded: log level", "from", level.Level(), "to", lvl)
			level.Set(lvl)
		}
		select {
		case reloads <- s.options():
		case <-ctx.Done():
			return
		}
	}
}
