package httpapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/daemon/keys"
	"github.com/emberhq/ember/daemon/templates"
	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/limits"
	"github.com/emberhq/ember/scheduler/spec"
)

// rpEnv is an httpapi server with a real scheduler (a fake runtime), a
// real template store and key store on disk, and a key of each scope.
type rpEnv struct {
	srv                 *httptest.Server
	s                   *scheduler.Scheduler
	rt                  *logRuntime
	admin, read, invoke string
}

func newRPEnv(t *testing.T) *rpEnv {
	t.Helper()
	rt := &logRuntime{started: make(chan *logWorker, 8)}
	s, err := scheduler.Open(scheduler.Config{
		DataDir:       t.TempDir(),
		Runtime:       rt,
		WorkerAPIBase: "http://127.0.0.1:1",
		Tunables:      scheduler.Tunables{StopGrace: time.Second},
		MinFreeBytes:  1,
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ts, err := templates.Open(filepath.Join(t.TempDir(), templates.FileName))
	if err != nil {
		t.Fatal(err)
	}
	ks, err := keys.Open(filepath.Join(t.TempDir(), keys.FileName))
	if err != nil {
		t.Fatal(err)
	}
	e := &rpEnv{s: s, rt: rt, admin: "Bearer " + bootstrapKey}
	for _, k := range []struct {
		scope auth.Scope
		dst   *string
	}{{auth.Read, &e.read}, {auth.Invoke, &e.invoke}} {
		_, secret, err := ks.Create(keys.Spec{Name: string(k.scope) + "-key", Scope: k.scope})
		if err != nil {
			t.Fatal(err)
		}
		*k.dst = "Bearer " + secret
	}
	e.srv = httptest.NewServer(New(Config{Scheduler: s, Templates: ts, KeyStore: ks,
		Keys: func() []string { return []string{bootstrapKey} }, Logger: slog.New(slog.DiscardHandler)}))
	t.Cleanup(e.srv.Close)
	return e
}

// do sends a request and decodes a JSON answer into out (when not nil).
func (e *rpEnv) do(t *testing.T, method, path, auth, body string, out any) (int, string) {
	t.Helper()
	code, b := call(t, e.srv, method, path, auth, body)
	if out != nil && code < 300 {
		if err := json.Unmarshal([]byte(b), out); err != nil {
			t.Fatalf("%s %s: %d %q: %v", method, path, code, b, err)
		}
	}
	return code, b
}

// TestRunPodRESTTemplates: RunPod's template routes, in RunPod's shapes:
// a bare array, the Template object, 204 on delete, {"message"} errors.
func TestRunPodRESTTemplates(t *testing.T) {
	e := newRPEnv(t)
	var list []map[string]any
	if code, b := e.do(t, "GET", "/runpod/v1/templates", e.read, "", &list); code != 200 || !strings.HasPrefix(b, "[") || len(list) != 0 {
		t.Fatalf("list (no operator templates, built-ins left out as RunPod leaves its own out): %d %s", code, b)
	}
	if code, b := e.do(t, "GET", "/runpod/v1/templates?includeRunpodTemplates=true", e.read, "", &list); code != 200 || len(list) < 3 {
		t.Fatalf("list with built-ins: %d %s", code, b)
	}
	var basic map[string]any
	for _, tm := range list {
		if tm["id"] == "basic" {
			basic = tm
		}
	}
	if basic == nil || basic["isRunpod"] != true || basic["isServerless"] != true || basic["category"] != "CPU" || basic["imageName"] != "ember/example-worker:latest" {
		t.Errorf("built-in basic: %v", basic)
	}

	var tm map[string]any
	code, b := e.do(t, "POST", "/runpod/v1/templates", e.admin,
		`{"name":"w","imageName":"img:1","dockerStartCmd":["/bin/worker"],"env":{"MODEL":"m"},"isServerless":true,"containerDiskInGb":20,"volumeInGb":0,"readme":"hi"}`, &tm)
	if code != 200 || tm["id"] != "w" || tm["name"] != "w" || tm["imageName"] != "img:1" || tm["readme"] != "hi" || tm["category"] != "NVIDIA" {
		t.Fatalf("create: %d %s", code, b)
	}
	if env, _ := tm["env"].(map[string]any); env["MODEL"] != "m" {
		t.Errorf("create: env %v", tm["env"])
	}
	if code, b := e.do(t, "GET", "/runpod/v1/templates", e.read, "", &list); code != 200 || len(list) != 1 || list[0]["id"] != "w" {
		t.Fatalf("list: %d %s", code, b)
	}
	if code, b := e.do(t, "PATCH", "/runpod/v1/templates/w", e.admin, `{"imageName":"img:2"}`, &tm); code != 200 || tm["imageName"] != "img:2" || tm["readme"] != "hi" {
		t.Fatalf("patch: %d %s", code, b)
	}
	if code, b := e.do(t, "POST", "/runpod/v1/templates/w/update", e.admin, `{"env":{"MODEL":"n"}}`, &tm); code != 200 || tm["imageName"] != "img:2" || tm["env"].(map[string]any)["MODEL"] != "n" {
		t.Fatalf("POST update: %d %s", code, b)
	}
	if code, b := e.do(t, "GET", "/runpod/v1/templates/w", e.read, "", &tm); code != 200 || tm["imageName"] != "img:2" {
		t.Fatalf("get: %d %s", code, b)
	}

	for _, tc := range []struct {
		method, path, body string
		code               int
		field, msg         string
	}{
		{"POST", "/runpod/v1/templates", `{"name":"w","imageName":"x"}`, 409, "", "template already exists"},
		{"POST", "/runpod/v1/templates", `{"name":"Bad Name","imageName":"x"}`, 400, "name", "name: "},
		{"POST", "/runpod/v1/templates", `{"name":"x","imageName":"x","startSsh":true}`, 400, "startSsh", "startSsh: is not a field"},
		{"POST", "/runpod/v1/templates", `{"name":"x","imageName":"x","containerDiskInGb":"50"}`, 400, "containerDiskInGb", "containerDiskInGb: must be an integer"},
		{"POST", "/runpod/v1/templates", `{"name":"x","imageName":"x","env":{"BAD-NAME":"1"}}`, 400, "env", `env: "BAD-NAME" is not a valid variable name`},
		{"PATCH", "/runpod/v1/templates/basic", `{"imageName":"x"}`, 409, "", "built-in template"},
		{"PATCH", "/runpod/v1/templates/nope", `{"imageName":"x"}`, 404, "", "template not found"},
		{"PATCH", "/runpod/v1/templates/w", `{"isServerless":true}`, 400, "isServerless", "isServerless: cannot be changed"},
		{"DELETE", "/runpod/v1/templates/basic", "", 409, "", "built-in template"},
		{"GET", "/runpod/v1/templates/nope", "", 404, "", "template not found"},
		{"GET", "/runpod/v1/templates?includeRunpodTemplates=yes", "", 400, "includeRunpodTemplates", "includeRunpodTemplates: query parameter must be true or false"},
	} {
		code, b := e.do(t, tc.method, tc.path, e.admin, tc.body, nil)
		var m map[string]any
		json.Unmarshal([]byte(b), &m)
		msg, _ := m["message"].(string)
		if code != tc.code || !strings.HasPrefix(msg, tc.msg) || (tc.field != "" && m["field"] != tc.field) {
			t.Errorf("%s %s %s: %d %s; want %d field %q message %q...", tc.method, tc.path, tc.body, code, b, tc.code, tc.field, tc.msg)
		}
	}

	// A body over limits.TemplateBody: 413 naming the limit.
	big := `{"name":"big","imageName":"x","readme":"` + strings.Repeat("a", limits.TemplateBody) + `"}`
	code, b = e.do(t, "POST", "/runpod/v1/templates", e.admin, big, nil)
	var m map[string]any
	json.Unmarshal([]byte(b), &m)
	if code != 413 || m["limitBytes"] != float64(limits.TemplateBody) || !strings.Contains(m["message"].(string), "limit of POST /runpod/v1/templates") {
		t.Errorf("big body: %d %.300s", code, b)
	}

	if code, b := e.do(t, "DELETE", "/runpod/v1/templates/w", e.admin, "", nil); code != 204 || b != "" {
		t.Fatalf("delete: %d %q", code, b)
	}
	if code, _ := e.do(t, "GET", "/runpod/v1/templates/w", e.read, "", nil); code != 404 {
		t.Errorf("get after delete: %d", code)
	}
}

// TestRunPodRESTEndpoints: an endpoint created from a template through
// RunPod's model is Ember's endpoint (the scheduler has it, with its
// template recorded); one made directly appears too, without a template.
func TestRunPodRESTEndpoints(t *testing.T) {
	e := newRPEnv(t)
	if code, b := e.do(t, "POST", "/runpod/v1/templates", e.admin, `{"name":"w","imageName":"img:1","dockerStartCmd":["fake-worker"],"category":"CPU","env":{"MODEL":"m"}}`, nil); code != 200 {
		t.Fatalf("template: %d %s", code, b)
	}
	var ep map[string]any
	code, b := e.do(t, "POST", "/runpod/v1/endpoints", e.admin,
		`{"templateId":"w","name":"rp","workersMin":0,"workersMax":2,"idleTimeout":7,"scalerType":"REQUEST_COUNT","scalerValue":2,"flashboot":true,"executionTimeoutMs":60000,"dataCenterIds":["EU-RO-1"],"networkVolumeId":"vol"}`, &ep)
	if code != 200 || ep["templateId"] != "w" || ep["name"] != "rp" || ep["workersMax"] != 2.0 || ep["idleTimeout"] != 7.0 || ep["computeType"] != "CPU" ||
		ep["scalerType"] != "REQUEST_COUNT" || ep["flashboot"] != true || ep["version"] != 0.0 {
		t.Fatalf("create: %d %s", code, b)
	}
	id := ep["id"].(string)
	def, err := e.s.Endpoint(id)
	if err != nil || def.Template != "w" || def.TemplateVersion != 1 || def.Image != "img:1" || def.Command[0] != "fake-worker" || def.Env["MODEL"] != "m" || def.ScalerValue != 2 {
		t.Fatalf("the scheduler's endpoint: %+v %v", def, err)
	}

	// One made through Ember's own API, running a worker.
	name, cmd, one, zero := "direct", []string{"fake-worker"}, 1, 0
	direct, err := e.s.CreateEndpoint(context.Background(), spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &one, WorkersMax: &one, GPUCount: &zero})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.rt.started:
	case <-time.After(10 * time.Second):
		t.Fatal("no worker started")
	}
	var list []map[string]any
	if code, b := e.do(t, "GET", "/runpod/v1/endpoints?includeTemplate=true&includeWorkers=true", e.read, "", &list); code != 200 || !strings.HasPrefix(b, "[") || len(list) != 2 {
		t.Fatalf("list: %d %s", code, b)
	}
	for _, got := range list {
		switch got["id"] {
		case id:
			if tm, _ := got["template"].(map[string]any); tm["id"] != "w" || tm["imageName"] != "img:1" {
				t.Errorf("includeTemplate: %v", got["template"])
			}
		case direct.ID:
			ws, _ := got["workers"].([]any)
			if got["templateId"] != "" || got["template"] != nil || len(ws) != 1 || ws[0].(map[string]any)["endpointId"] != direct.ID {
				t.Errorf("the /v1 endpoint: %v", got)
			}
		default:
			t.Errorf("unknown endpoint %v", got)
		}
	}
	if code, b := e.do(t, "GET", "/runpod/v1/endpoints", e.read, "", &list); code != 200 || strings.Contains(b, `"template":`) || strings.Contains(b, `"workers":`) {
		t.Errorf("plain list carries template or workers: %d %s", code, b)
	}

	if code, b := e.do(t, "PATCH", "/runpod/v1/endpoints/"+id, e.admin, `{"workersMax":5}`, &ep); code != 200 || ep["workersMax"] != 5.0 || ep["idleTimeout"] != 7.0 {
		t.Fatalf("patch: %d %s", code, b)
	}
	if code, b := e.do(t, "POST", "/runpod/v1/endpoints/"+id+"/update", e.admin, `{"idleTimeout":9}`, &ep); code != 200 || ep["idleTimeout"] != 9.0 || ep["workersMax"] != 5.0 {
		t.Fatalf("POST update: %d %s", code, b)
	}
	// A changed template, re-applied: a new generation (RunPod's version).
	if code, b := e.do(t, "PATCH", "/runpod/v1/templates/w", e.admin, `{"imageName":"img:2"}`, nil); code != 200 {
		t.Fatalf("template patch: %d %s", code, b)
	}
	if code, b := e.do(t, "PATCH", "/runpod/v1/endpoints/"+id, e.admin, `{"templateId":"w"}`, &ep); code != 200 || ep["version"] != 1.0 || ep["workersMax"] != 5.0 {
		t.Fatalf("patch templateId: %d %s", code, b)
	}
	if def, _ := e.s.Endpoint(id); def.Image != "img:2" || def.TemplateVersion != 2 {
		t.Errorf("after the template is re-applied: %+v", def)
	}
	if code, b := e.do(t, "GET", "/runpod/v1/endpoints/"+id, e.read, "", &ep); code != 200 || ep["id"] != id {
		t.Fatalf("get: %d %s", code, b)
	}

	for _, tc := range []struct {
		method, path, body string
		code               int
		field, msg         string
	}{
		{"POST", "/runpod/v1/endpoints", `{"templateId":"w","name":"big","workersMax":5000}`, 400, "workersMax", "workersMax: must be between 1 and 1000"},
		{"POST", "/runpod/v1/endpoints", `{"templateId":"w","name":"t","idleTimeout":0}`, 400, "idleTimeout", "idleTimeout: must be between 1 and 3600 seconds"},
		{"POST", "/runpod/v1/endpoints", `{"templateId":"w","name":"g","gpuTypeIds":["a","b","c","d","e","f","g","h","i"]}`, 400, "gpuTypeIds", "gpuTypeIds: has more than 8 entries"},
		{"POST", "/runpod/v1/endpoints", `{"name":"x"}`, 400, "templateId", "templateId: is required"},
		{"POST", "/runpod/v1/endpoints", `{"templateId":"nope"}`, 400, "templateId", "templateId: template not found"},
		{"POST", "/runpod/v1/endpoints", `{"templateId":"w","name":"rp"}`, 409, "", "an endpoint named \"rp\" already exists"},
		{"POST", "/runpod/v1/endpoints", `{"templateId":"w","gpuIds":"AMPERE_16"}`, 400, "gpuIds", "gpuIds: is not a field"},
		{"PATCH", "/runpod/v1/endpoints/nope", `{"workersMax":1}`, 404, "", "not found: endpoint nope"},
		{"GET", "/runpod/v1/endpoints/nope", "", 404, "", "not found: endpoint nope"},
		{"DELETE", "/runpod/v1/endpoints/nope", "", 404, "", "not found: endpoint nope"},
		{"PUT", "/runpod/v1/endpoints/" + id, "{}", 405, "", "method PUT not allowed"},
		{"GET", "/runpod/v1/pods", "", 404, "", "no such route"},
	} {
		code, b := e.do(t, tc.method, tc.path, e.admin, tc.body, nil)
		var m map[string]any
		json.Unmarshal([]byte(b), &m)
		msg, _ := m["message"].(string)
		if code != tc.code || !strings.HasPrefix(msg, tc.msg) || (tc.field != "" && m["field"] != tc.field) {
			t.Errorf("%s %s %s: %d %s; want %d field %q message %q...", tc.method, tc.path, tc.body, code, b, tc.code, tc.field, tc.msg)
		}
	}

	// A body over limits.SmallBody, refused before the key is checked.
	code, b = e.do(t, "POST", "/runpod/v1/endpoints", e.admin, `{"templateId":"w","name":"`+strings.Repeat("n", limits.SmallBody)+`"}`, nil)
	var big map[string]any
	json.Unmarshal([]byte(b), &big)
	if msg, _ := big["message"].(string); code != 413 || big["limitBytes"] != float64(limits.SmallBody) || !strings.Contains(msg, "limit of POST /runpod/v1/endpoints") {
		t.Errorf("big body: %d %.300s", code, b)
	}

	if code, b := e.do(t, "DELETE", "/runpod/v1/endpoints/"+id, e.admin, "", nil); code != 204 || b != "" {
		t.Fatalf("delete: %d %q", code, b)
	}
	if _, err := e.s.Endpoint(id); err == nil {
		t.Error("the endpoint is still there")
	}
}

// TestRunPodRESTScopes: reads need read, changes admin; a refusal is 401
// or 403 in RunPod's shape ({"message"}) with Ember's fields beside it.
func TestRunPodRESTScopes(t *testing.T) {
	e := newRPEnv(t)
	for _, tc := range []struct {
		method, path, auth string
		code               int
	}{
		{"GET", "/runpod/v1/templates", e.read, 200},
		{"GET", "/runpod/v1/endpoints", e.read, 200},
		{"GET", "/runpod/v1/templates/basic", e.read, 200},
		{"GET", "/runpod/v1/templates", "", 401},
		{"GET", "/runpod/v1/endpoints", "Bearer wrong", 401},
		{"GET", "/runpod/v1/endpoints", e.invoke, 403},
		{"POST", "/runpod/v1/templates", e.read, 403},
		{"PATCH", "/runpod/v1/templates/basic", e.read, 403},
		{"POST", "/runpod/v1/templates/basic/update", e.read, 403},
		{"DELETE", "/runpod/v1/templates/basic", e.read, 403},
		{"POST", "/runpod/v1/endpoints", e.read, 403},
		{"PATCH", "/runpod/v1/endpoints/x", e.read, 403},
		{"POST", "/runpod/v1/endpoints/x/update", e.read, 403},
		{"DELETE", "/runpod/v1/endpoints/x", e.read, 403},
		{"POST", "/runpod/v1/endpoints", e.invoke, 403},
	} {
		code, b := e.do(t, tc.method, tc.path, tc.auth, "{}", nil)
		if code != tc.code {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, code, b, tc.code)
			continue
		}
		if code < 400 {
			continue
		}
		var m map[string]any
		json.Unmarshal([]byte(b), &m)
		if m["message"] == nil || m["message"] != m["error"] || m["reason"] == nil {
			t.Errorf("%s %s: refusal %s, want message, error and reason", tc.method, tc.path, b)
		}
		if code == 403 && (m["neededScope"] == nil || strings.Contains(b, strings.TrimPrefix(tc.auth, "Bearer "))) {
			t.Errorf("%s %s: 403 %s: no neededScope, or the key in it", tc.method, tc.path, b)
		}
	}
}

// TestRPEndpointName: a name made for an endpoint created without one is
// a valid endpoint name, its template's longest name included.
func TestRPEndpointName(t *testing.T) {
	for _, tmpl := range []string{"basic", strings.Repeat("a", limits.EndpointName)} {
		n := rpEndpointName(tmpl)
		e := spec.Default()
		e.Name, e.Command = n, []string{"/bin/true"}
		if err := spec.Validate(&e); err != nil || !strings.HasPrefix(n, tmpl[:min(len(tmpl), limits.EndpointName-7)]+"-") {
			t.Errorf("%s: %q: %v", tmpl, n, err)
		}
	}
	if rpEndpointName("basic") == rpEndpointName("basic") {
		t.Error("two names alike")
	}
}

// TestRunPodRESTNoScheduler: without a scheduler or a template store the
// routes answer in RunPod's shape instead of failing.
func TestRunPodRESTNoScheduler(t *testing.T) {
	srv := httptest.NewServer(New(Config{Keys: func() []string { return []string{bootstrapKey} }, Logger: slog.New(slog.DiscardHandler)}))
	defer srv.Close()
	for path, want := range map[string]int{"/runpod/v1/endpoints": 503, "/runpod/v1/templates": 404} {
		code, b := call(t, srv, "GET", path, "Bearer "+bootstrapKey, "")
		if code != want || !strings.Contains(b, `"message":`) {
			t.Errorf("%s: %d %s, want %d with a message", path, code, b, want)
		}
	}
}
