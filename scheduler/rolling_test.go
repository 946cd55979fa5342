package scheduler

import (
	"context"
	"testing"
	"time"

	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/scheduler/spec"
	"github.com/emberhq/ember/scheduler/store"
)

// liveWorkers lists the endpoint's workers that take jobs or will: not
// draining, not stopped.
func (h *harness) liveWorkers(ep string) []WorkerInfo {
	var out []WorkerInfo
	for _, w := range h.s.Workers(ep) {
		if w.State != WorkerDraining && w.State != WorkerStopped && w.State != WorkerUnhealthy {
			out = append(out, w)
		}
	}
	return out
}

func (h *harness) generation(ep string) int64 {
	h.t.Helper()
	e, err := h.s.Endpoint(ep)
	if err != nil {
		h.t.Fatal(err)
	}
	return e.Generation
}

// noNewWorker fails if the scheduler starts a worker within a short wait.
func (h *harness) noNewWorker(what string) {
	h.t.Helper()
	select {
	case w := <-h.rt.started:
		h.t.Fatalf("%s: worker %s started", what, w.id)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestRollingGenerationByField: an update that changes what a worker runs
// raises the generation and replaces the idle worker; one that changes only
// scaling or job policy (or sets a field to the value it has) does neither.
func TestRollingGenerationByField(t *testing.T) {
	for _, tc := range []struct {
		name  string
		patch spec.EndpointSpec
		bump  bool
	}{
		{"image", spec.EndpointSpec{Image: ptr("example/worker:2")}, true},
		{"command", spec.EndpointSpec{Command: ptr([]string{"fake-worker", "--v2"})}, true},
		{"env", spec.EndpointSpec{Env: ptr(map[string]string{"MODEL": "b"})}, true},
		{"memoryMb", spec.EndpointSpec{MemoryMB: ptr(512)}, true},
		{"cpus", spec.EndpointSpec{CPUs: ptr(1.5)}, true},
		{"pidsLimit", spec.EndpointSpec{PidsLimit: ptr(100)}, true},
		{"network", spec.EndpointSpec{Network: ptr(spec.NetworkNone)}, true},
		{"init", spec.EndpointSpec{Init: ptr(false)}, true},
		{"gpuCount", spec.EndpointSpec{GPUCount: ptr(1)}, true},
		{"gpuTypes", spec.EndpointSpec{GPUTypes: ptr([]string{"NVIDIA H100"})}, true},
		{"gpuMemoryMb", spec.EndpointSpec{GPUCount: ptr(1), GPUMemoryMB: ptr(1000)}, true},

		{"name", spec.EndpointSpec{Name: ptr("renamed")}, false},
		{"workersMax", spec.EndpointSpec{WorkersMax: ptr(4)}, false},
		{"idleTimeout", spec.EndpointSpec{IdleTimeout: ptr(60)}, false},
		{"scaler", spec.EndpointSpec{ScalerType: ptr(spec.ScalerRequestCount), ScalerValue: ptr(2)}, false},
		{"executionTimeoutMs", spec.EndpointSpec{ExecutionTimeoutMs: ptr(int64(60_000))}, false},
		{"maxAttempts", spec.EndpointSpec{MaxAttempts: ptr(5)}, false},
		{"initTimeout", spec.EndpointSpec{InitTimeout: ptr(60)}, false},
		{"flashboot", spec.EndpointSpec{Flashboot: ptr(true), FlashbootWindow: ptr(60)}, false},
		{"same env", spec.EndpointSpec{Env: ptr(map[string]string{"MODEL": "a"})}, false},
		{"same command", spec.EndpointSpec{Command: ptr([]string{"fake-worker"})}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.worker() // the harness's endpoint's
			e, err := h.s.CreateEndpoint(h.ctx, spec.EndpointSpec{Name: ptr("rolled"), Command: ptr([]string{"fake-worker"}),
				Env: ptr(map[string]string{"MODEL": "a"}), WorkersMin: ptr(1), WorkersMax: ptr(1), GPUCount: ptr(0)})
			if err != nil {
				t.Fatal(err)
			}
			if e.Generation != 1 {
				t.Fatalf("a new endpoint has generation %d, want 1", e.Generation)
			}
			h.ep = e.ID
			w := h.worker()
			h.takeEmpty(w) // ready and idle
			before := h.generation(h.ep)
			e, err = h.s.UpdateEndpoint(h.ctx, h.ep, tc.patch)
			if err != nil {
				t.Fatalf("UpdateEndpoint: %v", err)
			}
			if got, want := e.Generation, before+map[bool]int64{true: 1, false: 0}[tc.bump]; got != want {
				t.Fatalf("generation after the update %d, want %d (before %d)", got, want, before)
			}
			if !tc.bump {
				if w.wasStopped() {
					t.Fatal("a scaling-only update stopped the worker")
				}
				h.noNewWorker("scaling-only update")
				if got := h.workerState(w.id); got != WorkerIdle {
					t.Fatalf("worker is %s after a scaling-only update, want idle", got)
				}
				return
			}
			eventually(t, "old idle worker stopped", w.wasStopped)
			next := h.worker()
			h.takeEmpty(next)
			for _, wi := range h.s.Workers(h.ep) {
				if wi.ID == next.id && wi.Generation != e.Generation {
					t.Fatalf("replacement runs generation %d, want %d", wi.Generation, e.Generation)
				}
			}
		})
	}
}

// TestRollingBusyWorkerFinishes: a worker running a job when its endpoint
// is updated keeps the job to the end, takes nothing new (its pending take
// is held, then answered empty when it stops), and stops after its job;
// a new-generation worker starts at once for workersMin and takes the next
// job.
func TestRollingBusyWorkerFinishes(t *testing.T) {
	h := newHarness(t, nil)
	old := h.worker()
	first := h.submit(spec.Submission{})
	if got := h.take(old).ID; got != first {
		t.Fatalf("took %s, want %s", got, first)
	}
	// A second take in flight, as an SDK with concurrency > 1 has.
	pending := make(chan *Lease, 1)
	go func() {
		l, _ := h.s.Take(h.ctx, h.ep, old.id, 1, 30*time.Second)
		pending <- l
	}()
	time.Sleep(20 * time.Millisecond)

	e, err := h.s.UpdateEndpoint(h.ctx, h.ep, spec.EndpointSpec{Env: ptr(map[string]string{"MODEL": "b"})})
	if err != nil {
		t.Fatal(err)
	}
	if e.Generation != 2 {
		t.Fatalf("generation %d, want 2", e.Generation)
	}
	// workersMin (1) holds: a worker of the new generation starts although
	// the old one is still there.
	next := h.worker()
	if next.env["MODEL"] != "b" {
		t.Fatalf("new worker env MODEL=%q, want b", next.env["MODEL"])
	}
	if old.wasStopped() {
		t.Fatal("the busy worker was stopped before its job ended")
	}
	var sawOld bool
	for _, wi := range h.s.Workers(h.ep) {
		switch wi.ID {
		case old.id:
			sawOld = true
			if wi.Generation != 1 || !wi.Outdated || wi.State != WorkerRunning {
				t.Fatalf("old worker listed as %+v, want generation 1, outdated, running", wi)
			}
		case next.id:
			if wi.Generation != 2 || wi.Outdated {
				t.Fatalf("new worker listed as %+v, want generation 2", wi)
			}
		}
	}
	if !sawOld {
		t.Fatal("the old worker is not listed")
	}

	second := h.submit(spec.Submission{})
	if got := h.take(next).ID; got != second {
		t.Fatalf("new worker took %s, want %s", got, second)
	}
	select {
	case l := <-pending:
		t.Fatalf("the old worker's pending take returned %v while it still ran its job", ids(l.Jobs))
	case <-time.After(50 * time.Millisecond):
	}

	h.done(old, first, Result{Output: []byte(`1`)})
	if st := h.status(first).Status; st != "COMPLETED" {
		t.Fatalf("the old worker's job is %s, want COMPLETED", st)
	}
	eventually(t, "old worker stopped after its job", old.wasStopped)
	select {
	case l := <-pending:
		if len(l.Jobs) != 0 {
			t.Fatalf("the old worker's pending take got %v, want nothing", ids(l.Jobs))
		}
	case <-time.After(waitLimit):
		t.Fatal("the old worker's pending take was not answered when it stopped")
	}
	eventually(t, "old worker gone", func() bool { return h.workerState(old.id) == WorkerStopped })
	h.done(next, second, Result{Output: []byte(`2`)})
	if n := len(h.liveWorkers(h.ep)); n != 1 {
		t.Fatalf("%d live workers after the roll, want 1 (workersMin)", n)
	}
	h.noNewWorker("after the roll")
}

// TestRollingKeepsWorkersMin: idle workers of the old generation are
// replaced at once, one new-generation worker for each, so the endpoint
// ends with workersMin live workers, all of the new generation.
func TestRollingKeepsWorkersMin(t *testing.T) {
	h := newHarness(t, nil)
	h.worker()
	h.ep = h.createEndpoint("min3", 3, 3)
	var olds []*fakeWorker
	for range 3 {
		w := h.worker()
		h.takeEmpty(w)
		olds = append(olds, w)
	}
	if _, err := h.s.UpdateEndpoint(h.ctx, h.ep, spec.EndpointSpec{Command: ptr([]string{"fake-worker", "--v2"})}); err != nil {
		t.Fatal(err)
	}
	for _, w := range olds {
		eventually(t, "old idle worker stopped", w.wasStopped)
	}
	for range 3 {
		w := h.worker()
		if len(w.spec.Command) != 2 {
			t.Fatalf("replacement runs %v, want the new command", w.spec.Command)
		}
		h.takeEmpty(w)
	}
	eventually(t, "3 live workers of generation 2", func() bool {
		live := h.liveWorkers(h.ep)
		for _, wi := range live {
			if wi.Generation != 2 {
				return false
			}
		}
		return len(live) == 3
	})
	h.noNewWorker("after the roll")
}

// TestRollingFrozenReplaced: a frozen worker of the old generation is
// stopped at once, not revived: the next job starts a new-generation one.
func TestRollingFrozenReplaced(t *testing.T) {
	h := newHarness(t, nil)
	h.worker()
	ep := h.flashEndpoint("flash", 1, 60, 0)
	h.ep = ep
	h.submit(spec.Submission{})
	w := h.worker()
	h.done(w, h.take(w).ID, Result{Output: []byte(`1`)})
	eventually(t, "worker frozen after its idle timeout", func() bool { return h.workerState(w.id) == WorkerFrozen })

	if _, err := h.s.UpdateEndpoint(h.ctx, ep, spec.EndpointSpec{Env: ptr(map[string]string{"MODEL": "b"})}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "frozen worker stopped", w.wasStopped)
	if _, _, thaws := w.isFrozen(); thaws != 0 {
		t.Fatalf("the frozen old worker was revived (%d thaws)", thaws)
	}
	id := h.submit(spec.Submission{})
	next := h.worker()
	if next.env["MODEL"] != "b" {
		t.Fatalf("new worker env MODEL=%q, want b", next.env["MODEL"])
	}
	if got := h.take(next).ID; got != id {
		t.Fatalf("new worker took %s, want %s", got, id)
	}
}

// TestRollingAfterRestart: records written before generations existed read
// as generation 1 and replace nothing; a worker taken back after a restart
// that is older than its endpoint's generation (the daemon went away
// before it was replaced) is replaced then.
func TestRollingAfterRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, newFakeRuntime())
	cfg.DataDir, cfg.InMemoryStore, cfg.MinFreeBytes = dir, false, 1
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	legacy, err := s.CreateEndpoint(context.Background(), spec.EndpointSpec{Name: ptr("legacy"), Command: ptr([]string{"fake"}), GPUCount: ptr(0)})
	if err != nil {
		t.Fatal(err)
	}
	rolled, err := s.CreateEndpoint(context.Background(), spec.EndpointSpec{Name: ptr("rolled"), Command: ptr([]string{"fake"}), GPUCount: ptr(0)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	st, err := store.OpenBadger(store.BadgerOptions{Dir: dir, Logger: cfg.Logger})
	if err != nil {
		t.Fatal(err)
	}
	legacy.Generation = 0 // as written before the field existed
	rolled.Generation = 2
	b := st.NewBatch()
	for _, e := range []*store.Endpoint{&legacy, &rolled} {
		if err := b.PutEndpoint(e); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UnixMilli()
	for _, w := range []store.WorkerRecord{
		{ID: "w-legacy", Endpoint: legacy.ID, Token: "t1", StartedAt: now},
		{ID: "w-old", Endpoint: rolled.ID, Token: "t2", StartedAt: now, Generation: 1},
		{ID: "w-cur", Endpoint: rolled.ID, Token: "t3", StartedAt: now, Generation: 2},
	} {
		if err := b.PutWorker(&w); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Commit(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	st.Close()

	handles := map[string]*fakeWorker{}
	for _, id := range []string{"w-legacy", "w-old", "w-cur"} {
		handles[id] = &fakeWorker{done: make(chan struct{}), env: map[string]string{}}
	}
	cfg.Runtime = newFakeRuntime()
	cfg.Adopt = func(r store.WorkerRecord) (oci.Worker, error) { return handles[r.ID], nil }
	s2, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if e, _ := s2.Endpoint(legacy.ID); e.Generation != 1 {
		t.Fatalf("an endpoint record without a generation reads as %d, want 1", e.Generation)
	}
	eventually(t, "the outdated worker stopped", handles["w-old"].wasStopped)
	for _, id := range []string{"w-legacy", "w-cur"} {
		if handles[id].wasStopped() {
			t.Fatalf("%s was stopped, but runs its endpoint's generation", id)
		}
	}
	for _, w := range s2.Workers("") {
		if w.ID == "w-legacy" && w.Generation != 1 {
			t.Fatalf("a worker record without a generation reads as %d, want 1", w.Generation)
		}
	}
}
