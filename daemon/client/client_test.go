package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// recorder is a stand-in daemon: each test routes paths to canned answers
// and inspects the requests afterwards.
type recorder struct {
	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	Method, Path, Query, Auth, Body string
}

func (r *recorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.reqs = append(r.reqs, recorded{req.Method, req.URL.EscapedPath(), req.URL.RawQuery, req.Header.Get("Authorization"), string(body)})
		r.mu.Unlock()
		h.ServeHTTP(w, req)
	})
}

func (r *recorder) requests() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.reqs...)
}

// serve starts a loopback server and a client for it.
func serve(t *testing.T, key string, mux *http.ServeMux) (*Client, *recorder) {
	t.Helper()
	rec := &recorder{}
	srv := httptest.NewServer(rec.wrap(mux))
	t.Cleanup(srv.Close)
	c, err := New(strings.TrimPrefix(srv.URL, "http://"), key, WithPollInterval(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return c, rec
}

func reply(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		addr, want, wantErr string
	}{
		{addr: "", want: "http://127.0.0.1:7080"},
		{addr: "127.0.0.1:9000", want: "http://127.0.0.1:9000"},
		{addr: "https://ember.example:443/", want: "https://ember.example:443"},
		{addr: "http://host:1/prefix/", want: "http://host:1/prefix"},
		{addr: "ftp://host:1", wantErr: "scheme must be http or https"},
		{addr: "http://", wantErr: "want HOST:PORT"},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			c, err := New(tt.addr, "")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New(%q) error = %v, want %q", tt.addr, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.BaseURL(); got != tt.want {
				t.Errorf("BaseURL() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAuthHeader(t *testing.T) {
	tests := []struct {
		key, want string
	}{
		{key: "s3cret", want: "Bearer s3cret"},
		{key: "", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.Handle("GET /v1/health", reply(200, `{"status":"SERVING","version":"1.2.3"}`))
			c, rec := serve(t, tt.key, mux)
			h, err := c.Health(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if h.Status != "SERVING" || h.Version != "1.2.3" {
				t.Errorf("Health() = %+v", h)
			}
			if got := rec.requests()[0].Auth; got != tt.want {
				t.Errorf("Authorization = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAPIErrors(t *testing.T) {
	tests := []struct {
		name         string
		status       int
		body         string
		wantMsg      string
		wantCode     int
		notFound     bool
		unauthorized bool
	}{
		{name: "runpod", status: 404, body: `{"error":"job not found"}`, wantMsg: "job not found", notFound: true},
		{name: "runpod object", status: 400, body: `{"error":{"reason":"bad"}}`, wantMsg: `{"reason":"bad"}`},
		{name: "gateway", status: 400, body: `{"code":3,"message":"name is required","details":[]}`, wantMsg: "name is required", wantCode: 3},
		{name: "gateway not found", status: 404, body: `{"code":5,"message":"no such endpoint","details":[]}`, wantMsg: "no such endpoint", wantCode: 5, notFound: true},
		{name: "unauthenticated", status: 401, body: `{"code":16,"message":"invalid API key","details":[]}`, wantMsg: "invalid API key", wantCode: 16, unauthorized: true},
		{name: "html", status: 502, body: "<html>Bad Gateway</html>\n", wantMsg: "<html>Bad Gateway</html>"},
		{name: "empty", status: 500, body: "", wantMsg: "GET /v1/endpoints: HTTP 500 Internal Server Error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.Handle("GET /v1/endpoints", reply(tt.status, tt.body))
			c, _ := serve(t, "k", mux)
			_, err := c.ListEndpoints(context.Background())
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Fatalf("error = %v, want an *APIError", err)
			}
			if ae.Message != tt.wantMsg && ae.Error() != tt.wantMsg {
				t.Errorf("message = %q (Error() %q), want %q", ae.Message, ae.Error(), tt.wantMsg)
			}
			if ae.StatusCode != tt.status || ae.Code != tt.wantCode {
				t.Errorf("status, code = %d, %d; want %d, %d", ae.StatusCode, ae.Code, tt.status, tt.wantCode)
			}
			if got := IsNotFound(err); got != tt.notFound {
				t.Errorf("IsNotFound = %v, want %v", got, tt.notFound)
			}
			if got := IsUnauthorized(err); got != tt.unauthorized {
				t.Errorf("IsUnauthorized = %v, want %v", got, tt.unauthorized)
			}
		})
	}
}

func TestConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, err := New(addr, "k")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ListEndpoints(context.Background())
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("error = %v, want ECONNREFUSED in its chain", err)
	}
}

func TestListEndpoints(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []Endpoint
	}{
		{name: "absent key", body: `{}`, want: nil},
		{name: "empty body", body: ``, want: nil},
		{
			name: "protojson int64 as strings",
			body: `{"endpoints":[{"id":"ep1","name":"a","workersMax":3,"executionTimeoutMs":"600000","idleTimeout":"5","gpuTypes":["X"]}]}`,
			want: []Endpoint{{ID: "ep1", Name: "a", WorkersMax: 3, ExecutionTimeoutMs: 600000, IdleTimeout: 5, GPUTypes: []string{"X"}}},
		},
		{
			name: "init, flashboot, attempts, GPU memory",
			body: `{"endpoints":[{"id":"ep1","name":"a","initTimeout":600,"flashboot":true,"flashbootWindow":"120","maxAttempts":5,"gpuMemoryMb":40000}]}`,
			want: []Endpoint{{ID: "ep1", Name: "a", InitTimeout: 600, Flashboot: true, FlashbootWindow: 120, MaxAttempts: 5, GPUMemoryMB: 40000}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.Handle("GET /v1/endpoints", reply(200, tt.body))
			c, _ := serve(t, "k", mux)
			got, err := c.ListEndpoints(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for i := range got {
				if len(got[i].Raw) == 0 {
					t.Errorf("endpoint %d: Raw not kept", i)
				}
				got[i].Raw = nil
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ListEndpoints() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestCreateEndpointSendsOnlySetFields(t *testing.T) {
	tests := []struct {
		name string
		spec EndpointSpec
		want string
	}{
		{name: "name only", spec: EndpointSpec{Name: "a"}, want: `{"name":"a"}`},
		{name: "explicit zero", spec: EndpointSpec{Name: "a", WorkersMin: ptr(0), GPUCount: ptr(0)}, want: `{"name":"a","workersMin":0,"gpuCount":0}`},
		{name: "explicit false", spec: EndpointSpec{Name: "a", Flashboot: ptr(false), MaxAttempts: ptr(0)}, want: `{"name":"a","flashboot":false,"maxAttempts":0}`},
		{
			name: "everything",
			spec: EndpointSpec{
				Name: "a", Image: "img", Command: []string{"python", "h.py"}, Env: map[string]string{"K": "V"},
				WorkersMin: ptr(1), WorkersMax: ptr(2), IdleTimeout: ptr(30), ExecutionTimeoutMs: ptr(int64(1000)),
				ScalerType: ScalerRequestCount, ScalerValue: ptr(3), GPUCount: ptr(1), GPUTypes: []string{"A", "B"},
				InitTimeout: ptr(600), Flashboot: ptr(true), FlashbootWindow: ptr(60), MaxAttempts: ptr(5), GPUMemoryMB: ptr(20000),
			},
			want: `{"name":"a","image":"img","command":["python","h.py"],"env":{"K":"V"},"workersMin":1,"workersMax":2,"idleTimeout":30,"executionTimeoutMs":1000,"scalerType":"REQUEST_COUNT","scalerValue":3,"gpuCount":1,"gpuTypes":["A","B"],"initTimeout":600,"flashboot":true,"flashbootWindow":60,"maxAttempts":5,"gpuMemoryMb":20000}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.Handle("POST /v1/endpoints", reply(200, `{"id":"ep1","name":"a"}`))
			c, rec := serve(t, "k", mux)
			ep, err := c.CreateEndpoint(context.Background(), &tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			if ep.ID != "ep1" {
				t.Errorf("ID = %q", ep.ID)
			}
			if got := rec.requests()[0].Body; got != tt.want {
				t.Errorf("body = %s\nwant   %s", got, tt.want)
			}
		})
	}
}

func TestParseEndpointSpec(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    *EndpointSpec
		wantErr string
	}{
		{name: "minimal", in: `{"name":"a"}`, want: &EndpointSpec{Name: "a"}},
		{
			name: "exported endpoint",
			in:   `{"id":"ep1","name":"a","workersMin":0,"executionTimeoutMs":"600000","generation":"3","createdAt":"2025-01-01T00:00:00Z","updatedAt":"2025-01-01T00:00:00Z"}`,
			want: &EndpointSpec{Name: "a", WorkersMin: ptr(0), ExecutionTimeoutMs: ptr(int64(600000))},
		},
		{
			name: "new fields",
			in:   `{"name":"a","initTimeout":420,"flashboot":false,"flashbootWindow":"300","maxAttempts":0,"gpuMemoryMb":"8192"}`,
			want: &EndpointSpec{Name: "a", InitTimeout: ptr(420), Flashboot: ptr(false), FlashbootWindow: ptr(300), MaxAttempts: ptr(0), GPUMemoryMB: ptr(8192)},
		},
		{name: "misspelt", in: `{"name":"a","workerMax":3}`, wantErr: `unknown endpoint field(s) "workerMax"`},
		{name: "not an object", in: `[1]`, wantErr: "must be a JSON object"},
		{name: "null", in: `null`, wantErr: "not null"},
		{name: "bad number", in: `{"workersMax":"lots"}`, wantErr: "not an integer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseEndpointSpec([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestResolveEndpoint(t *testing.T) {
	list := `{"endpoints":[{"id":"ep1","name":"echo"},{"id":"ep2","name":"twin"},{"id":"ep3","name":"twin"}]}`
	tests := []struct {
		name    string
		arg     string
		getCode int // answer to GET /v1/endpoints/{arg}
		getBody string
		wantID  string
		wantErr string
		isNF    bool
	}{
		{name: "by id", arg: "ep1", getCode: 200, getBody: `{"id":"ep1","name":"echo"}`, wantID: "ep1"},
		{name: "by name after 404", arg: "echo", getCode: 404, getBody: `{"code":5,"message":"not found"}`, wantID: "ep1"},
		{name: "by name after 400", arg: "echo", getCode: 400, getBody: `{"code":3,"message":"malformed id"}`, wantID: "ep1"},
		{name: "unknown", arg: "nope", getCode: 404, getBody: `{"code":5,"message":"not found"}`, wantErr: `no such endpoint: "nope" is neither an endpoint ID nor a name`, isNF: true},
		{name: "ambiguous", arg: "twin", getCode: 404, getBody: `{"code":5,"message":"not found"}`, wantErr: `2 endpoints are named "twin" (IDs ep2, ep3)`},
		{name: "server error is not a miss", arg: "echo", getCode: 500, getBody: `{"code":13,"message":"disk on fire"}`, wantErr: "disk on fire"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.Handle("GET /v1/endpoints/{id}", reply(tt.getCode, tt.getBody))
			mux.Handle("GET /v1/endpoints", reply(200, list))
			c, _ := serve(t, "k", mux)
			ep, err := c.ResolveEndpoint(context.Background(), tt.arg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				if got := errors.Is(err, ErrEndpointNotFound); got != tt.isNF {
					t.Errorf("errors.Is(err, ErrEndpointNotFound) = %v, want %v", got, tt.isNF)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ep.ID != tt.wantID {
				t.Errorf("ID = %q, want %q", ep.ID, tt.wantID)
			}
		})
	}
}

func TestRequestBody(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{in: `{"prompt":"hi"}`, want: `{"input":{"prompt":"hi"}}`},
		{in: `"text"`, want: `{"input":"text"}`},
		{in: `[1,2]`, want: `{"input":[1,2]}`},
		{in: `null`, want: `{"input":null}`},
		{in: `{"input":{"a":1},"webhook":"http://x"}`, want: `{"input":{"a":1},"webhook":"http://x"}`},
		{in: `{oops`, wantErr: "not valid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := RequestBody(json.RawMessage(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("RequestBody(%s) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

// jobScript serves runsync and status-sync from a list of answers, one per
// request, the way a daemon reports a job moving through its states.
func jobScript(answers ...string) *http.ServeMux {
	var mu sync.Mutex
	next := func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		a := answers[0]
		if len(answers) > 1 {
			answers = answers[1:]
		}
		mu.Unlock()
		reply(200, a)(w, nil)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v2/{ep}/runsync", next)
	mux.HandleFunc("GET /v2/{ep}/status-sync/{id}", next)
	return mux
}

func TestRun(t *testing.T) {
	tests := []struct {
		name       string
		answers    []string
		wantStatus string
		wantOutput string
		wantError  string
		wantPolls  int
	}{
		{
			name:       "completes in runsync",
			answers:    []string{`{"id":"j1","status":"COMPLETED","output":{"ok":true},"delayTime":5,"executionTime":7}`},
			wantStatus: StatusCompleted, wantOutput: `{"ok":true}`,
		},
		{
			name: "polls through the queue",
			answers: []string{
				`{"id":"j1","status":"IN_QUEUE"}`,
				`{"id":"j1","status":"IN_QUEUE"}`,
				`{"id":"j1","status":"IN_PROGRESS","workerId":"w1"}`,
				`{"id":"j1","status":"COMPLETED","output":[1,2],"workerId":"w1"}`,
			},
			wantStatus: StatusCompleted, wantOutput: `[1,2]`, wantPolls: 3,
		},
		{
			name:       "failure is a result, not an error",
			answers:    []string{`{"id":"j1","status":"IN_PROGRESS"}`, `{"id":"j1","status":"FAILED","error":{"type":"ValueError"}}`},
			wantStatus: StatusFailed, wantError: `{"type":"ValueError"}`, wantPolls: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, rec := serve(t, "k", jobScript(tt.answers...))
			var seen []string
			st, err := c.Run(context.Background(), "ep/1", json.RawMessage(`{"input":1}`), func(s *JobStatus) {
				seen = append(seen, s.Status)
			})
			if err != nil {
				t.Fatal(err)
			}
			if st.Status != tt.wantStatus || string(st.Output) != tt.wantOutput || st.Error != tt.wantError {
				t.Errorf("Run() = status %q output %s error %q; want %q %s %q",
					st.Status, st.Output, st.Error, tt.wantStatus, tt.wantOutput, tt.wantError)
			}
			if len(seen) != len(tt.answers) {
				t.Errorf("progress saw %v, want %d statuses", seen, len(tt.answers))
			}
			reqs := rec.requests()
			if got := len(reqs) - 1; got != tt.wantPolls {
				t.Errorf("%d status-sync polls, want %d", got, tt.wantPolls)
			}
			if r := reqs[0]; r.Path != "/v2/ep%2F1/runsync" || r.Query != "wait=90000" || r.Body != `{"input":1}` {
				t.Errorf("first request = %+v", r)
			}
			for _, r := range reqs[1:] {
				if r.Method != "GET" || r.Path != "/v2/ep%2F1/status-sync/j1" || r.Query != "wait=90000" {
					t.Errorf("poll = %+v", r)
				}
			}
		})
	}
}

func TestRunWaitError(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("POST /v2/{ep}/runsync", reply(200, `{"id":"j9","status":"IN_QUEUE"}`))
	mux.Handle("GET /v2/{ep}/status-sync/{id}", reply(503, `{"error":"draining"}`))
	c, _ := serve(t, "k", mux)
	_, err := c.Run(context.Background(), "ep1", json.RawMessage(`{"input":1}`), nil)
	var we *WaitError
	if !errors.As(err, &we) {
		t.Fatalf("error = %v, want a *WaitError", err)
	}
	if we.Last.ID != "j9" || we.Last.Status != StatusInQueue || !strings.Contains(err.Error(), "draining") {
		t.Errorf("WaitError = %v (last %+v)", err, we.Last)
	}
}

func TestWaitQueryFollowsDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	q := waitQuery(ctx, MaxWait)
	if w := q.Get("wait"); w == "90000" || w == "" || len(w) > 4 {
		t.Errorf("wait = %q, want at most 2000", w)
	}
	if w := waitQuery(context.Background(), time.Hour).Get("wait"); w != "90000" {
		t.Errorf("wait without deadline = %q, want 90000", w)
	}
}

// TestSubmitWait: Submit queues through /run and returns the id at once;
// Wait holds each status-sync at most its poll and reports every status.
func TestSubmitWait(t *testing.T) {
	mux := jobScript(
		`{"id":"j1","status":"IN_QUEUE"}`,
		`{"id":"j1","status":"IN_PROGRESS","workerId":"w1"}`,
		`{"id":"j1","status":"COMPLETED","output":7}`,
	)
	mux.Handle("POST /v2/{ep}/run", reply(200, `{"id":"j1","status":"IN_QUEUE"}`))
	c, rec := serve(t, "k", mux)
	st, err := c.Submit(context.Background(), "ep1", json.RawMessage(`{"input":1}`))
	if err != nil || st.ID != "j1" || st.Status != StatusInQueue {
		t.Fatalf("Submit = %+v, %v", st, err)
	}
	var seen []string
	st, err = c.Wait(context.Background(), "ep1", st, time.Second, func(s *JobStatus) { seen = append(seen, s.Status) })
	if err != nil || st.Status != StatusCompleted || string(st.Output) != "7" {
		t.Fatalf("Wait = %+v, %v", st, err)
	}
	if want := []string{StatusInQueue, StatusInProgress, StatusCompleted}; !reflect.DeepEqual(seen, want) {
		t.Errorf("progress saw %v, want %v", seen, want)
	}
	reqs := rec.requests()
	if r := reqs[0]; r.Method != "POST" || r.Path != "/v2/ep1/run" || r.Query != "" || r.Body != `{"input":1}` {
		t.Errorf("submit request = %+v", r)
	}
	for _, r := range reqs[1:] {
		if r.Path != "/v2/ep1/status-sync/j1" || r.Query != "wait=1000" {
			t.Errorf("poll = %+v, want wait=1000", r)
		}
	}

	// A /run answer without an id is an error, not a job to wait for.
	mux = http.NewServeMux()
	mux.Handle("POST /v2/{ep}/run", reply(200, `{"status":"IN_QUEUE"}`))
	c, _ = serve(t, "k", mux)
	if _, err := c.Submit(context.Background(), "ep1", json.RawMessage(`{"input":1}`)); err == nil || !strings.Contains(err.Error(), "no job ID") {
		t.Errorf("Submit without an id: %v", err)
	}
}
