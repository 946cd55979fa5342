package scheduler

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/scheduler/spec"
	"github.com/emberhq/ember/scheduler/store"
)

// The fake worker can be frozen, like a runc container.
var _ oci.Freezer = (*fakeWorker)(nil)

func (w *fakeWorker) Freeze() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.frozen {
		return fmt.Errorf("already frozen")
	}
	if w.freezeErr != nil {
		return w.freezeErr
	}
	w.frozen = true
	w.freezes++
	return nil
}

func (w *fakeWorker) Thaw() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.frozen {
		return fmt.Errorf("not frozen")
	}
	w.frozen = false
	w.thaws++
	return nil
}

func (w *fakeWorker) isFrozen() (frozen bool, freezes, thaws int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.frozen, w.freezes, w.thaws
}

func (w *fakeWorker) wasKilled() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.killed
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, waitLimit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) workerState(id string) WorkerState {
	for _, w := range h.s.Workers("") {
		if w.ID == id {
			return w.State
		}
	}
	return WorkerStopped
}

// TestDesired is the scaler's arithmetic, worker by worker.
func TestDesired(t *testing.T) {
	type wk struct {
		held  int
		slots int
		state WorkerState
	}
	cases := []struct {
		name       string
		scaler     string
		value      int
		min, max   int
		queued     int
		low        int
		inProgress int
		oldest     time.Duration
		hint       int
		workers    []wk
		want       int
	}{
		{name: "nothing to do", scaler: spec.ScalerQueueDelay, value: 4, max: 3, want: 0},
		{name: "workersMin kept", scaler: spec.ScalerQueueDelay, value: 4, min: 2, max: 3, want: 2},
		{name: "scale from zero at once", scaler: spec.ScalerQueueDelay, value: 4, max: 3, queued: 1, want: 1},
		{name: "queue delay not yet passed", scaler: spec.ScalerQueueDelay, value: 4, max: 3, queued: 5, oldest: 3 * time.Second,
			workers: []wk{{held: 1, state: WorkerRunning}}, want: 1},
		{name: "queue delay passed adds one", scaler: spec.ScalerQueueDelay, value: 4, max: 3, queued: 5, oldest: 5 * time.Second,
			workers: []wk{{held: 1, state: WorkerRunning}}, want: 2},
		{name: "queue delay passed but free slots", scaler: spec.ScalerQueueDelay, value: 4, max: 3, queued: 2, oldest: 5 * time.Second,
			workers: []wk{{held: 1, slots: 4, state: WorkerRunning}}, want: 1},
		{name: "queue delay capped at workersMax", scaler: spec.ScalerQueueDelay, value: 1, max: 2, queued: 9, oldest: 5 * time.Second,
			workers: []wk{{held: 1, state: WorkerRunning}, {held: 1, state: WorkerRunning}}, want: 2},
		{name: "idle surplus not wanted", scaler: spec.ScalerQueueDelay, value: 4, max: 3,
			workers: []wk{{held: 1, state: WorkerRunning}, {state: WorkerIdle}, {state: WorkerIdle}}, want: 1},
		{name: "idle wanted for queued jobs", scaler: spec.ScalerQueueDelay, value: 4, max: 3, queued: 1,
			workers: []wk{{held: 1, state: WorkerRunning}, {state: WorkerIdle}, {state: WorkerIdle}}, want: 2},
		{name: "low priority never scales up", scaler: spec.ScalerQueueDelay, value: 1, max: 3, queued: 10, low: 10, oldest: time.Minute,
			workers: []wk{{held: 1, state: WorkerRunning}}, want: 1},
		{name: "low priority alone starts one worker", scaler: spec.ScalerRequestCount, value: 1, max: 3, queued: 10, low: 10, want: 1},
		{name: "request count", scaler: spec.ScalerRequestCount, value: 4, max: 10, queued: 7, inProgress: 2, want: 3},
		{name: "request count low excluded", scaler: spec.ScalerRequestCount, value: 1, max: 10, queued: 7, low: 5, inProgress: 1,
			workers: []wk{{held: 1, state: WorkerRunning}}, want: 3},
		{name: "request count capped", scaler: spec.ScalerRequestCount, value: 1, max: 8, queued: 1000, want: 8},
		{name: "request count in concurrency slots", scaler: spec.ScalerRequestCount, value: 1, max: 10, queued: 10, inProgress: 2, hint: 4,
			workers: []wk{{held: 2, slots: 4, state: WorkerRunning}}, want: 3},
		{name: "frozen and draining are not capacity", scaler: spec.ScalerQueueDelay, value: 4, max: 3, queued: 1,
			workers: []wk{{state: WorkerFrozen}, {state: WorkerDraining}}, want: 1},
	}
	now := time.Unix(1_000_000, 0)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := &Scheduler{now: func() time.Time { return now }}
			ep := &endpointState{workers: map[string]*worker{}, inQueue: c.queued, lowQueued: c.low, inProgress: c.inProgress, slotsHint: c.hint}
			ep.def = store.Endpoint{ScalerType: c.scaler, ScalerValue: c.value, WorkersMin: c.min, WorkersMax: c.max}
			if c.queued > c.low {
				j := &job{queued: true}
				j.rec.SubmittedAt = now.Add(-c.oldest).UnixMilli()
				ep.high.push(j)
			}
			for i, x := range c.workers {
				w := &worker{id: fmt.Sprint(i), state: x.state, slots: x.slots, held: map[string]*job{}, ready: true}
				w.frozen = x.state == WorkerFrozen
				w.draining = x.state == WorkerDraining
				for k := 0; k < x.held; k++ {
					w.held[fmt.Sprint(k)] = &job{}
				}
				ep.workers[w.id] = w
			}
			if got := s.desiredLocked(ep); got != c.want {
				t.Fatalf("desired = %d, want %d", got, c.want)
			}
		})
	}
}

// flashEndpoint creates a FlashBoot endpoint that scales 0..max with a 1 s
// idle timeout.
func (h *harness) flashEndpoint(name string, max, window int, gpus int) string {
	h.t.Helper()
	cmd := []string{"fake-worker"}
	zero, idle, yes := 0, 1, true
	e, err := h.s.CreateEndpoint(h.ctx, spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &zero, WorkersMax: &max,
		IdleTimeout: &idle, GPUCount: &gpus, Flashboot: &yes, FlashbootWindow: &window})
	if err != nil {
		h.t.Fatalf("CreateEndpoint: %v", err)
	}
	return e.ID
}

// runOne submits a job to ep and has w take and complete it.
func (h *harness) runOne(ep string, w *fakeWorker) {
	h.t.Helper()
	id := h.s.mustSubmit(h.t, ep)
	l, err := h.s.Take(h.ctx, ep, w.id, 1, time.Second)
	if err != nil || len(l.Jobs) != 1 || l.Jobs[0].ID != id {
		h.t.Fatalf("take on %s: %+v %v", ep, l, err)
	}
	l.Delivered(true)
	if err := h.s.Done(h.ctx, ep, w.id, id, Result{Output: []byte(`1`)}); err != nil {
		h.t.Fatal(err)
	}
}

// TestFlashbootFreezeAndRevive: an idle worker past its idle timeout is
// frozen, not stopped; its take waits while frozen; a job thaws it and the
// waiting take gets the job.
func TestFlashbootFreezeAndRevive(t *testing.T) {
	h := newHarness(t, nil)
	h.worker()
	ep := h.flashEndpoint("flash", 1, 60, 0)
	h.s.mustSubmit(t, ep)
	w := h.worker()
	l, err := h.s.Take(h.ctx, ep, w.id, 1, time.Second)
	if err != nil || len(l.Jobs) != 1 {
		t.Fatalf("take: %v %v", l, err)
	}
	l.Delivered(true)
	h.s.Done(h.ctx, ep, w.id, l.Jobs[0].ID, Result{Output: []byte(`1`)})

	eventually(t, "worker frozen after its idle timeout", func() bool {
		f, n, _ := w.isFrozen()
		return f && n == 1 && h.workerState(w.id) == WorkerFrozen
	})
	if w.wasStopped() {
		t.Fatal("a FlashBoot worker was stopped instead of frozen")
	}
	hl, _ := h.s.Health(ep)
	if hl.Workers.Idle != 0 || hl.Workers.Running != 0 {
		t.Fatalf("/health counts a frozen worker: %+v", hl.Workers)
	}

	// The worker's take (sent before it was frozen) waits for the thaw.
	got := make(chan *Lease, 1)
	go func() {
		l, _ := h.s.Take(h.ctx, ep, w.id, 1, 10*time.Second)
		got <- l
	}()
	time.Sleep(50 * time.Millisecond)
	select {
	case l := <-got:
		t.Fatalf("a frozen worker's take returned %+v", l)
	default:
	}
	id := h.s.mustSubmit(t, ep)
	select {
	case l := <-got:
		if len(l.Jobs) != 1 || l.Jobs[0].ID != id {
			t.Fatalf("revived worker's take got %v, want %s", ids(l.Jobs), id)
		}
		l.Delivered(true)
	case <-time.After(waitLimit):
		t.Fatal("the job did not reach the frozen worker's take")
	}
	eventually(t, "worker thawed", func() bool {
		f, _, n := w.isFrozen()
		return !f && n == 1
	})
	select {
	case extra := <-h.rt.started:
		t.Fatalf("a new worker %s started although a frozen one could be revived", extra.id)
	default:
	}
	st, _ := h.s.Stats(ep)
	if st[0].WorkersFrozen != 1 || st[0].WorkersRevived != 1 || st[0].Revival.Count != 1 || st[0].WorkersStarted != 1 {
		t.Fatalf("stats: %+v", st[0])
	}
}

// TestFlashbootWindowExpires: a frozen worker nobody needs is stopped once
// the window has passed.
func TestFlashbootWindowExpires(t *testing.T) {
	h := newHarness(t, nil)
	h.worker()
	ep := h.flashEndpoint("flash", 1, 1, 0)
	h.s.mustSubmit(t, ep)
	w := h.worker()
	l, _ := h.s.Take(h.ctx, ep, w.id, 1, time.Second)
	l.Delivered(true)
	h.s.Done(h.ctx, ep, w.id, l.Jobs[0].ID, Result{Output: []byte(`1`)})
	eventually(t, "frozen", func() bool { f, _, _ := w.isFrozen(); return f })
	eventually(t, "stopped after the 1 s window", w.wasStopped)
}

// TestReclaimFrozenThenIdle: an endpoint that cannot place a worker takes
// GPUs from other endpoints' frozen workers first, then their idle ones
// (least recently used first), never below their workersMin.
func TestReclaimFrozenThenIdle(t *testing.T) {
	gpus := mockGPUs()[:2]
	h := newHarness(t, func(c *Config) { c.AllocateGPUs, c.GPUs = true, gpus })
	h.worker()
	one := 1

	// "flash" freezes its idle worker (GPU A).
	flash := h.flashEndpoint("flash", 1, 600, 1)
	h.s.mustSubmit(t, flash)
	fw := h.worker()
	h.runOneTaken(flash, fw)
	eventually(t, "flash worker frozen", func() bool { f, _, _ := fw.isFrozen(); return f })

	// "keep" holds GPU B with workersMin 1: never reclaimed.
	name, cmd := "keep", []string{"w"}
	if _, err := h.s.CreateEndpoint(h.ctx, spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &one, WorkersMax: &one, GPUCount: &one}); err != nil {
		t.Fatal(err)
	}
	kw := h.worker()

	// "needy" wants a GPU: the frozen worker goes.
	needy := gpuEndpoint(t, h, "needy", 1, 0, 2, nil)
	h.s.mustSubmit(t, needy)
	nw := h.worker()
	if !fw.wasKilled() && !fw.wasStopped() {
		t.Fatal("the frozen worker was not evicted")
	}
	if len(nw.spec.GPUs) != 1 || nw.spec.GPUs[0] != fw.spec.GPUs[0] {
		t.Fatalf("needy got %v, want the frozen worker's %v", nw.spec.GPUs, fw.spec.GPUs)
	}
	// A second needy worker has nothing to reclaim: "keep" is at its
	// minimum, so the job waits and the endpoint shows a throttled worker.
	h.s.mustSubmit(t, needy)
	h.s.mustSubmit(t, needy)
	eventually(t, "needy throttled", func() bool {
		hl, _ := h.s.Health(needy)
		return hl.Workers.Throttled == 1
	})
	if kw.wasStopped() || kw.wasKilled() {
		t.Fatal("a workersMin worker was reclaimed")
	}
	st, _ := h.s.Stats(flash)
	if st[0].WorkersReclaimed != 1 {
		t.Fatalf("flash reclaimed = %d, want 1", st[0].WorkersReclaimed)
	}
}

// runOneTaken is runOne for a worker that has just started.
func (h *harness) runOneTaken(ep string, w *fakeWorker) {
	h.t.Helper()
	l, err := h.s.Take(h.ctx, ep, w.id, 1, time.Second)
	if err != nil || len(l.Jobs) != 1 {
		h.t.Fatalf("take: %+v %v", l, err)
	}
	l.Delivered(true)
	if err := h.s.Done(h.ctx, ep, w.id, l.Jobs[0].ID, Result{Output: []byte(`1`)}); err != nil {
		h.t.Fatal(err)
	}
}

// TestReclaimIdleLRU: of two idle workers of another endpoint, the one
// idle longest goes.
func TestReclaimIdleLRU(t *testing.T) {
	gpus := mockGPUs()[:2]
	h := newHarness(t, func(c *Config) { c.AllocateGPUs, c.GPUs = true, gpus })
	h.worker()
	name, cmd := "busy", []string{"w"}
	zero, one, two, long := 0, 1, 2, 3600
	busy, err := h.s.CreateEndpoint(h.ctx, spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &zero, WorkersMax: &two, GPUCount: &one, IdleTimeout: &long,
		ScalerType: ptr(spec.ScalerRequestCount), ScalerValue: &one})
	if err != nil {
		t.Fatal(err)
	}
	a := h.s.mustSubmit(t, busy.ID)
	b := h.s.mustSubmit(t, busy.ID)
	w1, w2 := h.worker(), h.worker()
	for _, w := range []*fakeWorker{w1, w2} {
		l, err := h.s.Take(h.ctx, busy.ID, w.id, 1, time.Second)
		if err != nil || len(l.Jobs) != 1 {
			t.Fatalf("take: %v %v", l, err)
		}
		l.Delivered(true)
	}
	// w2 finishes first, so it has been idle longer.
	jobOf := func(w *fakeWorker) string {
		h.s.mu.Lock()
		defer h.s.mu.Unlock()
		for id := range h.s.workers[w.id].held {
			return id
		}
		return ""
	}
	first, second := jobOf(w2), jobOf(w1)
	if first == "" || second == "" || (first != a && first != b) {
		t.Fatalf("held jobs %q %q", first, second)
	}
	h.s.Done(h.ctx, busy.ID, w2.id, first, Result{Output: []byte(`1`)})
	time.Sleep(20 * time.Millisecond)
	h.s.Done(h.ctx, busy.ID, w1.id, second, Result{Output: []byte(`1`)})

	needy := gpuEndpoint(t, h, "needy", 1, 0, 1, nil)
	h.s.mustSubmit(t, needy)
	nw := h.worker()
	if !w2.wasStopped() || w1.wasStopped() {
		t.Fatalf("reclaimed w1 stopped=%v w2 stopped=%v; want only w2 (idle longest)", w1.wasStopped(), w2.wasStopped())
	}
	if len(nw.spec.GPUs) != 1 || nw.spec.GPUs[0] != w2.spec.GPUs[0] {
		t.Fatalf("needy got %v, want w2's %v", nw.spec.GPUs, w2.spec.GPUs)
	}
}

func ptr[T any](v T) *T { return &v }

// TestGPUUnhealthy: a GPU reported bad stops its worker and is not given
// out again.
func TestGPUUnhealthy(t *testing.T) {
	gpus := mockGPUs()[:2]
	h := newHarness(t, func(c *Config) { c.AllocateGPUs, c.GPUs = true, gpus })
	h.worker()
	ep := gpuEndpoint(t, h, "g", 1, 1, 1, nil)
	w := h.worker()
	bad := w.spec.GPUs[0]
	h.s.MarkGPUUnhealthy(bad, "XID 79 (GPU has fallen off the bus)")
	// The worker may be marked before its start has returned its handle;
	// it is then stopped as soon as it has.
	eventually(t, "the worker on the bad GPU stopped", w.wasStopped)
	w2 := h.worker()
	if len(w2.spec.GPUs) != 1 || w2.spec.GPUs[0] == bad {
		t.Fatalf("replacement got %v; the bad GPU is %s", w2.spec.GPUs, bad)
	}
	var found bool
	for _, g := range h.s.GPUs() {
		if g.UUID == bad {
			found = true
			if !strings.Contains(g.Unhealthy, "XID 79") {
				t.Fatalf("GPU list shows %+v", g)
			}
		}
	}
	if !found {
		t.Fatal("bad GPU missing from the list")
	}
	_ = ep
}

// TestGPUFreeMemoryFilter: a GPU with less free memory than gpuMemoryMb is
// skipped.
func TestGPUFreeMemoryFilter(t *testing.T) {
	gpus := mockGPUs()[:2]
	h := newHarness(t, func(c *Config) {
		c.AllocateGPUs, c.GPUs = true, gpus
		c.GPUFreeMemory = func(uuid string) (uint64, error) {
			if uuid == gpus[0].UUID {
				return 1 << 30, nil // someone else's process uses the rest
			}
			return 70 << 30, nil
		}
	})
	h.worker()
	name, cmd := "big", []string{"w"}
	one, mem := 1, 40<<10
	if _, err := h.s.CreateEndpoint(h.ctx, spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &one, WorkersMax: &one, GPUCount: &one, GPUMemoryMB: &mem}); err != nil {
		t.Fatal(err)
	}
	w := h.worker()
	if len(w.spec.GPUs) != 1 || w.spec.GPUs[0] != gpus[1].UUID {
		t.Fatalf("worker got %v, want %s (the one with 70 GiB free)", w.spec.GPUs, gpus[1].UUID)
	}
}

// TestConcurrentScaleUpsNoDoubleAllocation runs many endpoints scaling up
// at once on 8 GPUs (run with -race): no GPU ever has two live workers.
func TestConcurrentScaleUpsNoDoubleAllocation(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.AllocateGPUs, c.GPUs = true, mockGPUs() })
	h.worker()
	var eps []string
	for i := 0; i < 6; i++ {
		eps = append(eps, gpuEndpoint(t, h, fmt.Sprintf("e%d", i), 1+i%2, 0, 4, nil))
	}
	var wg sync.WaitGroup
	for _, ep := range eps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 5; k++ {
				h.s.Submit(h.ctx, ep, spec.Submission{Input: []byte(`{}`)})
			}
		}()
	}
	wg.Wait()
	var started atomic.Int32
	timeout := time.After(2 * time.Second)
loop:
	for {
		select {
		case <-h.rt.started:
			started.Add(1)
		case <-timeout:
			break loop
		}
	}
	owner := map[string]string{}
	h.rt.mu.Lock()
	all := append([]*fakeWorker(nil), h.rt.all...)
	h.rt.mu.Unlock()
	for _, w := range all {
		select {
		case <-w.done:
			continue
		default:
		}
		for _, g := range w.spec.GPUs {
			if other, dup := owner[g]; dup {
				t.Fatalf("GPU %s given to %s and %s", g, other, w.id)
			}
			owner[g] = w.id
		}
	}
	// Three 1-GPU and three 2-GPU endpoints want 9 GPUs: depending on who
	// comes first, all 8 are in use, or 7 with the last one too few for a
	// 2-GPU worker.
	if len(owner) < 7 {
		t.Fatalf("%d GPUs in use after the burst, want at least 7 of 8", len(owner))
	}
}

// TestInitTimeoutUnhealthy: a worker that neither takes nor pings within
// the init timeout is marked unhealthy, stopped, shown as unhealthy with
// the reason, and replaced after a back-off.
func TestInitTimeoutUnhealthy(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	h := newHarness(t, func(c *Config) { c.Now = func() time.Time { return time.Unix(0, clock.Load()) } })
	h.worker()
	name, cmd := "slow", []string{"w"}
	one, init := 1, 10
	e, err := h.s.CreateEndpoint(h.ctx, spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &one, WorkersMax: &one, GPUCount: new(int), InitTimeout: &init})
	if err != nil {
		t.Fatal(err)
	}
	w := h.worker()
	clock.Add(int64(11 * time.Second))
	eventually(t, "stopped after the init timeout", w.wasStopped)
	eventually(t, "shown unhealthy", func() bool {
		hl, _ := h.s.Health(e.ID)
		return hl.Workers.Unhealthy == 1
	})
	var info WorkerInfo
	for _, x := range h.s.Workers(e.ID) {
		if x.ID == w.id {
			info = x
		}
	}
	if info.State != WorkerUnhealthy || !strings.Contains(info.Reason, "init timeout (10s)") {
		t.Fatalf("worker list shows %+v", info)
	}
	// Back-off: no replacement before 1 s, one after.
	select {
	case x := <-h.rt.started:
		t.Fatalf("replacement %s started without back-off", x.id)
	case <-time.After(100 * time.Millisecond):
	}
	clock.Add(int64(2 * time.Second))
	w2 := h.worker()
	if err := h.s.Ping(e.ID, w2.id, nil, "1.12.0", "", ""); err != nil {
		t.Fatal(err)
	}
	hl, _ := h.s.Health(e.ID)
	if hl.Workers.Unhealthy != 0 || hl.Workers.Idle != 1 {
		t.Fatalf("after a healthy worker: %+v", hl.Workers)
	}
}

// TestKillAfterStopGrace: a worker still running a cancelled job after the
// stop grace (a synchronous handler) is killed; a worker that lets go of
// it is not.
func TestKillAfterStopGrace(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.StopGrace = 300 * time.Millisecond })
	w := h.worker()
	id := h.submit(spec.Submission{})
	h.take(w)
	if _, err := h.s.Cancel(h.ctx, h.ep, id); err != nil {
		t.Fatal(err)
	}
	// It keeps listing the job: stuck.
	stop := time.After(waitLimit)
	for !w.wasKilled() {
		h.s.Ping(h.ep, w.id, []string{id}, "1.12.0", "", "")
		select {
		case <-stop:
			t.Fatal("a worker that kept running a cancelled job was not killed")
		case <-time.After(20 * time.Millisecond):
		}
	}

	// The replacement lets go of its cancelled job at once: not killed.
	w2 := h.worker()
	id2 := h.submit(spec.Submission{})
	h.take(w2)
	h.s.Cancel(h.ctx, h.ep, id2)
	h.s.Ping(h.ep, w2.id, nil, "1.12.0", "", "")
	time.Sleep(700 * time.Millisecond)
	if w2.wasKilled() {
		t.Fatal("a worker that dropped its cancelled job was killed")
	}
}

// TestEndpointMaxAttempts: a job whose workers keep dying fails after the
// endpoint's own attempt limit, saying why.
func TestEndpointMaxAttempts(t *testing.T) {
	h := newHarness(t, nil)
	h.worker()
	name, cmd := "crashy", []string{"w"}
	one, two := 1, 2
	e, err := h.s.CreateEndpoint(h.ctx, spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &one, WorkersMax: &one, GPUCount: new(int), MaxAttempts: &two})
	if err != nil {
		t.Fatal(err)
	}
	id := h.s.mustSubmit(t, e.ID)
	for i := 0; i < 2; i++ {
		w := h.worker()
		l, err := h.s.Take(h.ctx, e.ID, w.id, 1, waitLimit)
		if err != nil || len(l.Jobs) != 1 {
			t.Fatalf("attempt %d: take %v %v", i+1, l, err)
		}
		l.Delivered(true)
		w.finish(oci.ExitStatus{Code: 137})
	}
	var v JobView
	eventually(t, "job failed", func() bool {
		v, _ = h.s.Status(e.ID, id)
		return v.Status == store.Failed
	})
	if v.Error != "worker exited with code 137 after 2 attempts" {
		t.Fatalf("error = %q", v.Error)
	}
}

// TestSlotsFromBatchTake: a worker that asks for 4 jobs at once counts as 4
// slots, for the scaler and in the stats.
func TestSlotsFromBatchTake(t *testing.T) {
	h := newHarness(t, nil)
	w := h.worker()
	l, err := h.s.Take(h.ctx, h.ep, w.id, 4, 20*time.Millisecond)
	if err != nil || len(l.Jobs) != 0 {
		t.Fatalf("take: %v %v", l, err)
	}
	h.s.mu.Lock()
	slots, hint := h.s.workers[w.id].slots, h.s.endpoints[h.ep].slotsHint
	h.s.mu.Unlock()
	if slots != 4 || hint != 4 {
		t.Fatalf("slots %d hint %d, want 4 and 4", slots, hint)
	}
}

// TestDistribution: nearest-rank quantiles over the last samples.
func TestDistribution(t *testing.T) {
	var d distribution
	if q := d.summary(); q != (Quantiles{}) {
		t.Fatalf("empty: %+v", q)
	}
	for i := 1; i <= 100; i++ {
		d.add(time.Duration(i) * time.Millisecond)
	}
	q := d.summary()
	if q.Count != 100 || q.P50 != 0.050 || q.P90 != 0.090 || q.P99 != 0.099 {
		t.Fatalf("1..100 ms: %+v", q)
	}
	for i := 0; i < sampleWindowSize; i++ {
		d.add(time.Second)
	}
	q = d.summary()
	if q.Count != 100+sampleWindowSize || q.P50 != 1 || q.P99 != 1 {
		t.Fatalf("after the window rolled over: %+v", q)
	}
}
