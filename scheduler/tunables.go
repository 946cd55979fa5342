package scheduler

import (
	"time"

	"github.com/emberhq/ember/scheduler/limits"
)

// Tunables are the settings that may change while the scheduler runs:
// emberd reloads them on SIGHUP (daemon/emberd/reload.go). Config embeds
// them for the start; SetTunables replaces them later. Zero values take
// the defaults. Changes apply from the next use: a new long-poll, the next
// ping check, a job finished from now on, a worker started from now on
// (PingInterval).
//
// A new tunable is a field here, its default in setDefaults, its pair in
// LogArgs and its flag in daemon/cmd/emberd.
type Tunables struct {
	// TakeHold is how long an empty job-take is held before 204 (< 90 s,
	// the SDK's own limit). Default 20 s.
	TakeHold time.Duration
	// StopHold is how long an empty job-stop poll is held. Default 20 s.
	StopHold time.Duration
	// PingInterval is RUNPOD_PING_INTERVAL for workers. Default 10 s.
	PingInterval time.Duration
	// LeaseGrace is how long a taken job may be missing from a worker's
	// pings before it is re-queued. Default 3 ping intervals.
	LeaseGrace time.Duration
	// RunRetention and SyncRetention keep terminal results readable
	// (RunPod: 30 min after /run, 1 min after /runsync).
	RunRetention  time.Duration
	SyncRetention time.Duration
	// WebhookRetryDelay separates webhook attempts (RunPod: 10 s).
	WebhookRetryDelay time.Duration
	// StopGrace is how long a stopped worker may drain before SIGKILL.
	// Default 30 s.
	StopGrace time.Duration
	// MaxAttempts bounds how often one job is handed to a worker before it
	// fails. Default 3.
	MaxAttempts int
	// MaxStartFailures is how many of an endpoint's workers in a row may
	// fail to start (or exit before their first job-take) before its
	// queued jobs fail with the last start error. Default 5.
	MaxStartFailures int
	// MaxUnreadStream caps a job's stream bytes posted and not yet read
	// by /stream; past it the job fails. Default limits.MaxUnreadStream.
	MaxUnreadStream int64
	// ParkMemory is the host memory parked workers' GPU state may take in
	// all, in bytes (park.go). Default limits.DefaultParkMemoryPercent of
	// the host's memory.
	ParkMemory int64
}

// setDefaults gives every zero or negative tunable its default.
func (t *Tunables) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.RunRetention, 30*time.Minute)
	def(&t.SyncRetention, time.Minute)
	def(&t.TakeHold, 20*time.Second)
	def(&t.StopHold, 20*time.Second)
	def(&t.PingInterval, 10*time.Second)
	def(&t.LeaseGrace, 3*t.PingInterval)
	def(&t.WebhookRetryDelay, 10*time.Second)
	def(&t.StopGrace, 30*time.Second)
	if t.MaxAttempts <= 0 {
		t.MaxAttempts = 3
	}
	if t.MaxStartFailures <= 0 {
		t.MaxStartFailures = DefaultMaxStartFailures
	}
	if t.MaxUnreadStream <= 0 {
		t.MaxUnreadStream = limits.MaxUnreadStream
	}
	if t.ParkMemory <= 0 {
		t.ParkMemory = defaultParkMemory()
	}
}

// LogArgs are t as slog key and value pairs, keyed by emberd's flag names
// (max_unread_stream_mib for --max-unread-stream-mib, in MiB), for the log
// line of a reload.
func (t Tunables) LogArgs() []any {
	return []any{"take_hold", t.TakeHold, "stop_hold", t.StopHold, "ping_interval", t.PingInterval,
		"lease_grace", t.LeaseGrace, "run_retention", t.RunRetention, "sync_retention", t.SyncRetention,
		"webhook_retry_delay", t.WebhookRetryDelay, "stop_grace", t.StopGrace, "max_attempts", t.MaxAttempts,
		"max_start_failures", t.MaxStartFailures, "max_unread_stream_mib", int(t.MaxUnreadStream >> 20),
		"park_memory_mb", int(t.ParkMemory >> 20)}
}

// tun returns the current tunables.
func (s *Scheduler) tun() *Tunables { return s.tunables.Load() }

// SetTunables replaces the tunables; zero values take the defaults.
func (s *Scheduler) SetTunables(t Tunables) {
	t.setDefaults()
	s.tunables.Store(&t)
}
