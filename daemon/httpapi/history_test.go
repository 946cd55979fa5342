package httpapi

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/daemon/keys"
	emberv1 "github.com/emberhq/ember/proto/ember/v1"
)

// historyEnv is a server with keys of each scope over newWorkersEnv's
// scheduler, one job run.
type historyEnv struct {
	*workersEnv
	srv                              *httptest.Server
	admin, read, invoke, invokeOther string
}

func newHistoryEnv(t *testing.T) *historyEnv {
	t.Helper()
	e := newWorkersEnv(t)
	runJob(t, e)
	ks, err := keys.Open(filepath.Join(t.TempDir(), keys.FileName))
	if err != nil {
		t.Fatal(err)
	}
	mk := func(name string, scope auth.Scope, eps ...string) string {
		_, secret, err := ks.Create(keys.Spec{Name: name, Scope: scope, Endpoints: eps})
		if err != nil {
			t.Fatal(err)
		}
		return secret
	}
	h := &historyEnv{workersEnv: e, admin: workersKey,
		read: mk("reader", auth.Read), invoke: mk("app", auth.Invoke, e.ep), invokeOther: mk("other", auth.Invoke, "ep-other")}
	h.srv = httptest.NewServer(New(Config{Scheduler: e.s, KeyStore: ks, Keys: func() []string { return []string{workersKey} }, Logger: slog.New(slog.DiscardHandler)}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *historyEnv) get(t *testing.T, path, key string) (int, map[string]any) {
	t.Helper()
	code, body := call(t, h.srv, http.MethodGet, path, "Bearer "+key, "")
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("GET %s: %d %q: %v", path, code, body, err)
	}
	return code, m
}

func TestHistoryRoute(t *testing.T) {
	h := newHistoryEnv(t)
	path := "/v1/endpoints/" + h.ep + "/history"
	for _, key := range []string{h.admin, h.read} {
		code, m := h.get(t, path, key)
		if code != 200 || m["endpointId"] != h.ep || m["resolutionSeconds"] != 10.0 || m["windowSeconds"] != 3600.0 {
			t.Fatalf("GET history: %d %v", code, m)
		}
		pts, _ := m["points"].([]any)
		var submitted, completed float64
		delay := false
		for _, p := range pts {
			p := p.(map[string]any)
			submitted += p["submitted"].(float64)
			completed += p["completed"].(float64)
			_, ok := p["delayP50Ms"]
			delay = delay || ok
			if _, ok := p["t"].(float64); !ok {
				t.Errorf("point without t: %v", p)
			}
		}
		if len(pts) == 0 || len(pts) > 360 || submitted != 1 || completed != 1 || !delay {
			t.Errorf("points %v: want the one job submitted and completed, with its delay", pts)
		}
	}
	// History is scope read: an invoke key is refused; unknown: 404.
	if code, m := h.get(t, path, h.invoke); code != 403 || m["neededScope"] != "read" {
		t.Errorf("invoke key: %d %v", code, m)
	}
	if code, m := h.get(t, "/v1/endpoints/nope/history", h.read); code != 404 || !strings.Contains(m["error"].(string), `"nope" not found`) {
		t.Errorf("unknown endpoint: %d %v", code, m)
	}
}

func TestRecentJobsRoute(t *testing.T) {
	h := newHistoryEnv(t)
	path := "/v1/endpoints/" + h.ep + "/jobs"
	for _, c := range []struct {
		name     string
		key      string
		redacted bool
	}{{"admin", h.admin, false}, {"invoke", h.invoke, false}, {"read", h.read, true}} {
		code, m := h.get(t, path, c.key)
		jobs, _ := m["jobs"].([]any)
		if code != 200 || len(jobs) != 1 {
			t.Errorf("%s: %d %v", c.name, code, m)
			continue
		}
		j := jobs[0].(map[string]any)
		if j["status"] != "COMPLETED" || j["createdAt"] == nil || j["startedAt"] == nil || j["completedAt"] == nil || j["delayTime"] == nil || j["executionTime"] == nil || j["workerId"] == nil {
			t.Errorf("%s: job %v", c.name, j)
		}
		_, hasIn := j["input"]
		_, hasOut := j["output"]
		if c.redacted {
			if hasIn || hasOut || m["redacted"] != true {
				t.Errorf("%s: not redacted: %v", c.name, m)
			}
		} else {
			in, _ := json.Marshal(j["input"])
			out, _ := json.Marshal(j["output"])
			if string(in) != `{"n":1}` || string(out) != `{"ok":true}` || m["redacted"] != nil {
				t.Errorf("%s: input %s output %s redacted %v", c.name, in, out, m["redacted"])
			}
		}
	}
	if code, m := h.get(t, path, h.invokeOther); code != 403 || m["reason"] != auth.ReasonEndpoint {
		t.Errorf("invoke key of another endpoint: %d %v", code, m)
	}
	if code, _ := h.get(t, "/v1/endpoints/nope/jobs", h.read); code != 404 {
		t.Errorf("unknown endpoint: %d", code)
	}
	for _, q := range []string{"limit=0", "limit=201", "limit=abc", "limit=-1", "limit=1&limit=2", "limit="} {
		code, m := h.get(t, path+"?"+q, h.admin)
		msg, _ := m["error"].(string)
		if code != 400 || m["field"] != "limit" || m["limit"] != 200.0 || !strings.HasPrefix(msg, "limit: ") {
			t.Errorf("?%s: %d %v, want 400 naming the field and the limit", q, code, m)
		}
	}
	if code, m := h.get(t, path+"?limit=200", h.admin); code != 200 || len(m["jobs"].([]any)) != 1 {
		t.Errorf("limit=200: %d %v", code, m)
	}
}

// TestRecentJobsRouteBesideSubmit: GET and POST on
// /v1/endpoints/{endpoint_id}/jobs are two rows, told apart by method;
// other methods are answered 405 with both in Allow.
func TestRecentJobsRouteBesideSubmit(t *testing.T) {
	segs := splitPath("/v1/endpoints/ep-1/jobs")
	if rt, _ := findRoute(http.MethodGet, segs); rt == nil || rt.rpc != "" || rt.pattern != "/v1/endpoints/{endpoint_id}/jobs" {
		t.Errorf("GET: %+v", rt)
	}
	if rt, _ := findRoute(http.MethodPost, segs); rt == nil || rt.rpc != emberv1.JobService_Run_FullMethodName {
		t.Errorf("POST: %+v, want the gateway's Run", rt)
	}
	rt, allow := findRoute(http.MethodDelete, segs)
	if rt != nil || !slices.Contains(allow, http.MethodGet) || !slices.Contains(allow, http.MethodPost) {
		t.Errorf("DELETE: %+v, allow %v", rt, allow)
	}
	h := newHistoryEnv(t)
	code, body := call(t, h.srv, http.MethodDelete, "/v1/endpoints/"+h.ep+"/jobs", "Bearer "+h.admin, "")
	if code != http.StatusMethodNotAllowed {
		t.Errorf("DELETE: %d %s", code, body)
	}
}
