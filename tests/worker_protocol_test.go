package tests

// End-to-end tests of the worker-facing protocol (docs/compat.md, Worker
// protocol). Most tests act as the worker themselves: the endpoint's command
// is a shell script that dumps its environment and sleeps, and the test reads
// the credentials from that dump and drives job-take, job-done, ping and
// job-stop with net/http exactly as runpod-python sends them. The last tests
// use the real example worker for what needs a real worker process (exit
// codes, scaling, idle reaping).

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeWorkerScript is the worker the fake endpoints run. It writes its
// environment to $DUMP_DIR/env.PID (atomically), records a SIGTERM in
// $DUMP_DIR/term.PID and otherwise just sleeps. PID is the worker's main
// process, the one emberd started.
const fakeWorkerScript = `trap 'echo TERM > "$DUMP_DIR/term.$$"; kill $! 2>/dev/null; exit 0' TERM
env > "$DUMP_DIR/.env.$$" && mv "$DUMP_DIR/.env.$$" "$DUMP_DIR/env.$$"
sleep 300 &
wait $!
`

// workerClient is what the fake workers use: its own pool, no global timeout
// (every call carries a context deadline instead).
var workerClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}

// fakeEndpoint creates an endpoint that runs fakeWorkerScript and returns its
// id and the directory the workers dump their environment into. fields
// override the defaults (workersMin 1, workersMax 1, idleTimeout 5).
func fakeEndpoint(t *testing.T, d *Daemon, name string, fields map[string]any) (string, string) {
	t.Helper()
	// Not t.TempDir: that would be removed before the daemon stops, while
	// the workers' SIGTERM traps may still write into it.
	dir, err := os.MkdirTemp("", "ember-fake-worker-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop(); os.RemoveAll(dir) })
	env := map[string]string{"DUMP_DIR": dir}
	if e, ok := fields["env"].(map[string]string); ok {
		for k, v := range e {
			env[k] = v
		}
	}
	spec := map[string]any{"workersMin": 1, "workersMax": 1, "idleTimeout": 5}
	for k, v := range fields {
		spec[k] = v
	}
	spec["command"] = []string{"/bin/sh", "-c", fakeWorkerScript}
	spec["env"] = env
	return d.CreateEndpoint(name, spec), dir
}

// fakeWorker is the test acting as one worker of a fake endpoint.
type fakeWorker struct {
	t     *testing.T
	d     *Daemon
	Env   map[string]string
	Lines []string // the raw env dump
	ID    string
	Token string
	EP    string
	PID   int
	dir   string

	mu        sync.Mutex
	held      map[string]bool
	badPings  atomic.Int64
	pingCount atomic.Int64
}

// envDumps lists the env dumps in dir by PID.
func envDumps(dir string) map[int]string {
	out := map[int]string{}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if pid, ok := strings.CutPrefix(e.Name(), "env."); ok {
			if n, err := strconv.Atoi(pid); err == nil {
				out[n] = filepath.Join(dir, e.Name())
			}
		}
	}
	return out
}

// waitFakeWorker waits (bounded) for a worker whose PID is not in seen to
// dump its environment, marks it seen and returns it.
func waitFakeWorker(t *testing.T, d *Daemon, dir string, seen map[int]bool) *fakeWorker {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		dumps := envDumps(dir)
		pids := make([]int, 0, len(dumps))
		for pid := range dumps {
			if !seen[pid] {
				pids = append(pids, pid)
			}
		}
		sort.Ints(pids)
		if len(pids) > 0 {
			pid := pids[0]
			seen[pid] = true
			b, err := os.ReadFile(dumps[pid])
			if err != nil {
				t.Fatal(err)
			}
			f := &fakeWorker{t: t, d: d, PID: pid, dir: dir, Env: map[string]string{}, held: map[string]bool{}}
			for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
				f.Lines = append(f.Lines, line)
				if k, v, ok := strings.Cut(line, "="); ok {
					f.Env[k] = v
				}
			}
			f.ID, f.Token, f.EP = f.Env["RUNPOD_POD_ID"], f.Env["RUNPOD_AI_API_KEY"], f.Env["RUNPOD_ENDPOINT_ID"]
			if f.ID == "" || f.Token == "" || f.Env["RUNPOD_WEBHOOK_GET_JOB"] == "" {
				t.Fatalf("worker %d lacks the protocol variables:\n%s", pid, b)
			}
			return f
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no new worker dumped its environment into %s within 20 s\n%s", dir, d.Log())
	return nil
}

// URLs as the SDK builds them (docs/compat.md: Worker environment, Job take,
// Job done, Ping, Job stop).

func (f *fakeWorker) takeURL() string {
	return strings.ReplaceAll(f.Env["RUNPOD_WEBHOOK_GET_JOB"], "$ID", f.ID)
}

func (f *fakeWorker) singleTakeURL(inProgress int) string {
	return f.takeURL() + "&job_in_progress=" + strconv.Itoa(inProgress)
}

func (f *fakeWorker) batchTakeURL(n, inProgress int) string {
	return strings.ReplaceAll(f.takeURL(), "/job-take/", "/job-take-batch/") + "&batch_size=" + strconv.Itoa(n) + "&job_in_progress=" + strconv.Itoa(inProgress)
}

func (f *fakeWorker) stopURL() string {
	return strings.ReplaceAll(f.takeURL(), "/job-take/", "/job-stop/")
}

func (f *fakeWorker) doneURL(jobID string, stream bool) string {
	u := strings.ReplaceAll(f.Env["RUNPOD_WEBHOOK_POST_OUTPUT"], "$RUNPOD_POD_ID", f.ID)
	return strings.ReplaceAll(u, "$ID", jobID) + "&isStream=" + strconv.FormatBool(stream)
}

func (f *fakeWorker) pingURL() string {
	return strings.ReplaceAll(f.Env["RUNPOD_WEBHOOK_PING"], "$RUNPOD_POD_ID", f.ID)
}

// send makes one worker request with the SDK's headers; it never fails the
// test, so goroutines may use it.
func (f *fakeWorker) send(ctx context.Context, method, u, auth, body string) (int, []byte, http.Header, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth) // raw, no "Bearer"
	}
	req.Header.Set("User-Agent", "RunPod-Python-SDK/1.12.0 (Linux; e2e)")
	if method == http.MethodPost {
		// sic: the SDK labels its JSON result bodies as a form.
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := workerClient.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header, err
}

// call is send with the worker's own token and a bound, failing the test on
// transport errors.
func (f *fakeWorker) call(method, u, body string) (int, []byte) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, b, _, err := f.send(ctx, method, u, f.Token, body)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, u, err)
	}
	return code, b
}

// take makes one single take and returns the job, or nil on 204.
func (f *fakeWorker) take() map[string]any {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, b, h, err := f.send(ctx, http.MethodGet, f.singleTakeURL(0), f.Token, "")
	if err != nil {
		f.t.Fatalf("take: %v", err)
	}
	switch code {
	case http.StatusNoContent:
		return nil
	case http.StatusOK:
	default:
		f.t.Fatalf("take: got %d: %s", code, b)
	}
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		f.t.Fatalf("take: Content-Type %q, want application/json (the SDK treats anything else as no job)", ct)
	}
	var job map[string]any
	if err := json.Unmarshal(b, &job); err != nil {
		f.t.Fatalf("take: a single take must answer a JSON object: %v: %s", err, b)
	}
	if id, _ := job["id"].(string); id == "" {
		f.t.Fatalf("take: job without id: %s", b)
	}
	if _, ok := job["input"]; !ok {
		f.t.Fatalf("take: job without input: %s", b)
	}
	f.hold(job["id"].(string))
	return job
}

// takeJob takes until it gets a job (bounded) and requires it to be want
// when want is not empty.
func (f *fakeWorker) takeJob(want string) map[string]any {
	f.t.Helper()
	for i := 0; i < 10; i++ {
		if job := f.take(); job != nil {
			if want != "" && job["id"] != want {
				f.t.Fatalf("took %v, want job %s", job["id"], want)
			}
			return job
		}
	}
	f.t.Fatalf("no job after 10 takes\n%s", f.d.Log())
	return nil
}

// done posts a job-done body (isStream=false) and returns the status code.
func (f *fakeWorker) done(jobID, body string) int {
	f.t.Helper()
	code, b := f.call(http.MethodPost, f.doneURL(jobID, false), body)
	if code >= 300 && code < 400 {
		f.t.Fatalf("job-done answered a redirect %d: %s", code, b)
	}
	return code
}

// ping sends one heartbeat with extra query parameters.
func (f *fakeWorker) ping(extra string) int {
	f.t.Helper()
	code, _ := f.call(http.MethodGet, f.pingURL()+extra, "")
	return code
}

func (f *fakeWorker) hold(id string)   { f.mu.Lock(); f.held[id] = true; f.mu.Unlock() }
func (f *fakeWorker) forget(id string) { f.mu.Lock(); delete(f.held, id); f.mu.Unlock() }

func (f *fakeWorker) heldIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]string, 0, len(f.held))
	for id := range f.held {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// startPinger pings every interval, listing the held jobs, as the SDK's ping
// process does; it stops at the end of the test (before the daemon stops).
func (f *fakeWorker) startPinger(every time.Duration) {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			q := ""
			if ids := f.heldIDs(); len(ids) > 0 {
				q += "&job_id=" + url.QueryEscape(strings.Join(ids, ","))
			}
			q += "&runpod_version=1.12.0"
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			code, _, _, err := f.send(ctx, http.MethodGet, f.pingURL()+q, f.Token, "")
			cancel()
			f.pingCount.Add(1)
			if err != nil || code != http.StatusOK {
				f.badPings.Add(1)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	f.t.Cleanup(func() { close(stop); <-done })
}

// waitStopped waits (bounded) until the worker's process has exited and
// emberd has forgotten its credential.
func (f *fakeWorker) waitStopped(timeout time.Duration) {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		gone := errors.Is(syscall.Kill(f.PID, 0), syscall.ESRCH)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		code, _, _, err := f.send(ctx, http.MethodGet, f.pingURL(), f.Token, "")
		cancel()
		if gone && err == nil && code == http.StatusUnauthorized {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.t.Fatalf("worker %s (pid %d) was not stopped within %v\n%s", f.ID, f.PID, timeout, f.d.Log())
}

// gotTerm reports whether the worker's script caught a SIGTERM.
func (f *fakeWorker) gotTerm() bool {
	_, err := os.Stat(filepath.Join(f.dir, "term."+strconv.Itoa(f.PID)))
	return err == nil
}

func jobStatus(d *Daemon, ep, id string) map[string]any {
	d.t.Helper()
	return d.JSON("GET", "/v2/"+ep+"/status/"+id, nil, 200)
}

// healthOf returns the /health counters as ints.
func healthOf(d *Daemon, ep string) (jobs, workers map[string]int) {
	d.t.Helper()
	m := d.JSON("GET", "/v2/"+ep+"/health", nil, 200)
	conv := func(v any) map[string]int {
		out := map[string]int{}
		mm, _ := v.(map[string]any)
		for k, x := range mm {
			f, _ := x.(float64)
			out[k] = int(f)
		}
		return out
	}
	return conv(m["jobs"]), conv(m["workers"])
}

// workersInHealth counts the workers /health shows (ready duplicates idle).
func workersInHealth(w map[string]int) int {
	return w["idle"] + w["initializing"] + w["running"] + w["unhealthy"] + w["throttled"]
}

// liveWorkerDirs counts the worker scratch directories emberd holds: one
// from just before a worker starts until after it has exited.
func liveWorkerDirs(d *Daemon) int {
	ents, _ := os.ReadDir(filepath.Join(d.DataDir, "workers"))
	n := 0
	for _, e := range ents {
		if e.IsDir() {
			n++
		}
	}
	return n
}

// TestWorkerEnvContract checks the environment a worker starts with (spec
// 3.2, 3.3): the four URL templates, credentials, the air-gap switch, and the
// endpoint's own variables, which must not override protocol variables.
func TestWorkerEnvContract(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	ep, dir := fakeEndpoint(t, d, "envcontract", map[string]any{"env": map[string]string{
		"EMBER_E2E_VAR":          "hello world=1",
		"RUNPOD_POD_ID":          "spoofed-pod",
		"RUNPOD_AI_API_KEY":      "spoofed-key",
		"RUNPOD_WEBHOOK_GET_JOB": "http://spoofed.invalid/job-take/$ID?x",
	}})
	f := waitFakeWorker(t, d, dir, map[int]bool{})

	if got := f.Env["EMBER_E2E_VAR"]; got != "hello world=1" {
		t.Errorf("endpoint env EMBER_E2E_VAR = %q, want %q", got, "hello world=1")
	}
	for _, k := range []string{"RUNPOD_POD_ID", "RUNPOD_AI_API_KEY", "RUNPOD_WEBHOOK_GET_JOB"} {
		n := 0
		for _, l := range f.Lines {
			if strings.HasPrefix(l, k+"=") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s appears %d times in the worker environment, want once", k, n)
		}
	}
	if f.ID == "spoofed-pod" || f.Token == "spoofed-key" || strings.Contains(f.Env["RUNPOD_WEBHOOK_GET_JOB"], "spoofed") {
		t.Errorf("the endpoint's env overrode protocol variables: pod %q key %q take %q", f.ID, f.Token, f.Env["RUNPOD_WEBHOOK_GET_JOB"])
	}
	if got := f.Env["RUNPOD_SKIP_AUTO_SYSTEM_CHECKS"]; got != "true" {
		t.Errorf("RUNPOD_SKIP_AUTO_SYSTEM_CHECKS = %q, want true", got)
	}
	if got := f.Env["RUNPOD_ENDPOINT_ID"]; got != ep {
		t.Errorf("RUNPOD_ENDPOINT_ID = %q, want %q", got, ep)
	}
	if got := f.Env["RUNPOD_PING_INTERVAL"]; got != "500" {
		t.Errorf("RUNPOD_PING_INTERVAL = %q, want 500 (ms, from --ping-interval 500ms)", got)
	}

	// The templates: every one keeps a '?' so the SDK's "&..." lands in the
	// query; job-done and job-stream keep a literal $ID for the job id.
	const job = "JOB-123"
	checks := []struct {
		key, wantPath string
		needsJobID    bool
		subst         func(string) string
	}{
		{"RUNPOD_WEBHOOK_GET_JOB", "/v2/" + ep + "/job-take/" + f.ID, false, func(s string) string { return strings.ReplaceAll(s, "$ID", f.ID) }},
		{"RUNPOD_WEBHOOK_POST_OUTPUT", "/v2/" + ep + "/job-done/" + f.ID + "/" + job, true, func(s string) string {
			return strings.ReplaceAll(strings.ReplaceAll(s, "$RUNPOD_POD_ID", f.ID), "$ID", job)
		}},
		{"RUNPOD_WEBHOOK_POST_STREAM", "/v2/" + ep + "/job-stream/" + f.ID + "/" + job, true, func(s string) string {
			return strings.ReplaceAll(strings.ReplaceAll(s, "$RUNPOD_POD_ID", f.ID), "$ID", job)
		}},
		{"RUNPOD_WEBHOOK_PING", "/v2/" + ep + "/ping/" + f.ID, false, func(s string) string { return strings.ReplaceAll(s, "$RUNPOD_POD_ID", f.ID) }},
	}
	for _, c := range checks {
		tmpl := f.Env[c.key]
		if !strings.Contains(tmpl, "?") {
			t.Errorf("%s = %q has no '?'", c.key, tmpl)
		}
		if c.needsJobID && !strings.Contains(tmpl, "$ID") {
			t.Errorf("%s = %q lacks the literal $ID the SDK replaces with the job id", c.key, tmpl)
		}
		u, err := url.Parse(c.subst(tmpl))
		if err != nil {
			t.Errorf("%s = %q: %v", c.key, tmpl, err)
			continue
		}
		if u.Scheme+"://"+u.Host != d.URL {
			t.Errorf("%s points at %s, want the daemon %s", c.key, u.Scheme+"://"+u.Host, d.URL)
		}
		if u.Path != c.wantPath {
			t.Errorf("%s substituted as the SDK does has path %q, want %q", c.key, u.Path, c.wantPath)
		}
	}

	// The credential works (raw Authorization header).
	if code := f.ping("&runpod_version=1.12.0"); code != 200 {
		t.Errorf("ping with the injected credential: %d, want 200", code)
	}
}

// TestWorkerJobTake covers job-take and job-take-batch (docs/compat.md, Job
// take).
func TestWorkerJobTake(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t) // --take-hold 2s
	hooks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer hooks.Close()
	ep, dir := fakeEndpoint(t, d, "take", nil)
	f := waitFakeWorker(t, d, dir, map[int]bool{})

	// Empty queue: the take is held, then 204.
	start := time.Now()
	if job := f.take(); job != nil {
		t.Fatalf("take on an empty queue returned %v", job)
	}
	if held := time.Since(start); held < 1500*time.Millisecond {
		t.Errorf("empty take answered after %v; want it held about --take-hold (2s)", held)
	}

	// A pending take wakes up for a job submitted while it waits.
	type takeRes struct {
		code int
		body []byte
		err  error
	}
	resc := make(chan takeRes, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		code, b, _, err := f.send(ctx, http.MethodGet, f.singleTakeURL(0), f.Token, "")
		resc <- takeRes{code, b, err}
	}()
	time.Sleep(100 * time.Millisecond)
	s3 := map[string]any{"accessId": "AK", "accessSecret": "SK", "bucketName": "bkt", "endpointUrl": "http://s3.local:9000"}
	id := d.Submit(ep, map[string]any{"input": map[string]any{"prompt": "hi", "n": []int{1, 2}}, "s3Config": s3, "webhook": hooks.URL + "/hook"})
	res := <-resc
	if res.err != nil || res.code != 200 {
		t.Fatalf("take pending while the job was submitted: %d %v %s", res.code, res.err, res.body)
	}
	var job map[string]any
	if err := json.Unmarshal(res.body, &job); err != nil {
		t.Fatalf("single take must answer an object: %v: %s", err, res.body)
	}
	if job["id"] != id {
		t.Fatalf("took %v, want %s", job["id"], id)
	}
	in, _ := json.Marshal(job["input"])
	if string(in) != `{"n":[1,2],"prompt":"hi"}` {
		t.Errorf("input = %s, want {\"n\":[1,2],\"prompt\":\"hi\"}", in)
	}
	gotS3, _ := json.Marshal(job["s3Config"])
	wantS3, _ := json.Marshal(s3)
	if string(gotS3) != string(wantS3) {
		t.Errorf("s3Config = %s, want %s passed through", gotS3, wantS3)
	}
	if job["webhook"] != hooks.URL+"/hook" {
		t.Errorf("webhook = %v, want %s passed through", job["webhook"], hooks.URL+"/hook")
	}
	if st := jobStatus(d, ep, id); st["status"] != "IN_PROGRESS" {
		t.Errorf("taken job is %v, want IN_PROGRESS", st["status"])
	}
	if code := f.done(id, `{"output":"ok"}`); code != 200 {
		t.Fatalf("job-done: %d", code)
	}

	// Batch: 5 queued, batch_size 3 -> arrays of at most 3, and all 5 arrive.
	want := map[string]bool{}
	for i := 0; i < 5; i++ {
		want[d.Submit(ep, map[string]any{"input": map[string]any{"i": i}})] = true
	}
	got := map[string]bool{}
	for round := 0; round < 6 && len(got) < len(want); round++ {
		inProgress := 0
		if len(got) > 0 {
			inProgress = 1
		}
		code, b := f.call(http.MethodGet, f.batchTakeURL(3, inProgress), "")
		if code == http.StatusNoContent {
			continue
		}
		if code != 200 {
			t.Fatalf("job-take-batch: %d %s", code, b)
		}
		var jobs []map[string]any
		if err := json.Unmarshal(b, &jobs); err != nil {
			t.Fatalf("job-take-batch must answer an array: %v: %s", err, b)
		}
		if len(jobs) == 0 || len(jobs) > 3 {
			t.Fatalf("job-take-batch with batch_size=3 returned %d jobs: %s", len(jobs), b)
		}
		for _, j := range jobs {
			jid, _ := j["id"].(string)
			if !want[jid] || got[jid] {
				t.Fatalf("batch returned unexpected or repeated job %q: %s", jid, b)
			}
			if _, ok := j["input"]; !ok {
				t.Fatalf("batch job without input: %s", b)
			}
			got[jid] = true
		}
	}
	if len(got) != len(want) {
		t.Fatalf("batch takes delivered %d of %d jobs", len(got), len(want))
	}
	for jid := range got {
		if code := f.done(jid, `{"output":1}`); code != 200 {
			t.Fatalf("job-done %s: %d", jid, code)
		}
		if st := jobStatus(d, ep, jid); st["status"] != "COMPLETED" {
			t.Errorf("job %s is %v, want COMPLETED", jid, st["status"])
		}
	}
}

// TestWorkerTakeDisconnect: a take the worker gives up on must not swallow
// a job (docs/compat.md, Job take: lost answers).
func TestWorkerTakeDisconnect(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, "--lease-grace", "1500ms")
	ep, dir := fakeEndpoint(t, d, "disconnect", nil)
	f := waitFakeWorker(t, d, dir, map[int]bool{})
	f.startPinger(250 * time.Millisecond)

	abandon := func(after time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), after)
		defer cancel()
		code, b, _, err := f.send(ctx, http.MethodGet, f.singleTakeURL(0), f.Token, "")
		if err == nil {
			t.Fatalf("take with nothing queued answered %d within %v: %s", code, after, b)
		}
	}

	// Deterministic case: the worker hung up well before the job arrived.
	abandon(300 * time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	id := d.Submit(ep, map[string]any{"input": "after-hangup"})
	time.Sleep(500 * time.Millisecond)
	if st := jobStatus(d, ep, id); st["status"] != "IN_QUEUE" {
		t.Fatalf("job submitted after the take was abandoned is %v, want IN_QUEUE (handed to a dead request?)", st["status"])
	}
	f.takeJob(id)
	if code := f.done(id, `{"output":"a"}`); code != 200 {
		t.Fatalf("job-done: %d", code)
	}
	d.WaitStatus(ep, id, 10*time.Second, "COMPLETED")

	// Racy cases: the job arrives at about the moment the worker gives up.
	// Whoever wins the race, the job must end up taken by a later take
	// (directly, or after its lease lapses from the pings) and complete.
	for round := 0; round < 4; round++ {
		abandon(200 * time.Millisecond)
		id := d.Submit(ep, map[string]any{"input": map[string]any{"round": round}})
		deadline := time.Now().Add(20 * time.Second)
		var job map[string]any
		for job == nil && time.Now().Before(deadline) {
			job = f.take()
		}
		if job == nil {
			t.Fatalf("round %d: job %s was never taken again after the abandoned take; status %v\n%s", round, id, jobStatus(d, ep, id), d.Log())
		}
		if job["id"] != id {
			t.Fatalf("round %d: took %v, want %s", round, job["id"], id)
		}
		if code := f.done(id, `{"output":"r"}`); code != 200 {
			t.Fatalf("job-done: %d", code)
		}
		f.forget(id)
		d.WaitStatus(ep, id, 10*time.Second, "COMPLETED")
	}
}

// TestWorkerLeaseFromPings: a taken job stays leased while the worker's pings
// list it, and goes back to the queue once they have not for --lease-grace.
func TestWorkerLeaseFromPings(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, "--lease-grace", "2s")
	ep, dir := fakeEndpoint(t, d, "lease", nil)
	f := waitFakeWorker(t, d, dir, map[int]bool{})
	f.startPinger(200 * time.Millisecond)

	id := d.Submit(ep, map[string]any{"input": "leased"})
	f.takeJob(id)
	// Listed in pings: still IN_PROGRESS well past the grace.
	time.Sleep(5 * time.Second)
	if st := jobStatus(d, ep, id); st["status"] != "IN_PROGRESS" {
		t.Fatalf("job listed in every ping is %v after 2.5 lease-graces, want IN_PROGRESS", st["status"])
	}
	// The worker drops it (as the SDK does after a failed result post) but
	// keeps pinging: the job is re-queued and handed out again.
	f.forget(id)
	d.WaitStatus(ep, id, 15*time.Second, "IN_QUEUE")
	f.takeJob(id)
	if code := f.done(id, `{"output":"second try"}`); code != 200 {
		t.Fatalf("job-done: %d", code)
	}
	st := d.WaitStatus(ep, id, 10*time.Second, "COMPLETED")
	if st["output"] != "second try" {
		t.Errorf("output = %v, want \"second try\"", st["output"])
	}
	if n := f.badPings.Load(); n > 0 {
		t.Errorf("%d of %d pings failed", n, f.pingCount.Load())
	}
}

// TestWorkerJobDone covers job-done bodies and idempotence (docs/compat.md,
// Job done).
func TestWorkerJobDone(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	ep, dir := fakeEndpoint(t, d, "done", nil)
	f := waitFakeWorker(t, d, dir, map[int]bool{})

	// Progress, then final, then a retried final and a late progress update.
	id := d.Submit(ep, map[string]any{"input": 1})
	f.takeJob(id)
	if code := f.done(id, `{"status":"IN_PROGRESS","output":"p"}`); code != 200 {
		t.Fatalf("progress post: %d", code)
	}
	st := jobStatus(d, ep, id)
	if st["status"] != "IN_PROGRESS" || st["output"] != "p" {
		t.Fatalf("after progress: %v, want IN_PROGRESS with output \"p\"", st)
	}
	// Form-labelled body that form parsing would mangle; raw UTF-8.
	const final = `a+b=c&d%20 héllo ✓`
	if code := f.done(id, `{"output": "`+final+`"}`); code != 200 {
		t.Fatalf("final post: %d", code)
	}
	st = jobStatus(d, ep, id)
	if st["status"] != "COMPLETED" || st["output"] != final {
		t.Fatalf("after final: %v, want COMPLETED with output %q", st, final)
	}
	if code := f.done(id, `{"output":"second"}`); code < 200 || code > 299 {
		t.Errorf("duplicate final answered %d, want 2xx (the SDK retries)", code)
	}
	if code := f.done(id, `{"status":"IN_PROGRESS","output":"late"}`); code < 200 || code > 299 {
		t.Errorf("late progress answered %d, want 2xx", code)
	}
	st = jobStatus(d, ep, id)
	if st["status"] != "COMPLETED" || st["output"] != final {
		t.Errorf("after duplicate final and late progress: %v, want COMPLETED with output %q (first final wins)", st, final)
	}

	// A dict error: FAILED with the error as a string.
	id = d.Submit(ep, map[string]any{"input": 2})
	f.takeJob(id)
	if code := f.done(id, `{"error":{"a":1}}`); code != 200 {
		t.Fatalf("error post: %d", code)
	}
	st = jobStatus(d, ep, id)
	if st["status"] != "FAILED" {
		t.Fatalf("dict error: %v, want FAILED", st)
	}
	if e, ok := st["error"].(string); !ok || !strings.Contains(e, `"a"`) || !strings.Contains(e, "1") {
		t.Errorf("dict error: error = %#v, want a string carrying {\"a\":1}", st["error"])
	}

	// A string error with partial output.
	id = d.Submit(ep, map[string]any{"input": 3})
	f.takeJob(id)
	if code := f.done(id, `{"output":{"partial":true},"error":"boom"}`); code != 200 {
		t.Fatalf("error post: %d", code)
	}
	if st = jobStatus(d, ep, id); st["status"] != "FAILED" || st["error"] != "boom" {
		t.Errorf("string error: %v, want FAILED with error \"boom\"", st)
	}

	// A handler that returned {}: body {} -> COMPLETED without output.
	id = d.Submit(ep, map[string]any{"input": 4})
	f.takeJob(id)
	if code := f.done(id, `{}`); code != 200 {
		t.Fatalf("empty body post: %d", code)
	}
	if st = jobStatus(d, ep, id); st["status"] != "COMPLETED" {
		t.Errorf("body {}: %v, want COMPLETED", st)
	}

	// Templates without '?': the SDK appends "&..." to the path itself.
	id = d.Submit(ep, map[string]any{"input": 5})
	base, _, _ := strings.Cut(f.takeURL(), "?")
	code, b := f.call(http.MethodGet, base+"&job_in_progress=0", "")
	if code != 200 || !strings.Contains(string(b), id) {
		t.Fatalf("take at %s: %d %s, want job %s", base+"&job_in_progress=0", code, b, id)
	}
	doneBase, _, _ := strings.Cut(strings.ReplaceAll(f.Env["RUNPOD_WEBHOOK_POST_OUTPUT"], "$RUNPOD_POD_ID", f.ID), "?")
	u := strings.ReplaceAll(doneBase, "$ID", id) + "&isStream=false"
	if !strings.HasSuffix(u, "/"+id+"&isStream=false") {
		t.Fatalf("bad test URL %s", u)
	}
	if code, b := f.call(http.MethodPost, u, `{"output":"no-query"}`); code != 200 {
		t.Fatalf("job-done at %s: %d %s", u, code, b)
	}
	if st = jobStatus(d, ep, id); st["status"] != "COMPLETED" || st["output"] != "no-query" {
		t.Errorf("job-done without '?': %v, want COMPLETED with output \"no-query\"", st)
	}
}

// TestWorkerTokens: a worker credential is good for its own endpoint and
// its own jobs only (docs/compat.md, Worker auth).
func TestWorkerTokens(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	ep1, dir1 := fakeEndpoint(t, d, "tok1", map[string]any{"workersMin": 2, "workersMax": 2})
	ep2, dir2 := fakeEndpoint(t, d, "tok2", nil)
	seen1 := map[int]bool{}
	a := waitFakeWorker(t, d, dir1, seen1)
	b := waitFakeWorker(t, d, dir1, seen1)
	c := waitFakeWorker(t, d, dir2, map[int]bool{})
	if a.EP != ep1 || b.EP != ep1 || c.EP != ep2 {
		t.Fatalf("endpoints: %s %s %s", a.EP, b.EP, c.EP)
	}

	status := func(f *fakeWorker, method, u, auth, body string) int {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		code, _, _, err := f.send(ctx, method, u, auth, body)
		if err != nil {
			t.Fatal(err)
		}
		return code
	}
	onEP := func(u, from, to string) string {
		return strings.Replace(u, "/v2/"+from+"/", "/v2/"+to+"/", 1)
	}

	id := d.Submit(ep1, map[string]any{"input": "x"})

	// a's credential on ep2's routes, as itself and as c.
	for _, u := range []string{
		onEP(a.singleTakeURL(0), ep1, ep2),
		onEP(a.pingURL(), ep1, ep2),
		onEP(a.stopURL(), ep1, ep2),
		c.singleTakeURL(0),
		c.pingURL(),
	} {
		if code := status(a, http.MethodGet, u, a.Token, ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s with another endpoint's worker token: %d, want 401", u, code)
		}
	}
	if code := status(a, http.MethodPost, onEP(a.doneURL(id, false), ep1, ep2), a.Token, `{"output":1}`); code != http.StatusUnauthorized {
		t.Errorf("job-done on the other endpoint with a's token: %d, want 401", code)
	}
	// Wrong, missing and other workers' tokens on a's own routes.
	for name, auth := range map[string]string{"wrong": "not-a-token", "missing": "", "other worker's": b.Token} {
		if code := status(a, http.MethodGet, a.pingURL(), auth, ""); code != http.StatusUnauthorized {
			t.Errorf("ping with a %s token: %d, want 401", name, code)
		}
	}
	if code := status(a, http.MethodGet, a.pingURL(), "Bearer "+a.Token, ""); code != 200 {
		t.Errorf("ping with \"Bearer <token>\": %d, want 200", code)
	}

	// job-done from workers that never held the job.
	if code := a.done(id, `{"output":"stolen"}`); code < 400 || code > 499 {
		t.Errorf("job-done for a queued job the worker never took: %d, want 4xx", code)
	}
	if st := jobStatus(d, ep1, id); st["status"] != "IN_QUEUE" {
		t.Fatalf("after a rejected job-done the job is %v, want IN_QUEUE", st)
	}
	a.takeJob(id)
	if code := b.done(id, `{"output":"stolen"}`); code < 400 || code > 499 {
		t.Errorf("job-done by a same-endpoint worker that does not hold the job: %d, want 4xx", code)
	}
	if code := c.done(id, `{"output":"stolen"}`); code < 400 || code > 499 {
		t.Errorf("job-done via another endpoint's routes: %d, want 4xx", code)
	}
	if st := jobStatus(d, ep1, id); st["status"] != "IN_PROGRESS" || st["output"] != nil {
		t.Fatalf("after rejected job-done posts the job is %v, want IN_PROGRESS without output", st)
	}
	if code := a.done(id, `{"output":"mine"}`); code != 200 {
		t.Fatalf("job-done by the holder: %d", code)
	}
	if st := jobStatus(d, ep1, id); st["status"] != "COMPLETED" || st["output"] != "mine" {
		t.Errorf("job is %v, want COMPLETED with output \"mine\"", st)
	}
}

// TestWorkerJobStop: cancelling a running job reaches its worker through the
// job-stop long-poll (docs/compat.md, Job stop); a late result changes nothing.
func TestWorkerJobStop(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	ep, dir := fakeEndpoint(t, d, "stop", nil)
	f := waitFakeWorker(t, d, dir, map[int]bool{})

	type res struct {
		code int
		body []byte
		err  error
	}
	poll := func() chan res {
		ch := make(chan res, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			code, b, _, err := f.send(ctx, http.MethodGet, f.stopURL(), f.Token, "")
			ch <- res{code, b, err}
		}()
		return ch
	}

	pending := poll()
	id := d.Submit(ep, map[string]any{"input": "to-cancel"})
	f.takeJob(id)
	time.Sleep(100 * time.Millisecond)
	cv := d.JSON("POST", "/v2/"+ep+"/cancel/"+id, nil, 200)
	if cv["status"] != "CANCELLED" {
		t.Fatalf("/cancel answered %v", cv)
	}
	var r res
	select {
	case r = <-pending:
	case <-time.After(45 * time.Second):
		t.Fatal("job-stop poll did not return")
	}
	if r.err != nil || r.code != 200 {
		t.Fatalf("job-stop: %d %v %s", r.code, r.err, r.body)
	}
	var stop struct {
		JobsToStop []string `json:"jobsToStop"`
	}
	if err := json.Unmarshal(r.body, &stop); err != nil || len(stop.JobsToStop) != 1 || stop.JobsToStop[0] != id {
		t.Fatalf("job-stop answered %s, want {\"jobsToStop\":[%q]}", r.body, id)
	}

	// The worker still posts a result (an SDK < 1.10 would): 2xx, ignored.
	if code := f.done(id, `{"output":"too late"}`); code < 200 || code > 299 {
		t.Errorf("result for a cancelled job: %d, want 2xx", code)
	}
	if st := jobStatus(d, ep, id); st["status"] != "CANCELLED" || st["output"] != nil {
		t.Errorf("cancelled job after a late result: %v, want CANCELLED without output", st)
	}

	// Nothing to stop: 204 (after the daemon's hold).
	r = <-poll()
	if r.err != nil || r.code != http.StatusNoContent {
		t.Errorf("job-stop with nothing to stop: %d %v %s, want 204", r.code, r.err, r.body)
	}
}

// TestWorkerUnhealthyPing: an unhealthy report (docs/compat.md, Unhealthy
// workers) stops the worker;
// what it held is re-queued and runs on a replacement.
func TestWorkerUnhealthyPing(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	ep, dir := fakeEndpoint(t, d, "unhealthy", nil)
	seen := map[int]bool{}
	f := waitFakeWorker(t, d, dir, seen)

	held := d.Submit(ep, map[string]any{"input": "held"})
	f.takeJob(held)
	if code := f.ping("&status=unhealthy&check=memory&reason=x&runpod_version=1.12.0"); code != 200 {
		t.Fatalf("unhealthy ping: %d, want 200", code)
	}
	// No new job for it, whatever happens next.
	queued := d.Submit(ep, map[string]any{"input": "queued"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	code, b, _, err := f.send(ctx, http.MethodGet, f.singleTakeURL(1), f.Token, "")
	cancel()
	if err == nil && code == 200 {
		t.Fatalf("an unhealthy worker was given a job: %s", b)
	}
	f.waitStopped(15 * time.Second)
	if !f.gotTerm() {
		t.Errorf("the unhealthy worker was not stopped with SIGTERM")
	}

	// The replacement gets both jobs.
	g := waitFakeWorker(t, d, dir, seen)
	got := map[string]bool{}
	for i := 0; i < 10 && len(got) < 2; i++ {
		if job := g.take(); job != nil {
			got[job["id"].(string)] = true
		}
	}
	if !got[held] || !got[queued] {
		t.Fatalf("replacement worker took %v, want %s (re-queued) and %s", got, held, queued)
	}
	for id := range got {
		if code := g.done(id, `{"output":"ok"}`); code != 200 {
			t.Fatalf("job-done: %d", code)
		}
		d.WaitStatus(ep, id, 10*time.Second, "COMPLETED")
	}
}

// TestWorkerStopPod: a final result with stopPod recycles the worker after
// the job (docs/compat.md: Job done, Worker exit); the endpoint also scales
// from zero for a job.
func TestWorkerStopPod(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	ep, dir := fakeEndpoint(t, d, "stoppod", map[string]any{"workersMin": 0})
	time.Sleep(1200 * time.Millisecond) // a few scaler ticks
	if n := len(envDumps(dir)); n != 0 {
		t.Fatalf("%d workers started with workersMin 0 and no job", n)
	}
	id := d.Submit(ep, map[string]any{"input": "last"})
	f := waitFakeWorker(t, d, dir, map[int]bool{})
	f.takeJob(id)
	if code := f.done(id, `{"output":"bye","stopPod":true}`); code != 200 {
		t.Fatalf("job-done: %d", code)
	}
	st := jobStatus(d, ep, id)
	if st["status"] != "COMPLETED" || st["output"] != "bye" {
		t.Errorf("job is %v, want COMPLETED with output \"bye\"", st)
	}
	f.waitStopped(15 * time.Second)
	if !f.gotTerm() {
		t.Errorf("stopPod: the worker was not stopped with SIGTERM")
	}
	_, w := healthOf(d, ep)
	if n := workersInHealth(w); n != 0 {
		t.Errorf("after stopPod /health shows %d workers (%v), want 0", n, w)
	}
}

// TestExampleWorkerExitRequeue: a worker that dies holding a job gets the
// job re-queued, and the job fails once --max-attempts are used up.
func TestExampleWorkerExitRequeue(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, "--max-attempts", "2")
	ep := d.CreateEndpoint("exiter", map[string]any{"workersMax": 1})
	id := d.Submit(ep, map[string]any{"input": map[string]any{"exit": 3}})
	st := d.WaitStatus(ep, id, 60*time.Second, "FAILED", "COMPLETED", "CANCELLED", "TIMED_OUT")
	if st["status"] != "FAILED" {
		t.Fatalf("job whose worker exits is %v, want FAILED", st)
	}
	e, _ := st["error"].(string)
	if !strings.Contains(e, "exited with code 3") || !strings.Contains(e, "2 attempts") {
		t.Errorf("error = %q, want it to say the worker exited with code 3 and after 2 attempts", e)
	}
	// The endpoint keeps working.
	ok := d.Submit(ep, map[string]any{"input": map[string]any{"output": "fine"}})
	if st := d.WaitStatus(ep, ok, 60*time.Second, "COMPLETED", "FAILED"); st["output"] != "fine" {
		t.Errorf("next job: %v, want COMPLETED with output \"fine\"", st)
	}
}

// TestExampleWorkerScaling: no worker before the first job, never more than
// workersMax, and idle workers reaped after idleTimeout.
func TestExampleWorkerScaling(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	ep := d.CreateEndpoint("scaler", map[string]any{"workersMax": 2, "idleTimeout": 1, "scalerType": "REQUEST_COUNT", "scalerValue": 1})
	time.Sleep(1200 * time.Millisecond)
	if _, w := healthOf(d, ep); workersInHealth(w) != 0 || liveWorkerDirs(d) != 0 {
		t.Fatalf("workers before any job: health %v, %d worker dirs; want none", w, liveWorkerDirs(d))
	}

	var ids []string
	for i := 0; i < 6; i++ {
		ids = append(ids, d.Submit(ep, map[string]any{"input": map[string]any{"sleep_ms": 700, "output": i}}))
	}
	maxLive := 0
	deadline := time.Now().Add(60 * time.Second)
	workerIDs := map[string]bool{}
	for {
		_, w := healthOf(d, ep)
		maxLive = max(maxLive, workersInHealth(w), liveWorkerDirs(d))
		pending := 0
		for i, id := range ids {
			st := jobStatus(d, ep, id)
			switch st["status"] {
			case "COMPLETED":
				if st["output"] != float64(i) {
					t.Errorf("job %d output %v", i, st["output"])
				}
				if wid, _ := st["workerId"].(string); wid != "" {
					workerIDs[wid] = true
				}
			case "IN_QUEUE", "IN_PROGRESS":
				pending++
			default:
				t.Fatalf("job %d: %v", i, st)
			}
		}
		if pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d jobs still pending after 60 s\n%s", pending, d.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("max live workers %d; jobs ran on %d distinct workers", maxLive, len(workerIDs))
	if maxLive > 2 {
		t.Errorf("saw %d live workers, workersMax is 2", maxLive)
	}
	if maxLive < 2 {
		t.Errorf("never scaled past %d worker(s) with 6 queued jobs and REQUEST_COUNT 1", maxLive)
	}

	// Idle reaping: back to zero after the last job.
	deadline = time.Now().Add(20 * time.Second)
	for {
		_, w := healthOf(d, ep)
		if workersInHealth(w) == 0 && liveWorkerDirs(d) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("workers not reaped 20 s after the last job (idleTimeout 1): health %v, %d dirs\n%s", w, liveWorkerDirs(d), d.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
