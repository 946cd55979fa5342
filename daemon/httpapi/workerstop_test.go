package httpapi

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/scheduler"
)

func TestWorkerStop(t *testing.T) {
	e := newWorkersEnv(t)
	id := e.w.spec.ID
	post := func(path, key string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, nil)
		if key != "" {
			req.Header.Set("Authorization", key)
		}
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	for _, key := range []string{"", "wrong"} {
		if code, _ := post("/v1/workers/"+id+":stop", key); code != 401 {
			t.Errorf("key %q: %d", key, code)
		}
	}
	if code, body := e.getAll(t, "/v1/workers/"+id+":stop", workersKey); code != 405 || !strings.Contains(body, "use POST") {
		t.Errorf("GET: %d %s", code, body)
	}
	for _, bad := range []string{"w-0123456789ab", "w-ZZ", "..%2Fapi.key", ""} {
		if code, body := post("/v1/workers/"+bad+":stop", workersKey); code != 404 || !strings.HasPrefix(body, `{"error":`) {
			t.Errorf("stop %q: %d %s", bad, code, body)
		}
	}

	code, body := post("/v1/workers/"+id+":stop", workersKey)
	if code != 200 {
		t.Fatalf("stop: %d %s", code, body)
	}
	var info scheduler.WorkerInfo
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		t.Fatal(err)
	}
	if info.ID != id || (info.State != scheduler.WorkerDraining && info.State != scheduler.WorkerStopped) {
		t.Errorf("stop answered %s", body)
	}
	select {
	case <-e.w.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the stopped worker is still running")
	}
	// Gone now (the endpoint's minimum starts another one).
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body = post("/v1/workers/"+id+":stop", "Bearer "+workersKey)
		if code == 404 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code != 404 || !strings.Contains(body, "not found") {
		t.Errorf("stop again: %d %s", code, body)
	}
}
