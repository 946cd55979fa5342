package grpcapi

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/emberhq/ember/daemon/audit"
	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/oci/process"
	emberv1 "github.com/emberhq/ember/proto/ember/v1"
	"github.com/emberhq/ember/scheduler"
)

// auditLog captures a logger's lines as JSON objects.
type auditLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *auditLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *auditLog) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (l *auditLog) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// lines returns the audit lines.
func (l *auditLog) lines(t *testing.T) []map[string]any {
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

// auditCaller is the caller of the audit tests; its secret never reaches
// the context, and the test checks that no other secret reaches the log.
var auditCaller = auth.Caller{KeyID: "k-audit1", Name: "ci-bot", Scope: auth.Admin}

func TestAuditTrail(t *testing.T) {
	var log auditLog
	s, err := scheduler.Open(scheduler.Config{DataDir: t.TempDir(), Runtime: process.New(), WorkerAPIBase: "http://127.0.0.1:1",
		MinFreeBytes: 1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	sv := &Servers{S: s, Log: log.logger()}
	is := &ImageServer{Store: openStore(t), Log: log.logger()}
	ctx := auth.WithCaller(context.Background(), auditCaller)

	zero := int32(0)
	e, err := sv.CreateEndpoint(ctx, &emberv1.CreateEndpointRequest{Endpoint: &emberv1.Endpoint{Name: "audited", Command: []string{"/bin/true"}, GpuCount: &zero}})
	if err != nil {
		t.Fatal(err)
	}
	bad := int32(-1)
	if _, err := sv.CreateEndpoint(ctx, &emberv1.CreateEndpointRequest{Endpoint: &emberv1.Endpoint{Name: "broken", Command: []string{"/bin/true"}, WorkersMax: &bad}}); err == nil {
		t.Fatal("workersMax -1 accepted")
	}
	if _, err := sv.UpdateEndpoint(ctx, &emberv1.UpdateEndpointRequest{Id: e.Id, Endpoint: &emberv1.Endpoint{Name: "audited2"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := sv.PurgeQueue(ctx, &emberv1.PurgeQueueRequest{EndpointId: e.Id}); err != nil {
		t.Fatal(err)
	}
	if _, err := sv.DeleteEndpoint(ctx, &emberv1.DeleteEndpointRequest{Id: e.Id}); err != nil {
		t.Fatal(err)
	}
	if _, err := sv.DeleteEndpoint(ctx, &emberv1.DeleteEndpointRequest{Id: e.Id}); err == nil {
		t.Fatal("second delete succeeded")
	}

	b, path := writeArchive(t, echoImage)
	if _, err := is.ImportImage(ctx, &emberv1.ImportImageRequest{Path: path}); err != nil {
		t.Fatal(err)
	}
	built, err := echoImage.Build()
	if err != nil {
		t.Fatal(err)
	}
	reg := httptest.NewServer(built.Registry("acme/echo", "1"))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")
	const registryPassword = "registry-pass-never-logged"
	if _, err := is.PullImage(ctx, &emberv1.PullImageRequest{Ref: host + "/acme/echo:2", PlainHttp: true, Username: "u", Password: registryPassword}); err == nil {
		t.Fatal("pull of an unknown tag succeeded")
	}
	if _, err := is.DeleteImage(ctx, &emberv1.DeleteImageRequest{Ref: "ghcr.io/acme/echo:1"}); err != nil {
		t.Fatal(err)
	}

	want := []struct {
		action, object, outcome string
		attrs                   map[string]any
	}{
		{audit.EndpointCreate, e.Id, "ok", map[string]any{"endpoint": e.Id, "name": "audited"}},
		{audit.EndpointCreate, "broken", "error", map[string]any{"name": "broken"}},
		{audit.EndpointUpdate, e.Id, "ok", map[string]any{"name": "audited2", "fields": "name"}},
		{audit.QueuePurge, e.Id, "ok", map[string]any{"removed": 0.0}},
		{audit.EndpointDelete, e.Id, "ok", map[string]any{"name": "audited2"}},
		{audit.EndpointDelete, e.Id, "error", nil},
		{audit.ImageImport, "ghcr.io/acme/echo:1", "ok", map[string]any{"digest": b.ManifestDigest, "path": path}},
		{audit.ImagePull, host + "/acme/echo:2", "error", nil},
		{audit.ImageRemove, "ghcr.io/acme/echo:1", "ok", nil},
	}
	lines := log.lines(t)
	if len(lines) != len(want) {
		t.Fatalf("%d audit lines, want %d:\n%s", len(lines), len(want), log.text())
	}
	for i, w := range want {
		got := lines[i]
		for k, v := range map[string]any{"audit": true, "action": w.action, "object": w.object, "outcome": w.outcome,
			"key_id": auditCaller.KeyID, "key_name": auditCaller.Name, "key_scope": "admin"} {
			if got[k] != v {
				t.Errorf("line %d (%s): %s = %v, want %v", i, w.action, k, got[k], v)
			}
		}
		for k, v := range w.attrs {
			if got[k] != v {
				t.Errorf("line %d (%s): %s = %v, want %v", i, w.action, k, got[k], v)
			}
		}
		if (w.outcome == "error") != (got["err"] != nil) {
			t.Errorf("line %d (%s): err = %v with outcome %s", i, w.action, got["err"], w.outcome)
		}
		if w.outcome == "ok" && got["level"] != "INFO" || w.outcome == "error" && got["level"] != "WARN" {
			t.Errorf("line %d (%s): level %v", i, w.action, got["level"])
		}
	}
	if strings.Contains(log.text(), registryPassword) {
		t.Errorf("the registry password reached the log:\n%s", log.text())
	}
}
