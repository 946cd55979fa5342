package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// result is what one ember invocation produced.
type result struct {
	stdout, stderr string
	code           int
}

// invocation describes one run of ember against a fake daemon.
type invocation struct {
	args  []string
	env   map[string]string // replaces the default test environment
	stdin string
	// defaultCAFile replaces the --ca-file default; by default a file
	// that does not exist, so that the machine's own does not count.
	defaultCAFile string
}

// runEmber runs ember in-process. By default it points at addr with the
// test key in EMBER_API_KEY, and polls without delay.
func runEmber(t *testing.T, addr string, inv invocation) result {
	t.Helper()
	env := inv.env
	if env == nil {
		env = map[string]string{"EMBER_ADDR": addr, "EMBER_API_KEY": testKey}
	}
	var stdout, stderr bytes.Buffer
	a := newApp(strings.NewReader(inv.stdin), &stdout, &stderr, func(k string) string { return env[k] })
	a.pollInterval = time.Millisecond
	a.defaultCAFile = inv.defaultCAFile
	if a.defaultCAFile == "" {
		a.defaultCAFile = filepath.Join(t.TempDir(), "no-ca.pem")
	}
	a.now = func() time.Time { return testClock } // uploads take no time
	code := a.execute(context.Background(), inv.args)
	return result{stdout.String(), stderr.String(), code}
}

// golden compares r with testdata/NAME.golden, after replacing the
// per-run strings in repl (old, new pairs) such as the daemon's port.
func golden(t *testing.T, name string, r result, repl ...string) {
	t.Helper()
	got := fmt.Sprintf("-- exit code --\n%d\n-- stdout --\n%s-- stderr --\n%s", r.code, r.stdout, r.stderr)
	got = strings.NewReplacer(repl...).Replace(got)
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it)\n--- got:\n%s\n--- want:\n%s", path, got, want)
	}
}

const (
	jobQueued     = `{"status":"IN_QUEUE"}`
	jobProgress   = `{"status":"IN_PROGRESS","delayTime":1520,"workerId":"w-7f3a"}`
	jobCompleted  = `{"status":"COMPLETED","delayTime":1520,"executionTime":340,"workerId":"w-7f3a","output":{"text":"hello","tokens":[1,2,3]}}`
	jobFailed     = `{"status":"FAILED","delayTime":80,"executionTime":12,"workerId":"w-7f3a","error":"ValueError: prompt is empty"}`
	jobTimedOut   = `{"status":"TIMED_OUT","delayTime":80,"executionTime":600000,"workerId":"w-7f3a"}`
	jobStillQueue = `{"status":"IN_QUEUE","delayTime":0}`
)

// TestGolden checks human and --json output against testdata/*.golden.
func TestGolden(t *testing.T) {
	tests := []struct {
		name      string
		endpoints []string // defaults to seedEndpoints
		empty     bool     // start with no endpoints
		script    []string // statuses of the next job
		jobs      map[string]string
		inv       invocation
	}{
		{name: "endpoint_list", inv: invocation{args: []string{"endpoint", "list"}}},
		{name: "endpoint_list_json", inv: invocation{args: []string{"endpoint", "list", "--json"}}},
		{name: "endpoint_list_empty", empty: true, inv: invocation{args: []string{"endpoint", "list"}}},
		{name: "endpoint_list_empty_json", empty: true, inv: invocation{args: []string{"endpoints", "ls", "--json"}}},
		{name: "endpoint_get_by_id", inv: invocation{args: []string{"endpoint", "get", "ep-b2"}}},
		{name: "endpoint_get_by_name_json", inv: invocation{args: []string{"endpoint", "get", "echo", "--json"}}},
		{name: "endpoint_get_unknown", inv: invocation{args: []string{"endpoint", "get", "nope"}}},
		{name: "endpoint_get_older_daemon", inv: invocation{args: []string{"endpoint", "get", "echo"}}},
		{name: "endpoint_update", inv: invocation{args: []string{"endpoint", "update", "echo", "--flashboot", "--flashboot-window", "10m", "--init-timeout", "900", "--max-attempts", "2", "--env", "HF_HOME=/models"}}},
		{name: "endpoint_update_init_off", inv: invocation{args: []string{"endpoint", "update", "sdxl", "--init=false"}}},
		{name: "endpoint_update_json", inv: invocation{args: []string{"endpoint", "update", "ep-b2", "--flashboot=false", "--gpu-memory-mb", "0", "--json"}}},
		{name: "endpoint_update_nothing", inv: invocation{args: []string{"endpoint", "update", "echo", "--json"}}},
		{name: "endpoint_update_unknown", inv: invocation{args: []string{"endpoint", "update", "nope", "--workers-max", "1"}}},
		{name: "endpoint_stats", inv: invocation{args: []string{"endpoint", "stats"}}},
		{name: "endpoint_stats_json", inv: invocation{args: []string{"endpoint", "stats", "--json"}}},
		{name: "endpoint_stats_by_name", inv: invocation{args: []string{"endpoint", "stats", "sdxl", "echo", "ep-b2"}}},
		{name: "endpoint_stats_by_name_json", inv: invocation{args: []string{"ep", "stats", "echo", "--json"}}},
		{name: "endpoint_stats_unknown", inv: invocation{args: []string{"endpoint", "stats", "echo", "nope"}}},
		{name: "endpoint_stats_empty", empty: true, inv: invocation{args: []string{"endpoint", "stats"}}},
		{name: "endpoint_stats_empty_json", empty: true, inv: invocation{args: []string{"endpoint", "stats", "--json"}}},
		{name: "endpoint_stats_bad_watch", inv: invocation{args: []string{"endpoint", "stats", "--watch", "1ms"}}},
		{name: "endpoint_create", inv: invocation{args: []string{"endpoint", "create", "whisper", "--image", "ghcr.io/acme/whisper:2", "--gpu-count", "1", "--gpu-types", "NVIDIA L40S", "--idle-timeout", "2m", "--", "python", "-u", "handler.py"}}},
		{name: "endpoint_create_json", inv: invocation{args: []string{"endpoint", "create", "tiny", "--workers-max", "1", "--json"}}},
		{name: "endpoint_create_bad_env", inv: invocation{args: []string{"endpoint", "create", "x", "--env", "NOEQUALS"}}},
		{name: "endpoint_delete_by_name", inv: invocation{args: []string{"endpoint", "rm", "llm"}}},
		{name: "endpoint_unknown_subcommand", inv: invocation{args: []string{"endpoint", "lsit"}}},
		{name: "run_completed", script: []string{jobQueued, jobProgress, jobCompleted}, inv: invocation{args: []string{"run", "echo", `{"prompt":"hello"}`}}},
		{name: "run_completed_json", script: []string{jobQueued, jobCompleted}, inv: invocation{args: []string{"run", "ep-a1", "-", "--json"}, stdin: `{"prompt":"hello"}`}},
		{name: "run_failed", script: []string{jobProgress, jobFailed}, inv: invocation{args: []string{"run", "echo", `{"prompt":""}`}}},
		{name: "run_timed_out_json", script: []string{jobTimedOut}, inv: invocation{args: []string{"run", "echo", `{}`, "--json"}}},
		{name: "run_bad_json", inv: invocation{args: []string{"run", "echo", "hello"}}},
		{name: "run_missing_arg", inv: invocation{args: []string{"run", "echo"}}},
		{name: "job_run_completed", script: []string{jobQueued, jobCompleted}, inv: invocation{args: []string{"job", "run", "echo", `{"prompt":"hello"}`}}},
		{name: "job_status_completed", jobs: map[string]string{"job-42": jobCompleted}, inv: invocation{args: []string{"job", "status", "echo", "job-42"}}},
		{name: "job_status_failed", jobs: map[string]string{"job-42": jobFailed}, inv: invocation{args: []string{"job", "status", "ep-a1", "job-42"}}},
		{name: "job_status_queued", jobs: map[string]string{"job-42": jobStillQueue}, inv: invocation{args: []string{"jobs", "status", "echo", "job-42"}}},
		{name: "job_status_json", jobs: map[string]string{"job-42": jobCompleted}, inv: invocation{args: []string{"job", "status", "echo", "job-42", "--json"}}},
		{name: "job_status_unknown_job", inv: invocation{args: []string{"job", "status", "echo", "job-404"}}},
		{name: "status_job_args", inv: invocation{args: []string{"status", "echo", "job-42"}}},
		{name: "version", inv: invocation{args: []string{"version"}}},
		{name: "version_json", inv: invocation{args: []string{"version", "--json"}}},
		{name: "unauthorized", inv: invocation{args: []string{"endpoint", "list"}, env: map[string]string{"EMBER_API_KEY": "wrong"}}},
		{name: "unknown_flag", inv: invocation{args: []string{"endpoint", "list", "--jsno"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			eps := seedEndpoints
			if tt.empty {
				eps = nil
			}
			fd := newFakeDaemon(t, eps...)
			fd.setScript(tt.script...)
			for id, st := range tt.jobs {
				fd.addJob(id, st)
			}
			inv := tt.inv
			if inv.env != nil {
				inv.env["EMBER_ADDR"] = fd.addr
			}
			r := runEmber(t, fd.addr, inv)
			golden(t, tt.name, r, fd.addr, "ADDR")
		})
	}
}

// TestDaemonUnreachable checks the advice given when nothing listens on the
// daemon's port.
func TestDaemonUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // now a closed port: connections are refused

	tests := []struct {
		name string
		args []string
	}{
		{name: "unreachable_list", args: []string{"endpoint", "list"}},
		{name: "unreachable_run", args: []string{"run", "echo", "{}"}},
		{name: "unreachable_version", args: []string{"version"}},
		{name: "unreachable_status", args: []string{"status"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runEmber(t, addr, invocation{args: append(tt.args, "--addr", addr)})
			golden(t, tt.name, r, addr, "ADDR")
		})
	}
}

// TestAPIKeySources checks where the key comes from and that it is sent as
// a Bearer token.
func TestAPIKeySources(t *testing.T) {
	dir := t.TempDir()
	goodFile := filepath.Join(dir, "good.key")
	badFile := filepath.Join(dir, "bad.key")
	emptyFile := filepath.Join(dir, "empty.key")
	missingFile := filepath.Join(dir, "missing.key")
	for name, content := range map[string]string{goodFile: testKey + "\n", badFile: "wrong\n", emptyFile: " \n"} {
		if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		code    int
		wantErr string // in stderr
	}{
		{name: "env", env: map[string]string{"EMBER_API_KEY": testKey}},
		{name: "env beats default file", env: map[string]string{"EMBER_API_KEY": testKey}, args: []string{}},
		{name: "explicit file", args: []string{"--api-key-file", goodFile}},
		{name: "explicit file beats env", env: map[string]string{"EMBER_API_KEY": "wrong"}, args: []string{"--api-key-file", goodFile}},
		{name: "wrong key in file", args: []string{"--api-key-file", badFile}, code: 1,
			// The file actually read, not /var/lib/ember/api.key: a daemon
			// with another --data-dir keeps its key elsewhere.
			wantErr: "ember: the daemon refused the API key in " + badFile + ": it is not a key of the emberd at http://ADDR: pass that daemon's admin key (DATA-DIR/api.key of its --data-dir) with --api-key-file, or a key it issued in EMBER_API_KEY\n"},
		{name: "wrong key in env", env: map[string]string{"EMBER_API_KEY": "wrong"}, code: 1,
			wantErr: "ember: the daemon refused the API key in EMBER_API_KEY: set EMBER_API_KEY to a valid key, or unset it to read the key file /var/lib/ember/api.key (--api-key-file)\n"},
		{name: "wrong key in env, file given", env: map[string]string{"EMBER_API_KEY": "wrong"}, args: []string{"--api-key-file", badFile}, code: 1,
			wantErr: "ember: the daemon refused the API key in " + badFile + ": it is not a key of the emberd at http://ADDR:"},
		{name: "missing file", args: []string{"--api-key-file", missingFile}, code: 1,
			wantErr: "ember: cannot read API key file " + missingFile + ": no such file or directory; set EMBER_API_KEY to the key or pass --api-key-file FILE\n"},
		{name: "empty file", args: []string{"--api-key-file", emptyFile}, code: 1,
			wantErr: "ember: API key file " + emptyFile + " is empty; set EMBER_API_KEY to the key or pass --api-key-file FILE\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fd := newFakeDaemon(t, seedEndpoints...)
			env := map[string]string{"EMBER_ADDR": fd.addr}
			for k, v := range tt.env {
				env[k] = v
			}
			r := runEmber(t, fd.addr, invocation{args: append([]string{"endpoint", "list"}, tt.args...), env: env})
			wantErr := strings.ReplaceAll(tt.wantErr, "ADDR", fd.addr)
			if r.code != tt.code || (wantErr != "" && r.stderr != wantErr && !(strings.HasSuffix(wantErr, ":") && strings.HasPrefix(r.stderr, wantErr))) {
				t.Fatalf("exit %d, stderr %q; want exit %d, stderr %q", r.code, r.stderr, tt.code, wantErr)
			}
			for _, req := range fd.requests() {
				if tt.code == 0 && req.Auth != "Bearer "+testKey {
					t.Errorf("%s %s sent Authorization %q, want %q", req.Method, req.Path, req.Auth, "Bearer "+testKey)
				}
			}
		})
	}
}

// TestCreateSendsOnlySetFlags checks the create request body: flags left
// alone must not be sent, or they would override the daemon's defaults.
func TestCreateSendsOnlySetFlags(t *testing.T) {
	dir := t.TempDir()
	defFile := filepath.Join(dir, "def.json")
	// An exported endpoint: read-only fields and protojson strings included.
	def := `{"id":"ep-old","name":"fromfile","image":"img:1","env":{"A":"1","B":"2"},"workersMax":"4","createdAt":"2025-01-01T00:00:00Z"}`
	if err := os.WriteFile(defFile, []byte(def), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		args  []string
		stdin string
		want  string // JSON body; "" when no request may be sent
		err   string
	}{
		{name: "name only", args: []string{"x"}, want: `{"name":"x"}`},
		{name: "explicit zeros", args: []string{"x", "--workers-min", "0", "--gpu-count=0"}, want: `{"name":"x","workersMin":0,"gpuCount":0}`},
		{
			name: "all flags",
			args: []string{"x", "--image", "img", "-e", "A=1", "--env", "B=x=y", "--workers-min", "1", "--workers-max", "5",
				"--idle-timeout", "90", "--execution-timeout-ms", "60000", "--scaler-type", "request-count", "--scaler-value", "3",
				"--gpu-count", "2", "--gpu-types", "NVIDIA H100 80GB HBM3, NVIDIA L40S,", "--", "python", "-m", "worker", "--flag"},
			want: `{"name":"x","image":"img","command":["python","-m","worker","--flag"],"env":{"A":"1","B":"x=y"},"workersMin":1,"workersMax":5,"idleTimeout":90,"executionTimeoutMs":60000,"scalerType":"REQUEST_COUNT","scalerValue":3,"gpuCount":2,"gpuTypes":["NVIDIA H100 80GB HBM3","NVIDIA L40S"]}`,
		},
		{name: "idle timeout as duration", args: []string{"x", "--idle-timeout", "5m"}, want: `{"name":"x","idleTimeout":300}`},
		{
			name: "init, flashboot, attempts, GPU memory",
			args: []string{"x", "--init-timeout", "15m", "--flashboot", "--flashboot-window", "90", "--max-attempts", "5", "--gpu-memory-mb", "40000"},
			want: `{"name":"x","initTimeout":900,"flashboot":true,"flashbootWindow":90,"maxAttempts":5,"gpuMemoryMb":40000}`,
		},
		{name: "gpu park", args: []string{"x", "--gpu-park", "idle", "--gpu-park-delay", "2m"}, want: `{"name":"x","gpuPark":"idle","gpuParkDelay":120}`},
		{name: "explicit flashboot off", args: []string{"x", "--flashboot=false", "--max-attempts", "0"}, want: `{"name":"x","flashboot":false,"maxAttempts":0}`},
		{name: "flashboot from file", args: []string{"--file", "-"}, stdin: `{"name":"f","flashboot":true,"initTimeout":"600"}`, want: `{"name":"f","flashboot":true,"initTimeout":600}`},
		{name: "fractional init timeout", args: []string{"x", "--init-timeout", "2.5s"}, err: "must be whole seconds"},
		{name: "file", args: []string{"--file", defFile}, want: `{"name":"fromfile","image":"img:1","env":{"A":"1","B":"2"},"workersMax":4}`},
		{name: "flags override file", args: []string{"renamed", "-f", defFile, "--env", "B=3", "--workers-max", "0"},
			want: `{"name":"renamed","image":"img:1","env":{"A":"1","B":"3"},"workersMax":0}`},
		{name: "file from stdin", args: []string{"--file", "-"}, stdin: `{"name":"piped","gpuCount":1}`, want: `{"name":"piped","gpuCount":1}`},
		{name: "misspelt file field", args: []string{"--file", "-"}, stdin: `{"name":"x","workerMax":1}`, err: `unknown endpoint field(s) "workerMax"`},
		{name: "no name", args: []string{"--image", "img"}, err: "missing endpoint NAME"},
		{name: "two names", args: []string{"a", "b"}, err: `takes one NAME, got 2 arguments (put the worker command after "--")`},
		{name: "empty command", args: []string{"x", "--"}, err: `nothing after "--"`},
		{name: "bad scaler", args: []string{"x", "--scaler-type", "vibes"}, err: `--scaler-type "vibes": want QUEUE_DELAY or REQUEST_COUNT`},
		{name: "fractional idle", args: []string{"x", "--idle-timeout", "1500ms"}, err: "must be whole seconds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fd := newFakeDaemon(t)
			r := runEmber(t, fd.addr, invocation{args: append([]string{"endpoint", "create"}, tt.args...), stdin: tt.stdin})
			var posts []fakeRequest
			for _, req := range fd.requests() {
				if req.Method == "POST" {
					posts = append(posts, req)
				}
			}
			if tt.err != "" {
				if r.code != 1 || !strings.Contains(r.stderr, tt.err) || len(posts) != 0 {
					t.Fatalf("exit %d, stderr %q, %d requests; want exit 1 and %q without a request", r.code, r.stderr, len(posts), tt.err)
				}
				return
			}
			if r.code != 0 || len(posts) != 1 {
				t.Fatalf("exit %d, stderr %q, %d POSTs", r.code, r.stderr, len(posts))
			}
			var got, want any
			if err := json.Unmarshal([]byte(posts[0].Body), &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tt.want), &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("body = %s\nwant   %s", posts[0].Body, tt.want)
			}
		})
	}
}

// TestRunPolls checks the request sequence of "ember run" by name: resolve
// the name, submit through runsync, long-poll status-sync until terminal.
func TestRunPolls(t *testing.T) {
	fd := newFakeDaemon(t, seedEndpoints...)
	fd.setScript(jobQueued, jobQueued, jobProgress, jobProgress, jobCompleted)
	r := runEmber(t, fd.addr, invocation{args: []string{"run", "echo", `"hi"`}})
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	var got []string
	for _, req := range fd.requests() {
		got = append(got, strings.TrimSpace(req.Method+" "+req.Path+"?"+req.Query+" "+req.Body))
	}
	// /run answers at once with the job's id, so the state shows from the
	// first second; 1 s polls then show IN_QUEUE turning IN_PROGRESS.
	want := []string{
		"GET /v1/endpoints/echo?", // not an ID...
		"GET /v1/endpoints?",      // ...so resolve the name
		`POST /v2/ep-a1/run? {"input":"hi"}`,
		"GET /v2/ep-a1/status-sync/job-1?wait=1000",
		"GET /v2/ep-a1/status-sync/job-1?wait=1000",
		"GET /v2/ep-a1/status-sync/job-1?wait=1000",
		"GET /v2/ep-a1/status-sync/job-1?wait=1000",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	wantErr := "job job-1: IN_QUEUE, waiting 0s\njob job-1: IN_PROGRESS on worker w-7f3a, waited 2s, running 0s\n"
	if r.stderr != wantErr {
		t.Errorf("stderr = %q, want a line per state change: %q", r.stderr, wantErr)
	}

	// -q: no state lines, and long polls since nothing is shown.
	fd.setScript(jobQueued, jobCompleted)
	r = runEmber(t, fd.addr, invocation{args: []string{"run", "-q", "ep-a1", `"hi"`}})
	reqs := fd.requests()
	if last := reqs[len(reqs)-1]; r.code != 0 || r.stderr != "" || last.Query != "wait=90000" {
		t.Errorf("run -q: exit %d, stderr %q, last request %+v; want exit 0, no stderr, wait=90000", r.code, r.stderr, last)
	}
}

// TestRunTimeout checks that giving up on a job that is still running says
// how to check on it later.
func TestRunTimeout(t *testing.T) {
	fd := newFakeDaemon(t, seedEndpoints...)
	fd.setScript(jobQueued, jobProgress) // never finishes
	r := runEmber(t, fd.addr, invocation{args: []string{"run", "echo", "{}", "--timeout", "300ms"}})
	want := "ember: stopped waiting for job job-1 (IN_PROGRESS on worker w-7f3a, waited 2s, running 0s): timed out after 300ms (raise --timeout)"
	if r.code != 1 || !strings.Contains(r.stderr, want) || !strings.HasSuffix(r.stderr, "\nFollow it with: ember job status echo job-1\nCancel it with: ember job cancel echo job-1\n") {
		t.Errorf("exit %d, stderr %q; want exit 1, stderr starting %q", r.code, r.stderr, want)
	}
	if r.stdout != "" {
		t.Errorf("stdout = %q, want nothing", r.stdout)
	}
}

// TestAddrFromEnv checks that EMBER_ADDR is the default and --addr wins.
func TestAddrFromEnv(t *testing.T) {
	fd := newFakeDaemon(t, seedEndpoints...)
	tests := []struct {
		name string
		env  map[string]string
		args []string
	}{
		{name: "env", env: map[string]string{"EMBER_ADDR": fd.addr, "EMBER_API_KEY": testKey}},
		{name: "flag beats env", env: map[string]string{"EMBER_ADDR": "127.0.0.1:1", "EMBER_API_KEY": testKey}, args: []string{"--addr", fd.addr}},
		{name: "url form", env: map[string]string{"EMBER_ADDR": "http://" + fd.addr + "/", "EMBER_API_KEY": testKey}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runEmber(t, "", invocation{args: append([]string{"endpoint", "get", "ep-a1"}, tt.args...), env: tt.env})
			if r.code != 0 || !strings.Contains(r.stdout, "ep-a1") {
				t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
		})
	}
}
