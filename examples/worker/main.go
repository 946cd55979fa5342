package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit codes of the worker process.
const (
	exitOK     = 0 // drained after SIGTERM/SIGINT
	exitConfig = 2 // the environment does not describe a worker (e.g. no take URL)
)

func main() {
	os.Exit(run(os.LookupEnv, os.Stderr))
}

// run is main without os.Exit, so its exit code can be checked. A handler's "exit"
// instruction still ends the process directly through os.Exit.
func run(lookup func(string) (string, bool), stderr io.Writer) int {
	level, _ := lookup("RUNPOD_LOG_LEVEL")
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: parseLevel(level)}))
	cfg, warnings, err := LoadConfig(lookup)
	if err != nil {
		fmt.Fprintf(stderr, "ember example worker: %v\n", err)
		return exitConfig
	}
	log = log.With("worker", cfg.WorkerID)
	if cfg.EndpointID != "" {
		log = log.With("endpoint", cfg.EndpointID)
	}
	for _, w := range warnings {
		log.Warn(w)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	// After the first signal, restore the default action: a second Ctrl-C kills the
	// worker without waiting for the drain.
	context.AfterFunc(ctx, func() {
		log.Info("signal received: finishing in-flight jobs (signal again to abort)")
		stop()
	})
	// WORKER_INIT_DELAY_MS stands in for loading a model: the worker makes
	// no request at all (no take, no ping) for that long after starting.
	if v, ok := lookup("WORKER_INIT_DELAY_MS"); ok {
		d, err := millis(v, 0)
		if err != nil {
			fmt.Fprintf(stderr, "ember example worker: WORKER_INIT_DELAY_MS: %v\n", err)
			return exitConfig
		}
		log.Info("loading (WORKER_INIT_DELAY_MS)", "for", d)
		if sleepCtx(ctx, d) != nil {
			return exitOK
		}
	}
	h := ExampleHandler{WorkerID: cfg.WorkerID, Hostname: cfg.Hostname}
	NewWorker(cfg, log, h.Handle, os.Exit).Run(ctx)
	return exitOK
}

// parseLevel maps RUNPOD_LOG_LEVEL names to slog levels; the default is INFO (the SDK's
// DEBUG default logs every empty poll).
func parseLevel(s string) slog.Level {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "TRACE", "DEBUG", "NOTSET":
		return slog.LevelDebug
	case "WARN", "WARNING":
		return slog.LevelWarn
	case "ERROR":
		return slog.LevelError
	}
	return slog.LevelInfo
}
