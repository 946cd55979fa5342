package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// sdkVersion is the runpod-python release whose wire behaviour this worker copies. It is
// sent in pings (runpod_version) and the User-Agent, so the daemon picks the 1.12 feature
// set for it (stop channel, batch take).
const sdkVersion = "1.12.0"

// Defaults the SDK uses when a protocol variable is missing. Keeping the SDK's literal
// placeholders means a misconfigured worker fails on the wire the same way the SDK does.
const (
	defaultDoneTemplate   = "JOB_DONE_URL"
	defaultStreamTemplate = "JOB_STREAM_URL"
	defaultPingInterval   = 10 * time.Second
	defaultRetryDelay     = 2 * time.Second
)

// Config is everything the worker reads from its environment, already substituted.
// Durations that the brief fixes (take backoffs, stop-poll pauses) are fields too, so tests
// can shrink them; only main's defaults are the SDK's values.
type Config struct {
	// TakeURL is RUNPOD_WEBHOOK_GET_JOB with $ID replaced by the worker id.
	TakeURL string
	// DoneTemplate and StreamTemplate still contain $ID (the job id, per request);
	// $RUNPOD_POD_ID has been replaced by the worker id.
	DoneTemplate   string
	StreamTemplate string
	// PingURL is empty when pings are off (the SDK needs key, pod id and ping URL).
	PingURL      string
	PingInterval time.Duration
	APIKey       string
	WorkerID     string
	EndpointID   string
	Hostname     string
	Concurrency  int

	// RetryDelay is the first pause between result-post attempts; the second is 1.5x.
	RetryDelay time.Duration
	// TakeTimeout bounds one job-take and one stop poll (SDK: 90 s).
	TakeTimeout time.Duration
	// RateLimitPause follows a 429 on take or stop (SDK: 5 s).
	RateLimitPause time.Duration
	// TakeErrorPause follows a failed take, so a dead daemon does not spin the CPU.
	TakeErrorPause time.Duration
	// StopPollPause follows a 204 or an error on the stop channel (SDK: 1 s).
	StopPollPause time.Duration
	// PostTimeout bounds one result, stream or progress post (SDK session total: 600 s).
	PostTimeout time.Duration
}

// errNoTakeURL is returned when RUNPOD_WEBHOOK_GET_JOB is unset; main exits 2 on it.
var errNoTakeURL = errors.New("RUNPOD_WEBHOOK_GET_JOB is not set: this worker only runs against a job queue (no local-test mode)")

// LoadConfig reads the worker's environment through lookup (os.LookupEnv in main), so tests
// can pass a map. Problems that would make the worker useless are errors; problems the SDK
// tolerates come back as warnings to log.
func LoadConfig(lookup func(string) (string, bool)) (Config, []string, error) {
	get := func(k string) string { v, _ := lookup(k); return v }
	takeTmpl, ok := lookup("RUNPOD_WEBHOOK_GET_JOB")
	if !ok || takeTmpl == "" {
		return Config{}, nil, errNoTakeURL
	}
	cfg := Config{
		APIKey:         get("RUNPOD_AI_API_KEY"),
		EndpointID:     get("RUNPOD_ENDPOINT_ID"),
		Hostname:       orDefault(get("RUNPOD_POD_HOSTNAME"), "unknown"),
		TakeTimeout:    90 * time.Second,
		RateLimitPause: 5 * time.Second,
		TakeErrorPause: 100 * time.Millisecond,
		StopPollPause:  time.Second,
		PostTimeout:    600 * time.Second,
	}
	podID, hasPodID := lookup("RUNPOD_POD_ID")
	cfg.WorkerID = podID
	if !hasPodID || podID == "" {
		cfg.WorkerID = randomUUID()
	}
	var err error
	if cfg.Concurrency, err = positiveInt(get("WORKER_CONCURRENCY"), 1); err != nil {
		return Config{}, nil, fmt.Errorf("WORKER_CONCURRENCY: %w", err)
	}
	if cfg.PingInterval, err = millis(get("RUNPOD_PING_INTERVAL"), defaultPingInterval); err != nil {
		return Config{}, nil, fmt.Errorf("RUNPOD_PING_INTERVAL: %w", err)
	}
	if cfg.RetryDelay, err = millis(get("WORKER_RETRY_DELAY_MS"), defaultRetryDelay); err != nil {
		return Config{}, nil, fmt.Errorf("WORKER_RETRY_DELAY_MS: %w", err)
	}
	cfg.TakeURL = strings.ReplaceAll(takeTmpl, "$ID", cfg.WorkerID)
	cfg.DoneTemplate = podTemplate(get, "RUNPOD_WEBHOOK_POST_OUTPUT", defaultDoneTemplate, cfg.WorkerID)
	cfg.StreamTemplate = podTemplate(get, "RUNPOD_WEBHOOK_POST_STREAM", defaultStreamTemplate, cfg.WorkerID)
	warnings := cfg.setPing(lookup, hasPodID)
	return cfg, append(warnings, cfg.templateWarnings()...), nil
}

// setPing decides whether pings are sent, with the SDK's rule: only when the API key, the
// pod id and the ping URL are all set. It returns why pings are off, if they are.
func (c *Config) setPing(lookup func(string) (string, bool), hasPodID bool) []string {
	ping, hasPing := lookup("RUNPOD_WEBHOOK_PING")
	_, hasKey := lookup("RUNPOD_AI_API_KEY")
	switch {
	case !hasPing || ping == "":
		return []string{"RUNPOD_WEBHOOK_PING is not set: no heartbeat pings"}
	case !hasKey:
		return []string{"RUNPOD_AI_API_KEY is not set: no heartbeat pings (as in the SDK)"}
	case !hasPodID:
		return []string{"RUNPOD_POD_ID is not set: no heartbeat pings (as in the SDK)"}
	}
	c.PingURL = strings.ReplaceAll(ping, "$RUNPOD_POD_ID", c.WorkerID)
	return nil
}

// templateWarnings flags templates that the SDK would turn into broken URLs. The worker
// still uses them as given, because a compatible daemon must cope with the same mistakes.
func (c *Config) templateWarnings() []string {
	var w []string
	if !strings.Contains(c.TakeURL, "/job-take/") {
		w = append(w, "RUNPOD_WEBHOOK_GET_JOB lacks /job-take/: stop channel disabled, batch takes use the same path")
	}
	for _, t := range []struct{ name, url string }{
		{"RUNPOD_WEBHOOK_GET_JOB", c.TakeURL},
		{"RUNPOD_WEBHOOK_POST_OUTPUT", c.DoneTemplate},
		{"RUNPOD_WEBHOOK_POST_STREAM", c.StreamTemplate},
	} {
		if !strings.Contains(t.url, "?") {
			w = append(w, t.name+" has no '?': parameters will be appended with '&' as the SDK does")
		}
	}
	return w
}

// podTemplate reads a result URL template and substitutes the worker id at start-up, as the
// SDK does at import time; $ID stays for the job id.
func podTemplate(get func(string) string, key, def, workerID string) string {
	return strings.ReplaceAll(orDefault(get(key), def), "$RUNPOD_POD_ID", workerID)
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// positiveInt parses an optional integer setting that must be at least 1.
func positiveInt(s string, def int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("not an integer: %w", err)
	}
	if n < 1 {
		return 0, fmt.Errorf("must be at least 1, got %d", n)
	}
	return n, nil
}

// millis parses an optional positive millisecond count. Unlike the SDK, which integer-divides
// the ping interval by 1000 (so 500 becomes a busy loop), the value is used as milliseconds.
func millis(s string, def time.Duration) (time.Duration, error) {
	n, err := positiveInt(s, -1)
	if err != nil {
		return 0, err
	}
	if n == -1 {
		return def, nil
	}
	return time.Duration(n) * time.Millisecond, nil
}

// randomUUID mimics the SDK's uuid4 worker id when RUNPOD_POD_ID is unset.
func randomUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms.
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
