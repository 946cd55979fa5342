package main

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/emberhq/ember/daemon/client"
	"github.com/emberhq/ember/daemon/templates"
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
	images    []json.RawMessage
	inUse     map[string]string // image ref -> endpoint names using it

	// ops_test.go: streams, GPUs, keys and probes.
	streams  map[string][]string // job -> /stream answers, in order
	gpus     []string            // GET /v1/gpus entries
	keys     []fakeKey
	notReady string // /readyz answers 503 with it when set

	// tls_test.go: the admin key (rotate-admin changes it) and the TLS
	// fields /healthz reports.
	adminKey   string
	healthzTLS string

	// template_test.go: a real template store.
	templates *templates.Store
}

type fakeRequest struct {
	Method, Path, Query, Auth, Body string
	// Length is the request's Content-Length, -1 for a chunked body.
	Length int64
}

// seedEndpoints mimic what emberd sends through grpc-gateway: protojson
// field order, camelCase names, defaults filled in. One executionTimeoutMs is
// a string, as protojson would write it if the field became int64. Only
// sdxl has the fields added later (initTimeout...), as from a newer daemon.
var seedEndpoints = []string{
	`{"id":"ep-b2","name":"sdxl","command":["python","-u","handler.py","--model","sd xl"],"workersMin":1,"workersMax":2,"idleTimeout":300,"executionTimeoutMs":600000,"scalerType":"REQUEST_COUNT","scalerValue":2,"gpuCount":1,"gpuTypes":["NVIDIA H100 80GB HBM3","NVIDIA A100-SXM4-80GB"],"memoryMb":32768,"cpus":4,"pidsLimit":4096,"network":"host","initTimeout":900,"flashboot":true,"flashbootWindow":600,"maxAttempts":5,"gpuMemoryMb":40000,"generation":"3","init":true,"gpuPark":"idle","gpuParkDelay":120,"createdAt":"2025-06-01T12:00:00Z","updatedAt":"2025-06-01T12:00:00Z"}`,
	`{"id":"ep-a1","name":"echo","image":"ghcr.io/acme/echo:1","env":{"LOG_LEVEL":"debug"},"workersMax":3,"idleTimeout":5,"executionTimeoutMs":600000,"scalerType":"QUEUE_DELAY","scalerValue":4,"gpuCount":0,"createdAt":"2025-06-01T12:00:00Z","updatedAt":"2025-06-01T12:00:00Z"}`,
	`{"id":"ep-c3","name":"llm","image":"vllm/vllm-openai:v0.6","command":["python","-m","worker"],"workersMin":0,"workersMax":8,"idleTimeout":3600,"executionTimeoutMs":"1800000","scalerType":"QUEUE_DELAY","scalerValue":4,"gpuCount":2,"createdAt":"2025-06-01T12:00:00Z","updatedAt":"2025-06-02T08:30:00Z"}`,
}

func newFakeDaemon(t *testing.T, endpoints ...string) *fakeDaemon {
	t.Helper()
	return startFakeDaemon(t, nil, endpoints...)
}

// startFakeDaemon starts the fake on plain HTTP, or on TLS with cert when
// it is not nil.
func startFakeDaemon(t *testing.T, cert *tls.Certificate, endpoints ...string) *fakeDaemon {
	t.Helper()
	fd := &fakeDaemon{jobs: map[string][]string{}, inUse: map[string]string{}, streams: map[string][]string{}, gpus: seedGPUs,
		adminKey: testKey, healthzTLS: plainHealthzTLS}
	for _, img := range seedImages {
		fd.images = append(fd.images, json.RawMessage(img))
	}
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
	mux.HandleFunc("PATCH /v1/endpoints/{id}", fd.patch)
	mux.HandleFunc("GET /v1/endpoints/{id}/stats", fd.stats)
	mux.HandleFunc("DELETE /v1/endpoints/{id}", fd.delete)
	mux.HandleFunc("GET /v1/images", fd.listImages)
	mux.HandleFunc("GET /v1/images/{ref...}", fd.getImage)
	mux.HandleFunc("DELETE /v1/images/{ref...}", fd.deleteImage)
	mux.HandleFunc("POST /v1/images:upload", fd.upload)
	mux.HandleFunc("POST /v1/images:pull", fd.pull) // image_test.go
	mux.HandleFunc("GET /v1/workers", fd.listWorkers)
	mux.HandleFunc("GET /v1/workers/{id}/logs", fd.workerLogs)
	mux.HandleFunc("GET /v1/endpoints/{id}/logs", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "w-3f2a9c1b7e04 | worker started\n")
	})
	mux.HandleFunc("POST /v1/workers/{idop}", fd.stopWorker) // {id}:stop
	mux.HandleFunc("GET /v1/gpus", fd.listGPUs)
	mux.HandleFunc("GET /v1/keys", fd.listKeys)
	mux.HandleFunc("POST /v1/keys", fd.createKey)
	mux.HandleFunc("DELETE /v1/keys/{id}", fd.revokeKey)
	mux.HandleFunc("POST /v1/keys:rotate-admin", fd.rotateAdmin)
	fd.templateRoutes(t, mux) // template_test.go
	mux.HandleFunc("GET /healthz", fd.healthz)
	mux.HandleFunc("GET /readyz", fd.readyz)
	mux.HandleFunc("POST /v2/{ep}/runsync", fd.runsync)
	mux.HandleFunc("POST /v2/{ep}/run", fd.runsync) // the same: answers with the script's first status
	mux.HandleFunc("GET /v2/{ep}/status-sync/{job}", fd.statusSync)
	mux.HandleFunc("GET /v2/{ep}/status/{job}", fd.status)
	mux.HandleFunc("GET /v2/{ep}/stream/{job}", fd.stream)
	mux.HandleFunc("POST /v2/{ep}/cancel/{job}", fd.cancel)
	mux.HandleFunc("POST /v2/{ep}/retry/{job}", fd.retry)
	mux.HandleFunc("POST /v2/{ep}/purge-queue", fd.purge)
	mux.HandleFunc("GET /v2/{ep}/health", fd.endpointHealth)
	srv := httptest.NewUnstartedServer(fd.authAndRecord(mux))
	if cert != nil {
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}}
		srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are what tests try
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	fd.addr = srv.Listener.Addr().String()
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
		fd.reqs = append(fd.reqs, fakeRequest{r.Method, r.URL.Path, r.URL.RawQuery, auth, string(body), r.ContentLength})
		fd.mu.Unlock()
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		probe := r.URL.Path == "/healthz" || r.URL.Path == "/readyz" // no key, as emberd
		if k := fd.expiredKey(strings.TrimPrefix(auth, "Bearer ")); k != nil && !probe {
			b, _ := json.Marshal(map[string]string{"error": fmt.Sprintf("API key %s (%s) expired at %s", k.id, k.name, k.expiresAt),
				"reason": "expired", "expiresAt": k.expiresAt, "keyId": k.id})
			send(w, 401, string(b))
			return
		}
		if !probe && !fd.validKey(strings.TrimPrefix(auth, "Bearer ")) {
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
		"initTimeout": 420, "flashboot": false, "flashbootWindow": 300, "maxAttempts": 0, "gpuMemoryMb": 0, "generation": "1", "init": true,
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

// patch sets the fields the request names, as the gateway derives the
// update mask from the body's keys.
func (fd *fakeDaemon) patch(w http.ResponseWriter, r *http.Request) {
	var in map[string]any
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		send(w, 400, fmt.Sprintf(`{"code":3,"message":%q,"details":[]}`, err.Error()))
		return
	}
	fd.mu.Lock()
	defer fd.mu.Unlock()
	i, ok := fd.find(r.PathValue("id"))
	if !ok {
		notFound(w, r.PathValue("id"))
		return
	}
	var ep map[string]any
	json.Unmarshal(fd.endpoints[i], &ep)
	for k, v := range in {
		ep[k] = v
	}
	ep["updatedAt"] = "2025-06-03T09:30:00Z"
	b, _ := json.Marshal(ep)
	fd.endpoints[i] = b
	send(w, 200, string(b))
}

// seedStats mimic GetEndpointStats through grpc-gateway: EmitUnpopulated,
// int64 counters as strings. Endpoints not listed answer with zeros.
var seedStats = map[string]string{
	"ep-b2": `{"endpointId":"ep-b2","name":"sdxl","inQueue":3,"inProgress":2,` +
		`"finished":{"CANCELLED":"2","COMPLETED":"1520","FAILED":"4","TIMED_OUT":"1"},"retried":"3",` +
		`"workers":{"draining":0,"frozen":0,"idle":0,"initializing":0,"parked":1,"running":2,"throttled":1,"unhealthy":0},` +
		`"delay":{"count":"1527","sumSeconds":412.5,"p50Seconds":0.0124,"p90Seconds":0.0481,"p99Seconds":2.3105},` +
		`"execution":{"count":"1524","sumSeconds":6120.2,"p50Seconds":3.402,"p90Seconds":6.8,"p99Seconds":14.25},` +
		`"coldStart":{"count":"4","sumSeconds":182.4,"p50Seconds":41.2,"p90Seconds":52.7,"p99Seconds":52.7},` +
		`"revival":{"count":"9","sumSeconds":0.81,"p50Seconds":0.0853,"p90Seconds":0.1204,"p99Seconds":0.1204},` +
		`"workersStarted":"4","workersRevived":"9","workersFrozen":"11","workersReclaimed":"1",` +
		`"workersParked":"2","park":{"count":"2","sumSeconds":6.6,"p50Seconds":3.26,"p90Seconds":3.34,"p99Seconds":3.34},"parkedBytes":"4294967296"}`,
	"ep-a1": `{"endpointId":"ep-a1","name":"echo","inQueue":0,"inProgress":0,` +
		`"finished":{"CANCELLED":"0","COMPLETED":"37","FAILED":"0","TIMED_OUT":"0"},"retried":"0",` +
		`"workers":{"draining":0,"frozen":0,"idle":1,"initializing":0,"running":0,"throttled":0,"unhealthy":0},` +
		`"delay":{"count":"37","sumSeconds":0.0148,"p50Seconds":0.0003,"p90Seconds":0.0006,"p99Seconds":0.0021},` +
		`"execution":{"count":"37","sumSeconds":0.074,"p50Seconds":0.002,"p90Seconds":0.0025,"p99Seconds":0.0031},` +
		`"coldStart":{"count":"1","sumSeconds":0.35,"p50Seconds":0.35,"p90Seconds":0.35,"p99Seconds":0.35},` +
		`"revival":{"count":"0","sumSeconds":0,"p50Seconds":0,"p90Seconds":0,"p99Seconds":0},` +
		`"workersStarted":"1","workersRevived":"0","workersFrozen":"0","workersReclaimed":"0"}`,
}

const zeroStats = `{"endpointId":%q,"name":%q,"inQueue":0,"inProgress":0,` +
	`"finished":{"CANCELLED":"0","COMPLETED":"0","FAILED":"0","TIMED_OUT":"0"},"retried":"0",` +
	`"workers":{"draining":0,"frozen":0,"idle":0,"initializing":0,"running":0,"throttled":0,"unhealthy":0},` +
	`"delay":{"count":"0","sumSeconds":0,"p50Seconds":0,"p90Seconds":0,"p99Seconds":0},` +
	`"execution":{"count":"0","sumSeconds":0,"p50Seconds":0,"p90Seconds":0,"p99Seconds":0},` +
	`"coldStart":{"count":"0","sumSeconds":0,"p50Seconds":0,"p90Seconds":0,"p99Seconds":0},` +
	`"revival":{"count":"0","sumSeconds":0,"p50Seconds":0,"p90Seconds":0,"p99Seconds":0},` +
	`"workersStarted":"0","workersRevived":"0","workersFrozen":"0","workersReclaimed":"0"}`

func (fd *fakeDaemon) stats(w http.ResponseWriter, r *http.Request) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	id := r.PathValue("id")
	i, ok := fd.find(id)
	if !ok {
		notFound(w, id)
		return
	}
	if st, ok := seedStats[id]; ok {
		send(w, 200, st)
		return
	}
	var e client.Endpoint
	json.Unmarshal(fd.endpoints[i], &e)
	send(w, 200, fmt.Sprintf(zeroStats, e.ID, e.Name))
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

// seedImages mimic emberd's Image JSON: protojson with EmitUnpopulated, so
// int64 sizes are strings and every field is present. The second image lost
// its name to a later import.
var seedImages = []string{
	`{"id":"sha256:a0f53bf881a1181feac10d1029c92af5e2c9fcfbd41af630726c63f4add1e030","names":["echo:latest","ghcr.io/acme/echo:1"],"digest":"sha256:e404a4decfa0566ef36b66826ec3c0c9e96226b63b98737150714b4d06292bf4","size":"3072","layers":["sha256:21966f6a10e73801b971eb9d355ca84fd52fa46198957e6e4bba70802e96bb2b"],"created":"2025-06-01T12:00:00Z","imported":"2025-06-03T09:00:00.123456Z","config":{"entrypoint":["/worker"],"cmd":["--serve","--name","hello world"],"env":["PATH=/bin","MODE=echo"],"workingDir":"/srv","user":"65534:65534"}}`,
	`{"id":"sha256:77aa0c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f","names":[],"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":"7864320000","layers":["sha256:2222222222222222222222222222222222222222222222222222222222222222","sha256:3333333333333333333333333333333333333333333333333333333333333333"],"created":null,"imported":"2025-05-30T18:45:10Z","config":{"entrypoint":[],"cmd":["python","-m","worker"],"env":[],"workingDir":"","user":""}}`,
}

// uploadedImage is what the fake answers an upload with, NAME replaced by
// the image's name.
const uploadedImage = `{"id":"sha256:5c1e7b3a9d2f4e6a8b0c1d3e5f7a9b2c4d6e8f0a1b3c5d7e9f1a2b4c6d8e0f1a","names":["NAME"],"digest":"sha256:4444444444444444444444444444444444444444444444444444444444444444","size":"2048","layers":["sha256:5555555555555555555555555555555555555555555555555555555555555555"],"created":"2025-06-02T10:00:00Z","imported":"2025-06-03T09:00:00Z","config":{"entrypoint":["/worker"],"cmd":[],"env":[],"workingDir":"/","user":""}}`

// imageError answers like grpc-gateway does for an ImageService error.
func imageError(w http.ResponseWriter, httpCode, grpcCode int, msg string) {
	b, _ := json.Marshal(map[string]any{"code": grpcCode, "message": msg, "details": []any{}})
	send(w, httpCode, string(b))
}

func (fd *fakeDaemon) findImage(ref string) (int, bool) {
	for i, raw := range fd.images {
		var img client.Image
		if json.Unmarshal(raw, &img) != nil {
			continue
		}
		if img.ID == ref || img.Digest == ref || strings.HasPrefix(strings.TrimPrefix(img.ID, "sha256:"), ref) && len(ref) >= 12 {
			return i, true
		}
		for _, n := range img.Names {
			if n == ref {
				return i, true
			}
		}
	}
	return 0, false
}

func (fd *fakeDaemon) listImages(w http.ResponseWriter, _ *http.Request) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	b, _ := json.Marshal(map[string]any{"images": append([]json.RawMessage{}, fd.images...)})
	send(w, 200, string(b))
}

func (fd *fakeDaemon) getImage(w http.ResponseWriter, r *http.Request) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	i, ok := fd.findImage(r.PathValue("ref"))
	if !ok {
		imageError(w, 404, 5, fmt.Sprintf("image %q: image not found", r.PathValue("ref")))
		return
	}
	send(w, 200, string(fd.images[i]))
}

func (fd *fakeDaemon) deleteImage(w http.ResponseWriter, r *http.Request) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	ref := r.PathValue("ref")
	i, ok := fd.findImage(ref)
	if !ok {
		imageError(w, 404, 5, fmt.Sprintf("image %q: image not found", ref))
		return
	}
	if eps := fd.inUse[ref]; eps != "" {
		imageError(w, 409, 9, fmt.Sprintf("image %s is in use by endpoint(s) %s: delete them or change their image first", ref, eps))
		return
	}
	var img client.Image
	json.Unmarshal(fd.images[i], &img)
	if len(img.Names) > 1 && !strings.HasPrefix(ref, "sha256:") {
		send(w, 200, `{"layersRemoved":0,"bytesFreed":"0"}`)
		return
	}
	fd.images = append(fd.images[:i], fd.images[i+1:]...)
	send(w, 200, fmt.Sprintf(`{"layersRemoved":%d,"bytesFreed":"%d"}`, len(img.Layers), img.Size+1234))
}

// upload answers like emberd's upload route: the image, or {"error"}. An
// archive without "ref.name" in it needs ?name=.
func (fd *fakeDaemon) upload(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	name := r.URL.Query().Get("name")
	if name == "" {
		if !strings.Contains(string(body), "org.opencontainers.image.ref.name") {
			send(w, 400, `{"error":"importing uploaded archive: image name required: the archive does not name the image (no RepoTags or org.opencontainers.image.ref.name annotation); give a name to import it under"}`)
			return
		}
		name = "ghcr.io/acme/uploaded:1"
	}
	img := strings.Replace(uploadedImage, "NAME", name, 1)
	fd.mu.Lock()
	fd.images = append(fd.images, json.RawMessage(img))
	fd.mu.Unlock()
	send(w, 200, img)
}
