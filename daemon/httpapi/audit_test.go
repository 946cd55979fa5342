package httpapi

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/emberhq/ember/daemon/audit"
	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/daemon/internal/testimage"
)

// capturedLog is a logger's JSON lines.
type capturedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *capturedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *capturedLog) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *capturedLog) audits(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.text()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["msg"] == audit.Message {
			out = append(out, m)
		}
	}
	return out
}

// TestAuditTrailREST: the admin actions served by httpapi itself (image
// upload, /v2 purge-queue, worker stop) each write one audit line naming
// the caller's key, the action, the object and the outcome, and no
// secret.
func TestAuditTrailREST(t *testing.T) {
	// Config.Keys are admin keys, which authentication names as the
	// bootstrap key.
	caller := auth.Caller{KeyID: auth.BootstrapKeyID, Name: auth.BootstrapKeyName, Scope: auth.Admin}
	var log capturedLog
	logger := slog.New(slog.NewJSONHandler(&log, nil))

	e := newWorkersEnv(t)
	srv := httptest.NewServer(New(Config{Scheduler: e.s, Keys: func() []string { return []string{workersKey} },
		Images: openImageStore(t), Logger: logger}))
	defer srv.Close()
	post := func(path string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+workersKey)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	b, data := archive(t, testimage.Image{Name: "ghcr.io/acme/audit:1", Files: map[string]string{"worker": "x"}, Entrypoint: []string{"/worker"}})
	if code, resp := upload(t, srv, "", workersKey, data, false); code != 200 {
		t.Fatalf("upload: %d %s", code, resp)
	}
	if code, _ := upload(t, srv, "", workersKey, []byte("not an archive"), false); code != 400 {
		t.Fatalf("bad upload: %d", code)
	}
	if code := post("/v2/" + e.ep + "/purge-queue"); code != 200 {
		t.Fatalf("purge: %d", code)
	}
	if code := post("/v1/workers/" + e.w.spec.ID + ":stop"); code != 200 {
		t.Fatalf("stop: %d", code)
	}
	if code := post("/v1/workers/w-0123456789ab:stop"); code != 404 {
		t.Fatalf("stop of an unknown worker: %d", code)
	}

	want := []struct{ action, object, outcome string }{
		{audit.ImageImport, "ghcr.io/acme/audit:1", "ok"},
		{audit.ImageImport, uploadLabel, "error"},
		{audit.QueuePurge, e.ep, "ok"},
		{audit.WorkerStop, e.w.spec.ID, "ok"},
		{audit.WorkerStop, "w-0123456789ab", "error"},
	}
	lines := log.audits(t)
	if len(lines) != len(want) {
		t.Fatalf("%d audit lines, want %d:\n%s", len(lines), len(want), log.text())
	}
	for i, w := range want {
		for k, v := range map[string]any{"audit": true, "action": w.action, "object": w.object, "outcome": w.outcome,
			"key_id": caller.KeyID, "key_name": caller.Name} {
			if lines[i][k] != v {
				t.Errorf("line %d (%s): %s = %v, want %v", i, w.action, k, lines[i][k], v)
			}
		}
	}
	if lines[0]["digest"] != b.ManifestDigest || lines[0]["source"] != "upload" {
		t.Errorf("upload line: %v", lines[0])
	}
	if strings.Contains(log.text(), workersKey) {
		t.Errorf("the key reached the log:\n%s", log.text())
	}
}
