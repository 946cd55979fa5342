package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// TestJobOps checks the requests and answers of cancel, retry, purge-queue
// and health.
func TestJobOps(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v2/ep-1/cancel/{id}", reply(200, `{"id":"j-1","status":"CANCELLED","delayTime":5}`))
	mux.HandleFunc("POST /v2/ep-1/retry/{id}", reply(200, `{"id":"j-2","status":"IN_QUEUE"}`))
	mux.HandleFunc("POST /v2/ep-1/purge-queue", reply(200, `{"removed":3,"status":"completed"}`))
	mux.HandleFunc("GET /v2/ep-1/health", reply(200, `{"jobs":{"completed":2,"failed":1,"inProgress":1,"inQueue":4,"retried":0},"workers":{"idle":1,"initializing":0,"ready":1,"running":1,"throttled":0,"unhealthy":0}}`))
	mux.HandleFunc("POST /v2/ep-2/retry/{id}", reply(400, `{"error":"job j-9 is COMPLETED: only FAILED or TIMED_OUT jobs can be retried"}`))
	c, rec := serve(t, "k", mux)
	ctx := context.Background()

	st, err := c.Cancel(ctx, "ep-1", "j-1")
	if err != nil || st.Status != StatusCancelled || st.DelayTime != 5 {
		t.Errorf("Cancel = %+v, %v", st, err)
	}
	st, err = c.Retry(ctx, "ep-1", "j-2")
	if err != nil || st.Status != StatusInQueue || st.ID != "j-2" {
		t.Errorf("Retry = %+v, %v", st, err)
	}
	p, err := c.PurgeQueue(ctx, "ep-1")
	if err != nil || p.Removed != 3 || p.Status != "completed" || string(p.Raw) != `{"removed":3,"status":"completed"}` {
		t.Errorf("PurgeQueue = %+v, %v", p, err)
	}
	h, err := c.EndpointHealth(ctx, "ep-1")
	if err != nil || h.Jobs.InQueue != 4 || h.Jobs.Completed != 2 || h.Workers["running"] != 1 || len(h.Workers) != 6 {
		t.Errorf("EndpointHealth = %+v, %v", h, err)
	}
	_, err = c.Retry(ctx, "ep-2", "j-9")
	if err == nil || err.Error() != `retrying job "j-9": job j-9 is COMPLETED: only FAILED or TIMED_OUT jobs can be retried` {
		t.Errorf("Retry of a completed job: %v", err)
	}
	if _, err := c.Cancel(ctx, "ep-1", "a/b"); err != nil { // sent escaped: one path segment
		t.Errorf("Cancel with a slash in the id: %v", err)
	}
	var got []string
	for _, r := range rec.requests() {
		got = append(got, r.Method+" "+r.Path+" "+r.Auth)
	}
	want := []string{
		"POST /v2/ep-1/cancel/j-1 Bearer k",
		"POST /v2/ep-1/retry/j-2 Bearer k",
		"POST /v2/ep-1/purge-queue Bearer k",
		"GET /v2/ep-1/health Bearer k",
		"POST /v2/ep-2/retry/j-9 Bearer k",
		"POST /v2/ep-1/cancel/a%2Fb Bearer k",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestFollowStream plays a stream over several reads, an empty one among
// them, until the job ends.
func TestFollowStream(t *testing.T) {
	answers := []string{
		`{"status":"IN_QUEUE","stream":[]}`,
		`{"status":"IN_PROGRESS","stream":[{"output":"a"},{"output":{"n":1}}]}`,
		`{"status":"IN_PROGRESS","stream":[]}`,
		`{"status":"COMPLETED","stream":[{"output":[1,2]}]}`,
	}
	var mu sync.Mutex
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v2/ep/stream/j", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		a := answers[0]
		if len(answers) > 1 {
			answers = answers[1:]
		}
		mu.Unlock()
		reply(200, a)(w, r)
	})
	c, rec := serve(t, "k", mux)
	var chunks []string
	status, err := c.FollowStream(context.Background(), "ep", "j", func(ch StreamChunk) error {
		chunks = append(chunks, string(ch.Output))
		return nil
	})
	if err != nil || status != StatusCompleted {
		t.Fatalf("FollowStream = %q, %v", status, err)
	}
	if want := []string{`"a"`, `{"n":1}`, `[1,2]`}; !reflect.DeepEqual(chunks, want) {
		t.Errorf("chunks %v, want %v", chunks, want)
	}
	if n := len(rec.requests()); n != 4 {
		t.Errorf("%d requests, want 4", n)
	}

	// fn's error stops it; an unknown job is an error.
	stop := errors.New("enough")
	answers = []string{`{"status":"IN_PROGRESS","stream":[{"output":1},{"output":2}]}`}
	n := 0
	if _, err := c.FollowStream(context.Background(), "ep", "j", func(StreamChunk) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("fn error: %v after %d chunks", err, n)
	}
	if _, err := c.FollowStream(context.Background(), "ep", "nope", func(StreamChunk) error { return nil }); !IsNotFound(err) {
		t.Errorf("unknown job: %v", err)
	}
	// A context that ends stops it.
	answers = []string{`{"status":"IN_PROGRESS","stream":[]}`}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.FollowStream(ctx, "ep", "j", func(StreamChunk) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestKeysGPUsProbesStop(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/keys", reply(200, `{"id":"k-1","name":"ci","key":"ember_s3cret","scope":"invoke","endpoints":["ep-1"],"createdAt":"2025-06-03T09:00:00Z","expiresAt":"2025-07-03T09:00:00Z"}`))
	mux.HandleFunc("GET /v1/keys", reply(200, `{"keys":[]}`))
	mux.HandleFunc("POST /v1/keys:rotate-admin", reply(200, `{"key":"ember_new_admin","file":"/var/lib/ember/api.key"}`))
	mux.HandleFunc("DELETE /v1/keys/k-1", reply(200, `{"id":"k-1","name":"ci","createdAt":"2025-06-03T09:00:00Z"}`))
	mux.HandleFunc("DELETE /v1/keys/k-2", reply(404, `{"error":"no API key with id \"k-2\""}`))
	mux.HandleFunc("GET /v1/gpus", reply(200, `{"gpus":[{"index":0,"uuid":"GPU-a","name":"H100","memoryTotalBytes":85899345920,"worker":"w-1","endpointId":"ep-1","utilizationPercent":0,"memoryUsedBytes":1024,"temperatureC":40},{"index":1,"uuid":"GPU-b","name":"H100","memoryTotalBytes":85899345920,"unhealthy":"XID 79"}]}`))
	mux.HandleFunc("GET /healthz", reply(200, `{"status":"ok","uptimeSeconds":3725,"tls":{"enabled":true,"mode":"auto","caFingerprint":"ab12","certNotAfter":"2026-01-01T00:00:00Z"},"insecureListen":true}`))
	mux.HandleFunc("GET /readyz", reply(503, `{"error":"recovering","status":"unavailable"}`))
	mux.HandleFunc("POST /v1/workers/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != "w-1:stop" {
			reply(404, `{"error":"worker not found"}`)(w, r)
			return
		}
		reply(200, `{"id":"w-1","endpointId":"ep-1","state":"draining","jobs":["j-1"]}`)(w, r)
	})
	c, rec := serve(t, "k", mux)
	ctx := context.Background()

	k, err := c.CreateKey(ctx, KeySpec{Name: "ci", Scope: ScopeInvoke, Endpoints: []string{"echo"}, ExpiresIn: "30d"})
	if err != nil || k.ID != "k-1" || k.Key != "ember_s3cret" || k.Name != "ci" || k.Scope != "invoke" ||
		!reflect.DeepEqual(k.Endpoints, []string{"ep-1"}) || k.ExpiresAt != "2025-07-03T09:00:00Z" || !json.Valid(k.Raw) {
		t.Errorf("CreateKey = %+v, %v", k, err)
	}
	if got, want := rec.requests()[0].Body, `{"name":"ci","scope":"invoke","endpoints":["echo"],"expiresIn":"30d"}`; got != want {
		t.Errorf("CreateKey sent %s, want %s", got, want)
	}
	if _, err := c.CreateKey(ctx, KeySpec{Name: "r", Scope: ScopeRead}); err != nil {
		t.Fatal(err)
	}
	if got, want := rec.requests()[1].Body, `{"name":"r","scope":"read"}`; got != want {
		t.Errorf("CreateKey sent %s, want %s", got, want)
	}
	rk, err := c.RotateAdminKey(ctx)
	if err != nil || rk.Key != "ember_new_admin" || rk.File != "/var/lib/ember/api.key" {
		t.Errorf("RotateAdminKey = %+v, %v", rk, err)
	}
	ks, err := c.ListKeys(ctx)
	if err != nil || ks == nil || len(ks) != 0 {
		t.Errorf("ListKeys = %#v, %v", ks, err)
	}
	if k, err := c.RevokeKey(ctx, "k-1"); err != nil || k.Name != "ci" || k.Key != "" {
		t.Errorf("RevokeKey = %+v, %v", k, err)
	}
	if _, err := c.RevokeKey(ctx, "k-2"); !IsNotFound(err) {
		t.Errorf("RevokeKey unknown: %v", err)
	}
	gs, err := c.ListGPUs(ctx)
	if err != nil || len(gs) != 2 || gs[0].UtilizationPercent == nil || *gs[0].UtilizationPercent != 0 || *gs[0].MemoryUsedBytes != 1024 ||
		gs[0].Worker != "w-1" || gs[1].UtilizationPercent != nil || gs[1].Unhealthy != "XID 79" || gs[1].MemoryTotalBytes != 80<<30 {
		t.Errorf("ListGPUs = %+v, %v", gs, err)
	}
	l, err := c.Healthz(ctx)
	if err != nil || l.Status != "ok" || l.UptimeSeconds != 3725 || !l.InsecureListen ||
		l.TLS == nil || *l.TLS != (ServerTLS{Enabled: true, Mode: "auto", CAFingerprint: "ab12", CertNotAfter: "2026-01-01T00:00:00Z"}) {
		t.Errorf("Healthz = %+v, %v", l, err)
	}
	var nr *NotReadyError
	if err := c.Readyz(ctx); !errors.As(err, &nr) || nr.Reason != "recovering" || err.Error() != "emberd is not ready: recovering" {
		t.Errorf("Readyz = %v", err)
	}
	w, err := c.StopWorker(ctx, "w-1")
	if err != nil || w.State != "draining" || w.EndpointID != "ep-1" {
		t.Errorf("StopWorker = %+v, %v", w, err)
	}
	if _, err := c.StopWorker(ctx, "w-2"); !IsNotFound(err) {
		t.Errorf("StopWorker unknown: %v", err)
	}
}
