package scheduler

import (
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/emberhq/ember/scheduler/spec"
)

// BenchmarkScaleDecision measures one autoscaler decision (scaleLocked on
// one endpoint) on a machine with 8 GPUs shared by 50 endpoints, all GPUs
// held, every endpoint with jobs queued: the expensive case, where each
// decision also looks for GPUs to reclaim. `make bench` reports it.
func BenchmarkScaleDecision(b *testing.B) {
	rt := newFakeRuntime()
	rt.started = make(chan *fakeWorker, 1024)
	s, err := Open(Config{
		DataDir: b.TempDir(), InMemoryStore: true, Runtime: rt, WorkerAPIBase: "http://127.0.0.1:1",
		AllocateGPUs: true, GPUs: mockGPUs(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	cmd := []string{"w"}
	one, max, rc := 1, 4, spec.ScalerRequestCount
	var eps []string
	for i := 0; i < 50; i++ {
		name := fmt.Sprintf("ep%02d", i)
		e, err := s.CreateEndpoint(b.Context(), spec.EndpointSpec{Name: &name, Command: &cmd, GPUCount: &one, WorkersMax: &max, ScalerType: &rc, ScalerValue: &one})
		if err != nil {
			b.Fatal(err)
		}
		eps = append(eps, e.ID)
		for k := 0; k < 20; k++ {
			s.mustSubmit(b, e.ID)
		}
	}
	// Make the 8 GPU holders ready and busy, so nothing can be reclaimed.
	workers := func() []*fakeWorker {
		rt.mu.Lock()
		defer rt.mu.Unlock()
		return append([]*fakeWorker(nil), rt.all...)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(workers()) < 8 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	for _, w := range workers() {
		l, err := s.Take(b.Context(), w.env["RUNPOD_ENDPOINT_ID"], w.id, 1, time.Millisecond)
		if err != nil {
			b.Fatal(err)
		}
		l.Delivered(true)
	}
	s.mu.Lock()
	states := make([]*endpointState, 0, len(eps))
	for _, id := range eps {
		states = append(states, s.endpoints[id])
	}
	s.mu.Unlock()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		s.mu.Lock()
		s.scaleLocked(states[i%len(states)])
		s.mu.Unlock()
	}
	b.StopTimer()
	if n := len(workers()); n != 8 {
		b.Fatalf("%d workers started on 8 GPUs", n)
	}
}
