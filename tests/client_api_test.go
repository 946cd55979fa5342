package tests

// End-to-end tests of the RunPod client API (docs/compat.md, Client API)
// against a real emberd and the real example worker (process runtime), over
// HTTP on loopback. Each test runs its own daemon.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// caClient never follows redirects: a 301 on "//" paths must show up as a
// failure, not be silently followed (which turns a POST into a GET).
var caClient = &http.Client{
	Timeout:       2 * time.Minute,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// caDo sends a request with the given Authorization value ("" sends none)
// and returns the status and body. Every 200 API answer must be exactly
// one line of valid JSON (clients read /stream line by line).
func caDo(t testing.TB, d *Daemon, method, path string, body any, auth string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, d.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := caClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	// The OpenAPI document is a file, not an API answer; it may be pretty.
	if resp.StatusCode == http.StatusOK && path != "/openapi.json" {
		if bytes.IndexByte(out, '\n') >= 0 {
			t.Fatalf("%s %s: 200 body is not single-line JSON: %q", method, path, out)
		}
		if !json.Valid(out) {
			t.Errorf("%s %s: 200 body is not valid JSON: %q", method, path, out)
		}
	}
	return resp.StatusCode, out
}

// caJSON sends with the admin key (Bearer), requires want and decodes the
// body as an object.
func caJSON(t testing.TB, d *Daemon, method, path string, body any, want int) map[string]any {
	t.Helper()
	code, out := caDo(t, d, method, path, body, "Bearer "+d.Key)
	if code != want {
		t.Fatalf("%s %s: got %d, want %d: %s", method, path, code, want, out)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("%s %s: body is not a JSON object: %v: %s", method, path, err, out)
	}
	return m
}

// caErr requires an error answer with the given code and a JSON body
// {"error": "..."} whose message contains every one of subs.
func caErr(t testing.TB, what string, code int, out []byte, wantCode int, subs ...string) {
	t.Helper()
	if code != wantCode {
		t.Errorf("%s: got HTTP %d, want %d: %s", what, code, wantCode, out)
		return
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Errorf("%s: error body is not JSON: %v: %q", what, err, out)
		return
	}
	msg, ok := m["error"].(string)
	if !ok || msg == "" {
		t.Errorf("%s: error body has no \"error\" string: %s", what, out)
		return
	}
	for _, s := range subs {
		if !strings.Contains(msg, s) {
			t.Errorf("%s: error %q does not mention %q", what, msg, s)
		}
	}
}

// caNoConflictPrefix fails when an error body's message (Ember's "error"
// or the gateway's "message") starts with "conflict": the status code says
// that already, and a 400 once carried it.
func caNoConflictPrefix(t testing.TB, what string, out []byte) {
	t.Helper()
	var m map[string]any
	json.Unmarshal(out, &m)
	for _, k := range []string{"error", "message"} {
		if msg, _ := m[k].(string); strings.HasPrefix(strings.ToLower(msg), "conflict") {
			t.Errorf("%s: message %q starts with \"conflict\"", what, msg)
		}
	}
}

// caHealth reads /health and checks that every documented key is present
// and an integer.
func caHealth(t testing.TB, d *Daemon, ep string) (jobs, workers map[string]int) {
	t.Helper()
	m := caJSON(t, d, "GET", "/v2/"+ep+"/health", nil, 200)
	read := func(section string, keys ...string) map[string]int {
		sub, ok := m[section].(map[string]any)
		if !ok {
			t.Fatalf("/health: no %q object in %v", section, m)
		}
		out := map[string]int{}
		for _, k := range keys {
			v, ok := sub[k].(float64)
			if !ok {
				t.Fatalf("/health: %s.%s missing or not a number in %v", section, k, m)
			}
			if v != float64(int(v)) || v < 0 {
				t.Fatalf("/health: %s.%s = %v is not a non-negative integer", section, k, v)
			}
			out[k] = int(v)
		}
		if len(sub) != len(keys) {
			t.Errorf("/health: %s has keys %v, want exactly %v", section, sub, keys)
		}
		return out
	}
	jobs = read("jobs", "completed", "failed", "inProgress", "inQueue", "retried")
	workers = read("workers", "idle", "initializing", "ready", "running", "throttled", "unhealthy")
	return jobs, workers
}

// caBlocked creates an endpoint with one worker and occupies it with a long
// job, so that further jobs stay IN_QUEUE. It returns the endpoint and the
// blocking job's id (IN_PROGRESS).
func caBlocked(t testing.TB, d *Daemon, name string, sleepMs int) (ep, blocker string) {
	t.Helper()
	ep = d.CreateEndpoint(name, map[string]any{"workersMax": 1})
	blocker = d.Submit(ep, map[string]any{"input": map[string]any{"sleep_ms": sleepMs, "blocker": true}})
	d.WaitStatus(ep, blocker, 20*time.Second, "IN_PROGRESS")
	return ep, blocker
}

func caKeys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func caNum(t testing.TB, m map[string]any, key string) float64 {
	t.Helper()
	v, ok := m[key].(float64)
	if !ok {
		t.Fatalf("%q missing or not a number in %v", key, m)
	}
	if v < 0 || v != float64(int64(v)) {
		t.Fatalf("%q = %v is not a non-negative integer", key, v)
	}
	return v
}

// caEcho is the example worker's default output for input.
func caEcho(input map[string]any) map[string]any {
	// Round-trip through JSON so numbers compare as float64.
	b, _ := json.Marshal(map[string]any{"echo": input})
	var m map[string]any
	json.Unmarshal(b, &m)
	return m
}

func caTerminal(s any) bool {
	switch s {
	case "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT":
		return true
	}
	return false
}

// TestClientAPI_RunStatus: /run, then /status by GET and POST, queued and
// terminal shapes.
func TestClientAPI_RunStatus(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	ep, blocker := caBlocked(t, d, "run-status", 1500)

	input := map[string]any{"sleep_ms": 300, "prompt": "hello", "n": 7, "nested": map[string]any{"a": []any{1, "x"}}}
	run := caJSON(t, d, "POST", "/v2/"+ep+"/run", map[string]any{"input": input}, 200)
	id, _ := run["id"].(string)
	if id == "" || run["status"] != "IN_QUEUE" || len(run) != 2 {
		t.Fatalf("/run answered %v, want exactly {id, status: IN_QUEUE}", run)
	}
	if strings.HasPrefix(id, "sync-") {
		t.Errorf("/run job id %q has the sync- prefix", id)
	}

	// Queued behind the blocker: only id and status.
	for _, method := range []string{"GET", "POST"} {
		st := caJSON(t, d, method, "/v2/"+ep+"/status/"+id, nil, 200)
		if st["status"] != "IN_QUEUE" {
			t.Fatalf("%s /status of a queued job: %v", method, st)
		}
		if len(st) != 2 || st["id"] != id {
			t.Errorf("%s /status of an IN_QUEUE job has keys %v, want only id and status", method, caKeys(st))
		}
	}

	d.WaitStatus(ep, blocker, 20*time.Second, "COMPLETED")
	final := d.WaitStatus(ep, id, 20*time.Second, "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
	for _, method := range []string{"GET", "POST"} {
		st := caJSON(t, d, method, "/v2/"+ep+"/status/"+id, nil, 200)
		if st["status"] != "COMPLETED" || st["id"] != id {
			t.Fatalf("%s /status: %v (first seen terminal: %v)", method, st, final)
		}
		if !reflect.DeepEqual(st["output"], caEcho(input)) {
			t.Errorf("%s /status output = %v, want %v", method, st["output"], caEcho(input))
		}
		delay := caNum(t, st, "delayTime")
		exec := caNum(t, st, "executionTime")
		if exec < 250 {
			t.Errorf("executionTime %v ms for a job that slept 300 ms", exec)
		}
		if delay < 100 {
			// It waited behind the blocker for about a second.
			t.Errorf("delayTime %v ms for a job queued behind a 1.5 s job", delay)
		}
		if w, _ := st["workerId"].(string); w == "" {
			t.Errorf("%s /status: no workerId on a terminal job: %v", method, st)
		}
		if _, has := st["error"]; has {
			t.Errorf("COMPLETED job carries an error: %v", st)
		}
	}
	// Unknown keys stay out of the status object.
	st := caJSON(t, d, "GET", "/v2/"+ep+"/status/"+id, nil, 200)
	for k := range st {
		switch k {
		case "id", "status", "delayTime", "executionTime", "output", "workerId":
		default:
			t.Errorf("unexpected key %q in COMPLETED status %v", k, st)
		}
	}
}

// TestClientAPI_Runsync: fast /runsync in one call; a slow one returns a
// non-terminal status and is finished with /status-sync (GET and POST).
func TestClientAPI_Runsync(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	ep := d.CreateEndpoint("runsync", map[string]any{"workersMax": 3, "scalerType": "REQUEST_COUNT", "scalerValue": 1})

	input := map[string]any{"quick": true, "v": 1.5}
	m := caJSON(t, d, "POST", "/v2/"+ep+"/runsync", map[string]any{"input": input}, 200)
	if m["status"] != "COMPLETED" {
		t.Fatalf("fast /runsync answered %v, want COMPLETED in one call", m)
	}
	if id, _ := m["id"].(string); !strings.HasPrefix(id, "sync-") {
		t.Errorf("/runsync id %q lacks the sync- prefix", id)
	}
	if !reflect.DeepEqual(m["output"], caEcho(input)) {
		t.Errorf("/runsync output %v, want %v", m["output"], caEcho(input))
	}
	caNum(t, m, "executionTime")
	caNum(t, m, "delayTime")
	// Also readable through /status.
	st := caJSON(t, d, "GET", "/v2/"+ep+"/status/"+m["id"].(string), nil, 200)
	if st["status"] != "COMPLETED" || !reflect.DeepEqual(st["output"], m["output"]) {
		t.Errorf("/status of a runsync job: %v", st)
	}

	// Two slow jobs at once; one is finished with GET /status-sync, the
	// other with POST.
	type res struct {
		m       map[string]any
		elapsed time.Duration
	}
	ch := make(chan res, 2)
	for i := 0; i < 2; i++ {
		go func(i int) {
			start := time.Now()
			body := fmt.Sprintf(`{"input":{"sleep_ms":3000,"i":%d}}`, i)
			req, _ := http.NewRequest("POST", d.URL+"/v2/"+ep+"/runsync?wait=1000", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+d.Key)
			var m map[string]any
			resp, err := caClient.Do(req)
			if err != nil {
				t.Errorf("slow /runsync: %v", err)
				ch <- res{nil, 0}
				return
			}
			out, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || json.Unmarshal(out, &m) != nil || bytes.IndexByte(out, '\n') >= 0 {
				t.Errorf("slow /runsync: HTTP %d %s", resp.StatusCode, out)
				m = nil
			}
			ch <- res{m, time.Since(start)}
		}(i)
	}
	var ids []string
	for i := 0; i < 2; i++ {
		r := <-ch
		if r.m == nil {
			t.FailNow()
		}
		if s := r.m["status"]; s != "IN_QUEUE" && s != "IN_PROGRESS" {
			t.Fatalf("/runsync?wait=1000 on a 3 s job answered %v, want IN_QUEUE or IN_PROGRESS", r.m)
		}
		if r.elapsed < 900*time.Millisecond {
			t.Errorf("/runsync?wait=1000 returned a running job after only %v", r.elapsed)
		}
		id, _ := r.m["id"].(string)
		if !strings.HasPrefix(id, "sync-") {
			t.Errorf("/runsync id %q lacks the sync- prefix", id)
		}
		ids = append(ids, id)
	}
	for i, method := range []string{"GET", "POST"} {
		var got map[string]any
		// status-sync holds up to wait; a daemon that did not hold would
		// use up the three calls long before the job ends.
		for call := 0; call < 3; call++ {
			got = caJSON(t, d, method, "/v2/"+ep+"/status-sync/"+ids[i]+"?wait=5000", nil, 200)
			if caTerminal(got["status"]) {
				break
			}
		}
		if got["status"] != "COMPLETED" {
			t.Fatalf("%s /status-sync?wait=5000 (3 calls): %v\n%s", method, got, d.Log())
		}
		if got["id"] != ids[i] {
			t.Errorf("status-sync id %v, want %s", got["id"], ids[i])
		}
		out, _ := got["output"].(map[string]any)
		if echo, _ := out["echo"].(map[string]any); echo == nil || echo["sleep_ms"] != float64(3000) {
			t.Errorf("%s /status-sync output %v", method, got["output"])
		}
		caNum(t, got, "executionTime")
	}
}

// caReadStream reads /stream in a loop the way the SDKs do until the job is
// terminal, checking every answer's shape. It returns the chunk outputs in
// the order received and the terminal status.
func caReadStream(t testing.TB, d *Daemon, method, ep, id string) ([]any, string) {
	t.Helper()
	var chunks []any
	deadline := time.Now().Add(40 * time.Second)
	for i := 0; i < 200 && time.Now().Before(deadline); i++ {
		code, out := caDo(t, d, method, "/v2/"+ep+"/stream/"+id, nil, "Bearer "+d.Key)
		if code != 200 {
			t.Fatalf("%s /stream: HTTP %d %s", method, code, out)
		}
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(out, &raw); err != nil {
			t.Fatalf("/stream body %s: %v", out, err)
		}
		sraw, ok := raw["stream"]
		if !ok || !bytes.HasPrefix(bytes.TrimSpace(sraw), []byte("[")) {
			t.Fatalf("%s /stream answer without a \"stream\" array: %s", method, out)
		}
		var resp struct {
			Status string `json:"status"`
			Stream []map[string]any
		}
		if err := json.Unmarshal(out, &resp); err != nil {
			t.Fatalf("/stream body %s: %v", out, err)
		}
		for _, c := range resp.Stream {
			o, ok := c["output"]
			if !ok {
				t.Fatalf("chunk without output: %s", out)
			}
			chunks = append(chunks, o)
		}
		if caTerminal(resp.Status) {
			return chunks, resp.Status
		}
		if resp.Status != "IN_QUEUE" && resp.Status != "IN_PROGRESS" {
			t.Fatalf("/stream status %q", resp.Status)
		}
	}
	t.Fatalf("%s /stream of %s did not reach a terminal status; chunks so far %v", method, id, chunks)
	return nil, ""
}

// TestClientAPI_Stream: generator jobs read through /stream by GET and POST.
func TestClientAPI_Stream(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	ep := d.CreateEndpoint("stream", map[string]any{"workersMax": 2, "scalerType": "REQUEST_COUNT", "scalerValue": 1})

	const n = 6
	want := make([]any, n)
	for i := range want {
		want[i] = fmt.Sprintf("chunk %d", i+1)
	}
	for _, method := range []string{"GET", "POST"} {
		id := d.Submit(ep, map[string]any{"input": map[string]any{"stream": n, "stream_delay_ms": 150}})
		chunks, status := caReadStream(t, d, method, ep, id)
		if status != "COMPLETED" {
			t.Fatalf("%s: stream job ended %s", method, status)
		}
		if !reflect.DeepEqual(chunks, want) {
			t.Errorf("%s /stream chunks = %v, want %v (in order, each once)", method, chunks, want)
		}
		// A second read after completion: empty, but the key is there.
		for i := 0; i < 2; i++ {
			code, out := caDo(t, d, method, "/v2/"+ep+"/stream/"+id, nil, "Bearer "+d.Key)
			if code != 200 || string(out) != `{"status":"COMPLETED","stream":[]}` {
				t.Errorf("%s /stream after completion: %d %s, want {\"status\":\"COMPLETED\",\"stream\":[]}", method, code, out)
			}
		}
		st := caJSON(t, d, "GET", "/v2/"+ep+"/status/"+id, nil, 200)
		if st["status"] != "COMPLETED" || !reflect.DeepEqual(st["output"], want) {
			t.Errorf("/status of the stream job: %v, want output %v", st, want)
		}
	}

	// A job that streams nothing: "stream" is still always there.
	id := d.Submit(ep, map[string]any{"input": map[string]any{"sleep_ms": 200}})
	chunks, status := caReadStream(t, d, "GET", ep, id)
	if status != "COMPLETED" || len(chunks) != 0 {
		t.Errorf("plain job via /stream: status %s chunks %v", status, chunks)
	}
	code, out := caDo(t, d, "POST", "/v2/"+ep+"/stream/"+id+"?wait=100", nil, "Bearer "+d.Key)
	if code != 200 || string(out) != `{"status":"COMPLETED","stream":[]}` {
		t.Errorf("/stream of a finished job without chunks: %d %s", code, out)
	}
	// A failed stream job is terminal with the key present too.
	id = d.Submit(ep, map[string]any{"input": map[string]any{"stream": 2, "fail": "no more"}})
	chunks, status = caReadStream(t, d, "GET", ep, id)
	if status != "FAILED" || !reflect.DeepEqual(chunks, want[:2]) {
		t.Errorf("failing stream job: status %s chunks %v", status, chunks)
	}
	code, out = caDo(t, d, "GET", "/v2/"+ep+"/stream/"+id, nil, "Bearer "+d.Key)
	if code != 200 || string(out) != `{"status":"FAILED","stream":[]}` {
		t.Errorf("/stream of a FAILED job after reading: %d %s", code, out)
	}
	code, out = caDo(t, d, "GET", "/v2/"+ep+"/stream/no-such-job", nil, "Bearer "+d.Key)
	caErr(t, "/stream of an unknown job", code, out, 404)
}

// TestClientAPI_Progress: progress updates show on /status while the job
// runs, and the final output replaces them.
func TestClientAPI_Progress(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	ep := d.CreateEndpoint("progress", nil)
	input := map[string]any{"progress": 3, "sleep_ms": 2400}
	id := d.Submit(ep, map[string]any{"input": input})

	re := regexp.MustCompile(`^progress ([1-3])/3$`)
	seen := map[string]bool{}
	last := 0
	var final map[string]any
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; i < 2000 && time.Now().Before(deadline); i++ {
		st := caJSON(t, d, "GET", "/v2/"+ep+"/status/"+id, nil, 200)
		if caTerminal(st["status"]) {
			final = st
			break
		}
		if st["status"] == "IN_PROGRESS" {
			if o, has := st["output"]; has {
				s, _ := o.(string)
				mm := re.FindStringSubmatch(s)
				if mm == nil {
					t.Fatalf("IN_PROGRESS output %v, want \"progress i/3\"", o)
				}
				k := int(mm[1][0] - '0')
				if k < last {
					t.Errorf("progress went backwards: %d after %d", k, last)
				}
				last = k
				seen[s] = true
			}
			if w, _ := st["workerId"].(string); w == "" {
				t.Errorf("IN_PROGRESS without workerId: %v", st)
			}
		}
		time.Sleep(40 * time.Millisecond)
	}
	if final == nil {
		t.Fatalf("progress job did not finish\n%s", d.Log())
	}
	if len(seen) < 2 {
		t.Errorf("saw progress updates %v; want most of the three (each lasts 800 ms)", seen)
	}
	if final["status"] != "COMPLETED" || !reflect.DeepEqual(final["output"], caEcho(input)) {
		t.Fatalf("final status %v, want COMPLETED with output %v", final, caEcho(input))
	}
	// No stale IN_PROGRESS or progress output afterwards.
	for i := 0; i < 10; i++ {
		st := caJSON(t, d, "GET", "/v2/"+ep+"/status/"+id, nil, 200)
		if st["status"] != "COMPLETED" || !reflect.DeepEqual(st["output"], caEcho(input)) {
			t.Fatalf("after completion /status shows %v", st)
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// TestClientAPI_Failed: handler failures through "fail" and "raise".
func TestClientAPI_Failed(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	ep := d.CreateEndpoint("failed", nil)

	failID := d.Submit(ep, map[string]any{"input": map[string]any{"fail": "bad seed 42"}})
	raiseID := d.Submit(ep, map[string]any{"input": map[string]any{"raise": "kaboom"}})

	st := d.WaitStatus(ep, failID, 20*time.Second, "FAILED", "COMPLETED", "CANCELLED", "TIMED_OUT")
	if st["status"] != "FAILED" {
		t.Fatalf("fail job: %v", st)
	}
	if e, ok := st["error"].(string); !ok || e != "bad seed 42" {
		t.Errorf("fail job error = %#v, want the string \"bad seed 42\"", st["error"])
	}
	caNum(t, st, "executionTime")
	caNum(t, st, "delayTime")

	st = d.WaitStatus(ep, raiseID, 20*time.Second, "FAILED", "COMPLETED", "CANCELLED", "TIMED_OUT")
	if st["status"] != "FAILED" {
		t.Fatalf("raise job: %v", st)
	}
	e, ok := st["error"].(string)
	if !ok {
		t.Fatalf("raise job error is %T, want a string: %v", st["error"], st)
	}
	var rep map[string]any
	if err := json.Unmarshal([]byte(e), &rep); err != nil {
		t.Fatalf("raise job error is not a JSON-encoded string: %v: %q", err, e)
	}
	if et, _ := rep["error_type"].(string); !strings.Contains(et, "RuntimeError") {
		t.Errorf("error_type = %v", rep["error_type"])
	}
	if rep["error_message"] != "kaboom" {
		t.Errorf("error_message = %v, want kaboom", rep["error_message"])
	}
	for _, k := range []string{"error_traceback", "hostname", "worker_id", "runpod_version"} {
		if _, ok := rep[k]; !ok {
			t.Errorf("exception report lacks %q: %v", k, rep)
		}
	}
}

// TestClientAPI_Cancel: cancel a queued job, a running job and a finished
// one.
func TestClientAPI_Cancel(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	ep, running := caBlocked(t, d, "cancel", 2500)

	rcv := &whReceiver{}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	queued := d.Submit(ep, map[string]any{"input": map[string]any{"queued": true}, "webhook": srv.URL})
	if st := caJSON(t, d, "GET", "/v2/"+ep+"/status/"+queued, nil, 200); st["status"] != "IN_QUEUE" {
		t.Fatalf("second job on a busy single worker: %v", st)
	}
	// Python sends no body at all.
	c := caJSON(t, d, "POST", "/v2/"+ep+"/cancel/"+queued, nil, 200)
	if c["id"] != queued || c["status"] != "CANCELLED" {
		t.Fatalf("/cancel of a queued job answered %v", c)
	}
	if jobs, _ := caHealth(t, d, ep); jobs["inQueue"] != 0 || jobs["inProgress"] != 1 {
		t.Errorf("/health after cancelling the queued job: %v", jobs)
	}

	// Cancel the running job (JS sends {}).
	c = caJSON(t, d, "POST", "/v2/"+ep+"/cancel/"+running, "{}", 200)
	if c["id"] != running || c["status"] != "CANCELLED" {
		t.Fatalf("/cancel of a running job answered %v", c)
	}
	cancelledAt := time.Now()

	// The worker is free again: a new job runs to completion. Being FIFO, the
	// cancelled queued job would have run first had it stayed queued.
	after := d.Submit(ep, map[string]any{"input": map[string]any{"after": true}})
	d.WaitStatus(ep, after, 20*time.Second, "COMPLETED")

	// The running job would have finished 2.5 s after it started; it stays
	// CANCELLED past that point.
	for i := 0; i < 200 && (i < 5 || time.Since(cancelledAt) < 3*time.Second); i++ {
		st := caJSON(t, d, "GET", "/v2/"+ep+"/status/"+running, nil, 200)
		if st["status"] != "CANCELLED" {
			t.Fatalf("cancelled running job later shows %v", st)
		}
		if _, has := st["output"]; has {
			t.Fatalf("cancelled running job got an output: %v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	st := caJSON(t, d, "POST", "/v2/"+ep+"/status/"+queued, nil, 200)
	if st["status"] != "CANCELLED" {
		t.Errorf("cancelled queued job shows %v", st)
	}
	for _, k := range []string{"output", "workerId", "error"} {
		if _, has := st[k]; has {
			t.Errorf("cancelled queued job has %q, so it ran: %v", k, st)
		}
	}

	// The cancelled job's webhook reports CANCELLED, once.
	hits := rcv.waitHits(t, 1, 10*time.Second)
	if m := whDecode(t, hits[0].body); m["id"] != queued || m["status"] != "CANCELLED" {
		t.Errorf("webhook of the cancelled job: %s", hits[0].body)
	}

	// Cancelling a terminal job changes nothing.
	done := caJSON(t, d, "GET", "/v2/"+ep+"/status/"+after, nil, 200)
	again := caJSON(t, d, "POST", "/v2/"+ep+"/cancel/"+after, nil, 200)
	if !reflect.DeepEqual(again, done) {
		t.Errorf("/cancel of a COMPLETED job answered %v, want it unchanged %v", again, done)
	}
	if st := caJSON(t, d, "GET", "/v2/"+ep+"/status/"+after, nil, 200); !reflect.DeepEqual(st, done) {
		t.Errorf("COMPLETED job changed after /cancel: %v", st)
	}
	if c := caJSON(t, d, "POST", "/v2/"+ep+"/cancel/"+running, nil, 200); c["status"] != "CANCELLED" {
		t.Errorf("second /cancel: %v", c)
	}
	code, out := caDo(t, d, "POST", "/v2/"+ep+"/cancel/no-such-job", nil, "Bearer "+d.Key)
	caErr(t, "/cancel of an unknown job", code, out, 404)
	if jobs, _ := caHealth(t, d, ep); jobs["inQueue"] != 0 || jobs["inProgress"] != 0 || jobs["completed"] != 1 {
		t.Errorf("/health at the end: %v (want 1 completed, none queued or running)", jobs)
	}
	if n := len(rcv.snapshot()); n != 1 {
		t.Errorf("webhook of the cancelled job posted %d times (a second /cancel must not re-send it)", n)
	}
}

// TestClientAPI_Retry: /retry re-queues a FAILED job under the same id and
// refuses a COMPLETED one.
func TestClientAPI_Retry(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	ep := d.CreateEndpoint("retry", nil)

	// The handler sleeps a little before failing, so the re-run is visible
	// between /retry and the second failure.
	id := d.Submit(ep, map[string]any{"input": map[string]any{"fail": "always", "sleep_ms": 500}})
	d.WaitStatus(ep, id, 20*time.Second, "FAILED")
	r := caJSON(t, d, "POST", "/v2/"+ep+"/retry/"+id, nil, 200)
	if r["id"] != id || r["status"] != "IN_QUEUE" {
		t.Fatalf("/retry answered %v, want {id: %s, status: IN_QUEUE}", r, id)
	}
	// It really runs again: it leaves the FAILED state and comes back to it.
	st := caJSON(t, d, "GET", "/v2/"+ep+"/status/"+id, nil, 200)
	if st["status"] == "FAILED" {
		t.Fatalf("right after /retry the job still shows %v", st)
	}
	st = d.WaitStatus(ep, id, 20*time.Second, "FAILED", "COMPLETED")
	if st["status"] != "FAILED" || st["error"] != "always" {
		t.Errorf("retried job ended %v", st)
	}
	// The RunPod status object leaves retries out; Ember's own job view has it.
	if v1 := caJSON(t, d, "GET", "/v1/endpoints/"+ep+"/jobs/"+id, nil, 200); v1["retries"] != float64(1) || v1["status"] != "FAILED" {
		t.Errorf("/v1 job view after one retry: %v, want retries 1", v1)
	}
	jobs, _ := caHealth(t, d, ep)
	if jobs["retried"] != 1 || jobs["failed"] != 2 {
		t.Errorf("/health after one retry of a failing job: %v, want retried 1, failed 2", jobs)
	}

	ok := d.Submit(ep, map[string]any{"input": map[string]any{"fine": true}})
	d.WaitStatus(ep, ok, 20*time.Second, "COMPLETED")
	// A job in a state that cannot be retried: 409 Conflict, whose message
	// says why (the state) and does not start with "conflict:", on /v2 and
	// on /v1 (the gateway) alike.
	code, out := caDo(t, d, "POST", "/v2/"+ep+"/retry/"+ok, nil, "Bearer "+d.Key)
	caErr(t, "/retry of a COMPLETED job", code, out, 409, "is COMPLETED; only FAILED or TIMED_OUT jobs can be retried")
	caNoConflictPrefix(t, "/retry of a COMPLETED job", out)
	if st := caJSON(t, d, "GET", "/v2/"+ep+"/status/"+ok, nil, 200); st["status"] != "COMPLETED" {
		t.Errorf("refused /retry changed the job: %v", st)
	}
	gone := d.Submit(ep, map[string]any{"input": map[string]any{"sleep_ms": 30000}})
	caJSON(t, d, "POST", "/v2/"+ep+"/cancel/"+gone, nil, 200)
	code, out = caDo(t, d, "POST", "/v2/"+ep+"/retry/"+gone, nil, "Bearer "+d.Key)
	caErr(t, "/retry of a CANCELLED job", code, out, 409, "is CANCELLED; only FAILED or TIMED_OUT jobs can be retried")
	caNoConflictPrefix(t, "/retry of a CANCELLED job", out)
	code, out = caDo(t, d, "POST", "/v1/endpoints/"+ep+"/jobs/"+gone+":retry", nil, "Bearer "+d.Key)
	if code != 409 || !strings.Contains(string(out), "is CANCELLED; only FAILED or TIMED_OUT jobs can be retried") {
		t.Errorf("/v1 retry of a CANCELLED job: HTTP %d %s, want 409 naming the state", code, out)
	}
	caNoConflictPrefix(t, "/v1 retry of a CANCELLED job", out)
	code, out = caDo(t, d, "POST", "/v2/"+ep+"/retry/no-such-job", nil, "Bearer "+d.Key)
	caErr(t, "/retry of an unknown job", code, out, 404)
}

// TestClientAPI_PurgeQueue: purge removes queued jobs only.
func TestClientAPI_PurgeQueue(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	ep, running := caBlocked(t, d, "purge", 1500)
	var queued []string
	for i := 0; i < 3; i++ {
		queued = append(queued, d.Submit(ep, map[string]any{"input": map[string]any{"q": i}}))
	}
	if jobs, _ := caHealth(t, d, ep); jobs["inQueue"] != 3 {
		t.Fatalf("/health before purge: %v", jobs)
	}
	m := caJSON(t, d, "POST", "/v2/"+ep+"/purge-queue", nil, 200)
	if !reflect.DeepEqual(m, map[string]any{"removed": float64(3), "status": "completed"}) {
		t.Errorf("/purge-queue answered %v, want {removed: 3, status: completed}", m)
	}
	if jobs, _ := caHealth(t, d, ep); jobs["inQueue"] != 0 || jobs["inProgress"] != 1 {
		t.Errorf("/health after purge: %v", jobs)
	}
	st := d.WaitStatus(ep, running, 20*time.Second, "COMPLETED", "CANCELLED", "FAILED", "TIMED_OUT")
	if st["status"] != "COMPLETED" {
		t.Fatalf("the running job did not survive the purge: %v", st)
	}
	// The worker is free now; purged jobs must not run.
	probe := d.Submit(ep, map[string]any{"input": map[string]any{"probe": true}})
	d.WaitStatus(ep, probe, 20*time.Second, "COMPLETED")
	for _, id := range queued {
		code, out := caDo(t, d, "GET", "/v2/"+ep+"/status/"+id, nil, "Bearer "+d.Key)
		if code == 404 {
			continue
		}
		var st map[string]any
		json.Unmarshal(out, &st)
		if code != 200 || st["status"] != "CANCELLED" || st["output"] != nil {
			t.Errorf("purged job %s: %d %s, want CANCELLED (or gone)", id, code, out)
		}
	}
	m = caJSON(t, d, "POST", "/v2/"+ep+"/purge-queue", "{}", 200)
	if m["removed"] != float64(0) || m["status"] != "completed" {
		t.Errorf("second /purge-queue answered %v", m)
	}
}

// TestClientAPI_Health: every key, plausible values.
func TestClientAPI_Health(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	ep := d.CreateEndpoint("health", map[string]any{"workersMax": 1})

	jobs, workers := caHealth(t, d, ep)
	for k, v := range jobs {
		if v != 0 {
			t.Errorf("fresh endpoint: jobs.%s = %d", k, v)
		}
	}
	if workers["running"] != 0 {
		t.Errorf("fresh endpoint: workers %v", workers)
	}

	long := d.Submit(ep, map[string]any{"input": map[string]any{"sleep_ms": 1500}})
	d.WaitStatus(ep, long, 20*time.Second, "IN_PROGRESS")
	queued := d.Submit(ep, map[string]any{"input": map[string]any{"fail": "x"}})
	jobs, workers = caHealth(t, d, ep)
	if jobs["inProgress"] != 1 || jobs["inQueue"] != 1 || workers["running"] != 1 {
		t.Errorf("while one job runs and one waits: jobs %v workers %v", jobs, workers)
	}
	d.WaitStatus(ep, long, 20*time.Second, "COMPLETED")
	d.WaitStatus(ep, queued, 20*time.Second, "FAILED")
	ok2 := d.Submit(ep, map[string]any{"input": map[string]any{}})
	d.WaitStatus(ep, ok2, 20*time.Second, "COMPLETED")

	jobs, workers = caHealth(t, d, ep)
	want := map[string]int{"completed": 2, "failed": 1, "inProgress": 0, "inQueue": 0, "retried": 0}
	if !reflect.DeepEqual(jobs, want) {
		t.Errorf("jobs after 2 completed and 1 failed: %v, want %v", jobs, want)
	}
	if workers["ready"] != workers["idle"] {
		t.Errorf("workers.ready %d != workers.idle %d", workers["ready"], workers["idle"])
	}
	if workers["idle"]+workers["running"]+workers["initializing"] > 1 || workers["running"] != 0 || workers["unhealthy"] != 0 {
		t.Errorf("workers on a workersMax 1 endpoint with nothing to do: %v", workers)
	}
	if workers["idle"] != 1 {
		// The worker stays up for idleTimeout (5 s) after its last job.
		t.Errorf("workers.idle = %d right after the last job, want 1: %v", workers["idle"], workers)
	}
	code, out := caDo(t, d, "GET", "/v2/nosuchendpoint/health", nil, "Bearer "+d.Key)
	caErr(t, "/health of an unknown endpoint", code, out, 404)
}

// TestClientAPI_TTL: a job that cannot run is gone (404) once its TTL passes.
func TestClientAPI_TTL(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	ep, blocker := caBlocked(t, d, "ttl", 30000)
	rcv := &whReceiver{}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	submitted := time.Now()
	id := d.Submit(ep, map[string]any{"input": map[string]any{"never": true}, "policy": map[string]any{"ttl": 10000}, "webhook": srv.URL})
	var gone time.Duration
	for i := 0; i < 400; i++ {
		code, out := caDo(t, d, "GET", "/v2/"+ep+"/status/"+id, nil, "Bearer "+d.Key)
		if code == 404 {
			gone = time.Since(submitted)
			caErr(t, "/status after TTL", code, out, 404)
			break
		}
		var st map[string]any
		json.Unmarshal(out, &st)
		if code != 200 || st["status"] != "IN_QUEUE" {
			t.Fatalf("job with a TTL behind a busy worker: %d %s", code, out)
		}
		if time.Since(submitted) > 25*time.Second {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if gone == 0 {
		t.Fatalf("job with policy.ttl 10000 still there after %v", time.Since(submitted))
	}
	if gone < 9500*time.Millisecond {
		t.Errorf("job vanished after %v, before its 10 s TTL", gone)
	}
	if jobs, _ := caHealth(t, d, ep); jobs["inQueue"] != 0 || jobs["inProgress"] != 1 {
		t.Errorf("/health after TTL expiry: %v", jobs)
	}
	// The webhook still reports the end: TIMED_OUT.
	hits := rcv.waitHits(t, 1, 10*time.Second)
	if m := whDecode(t, hits[0].body); m["id"] != id || m["status"] != "TIMED_OUT" {
		t.Errorf("webhook of the expired job: %s", hits[0].body)
	}
	caJSON(t, d, "POST", "/v2/"+ep+"/cancel/"+blocker, nil, 200)
}

// TestClientAPI_ExecutionTimeout: policy.executionTimeout ends a long job
// as TIMED_OUT.
func TestClientAPI_ExecutionTimeout(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	ep := d.CreateEndpoint("exectimeout", map[string]any{"workersMax": 1})
	id := d.Submit(ep, map[string]any{"input": map[string]any{"sleep_ms": 20000}, "policy": map[string]any{"executionTimeout": 5000}})
	st := d.WaitStatus(ep, id, 25*time.Second, "TIMED_OUT", "COMPLETED", "FAILED", "CANCELLED")
	if st["status"] != "TIMED_OUT" {
		t.Fatalf("20 s job with a 5 s execution timeout ended %v", st)
	}
	if exec := caNum(t, st, "executionTime"); exec < 4900 {
		t.Errorf("TIMED_OUT after executionTime %v ms, before the 5000 ms limit", exec)
	}
	caNum(t, st, "delayTime")
	// The worker was told to stop: it takes the next job.
	next := d.Submit(ep, map[string]any{"input": map[string]any{"next": true}})
	d.WaitStatus(ep, next, 20*time.Second, "COMPLETED")
	if st := caJSON(t, d, "GET", "/v2/"+ep+"/status/"+id, nil, 200); st["status"] != "TIMED_OUT" {
		t.Errorf("timed-out job later shows %v", st)
	}
}

// TestClientAPI_BadInput: rejected requests answer JSON errors with the right
// code and leave nothing behind.
func TestClientAPI_BadInput(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	// Any job a rejected request wrongly created would stay queued here.
	ep, blocker := caBlocked(t, d, "badinput", 60000)
	key := "Bearer " + d.Key
	noExtra := func(what string) {
		t.Helper()
		jobs, _ := caHealth(t, d, ep)
		if jobs["inQueue"] != 0 || jobs["inProgress"] != 1 || jobs["completed"]+jobs["failed"] != 0 {
			t.Errorf("after %s: /health jobs %v, want only the blocker running", what, jobs)
		}
	}
	big := func(n int) []byte {
		b := make([]byte, 0, n+64)
		b = append(b, `{"input":{"output":"ok","pad":"`...)
		b = append(b, bytes.Repeat([]byte("x"), n-len(b)-4)...)
		b = append(b, `"}}`...)
		return b
	}

	for _, op := range []string{"run", "runsync"} {
		p := "/v2/" + ep + "/" + op
		code, out := caDo(t, d, "POST", p, `{"input": {"a": `, key)
		caErr(t, op+" malformed JSON", code, out, 400)
		noExtra(op + " malformed JSON")
		code, out = caDo(t, d, "POST", p, `{"inputs": {"a": 1}}`, key)
		caErr(t, op+" missing input", code, out, 400, "input")
		noExtra(op + " missing input")
		code, out = caDo(t, d, "POST", p, `{"input": null}`, key)
		caErr(t, op+" null input", code, out, 400, "input")
		code, out = caDo(t, d, "POST", p, nil, key)
		caErr(t, op+" empty body", code, out, 400, "input")
		code, out = caDo(t, d, "POST", p, `[1,2]`, key)
		caErr(t, op+" array body", code, out, 400)
		code, out = caDo(t, d, "POST", p, map[string]any{"input": map[string]any{}, "policy": map[string]any{"executionTimeout": 1000}}, key)
		caErr(t, op+" executionTimeout 1000", code, out, 400, "executionTimeout")
		code, out = caDo(t, d, "POST", p, map[string]any{"input": map[string]any{}, "policy": map[string]any{"ttl": 5}}, key)
		caErr(t, op+" ttl 5", code, out, 400, "ttl")
		code, out = caDo(t, d, "POST", p, map[string]any{"input": map[string]any{}, "webhook": "not a url"}, key)
		caErr(t, op+" bad webhook", code, out, 400, "webhook")
		noExtra(op + " bad policy")
		code, out = caDo(t, d, "POST", p, map[string]any{"input": map[string]any{}}, "")
		caErr(t, op+" without a key", code, out, 401)
		code, out = caDo(t, d, "POST", p, map[string]any{"input": map[string]any{}}, "Bearer wrong-"+d.Key)
		caErr(t, op+" with a wrong key", code, out, 401)
		code, out = caDo(t, d, "POST", p, map[string]any{"input": map[string]any{}}, "wrong")
		caErr(t, op+" with a wrong bare key", code, out, 401)
		noExtra(op + " bad key")
	}

	code, out := caDo(t, d, "POST", "/v2/"+ep+"/run?ttl=5", map[string]any{"input": map[string]any{}}, key)
	caErr(t, "/run?ttl=5", code, out, 400, "ttl")
	noExtra("/run?ttl=5")

	code, out = caDo(t, d, "POST", "/v2/"+ep+"/run", big(10<<20+1024), key)
	caErr(t, "/run over 10 MiB", code, out, 413, "10 MiB")
	noExtra("/run over 10 MiB")
	// The same without a Content-Length (chunked upload).
	req, _ := http.NewRequest("POST", d.URL+"/v2/"+ep+"/run", io.MultiReader(bytes.NewReader(big(10<<20+1024))))
	req.Header.Set("Authorization", key)
	if req.ContentLength != 0 {
		t.Fatalf("request has a Content-Length; want a chunked upload")
	}
	if resp, err := caClient.Do(req); err != nil {
		t.Errorf("chunked /run over 10 MiB: %v", err)
	} else {
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		caErr(t, "chunked /run over 10 MiB", resp.StatusCode, out, 413, "10 MiB")
	}
	noExtra("chunked /run over 10 MiB")
	code, out = caDo(t, d, "POST", "/v2/"+ep+"/runsync", big(20<<20+1024), key)
	caErr(t, "/runsync over 20 MiB", code, out, 413, "20 MiB")
	noExtra("/runsync over 20 MiB")

	code, out = caDo(t, d, "POST", "/v2/nosuchendpoint/run", map[string]any{"input": map[string]any{}}, key)
	caErr(t, "/run on an unknown endpoint", code, out, 404)
	for _, c := range []struct{ method, op string }{
		{"POST", "runsync"}, {"GET", "status/" + blocker}, {"POST", "cancel/" + blocker},
		{"GET", "stream/" + blocker}, {"POST", "purge-queue"}, {"POST", "retry/" + blocker},
	} {
		code, out = caDo(t, d, c.method, "/v2/nosuchendpoint/"+c.op, map[string]any{"input": map[string]any{}}, key)
		caErr(t, c.op+" on an unknown endpoint", code, out, 404)
	}
	code, out = caDo(t, d, "GET", "/v2/"+ep+"/status/no-such-job", nil, key)
	caErr(t, "/status of an unknown job", code, out, 404)
	code, out = caDo(t, d, "GET", "/v2/"+ep+"/status-sync/no-such-job?wait=1000", nil, key)
	caErr(t, "/status-sync of an unknown job", code, out, 404)
	code, out = caDo(t, d, "GET", "/v2/"+ep+"/status/"+blocker, nil, "")
	caErr(t, "/status without a key", code, out, 401)
	code, out = caDo(t, d, "GET", "/v2/"+ep+"/health", nil, "Bearer nope")
	caErr(t, "/health with a wrong key", code, out, 401)
	code, out = caDo(t, d, "POST", "/v2/"+ep+"/purge-queue", nil, "")
	caErr(t, "/purge-queue without a key", code, out, 401)
	code, out = caDo(t, d, "POST", "/v2/"+ep+"/cancel/"+blocker, nil, "nope")
	caErr(t, "/cancel with a wrong key", code, out, 401)
	if st := caJSON(t, d, "GET", "/v2/"+ep+"/status/"+blocker, nil, 200); st["status"] != "IN_PROGRESS" {
		t.Errorf("an unauthorized /cancel changed the job: %v", st)
	}
	noExtra("unknown endpoint, job and key errors")

	// A 15 MiB /runsync body is within its 20 MiB limit.
	ep2 := d.CreateEndpoint("badinput-big", nil)
	code, out = caDo(t, d, "POST", "/v2/"+ep2+"/runsync?wait=60000", big(15<<20), key)
	if code != 200 {
		t.Fatalf("15 MiB /runsync: HTTP %d %.300s", code, out)
	}
	var m map[string]any
	json.Unmarshal(out, &m)
	if m["status"] != "COMPLETED" || m["output"] != "ok" {
		t.Errorf("15 MiB /runsync answered %.300s", out)
	}
	// A job is only visible under its own endpoint.
	otherID, _ := m["id"].(string)
	code, out = caDo(t, d, "GET", "/v2/"+ep+"/status/"+otherID, nil, key)
	caErr(t, "/status of another endpoint's job", code, out, 404)
	code, out = caDo(t, d, "POST", "/v2/"+ep+"/cancel/"+blocker+"x", nil, key)
	caErr(t, "/cancel of an unknown job", code, out, 404)
	code, out = caDo(t, d, "POST", "/v2/"+ep2+"/cancel/"+blocker, nil, key)
	caErr(t, "/cancel of another endpoint's job", code, out, 404)
	if st := caJSON(t, d, "GET", "/v2/"+ep+"/status/"+blocker, nil, 200); st["status"] != "IN_PROGRESS" {
		t.Errorf("/cancel through another endpoint changed the job: %v", st)
	}
	caJSON(t, d, "POST", "/v2/"+ep+"/cancel/"+blocker, nil, 200)
}

// TestClientAPI_KeysPathsJSON: both key forms, "//" in paths, unknown query
// parameters, single-line JSON.
func TestClientAPI_KeysPathsJSON(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	ep := d.CreateEndpoint("keys", nil)

	// A pretty-printed request whose input holds newlines.
	body := "{\n  \"input\": {\n    \"text\": \"line 1\\nline 2\",\n    \"n\": 1\n  }\n}\n"
	var ids []string
	for _, auth := range []string{"Bearer " + d.Key, d.Key, "bearer " + d.Key, "  Bearer   " + d.Key + " "} {
		code, out := caDo(t, d, "POST", "/v2/"+ep+"/run?foo=bar&ttl_unknown=1", body, auth)
		if code != 200 {
			t.Fatalf("/run with Authorization %q: %d %s", auth, code, out)
		}
		var m map[string]any
		json.Unmarshal(out, &m)
		ids = append(ids, m["id"].(string))
	}
	// Lower-case header name, bare key.
	req, _ := http.NewRequest("GET", d.URL+"/v2/"+ep+"/health", nil)
	req.Header["authorization"] = []string{d.Key}
	if resp, err := caClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("lower-case authorization header: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	for _, id := range ids {
		st := d.WaitStatus(ep, id, 20*time.Second, "COMPLETED", "FAILED")
		out, _ := st["output"].(map[string]any)
		echo, _ := out["echo"].(map[string]any)
		if echo["text"] != "line 1\nline 2" {
			t.Errorf("output %v lost the input's newline", st["output"])
		}
	}
	id := ids[0]
	// "//" anywhere in the path works without a redirect (caClient does not
	// follow them), for POST and GET.
	paths := []struct{ method, path string }{
		{"POST", "/v2//" + ep + "//run"},
		{"POST", "//v2/" + ep + "/runsync/"},
		{"GET", "/v2//" + ep + "//status//" + id},
		{"POST", "/v2/" + ep + "/status/" + id + "/"},
		{"GET", "//v2//" + ep + "//stream//" + id + "?wait=100"},
		{"GET", "/v2//" + ep + "/health/"},
		{"POST", "/v2//" + ep + "//purge-queue"},
	}
	for _, p := range paths {
		var b any
		if strings.HasSuffix(strings.TrimRight(p.path, "/"), "run") || strings.HasSuffix(strings.TrimRight(p.path, "/"), "runsync") {
			b = map[string]any{"input": map[string]any{"p": p.path}}
		}
		code, out := caDo(t, d, p.method, p.path, b, d.Key)
		if code != 200 {
			t.Errorf("%s %s: HTTP %d %s", p.method, p.path, code, out)
		}
	}
	// Unknown query parameters and an unparsable wait are ignored.
	for _, p := range []string{
		"/v2/" + ep + "/status/" + id + "?x=1&X-Request-ID=abc",
		"/v2/" + ep + "/status-sync/" + id + "?wait=abc&foo",
		"/v2/" + ep + "/stream/" + id + "?wait=-5&zzz=1",
		"/v2/" + ep + "/health?verbose=true",
	} {
		code, out := caDo(t, d, "GET", p, nil, "Bearer "+d.Key)
		if code != 200 {
			t.Errorf("GET %s: HTTP %d %s", p, code, out)
		}
	}
	// Success is exactly 200 and every answer is single-line (checked in
	// caDo); the status object too, whatever the output holds.
	code, out := caDo(t, d, "GET", "/v2/"+ep+"/status/"+id, nil, d.Key)
	if code != 200 || !bytes.Contains(out, []byte(`line 1\nline 2`)) {
		t.Errorf("status: %d %s", code, out)
	}
	code, out = caDo(t, d, "GET", "/v2/"+ep+"/nosuchop", nil, d.Key)
	caErr(t, "unknown operation", code, out, 404)
	code, out = caDo(t, d, "GET", "/v2/"+ep+"/run", nil, d.Key)
	if code == 200 {
		t.Errorf("GET /run answered 200: %s", out)
	}
}

// ---- /v1 endpoint REST ----

func caV1(t testing.TB, d *Daemon, method, path string, body any, want int) map[string]any {
	t.Helper()
	code, out := caDo(t, d, method, path, body, "Bearer "+d.Key)
	if code != want {
		t.Fatalf("%s %s: got %d, want %d: %s", method, path, code, want, out)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("%s %s: not a JSON object: %v: %s", method, path, err, out)
	}
	return m
}

// caV1Err requires a 400-class gateway error whose message names field.
func caV1Err(t testing.TB, d *Daemon, method, path string, body any, want int, field string) {
	t.Helper()
	code, out := caDo(t, d, method, path, body, "Bearer "+d.Key)
	if code != want {
		t.Errorf("%s %s %v: got %d, want %d: %s", method, path, body, code, want, out)
		return
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Errorf("%s %s: error body not JSON: %s", method, path, out)
		return
	}
	msg, _ := m["message"].(string)
	if msg == "" {
		msg, _ = m["error"].(string)
	}
	if !strings.Contains(msg, field) {
		t.Errorf("%s %s %v: error %s does not name %q", method, path, body, out, field)
	}
}

// TestClientAPI_EndpointREST: /v1/endpoints create, read, list, patch,
// delete, validation, and /openapi.json.
func TestClientAPI_EndpointREST(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)

	e := caV1(t, d, "POST", "/v1/endpoints", map[string]any{"name": "rest-defaults", "command": []string{workerBin}}, 200)
	id, _ := e["id"].(string)
	if id == "" {
		t.Fatalf("create answered %v", e)
	}
	defaults := map[string]any{
		"workersMax": float64(3), "idleTimeout": float64(5), "executionTimeoutMs": float64(600000),
		"scalerType": "QUEUE_DELAY", "scalerValue": float64(4), "gpuCount": float64(1), "workersMin": float64(0),
	}
	for k, v := range defaults {
		if e[k] != v {
			t.Errorf("created endpoint %s = %v, want default %v", k, e[k], v)
		}
	}
	if e["name"] != "rest-defaults" || !reflect.DeepEqual(e["command"], []any{workerBin}) {
		t.Errorf("created endpoint: %v", e)
	}
	got := caV1(t, d, "GET", "/v1/endpoints/"+id, nil, 200)
	if !reflect.DeepEqual(got, e) {
		t.Errorf("GET differs from create:\n got %v\nwant %v", got, e)
	}

	other := d.CreateEndpoint("rest-other", map[string]any{"workersMax": 7})
	list := caV1(t, d, "GET", "/v1/endpoints", nil, 200)
	eps, _ := list["endpoints"].([]any)
	found := map[string]bool{}
	for _, x := range eps {
		m, _ := x.(map[string]any)
		found[fmt.Sprint(m["id"])] = true
	}
	if len(eps) != 2 || !found[id] || !found[other] {
		t.Errorf("list: %v, want both endpoints", list)
	}

	// PATCH changes only what it names.
	p := caV1(t, d, "PATCH", "/v1/endpoints/"+id, map[string]any{"workersMax": 5}, 200)
	if p["workersMax"] != float64(5) {
		t.Errorf("PATCH workersMax: %v", p)
	}
	for k, v := range e {
		if k == "workersMax" || k == "updatedAt" {
			continue
		}
		if !reflect.DeepEqual(p[k], v) {
			t.Errorf("PATCH workersMax also changed %s: %v -> %v", k, v, p[k])
		}
	}
	p = caV1(t, d, "PATCH", "/v1/endpoints/"+id, map[string]any{"scalerType": "REQUEST_COUNT", "idleTimeout": 9}, 200)
	if p["scalerType"] != "REQUEST_COUNT" || p["idleTimeout"] != float64(9) || p["workersMax"] != float64(5) || p["scalerValue"] != float64(4) {
		t.Errorf("second PATCH: %v", p)
	}
	if got := caV1(t, d, "GET", "/v1/endpoints/"+id, nil, 200); !reflect.DeepEqual(got, p) {
		t.Errorf("GET after PATCH %v, want %v", got, p)
	}

	// Validation names the field, on create and on update.
	for _, c := range []struct {
		field string
		body  map[string]any
	}{
		{"workersMax", map[string]any{"workersMax": 0}},
		{"scalerType", map[string]any{"scalerType": "X"}},
		{"idleTimeout", map[string]any{"idleTimeout": 0}},
		{"executionTimeoutMs", map[string]any{"executionTimeoutMs": 1000}},
	} {
		body := map[string]any{"name": "rest-bad-" + strings.ToLower(c.field), "command": []string{workerBin}}
		for k, v := range c.body {
			body[k] = v
		}
		caV1Err(t, d, "POST", "/v1/endpoints", body, 400, c.field)
		caV1Err(t, d, "PATCH", "/v1/endpoints/"+id, c.body, 400, c.field)
	}
	if got := caV1(t, d, "GET", "/v1/endpoints/"+id, nil, 200); !reflect.DeepEqual(got, p) {
		t.Errorf("refused PATCHes changed the endpoint: %v, want %v", got, p)
	}
	list = caV1(t, d, "GET", "/v1/endpoints", nil, 200)
	if eps, _ := list["endpoints"].([]any); len(eps) != 2 {
		t.Errorf("refused creates left endpoints behind: %v", list)
	}
	// A taken name is a conflict with the existing endpoint: 409 (it was
	// 400 with a "conflict:" message before), the message naming it.
	caV1Err(t, d, "POST", "/v1/endpoints", map[string]any{"name": "rest-other", "command": []string{workerBin}}, 409, `an endpoint named "rest-other" already exists`)

	// DELETE is refused while jobs wait. /bin/sleep never takes a job, so
	// the job stays queued.
	stuck := d.CreateEndpoint("rest-stuck", map[string]any{"command": []string{"/bin/sleep", "300"}, "workersMax": 1})
	job := d.Submit(stuck, map[string]any{"input": map[string]any{}})
	code, out := caDo(t, d, "DELETE", "/v1/endpoints/"+stuck, nil, "Bearer "+d.Key)
	if code != 409 || !strings.Contains(string(out), "queued") {
		t.Errorf("DELETE of an endpoint with a queued job: %d %s, want a 409 naming the queued job", code, out)
	}
	caNoConflictPrefix(t, "DELETE of an endpoint with a queued job", out)
	caV1(t, d, "GET", "/v1/endpoints/"+stuck, nil, 200)
	if st := caJSON(t, d, "GET", "/v2/"+stuck+"/status/"+job, nil, 200); st["status"] != "IN_QUEUE" {
		t.Errorf("refused DELETE touched the job: %v", st)
	}
	caJSON(t, d, "POST", "/v2/"+stuck+"/cancel/"+job, nil, 200)
	caV1(t, d, "DELETE", "/v1/endpoints/"+stuck, nil, 200)
	caV1(t, d, "DELETE", "/v1/endpoints/"+id, nil, 200)
	caV1Err(t, d, "GET", "/v1/endpoints/"+id, nil, 404, id)
	caV1Err(t, d, "DELETE", "/v1/endpoints/"+id, nil, 404, id)
	code, out = caDo(t, d, "POST", "/v2/"+id+"/run", map[string]any{"input": map[string]any{}}, "Bearer "+d.Key)
	caErr(t, "/run on a deleted endpoint", code, out, 404)
	list = caV1(t, d, "GET", "/v1/endpoints", nil, 200)
	if eps, _ := list["endpoints"].([]any); len(eps) != 1 {
		t.Errorf("list after deletes: %v", list)
	}
	code, out = caDo(t, d, "GET", "/v1/endpoints", nil, "")
	caErr(t, "/v1 without a key", code, out, 401)
	code, out = caDo(t, d, "GET", "/v1/endpoints", nil, "Bearer nope")
	caErr(t, "/v1 with a wrong key", code, out, 401)

	// /openapi.json
	code, out = caDo(t, d, "GET", "/openapi.json", nil, "")
	if code != 200 {
		t.Fatalf("/openapi.json: %d %s", code, out)
	}
	var doc map[string]any
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("/openapi.json is not JSON: %v", err)
	}
	if doc["openapi"] == nil && doc["swagger"] == nil {
		t.Errorf("/openapi.json has neither openapi nor swagger: %.200s", out)
	}
	if paths, _ := doc["paths"].(map[string]any); paths == nil || paths["/v1/endpoints"] == nil {
		t.Errorf("/openapi.json does not document /v1/endpoints")
	}
}
