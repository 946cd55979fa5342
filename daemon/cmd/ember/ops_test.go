package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/daemon/client"
)

// The fake daemon's side of "ember job stream|cancel|retry|purge",
// "ember worker stop", "ember gpu", "ember key" and "ember status".

// seedGPUs mimic GET /v1/gpus: a GPU held by sdxl's worker, a free one, and
// one taken out of placement whose readings fail.
var seedGPUs = []string{
	`{"index":0,"uuid":"GPU-5f1c2d3e-aaaa-bbbb-cccc-000000000000","name":"NVIDIA H100 80GB HBM3","memoryTotalBytes":85520809984,"worker":"w-b81d04e6a2c7","endpointId":"ep-b2","utilizationPercent":97,"memoryUsedBytes":74088185856,"temperatureC":71}`,
	`{"index":1,"uuid":"GPU-5f1c2d3e-aaaa-bbbb-cccc-000000000001","name":"NVIDIA H100 80GB HBM3","memoryTotalBytes":85520809984,"utilizationPercent":0,"memoryUsedBytes":4194304,"temperatureC":33}`,
	`{"index":2,"uuid":"GPU-5f1c2d3e-aaaa-bbbb-cccc-000000000002","name":"NVIDIA H100 80GB HBM3","memoryTotalBytes":85520809984,"unhealthy":"XID 79: GPU has fallen off the bus","statsError":"gpu GPU-5f1c2d3e-aaaa-bbbb-cccc-000000000002: NVML handle: GPU is lost"}`,
}

// seedHealth mimic /v2/{ep}/health; endpoints not listed answer zeros.
var seedHealth = map[string]string{
	"ep-b2": `{"jobs":{"completed":1520,"failed":5,"inProgress":2,"inQueue":3,"retried":3},"workers":{"idle":0,"initializing":1,"ready":0,"running":2,"throttled":1,"unhealthy":0}}`,
	"ep-a1": `{"jobs":{"completed":37,"failed":0,"inProgress":0,"inQueue":0,"retried":0},"workers":{"idle":1,"initializing":0,"ready":1,"running":0,"throttled":0,"unhealthy":1}}`,
}

const zeroHealth = `{"jobs":{"completed":0,"failed":0,"inProgress":0,"inQueue":0,"retried":0},"workers":{"idle":0,"initializing":0,"ready":0,"running":0,"throttled":0,"unhealthy":0}}`

// fakeKey is a named key as the fake daemon keeps it.
type fakeKey struct {
	id, name, createdAt, secret string
	scope                       string
	endpoints                   []string // ids
	expiresAt, lastUsedAt       string
}

// json is the key as the daemon answers: the create answer (withSecret),
// or a listed or revoked key.
func (k fakeKey) json(withSecret bool) string {
	eps := k.endpoints
	if eps == nil {
		eps = []string{}
	}
	var v any
	if withSecret {
		v = struct {
			ID        string   `json:"id"`
			Name      string   `json:"name"`
			Key       string   `json:"key"`
			Scope     string   `json:"scope"`
			Endpoints []string `json:"endpoints"`
			CreatedAt string   `json:"createdAt"`
			ExpiresAt string   `json:"expiresAt"`
		}{k.id, k.name, k.secret, k.scope, eps, k.createdAt, k.expiresAt}
	} else {
		v = struct {
			ID         string   `json:"id"`
			Name       string   `json:"name"`
			Scope      string   `json:"scope"`
			Endpoints  []string `json:"endpoints"`
			CreatedAt  string   `json:"createdAt"`
			ExpiresAt  string   `json:"expiresAt"`
			LastUsedAt string   `json:"lastUsedAt"`
		}{k.id, k.name, k.scope, eps, k.createdAt, k.expiresAt, k.lastUsedAt}
	}
	b, _ := json.Marshal(v)
	return string(b)
}

var seedKey = fakeKey{id: "k-1a2b3c4d5e6f", name: "grafana", createdAt: "2025-06-01T12:00:00Z", secret: "ember_grafana_secret",
	scope: "read", lastUsedAt: "2025-06-03T08:59:12Z"}

// validKey says whether secret is the admin key or a named key's.
func (fd *fakeDaemon) validKey(secret string) bool {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	if secret != "" && secret == fd.adminKey {
		return true
	}
	for _, k := range fd.keys {
		if secret != "" && k.secret == secret {
			return true
		}
	}
	return false
}

// expiredKey returns the named key whose secret this is when it expired
// before testClock.
func (fd *fakeDaemon) expiredKey(secret string) *fakeKey {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	for _, k := range fd.keys {
		if secret != "" && k.secret == secret && k.expiresAt != "" && k.expiresAt <= testClock.Format(time.RFC3339) {
			return &k
		}
	}
	return nil
}

// sendError answers {"error": msg}, as emberd's plain routes do.
func sendError(w http.ResponseWriter, code int, msg string) {
	b, _ := json.Marshal(map[string]string{"error": msg})
	send(w, code, string(b))
}

// plainHealthzTLS is what /healthz reports of a daemon without TLS.
const plainHealthzTLS = `"tls":{"enabled":false,"mode":"off"},"insecureListen":false`

func (fd *fakeDaemon) healthz(w http.ResponseWriter, _ *http.Request) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	send(w, 200, `{"status":"ok","uptimeSeconds":273784,"openFiles":{"soft":1048576,"hard":1048576},"connections":{"open":12,"max":16384,"reserve":1024,"evicted":0,"refused":0,"rejected":0},"parkMemory":{"budgetBytes":68719476736,"usedBytes":4294967296},`+fd.healthzTLS+`}`)
}

func (fd *fakeDaemon) readyz(w http.ResponseWriter, _ *http.Request) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	if fd.notReady != "" {
		b, _ := json.Marshal(map[string]string{"status": "unavailable", "error": fd.notReady})
		send(w, 503, string(b))
		return
	}
	send(w, 200, `{"status":"ready"}`)
}

func (fd *fakeDaemon) listGPUs(w http.ResponseWriter, _ *http.Request) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	send(w, 200, `{"gpus":[`+strings.Join(fd.gpus, ",")+`]}`)
}

func (fd *fakeDaemon) listKeys(w http.ResponseWriter, _ *http.Request) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	var out []string
	for _, k := range fd.keys {
		out = append(out, k.json(false))
	}
	send(w, 200, `{"keys":[`+strings.Join(out, ",")+`]}`)
}

// createKey checks a request as the key API contract says: scope
// required, endpoints (IDs or names, resolved to IDs) only with invoke,
// expiresIn as Nd or a Go duration. Keys are made at testClock.
func (fd *fakeDaemon) createKey(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name      *string  `json:"name"`
		Scope     string   `json:"scope"`
		Endpoints []string `json:"endpoints"`
		ExpiresIn string   `json:"expiresIn"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Name == nil || *req.Name == "" {
		send(w, 400, `{"error":"name: required (1 to 63 characters)"}`)
		return
	}
	switch req.Scope {
	case "admin", "invoke", "read":
	case "":
		send(w, 400, `{"error":"scope: required: admin, invoke or read"}`)
		return
	default:
		sendError(w, 400, fmt.Sprintf("scope: %q: want admin, invoke or read", req.Scope))
		return
	}
	if len(req.Endpoints) > 0 && req.Scope != "invoke" {
		send(w, 400, `{"error":"endpoints: only an invoke key is limited to endpoints"}`)
		return
	}
	fd.mu.Lock()
	defer fd.mu.Unlock()
	var ids []string
	for _, ref := range req.Endpoints {
		id := ""
		for _, raw := range fd.endpoints {
			var e client.Endpoint
			if json.Unmarshal(raw, &e) == nil && (e.ID == ref || e.Name == ref) {
				id = e.ID
			}
		}
		if id == "" {
			sendError(w, 400, fmt.Sprintf("endpoints: no endpoint %q", ref))
			return
		}
		ids = append(ids, id)
	}
	expiresAt := ""
	if req.ExpiresIn != "" {
		d, err := time.ParseDuration(strings.Replace(req.ExpiresIn, "d", "h", 1))
		if strings.HasSuffix(req.ExpiresIn, "d") {
			d *= 24
		}
		if err != nil || d <= 0 {
			sendError(w, 400, fmt.Sprintf("expiresIn: %q: want a duration such as 30d, 12h or 90m", req.ExpiresIn))
			return
		}
		expiresAt = testClock.Add(d).Format(time.RFC3339)
	}
	for _, k := range fd.keys {
		if k.name == *req.Name {
			sendError(w, 409, fmt.Sprintf("API key name already in use: %q (key %s); revoke it first or pick another name", k.name, k.id))
			return
		}
	}
	fd.nextID++
	k := fakeKey{id: fmt.Sprintf("k-00000000000%d", fd.nextID), name: *req.Name, createdAt: testClock.Format(time.RFC3339),
		secret: fmt.Sprintf("ember_new_secret_%d", fd.nextID), scope: req.Scope, endpoints: ids, expiresAt: expiresAt}
	fd.keys = append(fd.keys, k)
	send(w, 200, k.json(true))
}

// rotatedAdminKey is the admin key after rotate-admin.
const rotatedAdminKey = "ember_rotated_admin_key_0123456789"

func (fd *fakeDaemon) rotateAdmin(w http.ResponseWriter, _ *http.Request) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	fd.adminKey = rotatedAdminKey
	send(w, 200, `{"key":"`+rotatedAdminKey+`","file":"/var/lib/ember/api.key"}`)
}

func (fd *fakeDaemon) revokeKey(w http.ResponseWriter, r *http.Request) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	for i, k := range fd.keys {
		if k.id == r.PathValue("id") {
			fd.keys = append(fd.keys[:i], fd.keys[i+1:]...)
			send(w, 200, k.json(false))
			return
		}
	}
	sendError(w, 404, fmt.Sprintf("no API key with id %q (list them with GET /v1/keys; the bootstrap key in api.key has no id and cannot be revoked through the API)", r.PathValue("id")))
}

func (fd *fakeDaemon) stopWorker(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutSuffix(r.PathValue("idop"), ":stop")
	if !ok {
		send(w, 404, `{"error":"no such route"}`)
		return
	}
	for _, raw := range seedWorkers {
		var wk map[string]any
		json.Unmarshal([]byte(raw), &wk)
		if wk["id"] == id {
			wk["state"] = "draining"
			wk["reason"] = "stopped by the operator"
			b, _ := json.Marshal(wk)
			send(w, 200, string(b))
			return
		}
	}
	send(w, 404, fmt.Sprintf(`{"error":"worker %s not found (or no longer running)"}`, id))
}

func (fd *fakeDaemon) stream(w http.ResponseWriter, r *http.Request) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	answers, ok := fd.streams[r.PathValue("job")]
	if !ok {
		send(w, 404, fmt.Sprintf(`{"error":"not found: job %s"}`, r.PathValue("job")))
		return
	}
	if len(answers) > 1 {
		fd.streams[r.PathValue("job")] = answers[1:]
	}
	send(w, 200, answers[0])
}

func (fd *fakeDaemon) jobState(job string) (client.JobStatus, bool) {
	states, ok := fd.jobs[job]
	if !ok {
		return client.JobStatus{}, false
	}
	var st client.JobStatus
	json.Unmarshal([]byte(states[0]), &st)
	return st, true
}

// cancel ends a job that has not finished; a finished one keeps its
// status, as emberd does.
func (fd *fakeDaemon) cancel(w http.ResponseWriter, r *http.Request) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	job := r.PathValue("job")
	st, ok := fd.jobState(job)
	if !ok {
		send(w, 404, fmt.Sprintf(`{"error":"not found: job %s"}`, job))
		return
	}
	if !st.Terminal() {
		fd.jobs[job] = []string{`{"status":"CANCELLED","delayTime":1520,"executionTime":80,"workerId":"w-7f3a"}`}
	}
	send(w, 200, fmt.Sprintf(`{"id":%q,%s`, job, strings.TrimPrefix(fd.jobs[job][0], "{")))
}

func (fd *fakeDaemon) retry(w http.ResponseWriter, r *http.Request) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	job := r.PathValue("job")
	st, ok := fd.jobState(job)
	switch {
	case !ok:
		send(w, 404, fmt.Sprintf(`{"error":"not found: job %s"}`, job))
	case st.Status != client.StatusFailed && st.Status != client.StatusTimedOut:
		send(w, 409, fmt.Sprintf(`{"error":"job %s is %s; only FAILED or TIMED_OUT jobs can be retried"}`, job, st.Status))
	default:
		fd.jobs[job] = []string{jobQueued}
		send(w, 200, fmt.Sprintf(`{"id":%q,"status":"IN_QUEUE"}`, job))
	}
}

func (fd *fakeDaemon) purge(w http.ResponseWriter, r *http.Request) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	ep := r.PathValue("ep")
	if _, ok := fd.find(ep); !ok {
		send(w, 404, fmt.Sprintf(`{"error":"not found: endpoint %s"}`, ep))
		return
	}
	var h client.EndpointHealth
	json.Unmarshal([]byte(healthOf(ep)), &h)
	send(w, 200, fmt.Sprintf(`{"removed":%d,"status":"completed"}`, h.Jobs.InQueue))
}

func healthOf(ep string) string {
	if h, ok := seedHealth[ep]; ok {
		return h
	}
	return zeroHealth
}

func (fd *fakeDaemon) endpointHealth(w http.ResponseWriter, r *http.Request) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	ep := r.PathValue("ep")
	if _, ok := fd.find(ep); !ok {
		send(w, 404, fmt.Sprintf(`{"error":"not found: endpoint %s"}`, ep))
		return
	}
	send(w, 200, healthOf(ep))
}

// Stream answers of job-7 on echo: chunks over three reads, one empty.
var (
	streamRunning = []string{
		`{"status":"IN_PROGRESS","stream":[{"output":{"token":"Hel"}},{"output":{"token":"lo"}}]}`,
		`{"status":"IN_PROGRESS","stream":[]}`,
		`{"status":"IN_PROGRESS","stream":[{"output":"plain string chunk"}]}`,
	}
	streamCompleted = append(cloneStrings(streamRunning), `{"status":"COMPLETED","stream":[{"output":{"token":"!","done":true}}]}`)
	streamFailed    = append(cloneStrings(streamRunning), `{"status":"FAILED","stream":[]}`)
)

func cloneStrings(s []string) []string { return append([]string(nil), s...) }

// TestOpsGolden checks the output of the job, worker stop, gpu, key and
// status commands against testdata/*.golden.
func TestOpsGolden(t *testing.T) {
	tests := []struct {
		name  string
		setup func(fd *fakeDaemon)
		args  []string
	}{
		{"job_stream", func(fd *fakeDaemon) {
			fd.streams["job-7"] = streamCompleted
			fd.jobs["job-7"] = []string{jobCompleted}
		}, []string{"job", "stream", "echo", "job-7"}},
		{"job_stream_json", func(fd *fakeDaemon) {
			fd.streams["job-7"] = streamCompleted
			fd.jobs["job-7"] = []string{jobCompleted}
		}, []string{"job", "stream", "ep-a1", "job-7", "--json"}},
		{"job_stream_failed", func(fd *fakeDaemon) {
			fd.streams["job-7"] = streamFailed
			fd.jobs["job-7"] = []string{jobFailed}
		}, []string{"job", "stream", "echo", "job-7"}},
		{"job_stream_unknown", nil, []string{"job", "stream", "echo", "job-404"}},
		{"job_stream_unknown_endpoint", nil, []string{"job", "stream", "nope", "job-7"}},
		{"job_cancel", func(fd *fakeDaemon) { fd.jobs["job-42"] = []string{jobProgress} }, []string{"job", "cancel", "echo", "job-42"}},
		{"job_cancel_json", func(fd *fakeDaemon) { fd.jobs["job-42"] = []string{jobStillQueue} }, []string{"job", "cancel", "echo", "job-42", "--json"}},
		{"job_cancel_finished", func(fd *fakeDaemon) { fd.jobs["job-42"] = []string{jobCompleted} }, []string{"job", "cancel", "echo", "job-42"}},
		{"job_cancel_unknown", nil, []string{"job", "cancel", "echo", "job-404"}},
		{"job_retry", func(fd *fakeDaemon) { fd.jobs["job-42"] = []string{jobFailed} }, []string{"job", "retry", "echo", "job-42"}},
		{"job_retry_json", func(fd *fakeDaemon) { fd.jobs["job-42"] = []string{jobTimedOut} }, []string{"job", "retry", "echo", "job-42", "--json"}},
		{"job_retry_completed", func(fd *fakeDaemon) { fd.jobs["job-42"] = []string{jobCompleted} }, []string{"job", "retry", "echo", "job-42"}},
		{"job_purge", nil, []string{"job", "purge", "sdxl"}},
		{"job_purge_json", nil, []string{"job", "purge", "ep-b2", "--json"}},
		{"job_purge_empty", nil, []string{"job", "purge", "llm"}},
		{"job_purge_unknown_endpoint", nil, []string{"job", "purge", "nope"}},
		{"job_missing_args", nil, []string{"job", "cancel", "echo"}},
		{"worker_stop", nil, []string{"worker", "stop", "w-3f2a9c1b7e04"}},
		{"worker_stop_idle", nil, []string{"worker", "stop", "w-b81d04e6a2c7"}},
		{"worker_stop_json", nil, []string{"worker", "stop", "w-3f2a9c1b7e04", "--json"}},
		{"worker_stop_unknown", nil, []string{"worker", "stop", "w-0000000000ff"}},
		{"worker_logs", nil, []string{"worker", "logs", "w-3f2a9c1b7e04", "--tail", "2"}},
		{"gpu_list", nil, []string{"gpu", "list"}},
		{"gpu_list_json", nil, []string{"gpus", "ls", "--json"}},
		{"gpu_list_empty", func(fd *fakeDaemon) { fd.gpus = nil }, []string{"gpu", "list"}},
		{"gpu_list_empty_json", func(fd *fakeDaemon) { fd.gpus = nil }, []string{"gpu", "list", "--json"}},
		{"key_create", nil, []string{"key", "create", "ci", "--scope", "admin"}},
		{"key_create_json", nil, []string{"key", "create", "ci runner", "--scope", "read", "--json"}},
		{"key_create_invoke", nil, []string{"key", "create", "app", "--scope", "invoke", "--endpoint", "echo", "--endpoint", "ep-b2", "--expires", "30d"}},
		{"key_create_invoke_json", nil, []string{"key", "create", "app", "--scope", "invoke", "--endpoint", "echo,sdxl", "--expires", "12h", "--json"}},
		{"key_create_invoke_all_json", nil, []string{"key", "create", "app", "--scope", "invoke", "--json"}},
		{"key_create_no_scope", nil, []string{"key", "create", "ci"}},
		{"key_create_bad_scope", nil, []string{"key", "create", "ci", "--scope", "root"}},
		{"key_create_endpoint_not_invoke", nil, []string{"key", "create", "ci", "--scope", "read", "--endpoint", "echo"}},
		{"key_create_bad_expires", nil, []string{"key", "create", "ci", "--scope", "read", "--expires", "30 days"}},
		{"key_create_unknown_endpoint", nil, []string{"key", "create", "ci", "--scope", "invoke", "--endpoint", "nope"}},
		{"key_create_empty_name", nil, []string{"key", "create", "", "--scope", "admin"}},
		{"key_create_taken", func(fd *fakeDaemon) { fd.keys = []fakeKey{seedKey} }, []string{"key", "create", "grafana", "--scope", "read"}},
		{"key_create_no_name", nil, []string{"key", "create"}},
		{"key_rotate_admin", nil, []string{"key", "rotate-admin"}},
		{"key_rotate_admin_json", nil, []string{"key", "rotate-admin", "--json"}},
		{"key_list", func(fd *fakeDaemon) {
			fd.keys = []fakeKey{seedKey,
				{id: "k-9f8e7d6c5b4a", name: "ci\trunner", createdAt: "2025-06-02T08:30:00Z", secret: "s", scope: "admin", expiresAt: "2025-07-02T08:30:00Z"},
				{id: "k-5e5e5e5e5e5e", name: "app", createdAt: "2025-06-02T09:00:00Z", secret: "s2", scope: "invoke", endpoints: []string{"ep-a1", "ep-b2"}, lastUsedAt: "2025-06-03T08:00:00Z"},
				{id: "k-7d7d7d7d7d7d", name: "demo", createdAt: "2025-05-01T09:00:00Z", secret: "s3", scope: "invoke", expiresAt: "2025-06-01T09:00:00Z"},
			}
		}, []string{"key", "list"}},
		{"key_list_json", func(fd *fakeDaemon) { fd.keys = []fakeKey{seedKey} }, []string{"keys", "ls", "--json"}},
		{"key_list_empty", nil, []string{"key", "list"}},
		{"key_list_empty_json", nil, []string{"key", "list", "--json"}},
		{"key_revoke", func(fd *fakeDaemon) { fd.keys = []fakeKey{seedKey} }, []string{"key", "revoke", "k-1a2b3c4d5e6f"}},
		{"key_revoke_json", func(fd *fakeDaemon) { fd.keys = []fakeKey{seedKey} }, []string{"key", "rm", "k-1a2b3c4d5e6f", "--json"}},
		{"key_revoke_unknown", nil, []string{"key", "revoke", "k-000000000000"}},
		{"status", nil, []string{"status"}},
		{"status_json", nil, []string{"status", "--json"}},
		{"status_not_ready", func(fd *fakeDaemon) { fd.notReady = "disk nearly full: 0.8 GiB free of 100 GiB (need 1 GiB)" }, []string{"status"}},
		{"status_not_ready_json", func(fd *fakeDaemon) { fd.notReady = "recovering the job store" }, []string{"status", "--json"}},
		{"status_empty", func(fd *fakeDaemon) { fd.endpoints, fd.gpus = nil, nil }, []string{"status"}},
		{"status_insecure_listen", func(fd *fakeDaemon) { fd.healthzTLS = `"tls":{"enabled":false,"mode":"off"},"insecureListen":true` }, []string{"status"}},
		{"status_insecure_listen_json", func(fd *fakeDaemon) { fd.healthzTLS = `"tls":{"enabled":false,"mode":"off"},"insecureListen":true` }, []string{"status", "--json"}},
		{"status_older_daemon", func(fd *fakeDaemon) { fd.healthzTLS = `"x":0` }, []string{"status"}},
		{"status_empty_json", func(fd *fakeDaemon) { fd.endpoints, fd.gpus = nil, nil }, []string{"status", "--json"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fd := newFakeDaemon(t, seedEndpoints...)
			if tt.setup != nil {
				tt.setup(fd)
			}
			r := runEmber(t, fd.addr, invocation{args: tt.args})
			golden(t, tt.name, r, fd.addr, "ADDR")
		})
	}
}

// TestCreatedKeyWorks: the key "ember key create" prints is accepted.
func TestCreatedKeyWorks(t *testing.T) {
	fd := newFakeDaemon(t, seedEndpoints...)
	r := runEmber(t, fd.addr, invocation{args: []string{"key", "create", "ci", "--scope", "admin", "--json"}})
	if r.code != 0 {
		t.Fatalf("create: %+v", r)
	}
	var k client.APIKey
	if err := json.Unmarshal([]byte(r.stdout), &k); err != nil || k.Key == "" {
		t.Fatalf("create printed %q (%v)", r.stdout, err)
	}
	r = runEmber(t, fd.addr, invocation{args: []string{"key", "list"}, env: map[string]string{"EMBER_ADDR": fd.addr, "EMBER_API_KEY": k.Key}})
	if r.code != 0 || !strings.Contains(r.stdout, k.ID) {
		t.Errorf("list with the new key: %+v", r)
	}
}

// TestOpsRequests checks what the new commands send.
func TestOpsRequests(t *testing.T) {
	fd := newFakeDaemon(t, seedEndpoints...)
	fd.jobs["job-42"] = []string{jobFailed}
	fd.streams["job-7"] = streamCompleted
	fd.jobs["job-7"] = []string{jobCompleted}
	for _, args := range [][]string{
		{"job", "retry", "ep-a1", "job-42"},
		{"job", "cancel", "ep-a1", "job-42"},
		{"job", "purge", "ep-a1"},
		{"job", "stream", "ep-a1", "job-7"},
		{"worker", "stop", "w-3f2a9c1b7e04"},
		{"key", "create", "ci", "--scope", "admin"},
		{"key", "create", "app", "--scope", "invoke", "--endpoint", "echo", "--expires", "30d"},
		{"key", "revoke", "k-000000000001"},
		{"gpu", "list"},
	} {
		if r := runEmber(t, fd.addr, invocation{args: args}); r.code != 0 {
			t.Fatalf("%v: %+v", args, r)
		}
	}
	var got []string
	for _, req := range fd.requests() {
		if req.Auth != "Bearer "+testKey {
			t.Errorf("%s %s sent Authorization %q", req.Method, req.Path, req.Auth)
		}
		if req.Path == "/v1/endpoints/ep-a1" {
			continue // resolving the endpoint
		}
		got = append(got, strings.TrimSpace(req.Method+" "+req.Path+" "+req.Body))
	}
	want := []string{
		"POST /v2/ep-a1/retry/job-42",
		"POST /v2/ep-a1/cancel/job-42",
		"POST /v2/ep-a1/purge-queue",
		"GET /v2/ep-a1/stream/job-7",
		"GET /v2/ep-a1/stream/job-7",
		"GET /v2/ep-a1/stream/job-7",
		"GET /v2/ep-a1/stream/job-7",
		"GET /v2/ep-a1/status/job-7",
		"POST /v1/workers/w-3f2a9c1b7e04:stop",
		`POST /v1/keys {"name":"ci","scope":"admin"}`,
		`POST /v1/keys {"name":"app","scope":"invoke","endpoints":["echo"],"expiresIn":"30d"}`,
		"DELETE /v1/keys/k-000000000001",
		"GET /v1/gpus",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestStatusRequests: "ember status" asks the probes without the key.
func TestStatusRequests(t *testing.T) {
	fd := newFakeDaemon(t, seedEndpoints...)
	if r := runEmber(t, fd.addr, invocation{args: []string{"status"}}); r.code != 0 {
		t.Fatalf("%+v", r)
	}
	var got []string
	for _, req := range fd.requests() {
		got = append(got, req.Method+" "+req.Path)
	}
	want := []string{
		"GET /readyz", "GET /healthz", "GET /v1/health", "GET /v1/endpoints",
		"GET /v2/ep-b2/health", "GET /v2/ep-a1/health", "GET /v2/ep-c3/health", "GET /v1/gpus",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
