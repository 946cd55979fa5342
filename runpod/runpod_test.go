package runpod

import (
	"encoding/json"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func ms(v int64) *int64 { return &v }

// The status object's bytes are the contract: field order, names and which
// fields are left out.
func TestJobStatusJSON(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   JobStatus
		want string
	}{
		{"queued", JobStatus{ID: "j1", Status: InQueue}, `{"id":"j1","status":"IN_QUEUE"}`},
		{"running", JobStatus{ID: "j1", Status: InProgress, DelayTime: ms(12), WorkerID: "w-1"},
			`{"id":"j1","status":"IN_PROGRESS","delayTime":12,"workerId":"w-1"}`},
		{"zero times are written when set", JobStatus{ID: "j1", Status: Completed, DelayTime: ms(0), ExecutionTime: ms(0), Output: json.RawMessage(`null`)},
			`{"id":"j1","status":"COMPLETED","delayTime":0,"executionTime":0,"output":null}`},
		{"failed", JobStatus{ID: "j1", Status: Failed, DelayTime: ms(1), ExecutionTime: ms(2), Error: "boom", WorkerID: "w-1"},
			`{"id":"j1","status":"FAILED","delayTime":1,"executionTime":2,"error":"boom","workerId":"w-1"}`},
	} {
		b, err := json.Marshal(tc.in)
		if err != nil || string(b) != tc.want {
			t.Errorf("%s: %s, %v; want %s", tc.name, b, err, tc.want)
		}
	}
}

func TestTerminal(t *testing.T) {
	for s, want := range map[Status]bool{InQueue: false, InProgress: false, Completed: true, Failed: true, Cancelled: true, TimedOut: true, "RUNNING": false} {
		if got := s.Terminal(); got != want {
			t.Errorf("%s.Terminal() = %v, want %v", s, got, want)
		}
	}
}

func TestCheckRanges(t *testing.T) {
	for _, tc := range []struct {
		check func(int64) string
		ms    int64
		want  string
	}{
		{CheckExecutionTimeout, MinExecutionTimeoutMs, ""},
		{CheckExecutionTimeout, MaxExecutionTimeoutMs, ""},
		{CheckExecutionTimeout, MinExecutionTimeoutMs - 1, "must be between 5000 and 604800000 ms (5 s to 7 days), got 4999"},
		{CheckExecutionTimeout, MaxExecutionTimeoutMs + 1, "must be between 5000 and 604800000 ms (5 s to 7 days), got 604800001"},
		{CheckExecutionTimeout, 0, "must be between 5000 and 604800000 ms (5 s to 7 days), got 0"},
		{CheckTTL, MinTTLMs, ""},
		{CheckTTL, MaxTTLMs, ""},
		{CheckTTL, MinTTLMs - 1, "must be between 10000 and 604800000 ms (10 s to 7 days), got 9999"},
		{CheckTTL, -5, "must be between 10000 and 604800000 ms (10 s to 7 days), got -5"},
	} {
		if got := tc.check(tc.ms); got != tc.want {
			t.Errorf("check(%d) = %q, want %q", tc.ms, got, tc.want)
		}
	}
}

func TestWorkerEnv(t *testing.T) {
	w := Worker{APIBase: "http://10.0.0.1:8080", EndpointID: "ep/1", WorkerID: "w-abc", Token: "tok",
		PingInterval: 10 * time.Second, Hostname: "box", GPUCount: 2, CPUCount: 16}
	want := []string{
		"RUNPOD_WEBHOOK_GET_JOB=http://10.0.0.1:8080/v2/ep%2F1/job-take/w-abc?gpu=2gpu",
		"RUNPOD_WEBHOOK_POST_OUTPUT=http://10.0.0.1:8080/v2/ep%2F1/job-done/w-abc/$ID?gpu=2gpu",
		"RUNPOD_WEBHOOK_POST_STREAM=http://10.0.0.1:8080/v2/ep%2F1/job-stream/w-abc/$ID?gpu=2gpu",
		"RUNPOD_WEBHOOK_PING=http://10.0.0.1:8080/v2/ep%2F1/ping/w-abc?gpu=2gpu",
		"RUNPOD_AI_API_KEY=tok",
		"RUNPOD_POD_ID=w-abc",
		"RUNPOD_ENDPOINT_ID=ep/1",
		"RUNPOD_PING_INTERVAL=10000",
		"RUNPOD_POD_HOSTNAME=box",
		"RUNPOD_GPU_COUNT=2",
		"RUNPOD_CPU_COUNT=16",
		"RUNPOD_DC_ID=ember",
		"RUNPOD_SKIP_AUTO_SYSTEM_CHECKS=true",
		"RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS=true",
		"RUNPOD_LOG_LEVEL=INFO",
	}
	if got := w.Env(); !slices.Equal(got, want) {
		t.Errorf("Env() =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	w.GPUCount = 0
	if got := w.Env()[0]; !strings.HasSuffix(got, "/job-take/w-abc?gpu=cpu") {
		t.Errorf("CPU worker's take URL = %q, want the gpu=cpu label", got)
	}
}

// The package is the contract every layer may import: it must import
// nothing but the standard library.
func TestImportsOnlyStdlib(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if first, _, _ := strings.Cut(path, "/"); strings.Contains(first, ".") {
				t.Errorf("%s imports %s: package runpod may import only the standard library", f, path)
			}
		}
	}
}
