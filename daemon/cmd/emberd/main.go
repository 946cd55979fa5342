// Command emberd is Ember's daemon: a RunPod-Serverless-compatible job queue
// and worker runtime for machines people own.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/emberhq/ember/daemon/emberd"
	"github.com/emberhq/ember/daemon/grpcapi"
	"github.com/emberhq/ember/oci/runc"
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
	fs := flag.NewFlagSet("emberd", flag.ContinueOnError)
	var o emberd.Options
	fs.StringVar(&o.DataDir, "data-dir", "/var/lib/ember", "directory for the job store, worker scratch space and logs")
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:7080", "HOST:PORT for the REST API (RunPod client API, /v1 gateway) and the worker API")
	fs.StringVar(&o.GRPCListen, "grpc-listen", "127.0.0.1:7081", "HOST:PORT for the gRPC API")
	fs.StringVar(&o.Runtime, "runtime", "runc", "worker runtime: runc (OCI containers from imported images, with GPUs) or process (the endpoint's command as a plain host process, for development)")
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
	fs.StringVar(&o.DebugListen, "debug-listen", "", "HOST:PORT to serve Go's pprof profiles on (off when empty; keep it on loopback)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "emberd: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *showVersion {
		fmt.Println("emberd", version)
		return 0
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "emberd: --log-level %q: %v\n", *logLevel, err)
		return 2
	}
	o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
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
	if err := emberd.Run(ctx, o); err != nil {
		o.Logger.Error("emberd failed", "err", err)
		return 1
	}
	return 0
}
