package httpapi

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/daemon/keys"
	"github.com/emberhq/ember/daemon/templates"
	"github.com/emberhq/ember/oci/image"
	"github.com/emberhq/ember/scheduler"
)

const (
	tmplAdmin = "ember_test_admin_0123456789abcdef0123456789"
	tmplRead  = "ember_test_read_templates"
)

// templatesEnv is a server with a real scheduler (a fake runtime: no
// worker starts, workersMin is 0), a template store and keys of scope
// admin and read; images, when asked for, is an empty image store.
func templatesEnv(t *testing.T, withImages bool) (*httptest.Server, *bytes.Buffer) {
	t.Helper()
	dir := t.TempDir()
	s, err := scheduler.Open(scheduler.Config{
		DataDir: filepath.Join(dir, "data"), Runtime: &logRuntime{started: make(chan *logWorker, 8)},
		WorkerAPIBase: "http://127.0.0.1:1", MinFreeBytes: 1, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	writeKeyFile(t, filepath.Join(dir, keys.FileName), []keys.Key{
		{ID: "k-read", Name: "rd", Scope: auth.Read, CreatedAt: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)},
	}, []string{tmplRead})
	ks, err := keys.Open(filepath.Join(dir, keys.FileName))
	if err != nil {
		t.Fatal(err)
	}
	ks.SetAdmin(tmplAdmin, "")
	ts, err := templates.Open(filepath.Join(dir, templates.FileName))
	if err != nil {
		t.Fatal(err)
	}
	var imgs *image.Store
	if withImages {
		if imgs, err = image.Open(filepath.Join(dir, "images"), image.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	// A stand-in for the /v1 gateway's GET /v1/endpoints/{id}, which a
	// deploy's answer is: the stored endpoint, marked as served by it.
	gateway := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := strings.CutPrefix(r.URL.Path, "/v1/endpoints/")
		e, err := s.Endpoint(id)
		if r.Method != http.MethodGet || !ok || err != nil {
			http.Error(w, "unexpected gateway request "+r.Method+" "+r.URL.Path, 500)
			return
		}
		b, _ := json.Marshal(e)
		w.Write(bytes.Replace(b, []byte("{"), []byte(`{"servedBy":"gateway",`), 1))
	})
	var logs bytes.Buffer
	srv := httptest.NewServer(New(Config{Scheduler: s, KeyStore: ks, Templates: ts, Images: imgs, Gateway: gateway,
		Logger: slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil))}))
	t.Cleanup(srv.Close)
	return srv, &logs
}

// syncWriter serialises writes to a buffer the handlers log to.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// tcall sends method path with body as key, and returns the status and the
// decoded JSON answer.
func tcall(t *testing.T, srv *httptest.Server, key, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(b) > 0 && json.Unmarshal(b, &out) != nil {
		t.Fatalf("%s %s: not JSON: %s", method, path, b)
	}
	return resp.StatusCode, out
}

const echoTmpl = `{"name":"echo","image":"ghcr.io/acme/echo:1","command":["fake-worker"],"gpuCount":0,"workersMax":1,"idleTimeout":5,
"env":[{"name":"TOKEN","required":true,"description":"the upstream token","secret":true},{"name":"GREETING","default":"hi"}]}`

// TestTemplateRoutesScopes: a read key lists and shows templates but
// cannot create, change, delete or deploy one (403 naming admin); an admin
// key can.
func TestTemplateRoutesScopes(t *testing.T) {
	srv, _ := templatesEnv(t, false)
	for _, tc := range []struct {
		key, method, path, body string
		want                    int
	}{
		{tmplRead, "GET", "/v1/templates", "", 200},
		{tmplRead, "GET", "/v1/templates/vllm", "", 200},
		{tmplRead, "POST", "/v1/templates", echoTmpl, 403},
		{tmplRead, "PATCH", "/v1/templates/echo", echoTmpl, 403},
		{tmplRead, "DELETE", "/v1/templates/echo", "", 403},
		{tmplRead, "POST", "/v1/templates/basic:deploy", `{"name":"x"}`, 403},
		{"", "GET", "/v1/templates", "", 401},
		{tmplAdmin, "POST", "/v1/templates", echoTmpl, 200},
		{tmplAdmin, "GET", "/v1/templates/echo", "", 200},
		{tmplAdmin, "DELETE", "/v1/templates/echo", "", 200},
	} {
		code, body := tcall(t, srv, tc.key, tc.method, tc.path, tc.body)
		if code != tc.want {
			t.Errorf("%s %s as %q: %d %v; want %d", tc.method, tc.path, tc.key, code, body, tc.want)
		}
		if code == 403 && body["neededScope"] != "admin" {
			t.Errorf("%s %s: refusal %v lacks neededScope admin", tc.method, tc.path, body)
		}
	}
}

// TestTemplateRoutes: the catalog, a create, an update (version+1), the
// refusals with their status and field, and deploys: a missing variable
// (400 naming it and its description), and an endpoint created with the
// template recorded.
func TestTemplateRoutes(t *testing.T) {
	srv, logs := templatesEnv(t, false)
	code, body := tcall(t, srv, tmplRead, "GET", "/v1/templates", "")
	list, _ := body["templates"].([]any)
	if code != 200 || len(list) != 3 || list[0].(map[string]any)["name"] != "basic" || list[0].(map[string]any)["builtin"] != true {
		t.Fatalf("catalog: %d %v", code, body)
	}
	code, body = tcall(t, srv, tmplAdmin, "POST", "/v1/templates", echoTmpl)
	if code != 200 || body["version"] != 1.0 || body["createdAt"] == nil {
		t.Fatalf("create: %d %v", code, body)
	}
	for _, tc := range []struct {
		name, method, path, body string
		want                     int
		field, msg               string
	}{
		{"taken", "POST", "/v1/templates", echoTmpl, 409, "", "already exists"},
		{"built-in name", "POST", "/v1/templates", `{"name":"vllm","image":"x:1"}`, 409, "", "built-in"},
		{"unknown field", "POST", "/v1/templates", `{"name":"x","image":"x:1","imageName":"y"}`, 400, "", `unknown field "imageName"`},
		{"bad name", "POST", "/v1/templates", `{"name":"Bad_Name","image":"x:1"}`, 400, "name", "lower-case"},
		{"no image", "POST", "/v1/templates", `{"name":"x"}`, 400, "image", "is required"},
		{"bad workers", "POST", "/v1/templates", `{"name":"x","image":"x:1","workersMax":5000}`, 400, "workersMax", "between 1 and 1000"},
		{"too large", "POST", "/v1/templates", `{"name":"x","image":"x:1","description":"` + strings.Repeat("d", 300<<10) + `"}`, 413, "", "limit"},
		{"patch built-in", "PATCH", "/v1/templates/basic", `{"image":"x:1"}`, 409, "", "cannot be changed"},
		{"delete built-in", "DELETE", "/v1/templates/vllm", "", 409, "", "cannot be deleted"},
		{"patch missing", "PATCH", "/v1/templates/nope", `{"image":"x:1"}`, 404, "", "not found"},
		{"get missing", "GET", "/v1/templates/nope", "", 404, "", "not found"},
		{"get with a verb", "GET", "/v1/templates/basic:deploy", "", 404, "", "not found"},
		{"deploy missing", "POST", "/v1/templates/nope:deploy", `{"name":"x"}`, 404, "", "not found"},
		{"deploy no env", "POST", "/v1/templates/echo:deploy", `{"name":"ep1"}`, 400, "env.TOKEN", "env.TOKEN: required: the upstream token"},
		{"deploy bad override", "POST", "/v1/templates/echo:deploy", `{"name":"ep1","env":{"TOKEN":"t"},"workersMax":0}`, 400, "workersMax", "between 1 and 1000"},
		{"deploy unknown field", "POST", "/v1/templates/echo:deploy", `{"name":"ep1","gpus":2}`, 400, "", `unknown field "gpus"`},
		{"deploy no name", "POST", "/v1/templates/echo:deploy", `{"env":{"TOKEN":"t"}}`, 400, "name", "is required"},
		{"post to a template", "POST", "/v1/templates/echo", `{}`, 405, "", "not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := tcall(t, srv, tmplAdmin, tc.method, tc.path, tc.body)
			msg, _ := body["error"].(string)
			if code != tc.want || !strings.Contains(msg, tc.msg) {
				t.Errorf("%d %v; want %d with %q", code, body, tc.want, tc.msg)
			}
			if tc.field != "" && body["field"] != tc.field {
				t.Errorf("field %v; want %s", body["field"], tc.field)
			}
		})
	}
	code, body = tcall(t, srv, tmplAdmin, "PATCH", "/v1/templates/echo", strings.Replace(echoTmpl, `"workersMax":1`, `"workersMax":2`, 1))
	if code != 200 || body["version"] != 2.0 || body["workersMax"] != 2.0 {
		t.Fatalf("update: %d %v", code, body)
	}
	code, body = tcall(t, srv, tmplAdmin, "PATCH", "/v1/templates/echo", `{"version":1,"image":"x:1"}`)
	if code != 409 || !strings.Contains(body["error"].(string), "version 2") {
		t.Errorf("stale update: %d %v", code, body)
	}

	code, body = tcall(t, srv, tmplAdmin, "POST", "/v1/templates/echo:deploy", `{"name":"ep1","env":{"TOKEN":"t","EXTRA":"1"},"idleTimeout":9}`)
	if code != 200 {
		t.Fatalf("deploy: %d %v", code, body)
	}
	env, _ := body["env"].(map[string]any)
	if body["servedBy"] != "gateway" {
		t.Errorf("the deploy's answer is not GET /v1/endpoints/{id}'s: %v", body)
	}
	if body["name"] != "ep1" || body["template"] != "echo" || body["templateVersion"] != 2.0 || body["workersMax"] != 2.0 ||
		body["idleTimeout"] != 9.0 || env["GREETING"] != "hi" || env["TOKEN"] != "t" || env["EXTRA"] != "1" {
		t.Errorf("deployed endpoint: %v", body)
	}
	if !strings.Contains(logs.String(), "action=endpoint.create object="+body["id"].(string)) || !strings.Contains(logs.String(), "template=echo template_version=2") {
		t.Errorf("no audit record of the deploy:\n%s", logs.String())
	}
	code, body = tcall(t, srv, tmplAdmin, "POST", "/v1/templates/echo:deploy", `{"name":"ep1","env":{"TOKEN":"t"}}`)
	if code != 409 {
		t.Errorf("deploy to a taken name: %d %v", code, body)
	}
}

// TestTemplateDeployNeedsImage: with an image store, a template whose
// image is not imported is refused with 409 and the way to import it.
func TestTemplateDeployNeedsImage(t *testing.T) {
	srv, _ := templatesEnv(t, true)
	code, body := tcall(t, srv, tmplAdmin, "POST", "/v1/templates/basic:deploy", `{"name":"hello"}`)
	want := "image ember/example-worker:latest is not in this machine's image store; load it with: ember image load -i FILE (or ember image pull ember/example-worker:latest)"
	if code != 409 || body["error"] != want || body["field"] != "image" {
		t.Errorf("%d %v; want 409 %q", code, body, want)
	}
	// A missing variable is reported before the image.
	code, body = tcall(t, srv, tmplAdmin, "POST", "/v1/templates/vllm:deploy", `{"name":"llm"}`)
	if code != 400 || body["field"] != "env.MODEL_NAME" || !strings.HasPrefix(body["error"].(string), "env.MODEL_NAME: required: ") {
		t.Errorf("vllm without MODEL_NAME: %d %v", code, body)
	}
}
