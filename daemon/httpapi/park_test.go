package httpapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os/exec"
	"testing"
	"time"

	"github.com/emberhq/ember/oci/cudackpt"
	"github.com/emberhq/ember/oci/cudackpt/ckpttest"
	"github.com/emberhq/ember/oci/process"
	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/spec"
)

// TestParkedVisible: a worker parked for being idle (the process runtime,
// a real host process frozen with SIGSTOP, and a fake CUDA driver that
// takes the process for a CUDA one holding 1 GiB) shows as parked, with
// its bytes, in GET /v1/workers and /metrics.
func TestParkedVisible(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep here")
	}
	drv := ckpttest.New()
	s, err := scheduler.Open(scheduler.Config{
		DataDir:       t.TempDir(),
		Runtime:       process.New(),
		WorkerAPIBase: "http://127.0.0.1:1",
		Tunables:      scheduler.Tunables{StopGrace: time.Second, TakeHold: time.Second, ParkMemory: 8 << 30},
		MinFreeBytes:  1,
		GPUPark:       drv,
		MemAvailable:  func() (uint64, error) { return 64 << 30, nil },
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	name, cmd, zero, one, park := "parker", []string{sleep, "600"}, 0, 1, spec.ParkIdle
	ep, err := s.CreateEndpoint(ctx, spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &zero, WorkersMax: &one,
		GPUCount: &one, IdleTimeout: &one, GPUPark: &park, GPUParkDelay: &one})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(New(Config{
		Scheduler: s,
		Keys:      func() []string { return []string{workersKey} },
		Logger:    slog.New(slog.DiscardHandler),
	}))
	t.Cleanup(srv.Close)
	e := &workersEnv{srv: srv, s: s, ep: ep.ID}

	// Play the worker's protocol side for the host process: take the job
	// and finish it, so that the worker goes idle.
	job, err := s.Submit(ctx, ep.ID, spec.Submission{Input: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	var w scheduler.WorkerInfo
	waitUntil(t, "the worker started", func() bool {
		ws := s.Workers(ep.ID)
		if len(ws) == 1 && ws[0].PID > 0 {
			w = ws[0]
			return true
		}
		return false
	})
	drv.SetProcess(w.PID, 1<<30)
	lease, err := s.Take(ctx, ep.ID, w.ID, 1, time.Second)
	if err != nil || len(lease.Jobs) != 1 || lease.Jobs[0].ID != job.ID {
		t.Fatalf("take: %+v, %v", lease, err)
	}
	lease.Delivered(true)
	if err := s.Done(ctx, ep.ID, w.ID, job.ID, scheduler.Result{Output: json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the worker parked", func() bool {
		st, _ := drv.Peek(w.PID)
		return st == cudackpt.Checkpointed && len(s.Workers(ep.ID)) == 1 && s.Workers(ep.ID)[0].State == scheduler.WorkerParked
	})

	code, body := e.getAll(t, "/v1/workers?endpoint="+ep.ID, workersKey)
	var got struct {
		Workers []struct {
			State       string `json:"state"`
			ParkedBytes int64  `json:"parkedBytes"`
		} `json:"workers"`
	}
	if err := json.Unmarshal([]byte(body), &got); code != 200 || err != nil || len(got.Workers) != 1 {
		t.Fatalf("GET /v1/workers: %d %s (%v)", code, body, err)
	}
	if got.Workers[0].State != "parked" || got.Workers[0].ParkedBytes != 1<<30 {
		t.Fatalf("GET /v1/workers shows %+v, want parked with 1 GiB", got.Workers[0])
	}

	fams := scrape(t, srv.URL)
	labels := map[string]string{"endpoint": ep.ID, "name": name}
	with := func(k, v string) map[string]string {
		m := map[string]string{k: v}
		for k, v := range labels {
			m[k] = v
		}
		return m
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"ember_workers", with("state", "parked"), 1},
		{"ember_workers_parked_bytes", labels, 1 << 30},
		{"ember_workers_parked_total", labels, 1},
		{"ember_park_memory_used_bytes", nil, 1 << 30},
		{"ember_park_memory_budget_bytes", nil, 8 << 30},
	} {
		m := series(t, fams, c.name, c.labels)
		v := m.GetGauge().GetValue()
		if m.GetCounter() != nil {
			v = m.GetCounter().GetValue()
		}
		if v != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, v, c.want)
		}
	}
}

// waitUntil polls cond until it holds, failing after 15 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 15 s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
