package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/spec"
)

func TestGPUsRoute(t *testing.T) {
	rt := &logRuntime{started: make(chan *logWorker, 8)}
	gpus := []scheduler.GPU{
		{UUID: "GPU-aaaa", Name: "NVIDIA H100 80GB HBM3", MemoryBytes: 80 << 30},
		{UUID: "GPU-bbbb", Name: "NVIDIA H100 80GB HBM3", MemoryBytes: 80 << 30},
		{UUID: "GPU-cccc", Name: "NVIDIA L40S", MemoryBytes: 0}, // total from the stats
	}
	s, err := scheduler.Open(scheduler.Config{
		DataDir:       t.TempDir(),
		Runtime:       rt,
		WorkerAPIBase: "http://127.0.0.1:1",
		Tunables:      scheduler.Tunables{StopGrace: time.Second},
		MinFreeBytes:  1,
		AllocateGPUs:  true,
		GPUs:          gpus,
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	name, cmd, one := "gpu", []string{"fake-worker"}, 1
	types := []string{"H100"}
	ep, err := s.CreateEndpoint(context.Background(), spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &one, WorkersMax: &one, GPUCount: &one, GPUTypes: &types})
	if err != nil {
		t.Fatal(err)
	}
	var w *logWorker
	select {
	case w = <-rt.started:
	case <-time.After(10 * time.Second):
		t.Fatal("no worker started")
	}
	if len(w.spec.GPUs) != 1 {
		t.Fatalf("worker got GPUs %v", w.spec.GPUs)
	}
	held := w.spec.GPUs[0]
	bad := "GPU-bbbb"
	if held == bad {
		bad = "GPU-aaaa"
	}
	s.MarkGPUUnhealthy("GPU-cccc", "XID 79: GPU has fallen off the bus")

	stats := func(uuid string) (GPUStats, error) {
		switch uuid {
		case held:
			return GPUStats{UtilizationPercent: 97, MemoryUsedBytes: 70 << 30, MemoryTotalBytes: 80 << 30, TemperatureC: 71}, nil
		case "GPU-cccc":
			return GPUStats{}, errors.New("gpu GPU-cccc: NVML handle: GPU is lost")
		}
		return GPUStats{UtilizationPercent: 0, MemoryUsedBytes: 1 << 20, MemoryTotalBytes: 80 << 30, TemperatureC: 33}, nil
	}
	type gpuOut struct {
		Index              int     `json:"index"`
		UUID               string  `json:"uuid"`
		Name               string  `json:"name"`
		MemoryTotalBytes   uint64  `json:"memoryTotalBytes"`
		Worker             string  `json:"worker"`
		EndpointID         string  `json:"endpointId"`
		Unhealthy          string  `json:"unhealthy"`
		UtilizationPercent *uint32 `json:"utilizationPercent"`
		MemoryUsedBytes    *uint64 `json:"memoryUsedBytes"`
		TemperatureC       *uint32 `json:"temperatureC"`
		StatsError         string  `json:"statsError"`
	}
	get := func(cfg Config) []gpuOut {
		t.Helper()
		cfg.Scheduler, cfg.Keys, cfg.Logger = s, func() []string { return []string{"k"} }, slog.New(slog.DiscardHandler)
		srv := httptest.NewServer(New(cfg))
		defer srv.Close()
		code, body := call(t, srv, "GET", "/v1/gpus", "k", "")
		if code != 200 {
			t.Fatalf("GET /v1/gpus: %d %s", code, body)
		}
		var out struct{ GPUs []gpuOut }
		if err := json.Unmarshal([]byte(body), &out); err != nil {
			t.Fatal(err)
		}
		if len(out.GPUs) != 3 {
			t.Fatalf("%d GPUs: %s", len(out.GPUs), body)
		}
		return out.GPUs
	}

	// Without GPUStats: inventory, holder and health only.
	for i, g := range get(Config{}) {
		if g.Index != i || g.UUID != gpus[i].UUID || g.Name != gpus[i].Name || g.MemoryTotalBytes != gpus[i].MemoryBytes ||
			g.UtilizationPercent != nil || g.MemoryUsedBytes != nil || g.TemperatureC != nil || g.StatsError != "" {
			t.Errorf("GPU %d without stats: %+v", i, g)
		}
		switch g.UUID {
		case held:
			if g.Worker != w.spec.ID || g.EndpointID != ep.ID || g.Unhealthy != "" {
				t.Errorf("held GPU: %+v", g)
			}
		case "GPU-cccc":
			if g.Worker != "" || g.Unhealthy != "XID 79: GPU has fallen off the bus" {
				t.Errorf("unhealthy GPU: %+v", g)
			}
		default:
			if g.Worker != "" || g.EndpointID != "" || g.Unhealthy != "" {
				t.Errorf("free GPU: %+v", g)
			}
		}
	}

	// With GPUStats: the readings, or why there are none.
	for _, g := range get(Config{GPUStats: stats}) {
		switch g.UUID {
		case held:
			if g.UtilizationPercent == nil || *g.UtilizationPercent != 97 || *g.MemoryUsedBytes != 70<<30 || *g.TemperatureC != 71 {
				t.Errorf("held GPU stats: %+v", g)
			}
		case "GPU-cccc":
			if g.StatsError != "gpu GPU-cccc: NVML handle: GPU is lost" || g.UtilizationPercent != nil || g.MemoryTotalBytes != 0 {
				t.Errorf("lost GPU: %+v", g)
			}
		default:
			// Zero readings are sent, not left out.
			if g.UtilizationPercent == nil || *g.UtilizationPercent != 0 || *g.TemperatureC != 33 {
				t.Errorf("idle GPU stats: %+v", g)
			}
		}
	}
}

func TestGPUsRouteNoScheduler(t *testing.T) {
	srv := httptest.NewServer(New(Config{Keys: func() []string { return []string{"k"} }, Logger: slog.New(slog.DiscardHandler)}))
	defer srv.Close()
	if code, body := call(t, srv, "GET", "/v1/gpus", "k", ""); code != 200 || body != `{"gpus":[]}` {
		t.Errorf("GET: %d %s", code, body)
	}
	if code, _ := call(t, srv, "POST", "/v1/gpus", "k", ""); code != 405 {
		t.Errorf("POST: %d", code)
	}
	if code, _ := call(t, srv, "GET", "/v1/gpus/0", "k", ""); code != 404 {
		t.Errorf("GET one: %d", code)
	}
}
