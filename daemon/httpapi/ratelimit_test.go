package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/daemon/ratelimit"
	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/spec"
)

const rateKey = "rate-test-key"

// withCaller stands in for the authentication that puts the caller in the
// request's context: the X-Test-Caller header names the key id.
func withCaller(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id := r.Header.Get("X-Test-Caller"); id != "" {
			r = r.WithContext(auth.WithCaller(r.Context(), auth.Caller{KeyID: id, Name: "test " + id, Scope: auth.Admin}))
		}
		h.ServeHTTP(w, r)
	})
}

// rateEnv is a scheduler with one endpoint (no workers) and its job.
type rateEnv struct {
	s       *scheduler.Scheduler
	ep, job string
}

func newRateEnv(t testing.TB) *rateEnv {
	t.Helper()
	s, err := scheduler.Open(scheduler.Config{DataDir: t.TempDir(), Runtime: idleRuntime{},
		WorkerAPIBase: "http://127.0.0.1:1", MinFreeBytes: 1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	name, cmd, zero, one := "limited", []string{"fake-worker"}, 0, 1
	ep, err := s.CreateEndpoint(context.Background(), spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMax: &one, GPUCount: &zero})
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Submit(context.Background(), ep.ID, spec.Submission{Input: json.RawMessage(`{"n":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	return &rateEnv{s: s, ep: ep.ID, job: v.ID}
}

// idleRuntime starts workers that never call the worker API (the job
// stays queued) and never exit on their own.
type idleRuntime struct{}

func (idleRuntime) Name() string { return "idle" }

func (idleRuntime) Start(_ context.Context, spec oci.Spec) (oci.Worker, error) {
	return &logWorker{spec: spec, done: make(chan struct{})}, nil
}

func (e *rateEnv) server(t testing.TB, l *ratelimit.Limiter) *Server {
	return New(Config{Scheduler: e.s, Keys: func() []string { return []string{rateKey} }, RateLimiter: l, Logger: slog.New(slog.DiscardHandler)})
}

func TestRateOp(t *testing.T) {
	for _, tc := range []struct {
		path string
		ep   string
		op   ratelimit.Op
		ok   bool
	}{
		{"/v2/ep1/run", "ep1", ratelimit.Run, true},
		{"/v2/ep1/runsync", "ep1", ratelimit.RunSync, true},
		{"/v2/ep1/status/j", "ep1", ratelimit.Status, true},
		{"/v2/ep1/status-sync/j", "ep1", ratelimit.Status, true},
		{"/v2/ep1/stream/j", "ep1", ratelimit.Stream, true},
		{"/v2/ep1/cancel/j", "ep1", ratelimit.Cancel, true},
		{"/v2/ep1/retry/j", "ep1", ratelimit.Run, true},
		{"/v2/ep1/purge-queue", "ep1", ratelimit.PurgeQueue, true},
		{"/v2/ep1/openai/v1/chat/completions", "ep1", ratelimit.OpenAI, true},
		{"/v1/endpoints/ep1/jobs", "ep1", ratelimit.Run, true},
		{"/v1/endpoints/ep1/jobs:sync", "ep1", ratelimit.RunSync, true},
		{"/v1/endpoints/ep1/jobs/j", "ep1", ratelimit.Status, true},
		{"/v1/endpoints/ep1/jobs/j/stream", "ep1", ratelimit.Stream, true},
		{"/v1/endpoints/ep1/jobs/j:cancel", "ep1", ratelimit.Cancel, true},
		{"/v1/endpoints/ep1/jobs/j:retry", "ep1", ratelimit.Run, true},
		{"/v1/endpoints/ep1/queue:purge", "ep1", ratelimit.PurgeQueue, true},
		// Not limited: the worker API, health, management, probes.
		{"/v2/ep1/health", "", 0, false},
		{"/v2/ep1/job-take/w", "", 0, false},
		{"/v2/ep1/job-done/w/j", "", 0, false},
		{"/v1/endpoints/ep1", "", 0, false},
		{"/v1/endpoints/ep1/stats", "", 0, false},
		{"/v1/endpoints/ep1/health", "", 0, false},
		{"/v1/endpoints", "", 0, false},
		{"/v1/keys", "", 0, false},
		{"/healthz", "", 0, false},
		{"/metrics", "", 0, false},
	} {
		method := http.MethodGet
		if strings.HasSuffix(tc.path, "run") || strings.HasSuffix(tc.path, "runsync") || strings.Contains(tc.path, ":") ||
			strings.HasSuffix(tc.path, "/jobs") || strings.HasSuffix(tc.path, "purge-queue") || strings.Contains(tc.path, "/retry/") ||
			strings.Contains(tc.path, "/openai/") || strings.Contains(tc.path, "job-done") {
			method = http.MethodPost
		}
		ep, op, ok := rateOp(method, splitPath(tc.path))
		if ep != tc.ep || op != tc.op || ok != tc.ok {
			t.Errorf("rateOp(%s) = %q, %v, %v; want %q, %v, %v", tc.path, ep, op, ok, tc.ep, tc.op, tc.ok)
		}
	}
}

// rateOp routes a request and says what it counts as (rateOf).
func rateOp(method string, segs []string) (ep string, op ratelimit.Op, ok bool) {
	rt, _ := findRoute(method, segs)
	return rt.rateOf(segs)
}

// limitedStub is limitRate in front of a handler that answers 200 at
// once, or, for a path ending in "/hold", once hold is closed: the hook on
// its own, whatever authenticates the request before it.
func limitedStub(l *ratelimit.Limiter, hold <-chan struct{}) http.Handler {
	h := New(Config{RateLimiter: l, Logger: slog.New(slog.DiscardHandler)})
	return withCaller(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		segs := splitPath(r.URL.Path)
		rt, _ := findRoute(r.Method, segs)
		release, ok := h.limitRate(w, r, rt, segs)
		if !ok {
			return
		}
		defer release()
		if strings.HasSuffix(r.URL.Path, "/hold") {
			select {
			case <-hold:
			case <-r.Context().Done():
			}
		}
		w.WriteHeader(http.StatusOK)
	}))
}

func TestRateLimitHTTP(t *testing.T) {
	srv := httptest.NewServer(limitedStub(ratelimit.New(mustLimits(t, "status=2/10s,openai=1/10s")), nil))
	defer srv.Close()
	do := func(method, path, caller string) (int, http.Header, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(`{}`))
		req.Header.Set("X-Test-Caller", caller)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, b
	}
	before := refusedCount(t, "429", auth.ReasonRate)
	status := "/v2/ep1/status/j1"
	for i := range 2 {
		if code, _, b := do("GET", status, "k-a"); code != 200 {
			t.Fatalf("status %d: %d %s", i+1, code, b)
		}
	}
	code, h, b := do("GET", status, "k-a")
	var body struct {
		Error             string
		Reason            string
		RetryAfterSeconds int
	}
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("429 body %s: %v", b, err)
	}
	// 2 per 10 s: a token every 5 s.
	if code != 429 || h.Get("Retry-After") != "5" || h.Get("Content-Type") != "application/json" || body.Reason != "rate" ||
		body.RetryAfterSeconds != 5 || !strings.Contains(body.Error, "too many status requests: at most 2 per 10s") {
		t.Errorf("3rd status: %d Retry-After %q %s", code, h.Get("Retry-After"), b)
	}
	if strings.Contains(string(b), "k-a") {
		t.Errorf("the 429 names the key: %s", b)
	}
	// The /v1 twin and status-sync share the budget.
	for _, p := range []string{"/v1/endpoints/ep1/jobs/j1", "/v2/ep1/status-sync/j1"} {
		if code, _, b := do("GET", p, "k-a"); code != 429 {
			t.Errorf("%s after /status's budget is spent: %d %s", p, code, b)
		}
	}
	// Another key, another endpoint, another operation, and routes that are
	// not limited have their own budgets.
	for _, c := range []struct{ path, caller string }{
		{status, "k-b"}, {"/v2/ep2/status/j1", "k-a"}, {"/v2/ep1/stream/j1", "k-a"}, {"/v2/ep1/health", "k-a"},
	} {
		if code, _, b := do("GET", c.path, c.caller); code != 200 {
			t.Errorf("%s as %s: %d %s", c.path, c.caller, code, b)
		}
	}
	// The OpenAI route answers in OpenAI's error shape.
	do("POST", "/v2/ep1/openai/v1/chat/completions", "k-a")
	code, h, b = do("POST", "/v2/ep1/openai/v1/chat/completions", "k-a")
	var oa struct {
		Error struct {
			Message, Type string
			Code          int
		}
		Reason            string
		RetryAfterSeconds int
	}
	if json.Unmarshal(b, &oa); code != 429 || oa.Error.Type != "rate_limit_error" || oa.Error.Code != 429 || oa.Reason != "rate" ||
		oa.RetryAfterSeconds != 10 || h.Get("Retry-After") != "10" || !strings.Contains(oa.Error.Message, "too many openai requests") {
		t.Errorf("OpenAI 429: %d %s", code, b)
	}
	if got := refusedCount(t, "429", auth.ReasonRate) - before; got != 4 {
		t.Errorf("ember_requests_refused_total{code=429,reason=rate} grew by %v, want 4", got)
	}
}

// TestRateLimitConcurrency: a request holds its slot until it ends.
func TestRateLimitConcurrency(t *testing.T) {
	hold := make(chan struct{})
	srv := httptest.NewServer(limitedStub(ratelimit.New(mustLimits(t, "stream=-:1")), hold))
	defer srv.Close()
	get := func(path string) (int, http.Header, []byte) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("X-Test-Caller", "k-a")
		resp, err := srv.Client().Do(req)
		if err != nil {
			return 0, nil, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, b
	}
	before := refusedCount(t, "429", auth.ReasonConcurrency)
	held := make(chan int)
	go func() {
		code, _, _ := get("/v2/ep1/stream/hold")
		held <- code
	}()
	var code int
	var h http.Header
	var body []byte
	for range 500 { // until the held request has its slot; bounded
		if code, h, body = get("/v2/ep1/stream/j2"); code == 429 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code != 429 || h.Get("Retry-After") != "1" || !strings.Contains(string(body), `"reason":"concurrency"`) ||
		!strings.Contains(string(body), `"retryAfterSeconds":1`) || !strings.Contains(string(body), "at most 1 in flight") {
		t.Errorf("stream while another is held: %d %s", code, body)
	}
	close(hold)
	if c := <-held; c != 200 {
		t.Errorf("the held request: %d", c)
	}
	// Its slot is free once it has ended.
	if code, _, body := get("/v2/ep1/stream/j2"); code != 200 {
		t.Errorf("stream after the held one ended: %d %s", code, body)
	}
	if got := refusedCount(t, "429", auth.ReasonConcurrency) - before; got < 1 {
		t.Errorf("ember_requests_refused_total{code=429,reason=concurrency} grew by %v", got)
	}
}

// TestMetricsRefused: /metrics shows ember_requests_refused_total with
// every code and reason, zeros included.
func TestMetricsRefused(t *testing.T) {
	srv := httptest.NewServer(metricsHandler(nil, nil, slog.New(slog.DiscardHandler)))
	defer srv.Close()
	auth.CountRefused(http.StatusForbidden, auth.ReasonScope)
	fams := scrape(t, srv.URL)
	for code, reasons := range refusalReasons {
		for _, reason := range reasons {
			series(t, fams, "ember_requests_refused_total", map[string]string{"code": strconv.Itoa(code), "reason": reason})
		}
	}
	if n := len(fams["ember_requests_refused_total"].GetMetric()); n != 8 {
		t.Errorf("%d series, want the 8 code and reason pairs", n)
	}
	if v := series(t, fams, "ember_requests_refused_total", map[string]string{"code": "403", "reason": "scope"}).GetCounter().GetValue(); v < 1 {
		t.Errorf("403 scope = %v after one", v)
	}
}

// refusedCount reads auth.Refused for code and reason.
func refusedCount(t testing.TB, code, reason string) float64 {
	t.Helper()
	var m dto.Metric
	if err := auth.Refused.WithLabelValues(code, reason).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func mustLimits(t testing.TB, s string) ratelimit.Limits {
	t.Helper()
	l, err := ratelimit.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// BenchmarkStatusPath is the whole GET /v2/{endpoint}/status/{job} handler
// (no network), without a limiter and with one that never refuses, in the
// same run: the difference is the rate limiter's cost per request.
func BenchmarkStatusPath(b *testing.B) {
	e := newRateEnv(b)
	ctx := auth.WithCaller(context.Background(), auth.Caller{KeyID: "k-bench", Name: "bench", Scope: auth.Admin})
	for _, bc := range []struct {
		name string
		l    *ratelimit.Limiter
	}{
		{"limiter=none", nil},
		{"limiter=on", ratelimit.New(mustLimits(b, "status=1000000000/10s:1000000"))},
	} {
		h := e.server(b, bc.l)
		req := httptest.NewRequestWithContext(ctx, "GET", "/v2/"+e.ep+"/status/"+e.job, nil)
		req.Header.Set("Authorization", "Bearer "+rateKey)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != 200 {
					b.Fatalf("%d %s", w.Code, w.Body)
				}
			}
		})
	}
}
