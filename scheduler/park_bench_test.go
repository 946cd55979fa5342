package scheduler

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/emberhq/ember/oci/cudackpt/ckpttest"
	"github.com/emberhq/ember/scheduler/spec"
)

// BenchmarkParkRevive measures Ember's own overhead in parking and reviving
// a GPU worker: the driver is a ckpttest.Fake (its calls cost nothing) and
// the runtime the test fake, so the figures are the scheduler's work (its
// locks, goroutines, the durable record of the park in Badger on disk),
// not the CUDA driver's copy, which on hardware dominates. Each iteration
// runs, on the same worker and in this order:
//
//   - park: from parkLocked (the decision) until the worker is parked and
//     its GPU released;
//   - park-revive: from a job submitted for its endpoint until the take the
//     worker has pending is answered with it (after the restore);
//   - freeze: the FlashBoot baseline for park, from freezeLocked until the
//     worker's cgroup is frozen;
//   - thaw-revive: the FlashBoot baseline for park-revive, from the job's
//     submission until the pending take is answered;
//   - cold-start: the other baseline, a job for an endpoint with no worker,
//     from its submission until a new worker's first take is answered.
//
// It reports each step's median in µs; `make bench` runs it.
func BenchmarkParkRevive(b *testing.B) {
	rt := newFakeRuntime()
	drv := ckpttest.New()
	s, err := Open(Config{
		DataDir: b.TempDir(), Runtime: rt, WorkerAPIBase: "http://127.0.0.1:1",
		AllocateGPUs: true, GPUs: mockGPUs()[:2], GPUPark: drv,
		Tunables:     Tunables{TakeHold: 10 * time.Second, ParkMemory: 64 * gib},
		MemAvailable: func() (uint64, error) { return 1 << 40, nil },
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Minute)
	defer cancel()

	// Endpoints that never scale down by themselves: the benchmark decides
	// when the worker is frozen or parked.
	create := func(name string, flashboot bool, park string) string {
		cmd := []string{"fake-worker"}
		zero, one, mem, long := 0, 1, int(memLimit>>20), 3600
		e, err := s.CreateEndpoint(ctx, spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &zero, WorkersMax: &one,
			IdleTimeout: &long, FlashbootWindow: &long, GPUCount: &one, MemoryMB: &mem, Flashboot: &flashboot, GPUPark: &park})
		if err != nil {
			b.Fatalf("CreateEndpoint %s: %v", name, err)
		}
		return e.ID
	}
	ep := create("parked", true, spec.ParkOnReclaim)
	cold := create("cold", false, spec.ParkNever)

	newWorker := func() *fakeWorker {
		select {
		case w := <-rt.started:
			return w
		case <-time.After(waitLimit):
			b.Fatalf("no worker started within %v", waitLimit)
			return nil
		}
	}
	// finish completes the job a take answered.
	finish := func(ep string, w *fakeWorker, l *Lease) {
		if len(l.Jobs) != 1 {
			b.Fatalf("take of %s answered %d jobs, want 1", w.id, len(l.Jobs))
		}
		l.Delivered(true)
		if err := s.Done(ctx, ep, w.id, l.Jobs[0].ID, Result{Output: []byte(`1`)}); err != nil {
			b.Fatal(err)
		}
	}
	take := func(ep string, w *fakeWorker) *Lease {
		l, err := s.Take(ctx, ep, w.id, 1, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		return l
	}
	// spin waits until cond, which runs with s.mu held.
	spin := func(what string, cond func() bool) {
		deadline := time.Now().Add(waitLimit)
		for {
			s.mu.Lock()
			ok := cond()
			s.mu.Unlock()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s: not within %v", what, waitLimit)
			}
			runtime.Gosched()
		}
	}
	// revive submits a job for ep, whose worker w has a take pending
	// while it is frozen or parked, and times until the take is answered.
	revive := func(w *fakeWorker) time.Duration {
		got := make(chan *Lease, 1)
		go func() {
			l, err := s.Take(ctx, ep, w.id, 1, 10*time.Second)
			if err != nil {
				b.Error(err)
			}
			got <- l
		}()
		time.Sleep(2 * time.Millisecond) // the take is pending
		begin := time.Now()
		s.mustSubmit(b, ep)
		l := <-got
		took := time.Since(begin)
		if l == nil {
			b.FailNow()
		}
		finish(ep, w, l)
		return took
	}

	// The parkable worker: one CUDA process holding 4 GiB, and one not.
	s.mustSubmit(b, ep)
	w := newWorker()
	w.mu.Lock()
	w.pids = []int{101, 99999}
	w.mu.Unlock()
	drv.SetProcess(101, 4<<30)
	finish(ep, w, take(ep, w))
	s.mu.Lock()
	epState, wk := s.endpoints[ep], s.workers[w.id]
	s.mu.Unlock()

	var park, parkRevive, freeze, thawRevive, coldStart []time.Duration
	for b.Loop() {
		// Park the idle worker.
		s.mu.Lock()
		if !s.parkableLocked(epState, wk, false) {
			s.mu.Unlock()
			b.Fatalf("worker %s is not parkable (state %s)", w.id, wk.state)
		}
		begin := time.Now()
		s.parkLocked(epState, wk, false)
		s.mu.Unlock()
		spin("parked, GPU released", func() bool {
			return wk.park != nil && wk.park.phase == parkParked && len(wk.gpus) == 0
		})
		park = append(park, time.Since(begin))
		if f, _, _ := w.isFrozen(); !f {
			b.Fatal("a parked worker's processes run")
		}
		parkRevive = append(parkRevive, revive(w))

		// Freeze it (FlashBoot) and thaw it.
		s.mu.Lock()
		begin = time.Now()
		if !s.freezeLocked(epState, wk) {
			s.mu.Unlock()
			b.Fatal("freezeLocked refused")
		}
		s.mu.Unlock()
		for f, _, _ := w.isFrozen(); !f; f, _, _ = w.isFrozen() {
			if time.Since(begin) > waitLimit {
				b.Fatalf("not frozen within %v", waitLimit)
			}
			runtime.Gosched()
		}
		freeze = append(freeze, time.Since(begin))
		thawRevive = append(thawRevive, revive(w))

		// A cold start on the other GPU, the worker stopped afterwards.
		begin = time.Now()
		s.mustSubmit(b, cold)
		cw := newWorker()
		l := take(cold, cw)
		coldStart = append(coldStart, time.Since(begin))
		finish(cold, cw, l)
		s.mu.Lock()
		s.retireWorkerLocked(s.workers[cw.id], "benchmark")
		s.mu.Unlock()
		spin("cold worker gone", func() bool { return len(s.endpoints[cold].workers) == 0 })
	}
	b.StopTimer()
	if got := drv.CallsFor(101); len(got) < 8 {
		b.Fatalf("driver calls for pid 101: %v", got)
	}
	b.ReportMetric(0, "ns/op")
	for _, m := range []struct {
		unit string
		d    []time.Duration
	}{
		{"park-µs", park}, {"park-revive-µs", parkRevive},
		{"freeze-µs", freeze}, {"thaw-revive-µs", thawRevive}, {"cold-start-µs", coldStart},
	} {
		b.ReportMetric(float64(median(m.d))/float64(time.Microsecond), m.unit)
	}
}

// median is the middle of ds (the upper one of an even count).
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return ds[len(ds)/2]
}
