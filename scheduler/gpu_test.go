package scheduler

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/scheduler/spec"
)

// mockGPUs is an 8-GPU machine: six H100s and two A100s.
func mockGPUs() []GPU {
	var gs []GPU
	for i := 0; i < 8; i++ {
		name := "NVIDIA H100 80GB HBM3"
		if i >= 6 {
			name = "NVIDIA A100-SXM4-80GB"
		}
		gs = append(gs, GPU{UUID: fmt.Sprintf("GPU-%d", i), Name: name, MemoryBytes: 80 << 30})
	}
	return gs
}

func gpuEndpoint(t *testing.T, h *harness, name string, count, min, max int, types []string) string {
	t.Helper()
	cmd := []string{"fake-worker"}
	e, err := h.s.CreateEndpoint(h.ctx, spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &min, WorkersMax: &max, GPUCount: &count, GPUTypes: &types})
	if err != nil {
		t.Fatalf("CreateEndpoint %s: %v", name, err)
	}
	return e.ID
}

// TestGPUAllocationExclusive: workers get disjoint GPU sets of their
// endpoint's types in priority order; the rest of the demand is throttled;
// a stopped worker's GPUs go back to the pool.
func TestGPUAllocationExclusive(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.AllocateGPUs, c.GPUs = true, mockGPUs() })
	h.worker() // the harness endpoint's CPU worker

	a100 := gpuEndpoint(t, h, "a100", 1, 3, 3, []string{"A100", "H100"})
	var got [][]string
	for i := 0; i < 3; i++ {
		got = append(got, h.worker().spec.GPUs)
	}
	// Two A100s first (priority), then an H100.
	seen := map[string]bool{}
	a100s := 0
	for _, g := range got {
		if len(g) != 1 {
			t.Fatalf("worker got %v, want 1 GPU", g)
		}
		if seen[g[0]] {
			t.Fatalf("GPU %s given twice: %v", g[0], got)
		}
		seen[g[0]] = true
		if g[0] == "GPU-6" || g[0] == "GPU-7" {
			a100s++
		}
	}
	if a100s != 2 {
		t.Errorf("workers got %v; want both A100s (GPU-6, GPU-7) used before an H100", got)
	}

	// A 4-GPU endpoint fits once (5 H100s left), then is throttled.
	big := gpuEndpoint(t, h, "big", 4, 2, 2, nil)
	w := h.worker()
	if len(w.spec.GPUs) != 4 {
		t.Fatalf("big worker got %v", w.spec.GPUs)
	}
	for _, g := range w.spec.GPUs {
		if seen[g] {
			t.Fatalf("GPU %s double-allocated", g)
		}
	}
	deadline := time.Now().Add(waitLimit)
	for {
		hl, err := h.s.Health(big)
		if err != nil {
			t.Fatal(err)
		}
		if hl.Workers.Throttled == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("big endpoint: throttled %d, want 1", hl.Workers.Throttled)
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case extra := <-h.rt.started:
		t.Fatalf("a worker started without free GPUs: %v", extra.spec.GPUs)
	case <-time.After(100 * time.Millisecond):
	}

	// Freeing an A100 worker's GPU lets nothing of "big" start (it needs 4),
	// but deleting "a100" frees 3 GPUs: big's second worker starts.
	if err := h.s.DeleteEndpoint(h.ctx, a100); err != nil {
		t.Fatal(err)
	}
	w2 := h.worker()
	if len(w2.spec.GPUs) != 4 {
		t.Fatalf("second big worker got %v", w2.spec.GPUs)
	}
	for _, g := range w2.spec.GPUs {
		for _, g1 := range w.spec.GPUs {
			if g == g1 {
				t.Fatalf("GPU %s given to two live workers", g)
			}
		}
	}
}

// TestGPUAllocationConcurrent: many endpoints scaling up at once never share
// a GPU (run with -race).
func TestGPUAllocationConcurrent(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.AllocateGPUs, c.GPUs = true, mockGPUs() })
	h.worker()
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			name := fmt.Sprintf("c%d", i)
			cmd := []string{"fake-worker"}
			one, two := 1, 2
			if _, err := h.s.CreateEndpoint(h.ctx, spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &two, WorkersMax: &two, GPUCount: &one}); err != nil {
				t.Errorf("create %s: %v", name, err)
			}
		}(i)
	}
	wg.Wait()
	owner := map[string]string{}
	for i := 0; i < 8; i++ {
		w := h.worker()
		for _, g := range w.spec.GPUs {
			if prev, ok := owner[g]; ok {
				t.Fatalf("GPU %s given to %s and %s", g, prev, w.id)
			}
			owner[g] = w.id
		}
	}
	select {
	case extra := <-h.rt.started:
		t.Fatalf("a ninth GPU worker started on 8 GPUs: %v", extra.spec.GPUs)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestGPUFit: an endpoint that could never be placed is refused, naming the
// field and what the machine has.
func TestGPUFit(t *testing.T) {
	cases := []struct {
		name  string
		gpus  []GPU
		count int
		types []string
		want  string
	}{
		{"no GPU at all", nil, 1, nil, "no GPU"},
		{"too many", mockGPUs(), 9, nil, "only 8"},
		{"type absent", mockGPUs(), 1, []string{"B200"}, "only 0"},
		{"too many of a type", mockGPUs(), 3, []string{"A100"}, "only 2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.AllocateGPUs, c.GPUs = true, tc.gpus })
			name, cmd := "x", []string{"w"}
			_, err := h.s.CreateEndpoint(h.ctx, spec.EndpointSpec{Name: &name, Command: &cmd, GPUCount: &tc.count, GPUTypes: &tc.types})
			var fe *spec.FieldError
			if !errors.As(err, &fe) || fe.Field != "gpuCount" || !strings.Contains(fe.Msg, tc.want) {
				t.Fatalf("got %v, want a gpuCount error containing %q", err, tc.want)
			}
		})
	}
}

// TestQueueDelayReapsIdle: with QUEUE_DELAY, a worker left idle past its
// endpoint's idleTimeout is stopped (down to workersMin).
func TestQueueDelayReapsIdle(t *testing.T) {
	h := newHarness(t, nil)
	h.worker()
	name, cmd := "qd", []string{"w"}
	zero, two, idle := 0, 2, 1
	e, err := h.s.CreateEndpoint(h.ctx, spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &zero, WorkersMax: &two, IdleTimeout: &idle, GPUCount: &zero})
	if err != nil {
		t.Fatal(err)
	}
	id := h.s.mustSubmit(t, e.ID)
	w := h.worker()
	lease, err := h.s.Take(h.ctx, e.ID, w.id, 1, time.Second)
	if err != nil || len(lease.Jobs) != 1 || lease.Jobs[0].ID != id {
		t.Fatalf("take: %v %v", lease, err)
	}
	lease.Delivered(true)
	if err := h.s.Done(h.ctx, e.ID, w.id, id, Result{Output: []byte(`1`)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !w.wasStopped() {
		if time.Now().After(deadline) {
			t.Fatal("idle QUEUE_DELAY worker not stopped 5 s after a 1 s idle timeout")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Scheduler) mustSubmit(t testing.TB, ep string) string {
	t.Helper()
	v, err := s.Submit(context.Background(), ep, spec.Submission{Input: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	return v.ID
}
