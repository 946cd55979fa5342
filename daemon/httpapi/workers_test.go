package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/daemon/client"
	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/spec"
)

const workersKey = "workers-key"

// logRuntime starts fake workers that only create their log file; the test
// writes to it as the worker would.
type logRuntime struct {
	started chan *logWorker
}

func (r *logRuntime) Name() string { return "fake" }

func (r *logRuntime) Start(_ context.Context, spec oci.Spec) (oci.Worker, error) {
	f, err := os.OpenFile(spec.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	f.Close()
	w := &logWorker{spec: spec, done: make(chan struct{})}
	r.started <- w
	return w, nil
}

type logWorker struct {
	spec oci.Spec
	once sync.Once
	done chan struct{}
}

func (w *logWorker) Stop(time.Duration)    { w.Kill() }
func (w *logWorker) Kill()                 { w.once.Do(func() { close(w.done) }) }
func (w *logWorker) Done() <-chan struct{} { return w.done }
func (w *logWorker) Exit() oci.ExitStatus  { return oci.ExitStatus{} }
func (w *logWorker) PID() int              { return 4242 }

// appendLog writes to the worker's log as the worker would (O_APPEND).
func (w *logWorker) appendLog(t *testing.T, s string) {
	t.Helper()
	f, err := os.OpenFile(w.spec.LogPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

type workersEnv struct {
	srv *httptest.Server
	s   *scheduler.Scheduler
	ep  string
	w   *logWorker
}

// newWorkersEnv runs a scheduler (on disk: an in-memory one logs to
// /dev/null) with one endpoint that keeps one worker.
func newWorkersEnv(t *testing.T) *workersEnv {
	t.Helper()
	rt := &logRuntime{started: make(chan *logWorker, 8)}
	s, err := scheduler.Open(scheduler.Config{
		DataDir:       t.TempDir(),
		Runtime:       rt,
		WorkerAPIBase: "http://127.0.0.1:1",
		Tunables:      scheduler.Tunables{StopGrace: time.Second},
		MinFreeBytes:  1,
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	name, cmd, one, zero := "logs", []string{"fake-worker"}, 1, 0
	ep, err := s.CreateEndpoint(context.Background(), spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &one, WorkersMax: &one, GPUCount: &zero})
	if err != nil {
		t.Fatal(err)
	}
	var w *logWorker
	select {
	case w = <-rt.started:
	case <-time.After(10 * time.Second):
		t.Fatal("no worker started")
	}
	srv := httptest.NewServer(New(Config{
		Scheduler: s,
		Keys:      func() []string { return []string{workersKey} },
		Logger:    slog.New(slog.DiscardHandler),
	}))
	t.Cleanup(srv.Close)
	return &workersEnv{srv: srv, s: s, ep: ep.ID, w: w}
}

func (e *workersEnv) get(t *testing.T, ctx context.Context, path, key string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// getAll answers the status and the body.
func (e *workersEnv) getAll(t *testing.T, path, key string) (int, string) {
	t.Helper()
	resp := e.get(t, context.Background(), path, key)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestWorkerList(t *testing.T) {
	e := newWorkersEnv(t)
	id := e.w.spec.ID
	for _, path := range []string{"/v1/workers", "/v1/workers?endpoint=" + e.ep} {
		code, body := e.getAll(t, path, workersKey)
		if code != 200 {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
		var got struct {
			Workers []scheduler.WorkerInfo `json:"workers"`
		}
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatal(err)
		}
		if len(got.Workers) != 1 || got.Workers[0].ID != id || got.Workers[0].EndpointID != e.ep || got.Workers[0].LogPath != e.w.spec.LogPath {
			t.Errorf("GET %s: %s", path, body)
		}
	}
	code, body := e.getAll(t, "/v1/workers?endpoint=ep-nope", workersKey)
	if code != 200 || body != `{"workers":[]}` {
		t.Errorf("other endpoint: %d %s", code, body)
	}
	for _, key := range []string{"", "wrong"} {
		if code, body := e.getAll(t, "/v1/workers", key); code != 401 {
			t.Errorf("key %q: %d %s", key, code, body)
		}
		if code, body := e.getAll(t, "/v1/workers/"+id+"/logs", key); code != 401 {
			t.Errorf("logs, key %q: %d %s", key, code, body)
		}
	}
	resp, err := e.srv.Client().Post(e.srv.URL+"/v1/workers", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// A method the route does not take is a 405 before any key check.
	if resp.StatusCode != 405 {
		t.Errorf("POST without key: %d", resp.StatusCode)
	}
}

func TestWorkerLogsTail(t *testing.T) {
	e := newWorkersEnv(t)
	id := e.w.spec.ID
	e.w.appendLog(t, "one\ntwo\nthree\nfour\n")
	tests := []struct{ query, want string }{
		{"", "one\ntwo\nthree\nfour\n"},
		{"?tail=2", "three\nfour\n"},
		{"?tail=all", "one\ntwo\nthree\nfour\n"},
		{"?tail=10", "one\ntwo\nthree\nfour\n"},
		{"?tail=0", ""},
	}
	for _, tt := range tests {
		code, body := e.getAll(t, "/v1/workers/"+id+"/logs"+tt.query, workersKey)
		if code != 200 || body != tt.want {
			t.Errorf("%s: %d %q, want %q", tt.query, code, body, tt.want)
		}
	}
	if code, body := e.getAll(t, "/v1/workers/"+id+"/logs?tail=x", workersKey); code != 400 {
		t.Errorf("tail=x: %d %s", code, body)
	}

	// A line without its newline yet is the last line.
	e.w.appendLog(t, "fi")
	if code, body := e.getAll(t, "/v1/workers/"+id+"/logs?tail=2", workersKey); code != 200 || body != "four\nfi" {
		t.Errorf("partial last line: %d %q", code, body)
	}

	// Over the read bound: the first, cut line is left out.
	e.w.appendLog(t, "ve\n"+strings.Repeat("x", maxLogTail)+"\nlast\n")
	code, body := e.getAll(t, "/v1/workers/"+id+"/logs", workersKey)
	if code != 200 || body != "last\n" {
		t.Errorf("big log: %d %d bytes, ending %q", code, len(body), body[max(len(body)-10, 0):])
	}
}

func TestWorkerLogsNotFound(t *testing.T) {
	e := newWorkersEnv(t)
	for _, path := range []string{
		"/v1/workers/w-0123456789ab/logs", // no such worker
		"/v1/workers/w-..%2F..%2Fetc/logs",
		"/v1/workers/..%2F..%2Fapi.key/logs",
		"/v1/workers/w-ZZ/logs",
		"/v1/workers/" + e.w.spec.ID + "/nope",
		"/v1/workers/" + e.w.spec.ID,
	} {
		code, body := e.getAll(t, path, workersKey)
		if code != 404 || !strings.HasPrefix(body, `{"error":`) {
			t.Errorf("%s: %d %s", path, code, body)
		}
	}
	// A live worker whose log file is gone.
	if err := os.Remove(e.w.spec.LogPath); err != nil {
		t.Fatal(err)
	}
	code, body := e.getAll(t, "/v1/workers/"+e.w.spec.ID+"/logs", workersKey)
	if code != 404 || !strings.Contains(body, "no log file") {
		t.Errorf("no log file: %d %s", code, body)
	}
}

// follow reads a followed log line by line.
type follow struct {
	cancel context.CancelFunc
	resp   *http.Response
	lines  chan string
}

func (e *workersEnv) follow(t *testing.T, query string) *follow {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	resp := e.get(t, ctx, "/v1/workers/"+e.w.spec.ID+"/logs"+query, workersKey)
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("follow: %d %s", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q", ct)
	}
	f := &follow{cancel: cancel, resp: resp, lines: make(chan string, 100)}
	go func() {
		defer close(f.lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			f.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	return f
}

// expect reads the next lines.
func (f *follow) expect(t *testing.T, want ...string) {
	t.Helper()
	for _, w := range want {
		select {
		case got, ok := <-f.lines:
			if !ok {
				t.Fatalf("stream ended, want %q", w)
			}
			if got != w {
				t.Fatalf("got line %q, want %q", got, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no line within 5s, want %q", w)
		}
	}
}

// expectEnd waits for the stream to end with no more lines.
func (f *follow) expectEnd(t *testing.T) {
	t.Helper()
	select {
	case got, ok := <-f.lines:
		if ok {
			t.Fatalf("got line %q, want the end", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream did not end within 5s")
	}
}

func TestWorkerLogsFollow(t *testing.T) {
	e := newWorkersEnv(t)
	e.w.appendLog(t, "a\nb\nc\n")
	f := e.follow(t, "?follow=1&tail=1")
	f.expect(t, "c")
	e.w.appendLog(t, "d\n")
	f.expect(t, "d")
	e.w.appendLog(t, "e\nf\n")
	f.expect(t, "e", "f")

	// The client going away ends the handler; the server shuts down
	// cleanly (httptest's Close waits for handlers).
	f.cancel()
	for range f.lines {
	}
}

// TestWorkerLogsFollowRotation rotates the log the ways runc does (head
// copied to LOG.1, the live file cut in place) and by renaming.
func TestWorkerLogsFollowRotation(t *testing.T) {
	e := newWorkersEnv(t)
	path := e.w.spec.LogPath
	e.w.appendLog(t, "1\n2\n")
	f := e.follow(t, "?follow=1")
	f.expect(t, "1", "2")

	// Copy and truncate, with lines the follower has not seen yet.
	e.w.appendLog(t, "3\n4\n")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".1", data, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	e.w.appendLog(t, "5\n")
	f.expect(t, "3", "4", "5")

	// Collapse: the head goes to LOG.1, the live file keeps its tail.
	e.w.appendLog(t, "6\n7\n")
	f.expect(t, "6", "7")
	data, err = os.ReadFile(path) // "5\n6\n7\n"
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".1", data[:2], 0o640); err != nil {
		t.Fatal(err)
	}
	// Cut the head out of the same inode without ever showing the
	// follower a state fallocate would not: shift, then shorten.
	lf, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lf.WriteAt(data[2:], 0); err != nil {
		t.Fatal(err)
	}
	if err := lf.Truncate(int64(len(data) - 2)); err != nil {
		t.Fatal(err)
	}
	lf.Close()
	e.w.appendLog(t, "8\n")
	f.expect(t, "8")

	// Renamed away and replaced: the old file's last lines, then the new.
	e.w.appendLog(t, "9\n")
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("10\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	f.expect(t, "9", "10")
	e.w.appendLog(t, "11\n")
	f.expect(t, "11")

	// The worker exits: the stream ends after its last lines.
	e.w.appendLog(t, "bye\n")
	e.w.Kill()
	f.expect(t, "bye")
	f.expectEnd(t)
}

func TestWorkerLogsGoneWorker(t *testing.T) {
	e := newWorkersEnv(t)
	id := e.w.spec.ID
	e.w.appendLog(t, "started\ncrashed\n")
	e.w.Kill()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, live := e.s.WorkerLog(id); !live {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("worker still listed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	code, body := e.getAll(t, "/v1/workers/"+id+"/logs?tail=1", workersKey)
	if code != 200 || body != "crashed\n" {
		t.Errorf("gone worker: %d %q", code, body)
	}
	// Following a gone worker's log ends at its end.
	done := make(chan struct{})
	go func() {
		defer close(done)
		code, body := e.getAll(t, "/v1/workers/"+id+"/logs?follow=1", workersKey)
		if code != 200 || body != "started\ncrashed\n" {
			t.Errorf("follow gone worker: %d %q", code, body)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("follow of a gone worker's log did not end")
	}
	if err := os.Remove(e.w.spec.LogPath); err != nil {
		t.Fatal(err)
	}
	if code, body := e.getAll(t, "/v1/workers/"+id+"/logs", workersKey); code != 404 {
		t.Errorf("gone worker without log: %d %s", code, body)
	}
}

// TestWorkerClient runs the client's worker calls against the real routes.
func TestWorkerClient(t *testing.T) {
	e := newWorkersEnv(t)
	id := e.w.spec.ID
	c, err := client.New(e.srv.URL, workersKey)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// The PID shows once the runtime's Start has returned, just after the
	// worker was registered: poll briefly.
	var ws []client.Worker
	for deadline := time.Now().Add(5 * time.Second); ; {
		ws, err = c.ListWorkers(ctx, e.ep)
		if err != nil || len(ws) != 1 || ws[0].PID == 4242 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil || len(ws) != 1 || ws[0].ID != id || ws[0].State != "initializing" || ws[0].PID != 4242 || ws[0].StartedAt == "" {
		t.Fatalf("ListWorkers: %+v, %v", ws, err)
	}
	e.w.appendLog(t, "x\ny\n")
	var buf strings.Builder
	if err := c.WorkerLogs(ctx, id, false, 1, &buf); err != nil || buf.String() != "y\n" {
		t.Fatalf("WorkerLogs tail 1: %q, %v", buf.String(), err)
	}
	// Following ends without an error when the worker exits.
	buf.Reset()
	done := make(chan error, 1)
	go func() { done <- c.WorkerLogs(ctx, id, true, -1, &buf) }()
	time.Sleep(3 * logPollInterval)
	e.w.appendLog(t, "z\n")
	e.w.Kill()
	select {
	case err := <-done:
		if err != nil || buf.String() != "x\ny\nz\n" {
			t.Errorf("WorkerLogs follow: %q, %v", buf.String(), err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("following did not end when the worker exited")
	}
	if err := c.WorkerLogs(ctx, "w-00", false, -1, io.Discard); !client.IsNotFound(err) {
		t.Errorf("unknown worker: %v", err)
	}
}
