package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/daemon/ratelimit"
	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/scheduler"
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
	ep, err := s.CreateEndpoint(context.Background(), scheduler.EndpointSpec{Name: &name, Command: &cmd, WorkersMax: &one, GPUCount: &zero})
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Submit(context.Background(), ep.ID, scheduler.Submission{Input: json.RawMessage(`{"n":1}`)})
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
		ep, op, ok := rateOp(splitPath(tc.path))
		if ep != tc.ep || op != tc.op || ok != tc.ok {
			t.Errorf("rateOp(%s) = %q, %v, %v; want %q, %v, %v", tc.path, ep, op, ok, tc.ep, tc.op, tc.ok)
		}
	}
}

func TestRateLimitHTTP(t *testing.T) {
	e := newRateEnv(t)
	l := ratelimit.New(mustLimits(t, "status=2/10s,openai=1/10s"))
	srv := httptest.NewServer(withCaller(e.server(t, l)))
	defer srv.Close()
	do := func(method, path, caller, key string) (int, http.Header, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(`{}`))
		if caller != "" {
			req.Header.Set("X-Test-Caller", caller)
		}
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, b
	}
	before := refusedCount(t, "429", auth.ReasonRate)
	status := "/v2/" + e.ep + "/status/" + e.job
	for i := range 2 {
		if code, _, b := do("GET", status, "k-a", rateKey); code != 200 {
			t.Fatalf("status %d: %d %s", i+1, code, b)
		}
	}
	code, h, b := do("GET", status, "k-a", rateKey)
	var body struct {
		Error             string
		Reason            string
		RetryAfterSeconds int
	}
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("429 body %s: %v", b, err)
	}
	// 2 per 10 s: a token every 5 s.
	if code != 429 || h.Get("Retry-After") != "5" || body.Reason != "rate" || body.RetryAfterSeconds != 5 ||
		!strings.Contains(body.Error, "too many status requests: at most 2 per 10s") {
		t.Errorf("3rd status: %d Retry-After %q %s", code, h.Get("Retry-After"), b)
	}
	if strings.Contains(string(b), rateKey) || strings.Contains(string(b), "k-a") {
		t.Errorf("the 429 names the key: %s", b)
	}
	// The /v1 twin shares the budget (no gateway here: 429 comes first).
	if code, _, b := do("GET", "/v1/endpoints/"+e.ep+"/jobs/"+e.job, "k-a", rateKey); code != 429 {
		t.Errorf("/v1 status after /v2's budget is spent: %d %s", code, b)
	}
	// Another key has its own budget.
	if code, _, b := do("GET", status, "k-b", rateKey); code != 200 {
		t.Errorf("another key: %d %s", code, b)
	}
	// Without a caller in the context: a wrong key is still 401, and
	// spends nothing; a valid one is limited as "unauthenticated".
	for range 3 {
		if code, _, _ := do("GET", status, "", "wrong"); code != 401 {
			t.Errorf("wrong key: %d, want 401", code)
		}
	}
	for i := range 3 {
		code, _, _ := do("GET", status, "", rateKey)
		if (code == 200) != (i < 2) {
			t.Errorf("admin key without a caller, request %d: %d", i+1, code)
		}
	}
	// The OpenAI route answers in OpenAI's error shape.
	// The first spends the budget: a job nobody answers, given up on.
	first, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	req, _ := http.NewRequestWithContext(first, "POST", srv.URL+"/v2/"+e.ep+"/openai/v1/models", nil)
	req.Header.Set("X-Test-Caller", "k-a")
	req.Header.Set("Authorization", rateKey)
	if resp, err := srv.Client().Do(req); err == nil {
		resp.Body.Close()
	}
	cancel()
	code, h, b = do("POST", "/v2/"+e.ep+"/openai/v1/models", "k-a", rateKey)
	var oa struct {
		Error struct {
			Message, Type string
			Code          int
		}
		Reason            string
		RetryAfterSeconds int
	}
	if json.Unmarshal(b, &oa); code != 429 || oa.Error.Type != "rate_limit_error" || oa.Error.Code != 429 || oa.Reason != "rate" ||
		oa.RetryAfterSeconds != 10 || h.Get("Retry-After") != "10" {
		t.Errorf("OpenAI 429: %d %s", code, b)
	}
	if got := refusedCount(t, "429", auth.ReasonRate) - before; got != 4 {
		t.Errorf("ember_requests_refused_total{code=429,reason=rate} grew by %v, want 4", got)
	}

	// /metrics shows the counter, every reason included.
	fams := scrape(t, srv.URL)
	if series(t, fams, "ember_requests_refused_total", map[string]string{"code": "429", "reason": "rate"}).GetCounter().GetValue() < 4 {
		t.Error("/metrics: the 429s are not counted")
	}
	series(t, fams, "ember_requests_refused_total", map[string]string{"code": "401", "reason": "expired"})
	series(t, fams, "ember_requests_refused_total", map[string]string{"code": "429", "reason": "concurrency"})
}

// TestRateLimitConcurrency: a request holds its slot until it ends; a
// status-sync long-poll shows it.
func TestRateLimitConcurrency(t *testing.T) {
	e := newRateEnv(t)
	l := ratelimit.New(mustLimits(t, "status=-:1"))
	srv := httptest.NewServer(withCaller(e.server(t, l)))
	defer srv.Close()
	get := func(ctx context.Context, path string) (int, []byte) {
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+path, nil)
		req.Header.Set("X-Test-Caller", "k-a")
		req.Header.Set("Authorization", rateKey)
		resp, err := srv.Client().Do(req)
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		get(ctx, "/v2/"+e.ep+"/status-sync/"+e.job+"?wait=20000")
	}()
	var code int
	var body []byte
	for range 200 {
		if code, body = get(context.Background(), "/v2/"+e.ep+"/status/"+e.job); code == 429 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code != 429 || !strings.Contains(string(body), `"reason":"concurrency"`) || !strings.Contains(string(body), `"retryAfterSeconds":1`) {
		t.Errorf("status while a status-sync is held: %d %s", code, body)
	}
	cancel()
	<-done
	// The slot is freed when the held request ends.
	deadline := time.Now().Add(5 * time.Second)
	for code, _ = get(context.Background(), "/v2/"+e.ep+"/status/"+e.job); code != 200 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		code, _ = get(context.Background(), "/v2/"+e.ep+"/status/"+e.job)
	}
	if code != 200 {
		t.Errorf("status after the long-poll ended: %d", code)
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
