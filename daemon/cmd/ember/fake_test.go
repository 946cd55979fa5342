package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/emberhq/ember/daemon/client"
)

const testKey = "test-key"

// fakeDaemon is a stand-in emberd on loopback HTTP. It keeps endpoints as raw
// JSON so that golden files show exactly what a daemon sends, and plays each
// job through a scripted list of statuses, one per runsync or status-sync
// request.
type fakeDaemon struct {
	addr string

	mu        sync.Mutex
	endpoints []json.RawMessage
	script    []string // statuses for the next job, as JSON objects
	jobs      map[string][]string
	nextID    int
	reqs      []fakeRequest
}

type fakeRequest struct {
	Method, Path, Query, Auth, Body string
}

// seedEndpoints mimic what emberd sends through grpc-gateway: protojson
// field order, camelCase names, defaults filled in. One executionTimeoutMs is
// a string, as protojson would write it if the field became int64.
var seedEndpoints = []string{
	`{"id":"ep-b2","name":"sdxl","command":["python","-u","handler.py","--model","sd xl"],"workersMin":1,"workersMax":2,"idleTimeout":300,"executionTimeoutMs":600000,"scalerType":"REQUEST_COUNT","scalerValue":2,"gpuCount":1,"gpuTypes":["NVIDIA H100 80GB HBM3","NVIDIA A100-SXM4-80GB"],"createdAt":"2025-06-01T12:00:00Z","updatedAt":"2025-06-01T12:00:00Z"}`,
	`{"id":"ep-a1","name":"echo","image":"ghcr.io/acme/echo:1","env":{"LOG_LEVEL":"debug"},"workersMax":3,"idleTimeout":5,"executionTimeoutMs":600000,"scalerType":"QUEUE_DELAY","scalerValue":4,"gpuCount":0,"createdAt":"2025-06-01T12:00:00Z","updatedAt":"2025-06-01T12:00:00Z"}`,
	`{"id":"ep-c3","name":"llm","image":"vllm/vllm-openai:v0.6","command":["python","-m","worker"],"workersMin":0,"workersMax":8,"idleTimeout":3600,"executionTimeoutMs":"1800000","scalerType":"QUEUE_DELAY","scalerValue":4,"gpuCount":2,"createdAt":"2025-06-01T12:00:00Z","updatedAt":"2025-06-02T08:30:00Z"}`,
}

func newFakeDaemon(t *testing.T, endpoints ...string) *fakeDaemon {
	t.Helper()
	fd := &fakeDaemon{jobs: map[string][]string{}}
	for _, e := range endpoints {
		fd.endpoints = append(fd.endpoints, json.RawMessage(e))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, _ *http.Request) {
		send(w, 200, `{"status":"SERVING","version":"0.1.0-test"}`)
	})
	mux.HandleFunc("GET /v1/endpoints", fd.list)
	mux.HandleFunc("POST /v1/endpoints", fd.create)
	mux.HandleFunc("GET /v1/endpoints/{id}", fd.get)
	mux.HandleFunc("DELETE /v1/endpoints/{id}", fd.delete)
	mux.HandleFunc("POST /v2/{ep}/runsync", fd.runsync)
	mux.HandleFunc("GET /v2/{ep}/status-sync/{job}", fd.statusSync)
	mux.HandleFunc("GET /v2/{ep}/status/{job}", fd.status)
	srv := httptest.NewServer(fd.authAndRecord(mux))
	t.Cleanup(srv.Close)
	fd.addr = strings.TrimPrefix(srv.URL, "http://")
	return fd
}

func send(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	io.WriteString(w, body)
}

// authAndRecord logs every request and rejects a wrong key the way each API
// family does: grpc-gateway style on /v1, RunPod style on /v2.
func (fd *fakeDaemon) authAndRecord(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		auth := r.Header.Get("Authorization")
		fd.mu.Lock()
		fd.reqs = append(fd.reqs, fakeRequest{r.Method, r.URL.Path, r.URL.RawQuery, auth, string(body)})
		fd.mu.Unlock()
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		if auth != "Bearer "+testKey {
			if strings.HasPrefix(r.URL.Path, "/v2/") {
				send(w, 401, `{"error":"invalid API key"}`)
			} else {
				send(w, 401, `{"code":16,"message":"invalid API key","details":[]}`)
			}
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (fd *fakeDaemon) requests() []fakeRequest {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	return append([]fakeRequest(nil), fd.reqs...)
}

// setScript sets the statuses the next job goes through.
func (fd *fakeDaemon) setScript(statuses ...string) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	fd.script = statuses
}

func (fd *fakeDaemon) find(id string) (int, bool) {
	for i, raw := range fd.endpoints {
		var e client.Endpoint
		if err := json.Unmarshal(raw, &e); err == nil && e.ID == id {
			return i, true
		}
	}
	return 0, false
}

func notFound(w http.ResponseWriter, id string) {
	send(w, 404, fmt.Sprintf(`{"code":5,"message":"endpoint %q not found","details":[]}`, id))
}

func (fd *fakeDaemon) list(w http.ResponseWriter, _ *http.Request) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	if len(fd.endpoints) == 0 {
		send(w, 200, `{}`) // protojson leaves out empty repeated fields
		return
	}
	b, _ := json.Marshal(map[string]any{"endpoints": fd.endpoints})
	send(w, 200, string(b))
}

func (fd *fakeDaemon) get(w http.ResponseWriter, r *http.Request) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	i, ok := fd.find(r.PathValue("id"))
	if !ok {
		notFound(w, r.PathValue("id"))
		return
	}
	send(w, 200, string(fd.endpoints[i]))
}

func (fd *fakeDaemon) delete(w http.ResponseWriter, r *http.Request) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	i, ok := fd.find(r.PathValue("id"))
	if !ok {
		notFound(w, r.PathValue("id"))
		return
	}
	fd.endpoints = append(fd.endpoints[:i], fd.endpoints[i+1:]...)
	send(w, 200, `{}`)
}

// create applies server defaults to the fields the request left out, which
// is what lets tests check that ember sends only what was set.
func (fd *fakeDaemon) create(w http.ResponseWriter, r *http.Request) {
	var in map[string]any
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		send(w, 400, fmt.Sprintf(`{"code":3,"message":%q,"details":[]}`, err.Error()))
		return
	}
	if in["name"] == nil || in["name"] == "" {
		send(w, 400, `{"code":3,"message":"name is required","details":[]}`)
		return
	}
	fd.mu.Lock()
	defer fd.mu.Unlock()
	fd.nextID++
	ep := map[string]any{
		"workersMin": 0, "workersMax": 3, "idleTimeout": 5, "executionTimeoutMs": 600000,
		"scalerType": "QUEUE_DELAY", "scalerValue": 4, "gpuCount": 1,
	}
	for k, v := range in {
		ep[k] = v
	}
	ep["id"] = fmt.Sprintf("ep-new%d", fd.nextID)
	ep["createdAt"] = "2025-06-03T09:00:00Z"
	ep["updatedAt"] = "2025-06-03T09:00:00Z"
	b, _ := json.Marshal(ep)
	fd.endpoints = append(fd.endpoints, b)
	send(w, 200, string(b))
}

func (fd *fakeDaemon) runsync(w http.ResponseWriter, r *http.Request) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	if _, ok := fd.find(r.PathValue("ep")); !ok {
		send(w, 404, `{"error":"endpoint not found"}`)
		return
	}
	if len(fd.script) == 0 {
		send(w, 500, `{"error":"test has no job script"}`)
		return
	}
	id := fmt.Sprintf("job-%d", len(fd.jobs)+1)
	fd.jobs[id] = fd.script
	fd.script = nil
	send(w, 200, fd.advance(id))
}

// advance answers with the job's current status and moves it on, staying on
// the last one.
func (fd *fakeDaemon) advance(id string) string {
	states := fd.jobs[id]
	cur := states[0]
	if len(states) > 1 {
		fd.jobs[id] = states[1:]
	}
	return fmt.Sprintf(`{"id":%q,%s`, id, strings.TrimPrefix(cur, "{"))
}

func (fd *fakeDaemon) statusSync(w http.ResponseWriter, r *http.Request) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	if _, ok := fd.jobs[r.PathValue("job")]; !ok {
		send(w, 404, `{"error":"job not found"}`)
		return
	}
	send(w, 200, fd.advance(r.PathValue("job")))
}

// status reports without advancing, as a plain status read would.
func (fd *fakeDaemon) status(w http.ResponseWriter, r *http.Request) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	states, ok := fd.jobs[r.PathValue("job")]
	if !ok {
		send(w, 404, `{"error":"job not found"}`)
		return
	}
	send(w, 200, fmt.Sprintf(`{"id":%q,%s`, r.PathValue("job"), strings.TrimPrefix(states[0], "{")))
}

// addJob registers a job whose status reads return the given state.
func (fd *fakeDaemon) addJob(id, state string) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	fd.jobs[id] = []string{state}
}
