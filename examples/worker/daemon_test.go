package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorded is one request the fake daemon saw, in arrival order.
type recorded struct {
	Method string
	URL    string // path?rawquery, exactly as sent
	Path   string
	Header http.Header
	Body   []byte
	At     time.Time
}

// kind names the protocol route of a request ("take", "batch", "stop", "done", "stream",
// "ping"), from its path.
func (r recorded) kind() string {
	for _, k := range []string{"job-take-batch", "job-take", "job-stop", "job-done", "job-stream", "ping"} {
		if strings.Contains(r.Path, "/"+k+"/") {
			return map[string]string{"job-take-batch": "batch", "job-take": "take", "job-stop": "stop",
				"job-done": "done", "job-stream": "stream", "ping": "ping"}[k]
		}
	}
	return "other"
}

// answer is a scripted reply to one take (single or batch).
type answer struct {
	status      int
	body        string
	contentType string
}

func jobAnswer(body string) answer {
	return answer{status: 200, body: body, contentType: "application/json"}
}

// fakeDaemon is a loopback stand-in for emberd's worker API. Takes pop scripted answers
// (204 after a short long-poll when none is queued), stop polls pop scripted stop lists,
// done posts answer with doneStatus, everything else 200. Every request is recorded.
type fakeDaemon struct {
	t   *testing.T
	srv *httptest.Server

	mu         sync.Mutex
	reqs       []recorded
	doneStatus func(n int) int // status for the n-th (1-based) final post; nil: 200, <0: drop
	doneCount  int
	// streamStatus answers job-stream posts; 0: 200.
	streamStatus int

	takes chan answer
	stops chan string // raw JSON bodies for 200 answers on the stop channel
}

func newFakeDaemon(t *testing.T) *fakeDaemon {
	t.Helper()
	d := &fakeDaemon{t: t, takes: make(chan answer, 64), stops: make(chan string, 16)}
	d.srv = httptest.NewServer(http.HandlerFunc(d.serve))
	t.Cleanup(d.srv.Close)
	return d
}

// longPoll is how long an empty take or stop poll is held before 204. Short, so tests run
// fast, but long enough that an idle worker does not flood the log.
const longPoll = 20 * time.Millisecond

func (d *fakeDaemon) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body) // raw body: never ParseForm on worker posts
	rec := recorded{Method: r.Method, URL: r.URL.RequestURI(), Path: r.URL.Path, Header: r.Header.Clone(), Body: body, At: time.Now()}
	d.mu.Lock()
	d.reqs = append(d.reqs, rec)
	d.mu.Unlock()
	switch rec.kind() {
	case "take", "batch":
		d.serveTake(w, r)
	case "stop":
		d.serveStop(w, r)
	case "done":
		serveStatus(w, d.nextDoneStatus(body))
	case "stream":
		d.mu.Lock()
		st := d.streamStatus
		d.mu.Unlock()
		serveStatus(w, cmp.Or(st, http.StatusOK))
	default:
		w.WriteHeader(http.StatusOK)
	}
}

// serveStatus answers with a bare status; a negative one drops the connection instead,
// to produce a client-side connection error.
func serveStatus(w http.ResponseWriter, status int) {
	if status >= 0 {
		w.WriteHeader(status)
		return
	}
	conn, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		_ = conn.Close()
	}
}

func (d *fakeDaemon) serveTake(w http.ResponseWriter, r *http.Request) {
	select {
	case a := <-d.takes:
		if a.contentType != "" {
			w.Header().Set("Content-Type", a.contentType)
		}
		w.WriteHeader(a.status)
		_, _ = io.WriteString(w, a.body)
	case <-time.After(longPoll):
		w.WriteHeader(http.StatusNoContent)
	case <-r.Context().Done():
	}
}

func (d *fakeDaemon) serveStop(w http.ResponseWriter, r *http.Request) {
	select {
	case s := <-d.stops:
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, s)
	case <-time.After(longPoll):
		w.WriteHeader(http.StatusNoContent)
	case <-r.Context().Done():
	}
}

// nextDoneStatus applies doneStatus to final posts and progress updates alike, counting
// only posts that are not progress updates.
func (d *fakeDaemon) nextDoneStatus(body []byte) int {
	if bytes.Contains(body, []byte(`"IN_PROGRESS"`)) {
		return http.StatusOK
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.doneCount++
	if d.doneStatus == nil {
		return http.StatusOK
	}
	return d.doneStatus(d.doneCount)
}

func (d *fakeDaemon) setDoneStatus(f func(n int) int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.doneStatus = f
}

func (d *fakeDaemon) queue(a ...answer) {
	for _, x := range a {
		d.takes <- x
	}
}

// requests returns a snapshot of what was recorded so far.
func (d *fakeDaemon) requests() []recorded {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]recorded(nil), d.reqs...)
}

// of returns the recorded requests of the given kinds.
func (d *fakeDaemon) of(kinds ...string) []recorded {
	var out []recorded
	for _, r := range d.requests() {
		for _, k := range kinds {
			if r.kind() == k {
				out = append(out, r)
			}
		}
	}
	return out
}

// jobPosts returns the done and stream posts for one job id, in arrival order.
func (d *fakeDaemon) jobPosts(jobID string) []recorded {
	var out []recorded
	for _, r := range d.of("done", "stream") {
		if strings.Contains(r.Path, "/"+jobID) {
			out = append(out, r)
		}
	}
	return out
}

// waitFor polls cond until it holds or 5 s pass, then fails with the request log.
func (d *fakeDaemon) waitFor(what string, cond func() bool) {
	d.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			d.t.Fatalf("timed out waiting for %s; requests:\n%s", what, d.dump())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (d *fakeDaemon) dump() string {
	var b strings.Builder
	for _, r := range d.requests() {
		if r.kind() == "take" || r.kind() == "stop" || r.kind() == "ping" {
			continue // long-poll noise
		}
		fmt.Fprintf(&b, "  %s %s %s\n", r.Method, r.URL, r.Body)
	}
	return b.String()
}

// env is the environment a daemon would inject, pointing at the fake.
func (d *fakeDaemon) env() map[string]string {
	u := d.srv.URL
	return map[string]string{
		"RUNPOD_WEBHOOK_GET_JOB":     u + "/v2/ep/job-take/$ID?gpu=X",
		"RUNPOD_WEBHOOK_POST_OUTPUT": u + "/v2/ep/job-done/$RUNPOD_POD_ID/$ID?gpu=X",
		"RUNPOD_WEBHOOK_POST_STREAM": u + "/v2/ep/job-stream/$RUNPOD_POD_ID/$ID?gpu=X",
		"RUNPOD_WEBHOOK_PING":        u + "/v2/ep/ping/$RUNPOD_POD_ID?gpu=X",
		"RUNPOD_AI_API_KEY":          "secret-key",
		"RUNPOD_POD_ID":              "w1",
		"RUNPOD_POD_HOSTNAME":        "host-1",
		"RUNPOD_ENDPOINT_ID":         "ep",
		"RUNPOD_PING_INTERVAL":       "1000",
		"WORKER_RETRY_DELAY_MS":      "10",
	}
}

// lookupIn turns a map into an os.LookupEnv replacement.
func lookupIn(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

// syncBuffer collects log output from many goroutines; it is printed if the test fails.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testWorker is an in-process worker under test.
type testWorker struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	exits  []int
}

// stopAndWait cancels the worker (as SIGTERM does) and waits for Run to return.
func (tw *testWorker) stopAndWait(t *testing.T) {
	t.Helper()
	tw.cancel()
	select {
	case <-tw.done:
	case <-time.After(5 * time.Second):
		t.Fatal("worker did not stop within 5 s of cancellation")
	}
}

func (tw *testWorker) exitCodes() []int {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	return append([]int(nil), tw.exits...)
}

// startWorker runs a worker against d with d.env() plus overrides (an empty value deletes
// a variable). Pauses are shortened so backoffs are measurable in milliseconds.
func startWorker(t *testing.T, d *fakeDaemon, overrides map[string]string) *testWorker {
	t.Helper()
	env := d.env()
	for k, v := range overrides {
		if v == "" {
			delete(env, k)
		} else {
			env[k] = v
		}
	}
	cfg, _, err := LoadConfig(lookupIn(env))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	cfg.RateLimitPause = 300 * time.Millisecond
	cfg.TakeErrorPause = 100 * time.Millisecond
	cfg.StopPollPause = 10 * time.Millisecond
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("worker", cfg.WorkerID)
	ctx, cancel := context.WithCancel(context.Background())
	tw := &testWorker{cancel: cancel, done: make(chan struct{})}
	h := ExampleHandler{WorkerID: cfg.WorkerID, Hostname: cfg.Hostname}
	w := NewWorker(cfg, log, h.Handle, func(code int) {
		tw.mu.Lock()
		tw.exits = append(tw.exits, code)
		tw.mu.Unlock()
	})
	go func() {
		defer close(tw.done)
		w.Run(ctx)
	}()
	t.Cleanup(func() {
		tw.stopAndWait(t)
		if t.Failed() {
			t.Logf("worker log:\n%s", logs.String())
		}
	})
	return tw
}

// decodeJSON decodes with json.Number so comparisons keep numbers exact.
func decodeJSON(t *testing.T, data []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("body is not JSON: %v: %q", err, data)
	}
	return v
}
