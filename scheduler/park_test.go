package scheduler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/oci/cudackpt"
	"github.com/emberhq/ember/oci/cudackpt/ckpttest"
	"github.com/emberhq/ember/scheduler/spec"
	"github.com/emberhq/ember/scheduler/store"
)

// The fake worker can list its processes and change its memory limit,
// like a runc container; every limit set is recorded.
var _ oci.Inspector = (*fakeWorker)(nil)

func (w *fakeWorker) Processes() ([]int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.pids), nil
}

func (w *fakeWorker) MemoryLimit() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.memLimit
}

func (w *fakeWorker) SetMemoryLimit(b int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.limitErr != nil {
		return w.limitErr
	}
	w.memLimit = b
	w.limits = append(w.limits, b)
	return nil
}

func (w *fakeWorker) limitsSet() []int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.limits)
}

const (
	gib      = int64(1) << 30
	memLimit = gib // the parking endpoints' memoryMb
)

// parkRig is a harness whose scheduler parks through a ckpttest.Fake, on
// a machine with a few GPUs.
type parkRig struct {
	*harness
	drv   *ckpttest.Fake
	avail atomic.Uint64 // the host's MemAvailable
}

func newParkRig(t *testing.T, gpus int, mod func(*Config)) *parkRig {
	t.Helper()
	r := &parkRig{drv: ckpttest.New()}
	r.avail.Store(1 << 40)
	r.harness = newHarness(t, func(c *Config) {
		c.AllocateGPUs, c.GPUs = true, mockGPUs()[:gpus]
		c.GPUPark = r.drv
		c.ParkMemory = 64 * gib
		c.MemAvailable = func() (uint64, error) { return r.avail.Load(), nil }
		if mod != nil {
			mod(c)
		}
	})
	r.worker() // the harness endpoint's CPU worker
	return r
}

// endpoint creates a 1-GPU endpoint with a 1 GiB memory limit, a 1 s idle
// timeout and a 1 s gpuParkDelay.
func (r *parkRig) endpoint(name, park string, flashboot bool, idle int) string {
	r.t.Helper()
	cmd := []string{"fake-worker"}
	zero, one, mem, delay := 0, 1, int(memLimit>>20), 1
	e, err := r.s.CreateEndpoint(r.ctx, spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &zero, WorkersMax: &one,
		IdleTimeout: &idle, GPUCount: &one, MemoryMB: &mem, Flashboot: &flashboot, GPUPark: &park, GPUParkDelay: &delay})
	if err != nil {
		r.t.Fatalf("CreateEndpoint %s: %v", name, err)
	}
	return e.ID
}

// cudaWorker runs one job of ep on a new worker whose processes are pids,
// each a CUDA process holding the matching bytes of GPU memory.
func (r *parkRig) cudaWorker(ep string, pids []int, gpu []uint64) *fakeWorker {
	r.t.Helper()
	r.s.mustSubmit(r.t, ep)
	w := r.worker()
	w.mu.Lock()
	w.pids = append(pids, 99999) // and a process without CUDA
	w.mu.Unlock()
	for i, pid := range pids {
		r.drv.SetProcess(pid, gpu[i])
	}
	r.runOneTaken(ep, w)
	return w
}

func (r *parkRig) parkUsed() uint64 {
	_, used := r.s.ParkMemory()
	return used
}

func (r *parkRig) gpuHolder(uuid string) string {
	for _, g := range r.s.GPUs() {
		if g.UUID == uuid {
			return g.Worker
		}
	}
	return ""
}

func (r *parkRig) info(id string) WorkerInfo {
	for _, wi := range r.s.Workers("") {
		if wi.ID == id {
			return wi
		}
	}
	return WorkerInfo{}
}

// reclaimFrom creates an endpoint that needs a GPU and gives it a job, so
// that it reclaims one.
func (r *parkRig) reclaimFrom() string {
	r.t.Helper()
	needy := gpuEndpoint(r.t, r.harness, "needy", 1, 0, 1, nil)
	r.s.mustSubmit(r.t, needy)
	return needy
}

// TestParkAndRevive: a FlashBoot worker of an onReclaim endpoint whose GPU
// another endpoint needs is parked, not killed: its memory limit is
// raised by the GPU memory its CUDA process holds, the process is locked
// and checkpointed, the worker frozen and its GPU given away. Once the GPU
// is free again, a job revives it there: restored and unlocked (the
// driver's state intact), the limit put back, and only then is its held
// take answered with the job.
func TestParkAndRevive(t *testing.T) {
	r := newParkRig(t, 1, nil)
	a := r.endpoint("a", spec.ParkOnReclaim, true, 1)
	aw := r.cudaWorker(a, []int{101}, []uint64{4 << 30})
	eventually(t, "a's worker frozen (FlashBoot)", func() bool { return r.workerState(aw.id) == WorkerFrozen })

	needy := r.reclaimFrom()
	nw := r.worker()
	if got := r.workerState(aw.id); got != WorkerParked {
		t.Fatalf("a's worker is %s once its GPU was given away, want parked", got)
	}
	if aw.wasKilled() || aw.wasStopped() {
		t.Fatal("a parkable worker was stopped for a reclaim")
	}
	if !slices.Equal(nw.spec.GPUs, aw.spec.GPUs) {
		t.Fatalf("needy got %v, want the parked worker's %v", nw.spec.GPUs, aw.spec.GPUs)
	}
	if st, mem := r.drv.Peek(101); st != cudackpt.Checkpointed || mem != 0 {
		t.Fatalf("pid 101 is %s holding %d bytes, want checkpointed holding none", st, mem)
	}
	if got, want := r.drv.CallsFor(101), []string{"State", "GPUMemory", "Lock", "Checkpoint"}; !slices.Equal(got, want) {
		t.Fatalf("driver calls for pid 101: %v, want %v", got, want)
	}
	if got := aw.limitsSet(); !slices.Equal(got, []int64{memLimit + 4*gib}) {
		t.Fatalf("memory limits set: %v, want the limit raised by 4 GiB before the checkpoint", got)
	}
	if f, _, _ := aw.isFrozen(); !f {
		t.Fatal("a parked worker's processes run")
	}
	if r.parkUsed() != 4<<30 {
		t.Fatalf("park memory used = %d, want 4 GiB", r.parkUsed())
	}
	info := r.info(aw.id)
	if info.ParkedBytes != 4<<30 || !slices.Equal(info.ParkedGPUs, aw.spec.GPUs) || len(info.GPUs) != 0 {
		t.Fatalf("worker list shows %+v, want 4 GiB parked from %v and no GPU held", info, aw.spec.GPUs)
	}
	st, _ := r.s.Stats(a)
	if st[0].Workers["parked"] != 1 || st[0].ParkedBytes != 4<<30 || st[0].WorkersParked != 1 || st[0].Park.Count != 1 {
		t.Fatalf("stats: workers %v, parked bytes %d, parks %d", st[0].Workers, st[0].ParkedBytes, st[0].WorkersParked)
	}
	if hl, _ := r.s.Health(a); hl.Workers.Idle+hl.Workers.Running+hl.Workers.Unhealthy != 0 {
		t.Fatalf("/health counts the parked worker: %+v", hl.Workers)
	}

	// The needy endpoint goes away: the GPU is free, and a's next job
	// revives the parked worker on it.
	r.runOneTaken(needy, nw)
	if err := r.s.DeleteEndpoint(r.ctx, needy); err != nil {
		t.Fatal(err)
	}
	gpu := aw.spec.GPUs[0]
	eventually(t, "the GPU free", func() bool { return r.gpuHolder(gpu) == "" })
	type taken struct {
		l     *Lease
		state cudackpt.State
	}
	got := make(chan taken, 1)
	go func() {
		l, _ := r.s.Take(r.ctx, a, aw.id, 1, time.Minute)
		s, _ := r.drv.Peek(101)
		got <- taken{l, s}
	}()
	time.Sleep(20 * time.Millisecond)
	id := r.s.mustSubmit(t, a)
	var tk taken
	select {
	case tk = <-got:
	case <-time.After(waitLimit):
		t.Fatal("the parked worker's take was not answered")
	}
	if len(tk.l.Jobs) != 1 || tk.l.Jobs[0].ID != id {
		t.Fatalf("revived worker's take got %v, want %s", ids(tk.l.Jobs), id)
	}
	tk.l.Delivered(true)
	if tk.state != cudackpt.Running {
		t.Fatalf("the take was answered with pid 101 %s, want it restored and unlocked first", tk.state)
	}
	if st, mem := r.drv.Peek(101); st != cudackpt.Running || mem != 4<<30 {
		t.Fatalf("pid 101 after revival: %s, %d bytes; want running with its 4 GiB", st, mem)
	}
	if got, want := r.drv.CallsFor(101)[4:], []string{"Restore", "Unlock"}; !slices.Equal(got, want) {
		t.Fatalf("driver calls for pid 101 on revival: %v, want %v", got, want)
	}
	if got := aw.limitsSet(); !slices.Equal(got, []int64{memLimit + 4*gib, memLimit}) {
		t.Fatalf("memory limits set: %v, want it put back to 1 GiB", got)
	}
	if r.parkUsed() != 0 || r.gpuHolder(gpu) != aw.id {
		t.Fatalf("after revival: park memory used %d, GPU held by %q; want 0 and %s", r.parkUsed(), r.gpuHolder(gpu), aw.id)
	}
	if f, _, _ := aw.isFrozen(); f {
		t.Fatal("the revived worker is still frozen")
	}
	select {
	case extra := <-r.rt.started:
		t.Fatalf("a new worker %s started although the parked one could be revived", extra.id)
	default:
	}
}

// TestParkRefusedFallsBackToKill: a park that the budget or the host's
// available memory cannot take is not begun (no lock, no limit change),
// and the reclaimed worker is stopped as without parking.
func TestParkRefusedFallsBackToKill(t *testing.T) {
	cases := []struct {
		name          string
		budget, avail int64
		want          string
	}{
		{"over the budget", 2 * gib, 1 << 40, "budget"},
		{"over MemAvailable", 64 * gib, 3 * gib, "MemAvailable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newParkRig(t, 1, func(c *Config) { c.ParkMemory = tc.budget })
			r.avail.Store(uint64(tc.avail))
			a := r.endpoint("a", spec.ParkOnReclaim, true, 1)
			aw := r.cudaWorker(a, []int{101}, []uint64{4 << 30})
			eventually(t, "frozen", func() bool { return r.workerState(aw.id) == WorkerFrozen })
			r.reclaimFrom()
			nw := r.worker()
			if !aw.wasKilled() {
				t.Fatal("the worker that could not be parked was not killed")
			}
			if !slices.Equal(nw.spec.GPUs, aw.spec.GPUs) {
				t.Fatalf("needy got %v, want %v", nw.spec.GPUs, aw.spec.GPUs)
			}
			for _, c := range r.drv.CallsFor(101) {
				if c == ckpttest.OpLock || c == ckpttest.OpCheckpoint {
					t.Fatalf("driver called %s on a refused park: %v", c, r.drv.CallsFor(101))
				}
			}
			if got := aw.limitsSet(); len(got) != 0 {
				t.Fatalf("memory limit changed on a refused park: %v", got)
			}
			if r.parkUsed() != 0 {
				t.Fatalf("park memory used %d after a refused park", r.parkUsed())
			}
		})
	}
}

// TestParkFailureUndone: a failure at any step of a park undoes the steps
// before it (processes restored and unlocked, memory limit put back) and
// the reclaimed worker is stopped; no step OOM-kills it: the limit is
// raised before the first checkpoint.
func TestParkFailureUndone(t *testing.T) {
	boom := errors.New("boom")
	cases := []struct {
		name   string
		inject func(r *parkRig, w *fakeWorker)
		limits []int64
	}{
		{"limit", func(r *parkRig, w *fakeWorker) { w.limitErr = boom }, nil},
		{"lock", func(r *parkRig, w *fakeWorker) { r.drv.Fail(ckpttest.OpLock, 102, boom) }, []int64{memLimit + 6*gib, memLimit}},
		{"checkpoint", func(r *parkRig, w *fakeWorker) { r.drv.Fail(ckpttest.OpCheckpoint, 102, boom) }, []int64{memLimit + 6*gib, memLimit}},
		{"freeze", func(r *parkRig, w *fakeWorker) { w.freezeErr = boom }, []int64{memLimit + 6*gib, memLimit}},
		{"state", func(r *parkRig, w *fakeWorker) { r.drv.Fail(ckpttest.OpState, 102, boom) }, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newParkRig(t, 1, nil)
			a := r.endpoint("a", spec.ParkOnReclaim, true, 1)
			aw := r.cudaWorker(a, []int{101, 102}, []uint64{4 << 30, 2 << 30})
			eventually(t, "frozen", func() bool { return r.workerState(aw.id) == WorkerFrozen })
			aw.mu.Lock()
			tc.inject(r, aw)
			aw.mu.Unlock()
			r.reclaimFrom()
			r.worker()
			if !aw.wasKilled() {
				t.Fatal("the worker whose park failed was not killed")
			}
			for pid, gpu := range map[int]uint64{101: 4 << 30, 102: 2 << 30} {
				if st, mem := r.drv.Peek(pid); st != cudackpt.Running || mem != gpu {
					t.Errorf("pid %d after the failed park: %s holding %d, want running holding %d (calls %v)",
						pid, st, mem, gpu, r.drv.CallsFor(pid))
				}
			}
			if got := aw.limitsSet(); !slices.Equal(got, tc.limits) {
				t.Errorf("memory limits set: %v, want %v", got, tc.limits)
			}
			if r.parkUsed() != 0 {
				t.Errorf("park memory used %d after a failed park", r.parkUsed())
			}
		})
	}
}

// TestParkPolicy: what becomes of an idle GPU worker past its idle
// timeout, per gpuPark: never and onReclaim stop it (no FlashBoot); idle
// freezes it, then parks it after gpuParkDelay and frees its GPU.
func TestParkPolicy(t *testing.T) {
	for _, park := range []string{spec.ParkNever, spec.ParkOnReclaim, spec.ParkIdle} {
		t.Run(park, func(t *testing.T) {
			r := newParkRig(t, 1, nil)
			a := r.endpoint("a", park, false, 1)
			aw := r.cudaWorker(a, []int{101}, []uint64{1 << 30})
			if park != spec.ParkIdle {
				eventually(t, "the idle worker stopped", aw.wasStopped)
				if calls := r.drv.CallsFor(101); slices.Contains(calls, ckpttest.OpLock) {
					t.Fatalf("gpuPark %s parked an idle worker: %v", park, calls)
				}
				return
			}
			eventually(t, "the idle worker parked", func() bool { return r.workerState(aw.id) == WorkerParked })
			if aw.wasStopped() || aw.wasKilled() {
				t.Fatal("gpuPark idle stopped its worker")
			}
			if h := r.gpuHolder(aw.spec.GPUs[0]); h != "" {
				t.Fatalf("a parked worker's GPU is held by %s", h)
			}
			if st, _ := r.drv.Peek(101); st != cudackpt.Checkpointed {
				t.Fatalf("pid 101 is %s", st)
			}
		})
	}
}

// TestParkIdleFailureStaysFrozen: a park for being idle that fails leaves
// the worker frozen on its GPU, as FlashBoot would, and is not retried.
func TestParkIdleFailureStaysFrozen(t *testing.T) {
	r := newParkRig(t, 1, nil)
	a := r.endpoint("a", spec.ParkIdle, true, 1)
	r.drv.Fail(ckpttest.OpCheckpoint, 101, errors.New("boom"))
	aw := r.cudaWorker(a, []int{101}, []uint64{1 << 30})
	eventually(t, "the park tried", func() bool { return slices.Contains(r.drv.CallsFor(101), ckpttest.OpCheckpoint) })
	eventually(t, "the worker frozen again", func() bool {
		f, _, _ := aw.isFrozen()
		return f && r.workerState(aw.id) == WorkerFrozen
	})
	time.Sleep(1500 * time.Millisecond) // past gpuParkDelay again
	if n := strings.Count(strings.Join(r.drv.CallsFor(101), " "), ckpttest.OpCheckpoint); n != 1 {
		t.Fatalf("a failed idle park was tried %d times", n)
	}
	if aw.wasKilled() || aw.wasStopped() || r.gpuHolder(aw.spec.GPUs[0]) != aw.id {
		t.Fatal("the worker lost its GPU after a failed idle park")
	}
	if st, _ := r.drv.Peek(101); st != cudackpt.Running || !slices.Equal(aw.limitsSet(), []int64{memLimit + gib, memLimit}) {
		t.Fatalf("after the undo: pid 101 %s, limits %v", st, aw.limitsSet())
	}
}

// TestReclaimPrefersParking: of two idle workers on the GPUs another
// endpoint wants, the one that can be parked goes, though the other was
// idle longer (least recently used first would take it).
func TestReclaimPrefersParking(t *testing.T) {
	r := newParkRig(t, 2, nil)
	k := r.endpoint("keep", spec.ParkNever, false, 3600)
	kw := r.cudaWorker(k, []int{201}, []uint64{1 << 30})
	time.Sleep(10 * time.Millisecond)
	p := r.endpoint("park", spec.ParkOnReclaim, false, 3600)
	pw := r.cudaWorker(p, []int{101}, []uint64{1 << 30})
	r.reclaimFrom()
	nw := r.worker()
	if kw.wasStopped() || kw.wasKilled() {
		t.Fatal("a worker that cannot be parked was stopped while one that can was there")
	}
	eventually(t, "the parkable worker parked", func() bool { return r.workerState(pw.id) == WorkerParked })
	if !slices.Equal(nw.spec.GPUs, pw.spec.GPUs) {
		t.Fatalf("needy got %v, want the parked worker's %v", nw.spec.GPUs, pw.spec.GPUs)
	}
}

// TestParkNeedsDriver: gpuPark other than never is refused at create and
// update where parking cannot work, with a field error naming what the
// driver needs.
func TestParkNeedsDriver(t *testing.T) {
	unsupported := fmt.Errorf("%w: driver 550.54 found; the checkpoint API needs 570 or later", cudackpt.ErrUnsupported)
	cases := []struct {
		name string
		drv  func() cudackpt.Driver
		want string
	}{
		{"no driver", func() cudackpt.Driver { return nil }, "no CUDA checkpoint driver"},
		{"old driver", func() cudackpt.Driver {
			f := ckpttest.New()
			f.Fail(ckpttest.OpSupported, 0, unsupported)
			return f
		}, "570 or later"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.GPUPark = tc.drv() })
			name, cmd, one, park := "p", []string{"w"}, 1, spec.ParkOnReclaim
			_, err := h.s.CreateEndpoint(h.ctx, spec.EndpointSpec{Name: &name, Command: &cmd, GPUCount: &one, GPUPark: &park})
			var fe *spec.FieldError
			if !errors.As(err, &fe) || fe.Field != "gpuPark" || !strings.Contains(fe.Msg, tc.want) {
				t.Fatalf("create: %v, want a gpuPark error naming %q", err, tc.want)
			}
			e, err := h.s.CreateEndpoint(h.ctx, spec.EndpointSpec{Name: &name, Command: &cmd, GPUCount: &one})
			if err != nil {
				t.Fatal(err)
			}
			idle := spec.ParkIdle
			if _, err := h.s.UpdateEndpoint(h.ctx, e.ID, spec.EndpointSpec{GPUPark: &idle}); !errors.As(err, &fe) || fe.Field != "gpuPark" {
				t.Fatalf("update: %v, want a gpuPark error", err)
			}
			// An update that leaves gpuPark alone is not refused for it.
			two := 2
			if _, err := h.s.UpdateEndpoint(h.ctx, e.ID, spec.EndpointSpec{WorkersMax: &two}); err != nil {
				t.Fatalf("update of another field: %v", err)
			}
		})
	}
}

// TestGPUParkIsScaling: changing gpuPark or gpuParkDelay replaces no
// worker.
func TestGPUParkIsScaling(t *testing.T) {
	old := spec.Default()
	for _, mod := range []func(*store.Endpoint){
		func(e *store.Endpoint) { e.GPUPark = spec.ParkIdle },
		func(e *store.Endpoint) { e.GPUParkDelaySec = 5 },
	} {
		e := spec.Default()
		mod(&e)
		if changesWorkers(&old, &e) {
			t.Fatalf("%+v changes workers", e)
		}
	}
}

// TestAdoptParked: after a crash, a worker left parked (every CUDA process
// checkpointed, its record saying how much) is taken back parked, its GPU
// free and its memory counted, and revived by a job; one caught mid-park,
// or with no driver to revive it, is stopped, leaking neither GPU nor
// budget; one whose revival was done but not remembered gets its memory
// limit back.
func TestAdoptParked(t *testing.T) {
	cases := []struct {
		name     string
		states   map[int]cudackpt.State
		noDriver bool
		parked   bool // the record says so
		want     WorkerState
	}{
		{"parked", map[int]cudackpt.State{201: cudackpt.Checkpointed}, false, true, WorkerParked},
		{"mid-park", map[int]cudackpt.State{201: cudackpt.Checkpointed, 202: cudackpt.Locked}, false, true, WorkerStopped},
		{"checkpointed, record not parked", map[int]cudackpt.State{201: cudackpt.Checkpointed}, false, false, WorkerStopped},
		{"no driver", map[int]cudackpt.State{201: cudackpt.Checkpointed}, true, true, WorkerStopped},
		{"revived, not remembered", map[int]cudackpt.State{201: cudackpt.Running}, false, true, WorkerIdle},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			drv := ckpttest.New()
			dir := t.TempDir()
			cfg := testConfig(t, newFakeRuntime())
			cfg.DataDir, cfg.InMemoryStore, cfg.MinFreeBytes = dir, false, 1
			cfg.AllocateGPUs, cfg.GPUs = true, mockGPUs()[:1]
			cfg.GPUPark, cfg.ParkMemory = drv, 64*gib
			cfg.MemAvailable = func() (uint64, error) { return 1 << 40, nil }
			s, err := Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			name, cmd, zero, one, park, mem := "adopt", []string{"fake"}, 0, 1, spec.ParkOnReclaim, int(memLimit>>20)
			e, err := s.CreateEndpoint(context.Background(), spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &zero,
				GPUCount: &one, GPUPark: &park, MemoryMB: &mem})
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
			rec := store.WorkerRecord{ID: "w-parked", Endpoint: e.ID, Token: "tok", GPUs: []string{"GPU-0"}, StartedAt: time.Now().UnixMilli()}
			if tc.parked {
				rec.Park = &store.ParkRecord{Bytes: 4 << 30, MemoryBase: memLimit}
			}
			b := st.NewBatch()
			if err := b.PutWorker(&rec); err != nil {
				t.Fatal(err)
			}
			if err := st.Commit(context.Background(), b); err != nil {
				t.Fatal(err)
			}
			st.Close()

			w := &fakeWorker{done: make(chan struct{}), env: map[string]string{}, memLimit: memLimit + 4*gib}
			for pid, state := range tc.states {
				w.pids = append(w.pids, pid)
				drv.SetProcess(pid, 4<<30)
				drv.SetState(pid, state)
			}
			slices.Sort(w.pids)
			cfg.Runtime = newFakeRuntime()
			cfg.Adopt = func(store.WorkerRecord) (oci.Worker, error) { return w, nil }
			if tc.noDriver {
				cfg.GPUPark = nil
			}
			s2, err := Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			h := &harness{t: t, s: s2, ctx: context.Background()}
			if tc.want == WorkerStopped {
				eventually(t, "the leftover stopped", func() bool { return w.wasKilled() && h.workerState("w-parked") == WorkerStopped })
				if _, used := s2.ParkMemory(); used != 0 {
					t.Fatalf("park memory used %d after the leftover was stopped", used)
				}
				if g := s2.GPUs()[0]; g.Worker != "" {
					t.Fatalf("GPU-0 held by %q after the leftover was stopped", g.Worker)
				}
				return
			}
			if got := h.workerState("w-parked"); got != tc.want {
				t.Fatalf("taken back as %q, want %s", got, tc.want)
			}
			if tc.want == WorkerIdle {
				if got := w.limitsSet(); !slices.Equal(got, []int64{memLimit}) {
					t.Fatalf("memory limits set: %v, want it put back to 1 GiB", got)
				}
				return
			}
			if g := s2.GPUs()[0]; g.Worker != "" {
				t.Fatalf("the parked leftover holds GPU-0")
			}
			if _, used := s2.ParkMemory(); used != 4<<30 {
				t.Fatalf("park memory used %d, want the leftover's 4 GiB", used)
			}
			s2.mustSubmit(t, e.ID)
			eventually(t, "the leftover revived", func() bool {
				st, _ := drv.Peek(201)
				return st == cudackpt.Running && s2.GPUs()[0].Worker == "w-parked"
			})
			eventually(t, "its limit put back", func() bool { return slices.Equal(w.limitsSet(), []int64{memLimit}) })
			if _, used := s2.ParkMemory(); used != 0 {
				t.Fatalf("park memory used %d after the revival", used)
			}
		})
	}
}

// TestParkedWaitsForItsGPU: a job for a parked worker whose GPU a busy
// worker holds waits, the endpoint showing a throttled worker (no new
// worker starts: there is no other GPU); once the holder is idle it is
// reclaimed, and the parked worker revives on its GPU.
func TestParkedWaitsForItsGPU(t *testing.T) {
	r := newParkRig(t, 1, nil)
	a := r.endpoint("a", spec.ParkOnReclaim, true, 1)
	aw := r.cudaWorker(a, []int{101}, []uint64{4 << 30})
	eventually(t, "frozen", func() bool { return r.workerState(aw.id) == WorkerFrozen })
	needy := r.reclaimFrom()
	nw := r.worker()
	l, err := r.s.Take(r.ctx, needy, nw.id, 1, time.Second)
	if err != nil || len(l.Jobs) != 1 {
		t.Fatalf("needy take: %+v %v", l, err)
	}
	l.Delivered(true)

	r.s.mustSubmit(t, a)
	eventually(t, "a throttled", func() bool {
		hl, _ := r.s.Health(a)
		return hl.Workers.Throttled == 1
	})
	if r.workerState(aw.id) != WorkerParked || nw.wasStopped() || nw.wasKilled() {
		t.Fatalf("the busy holder was reclaimed, or the parked worker moved: %s", r.workerState(aw.id))
	}
	if err := r.s.Done(r.ctx, needy, nw.id, l.Jobs[0].ID, Result{Output: []byte(`1`)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the parked worker revived on its GPU", func() bool {
		st, _ := r.drv.Peek(101)
		return st == cudackpt.Running && r.gpuHolder(aw.spec.GPUs[0]) == aw.id
	})
	if !nw.wasStopped() && !nw.wasKilled() {
		t.Fatal("the idle holder was not reclaimed")
	}
	select {
	case extra := <-r.rt.started:
		t.Fatalf("a new worker %s started for the parked worker's job", extra.id)
	default:
	}
}

// TestParkBudgetReload: the park budget is a tunable: a reload changes it
// at once, and a park is measured against the new figure.
func TestParkBudgetReload(t *testing.T) {
	r := newParkRig(t, 1, nil)
	if b, _ := r.s.ParkMemory(); b != 64<<30 {
		t.Fatalf("budget %d, want the configured 64 GiB", b)
	}
	tun := *r.s.tun()
	tun.ParkMemory = 2 * gib
	r.s.SetTunables(tun)
	if b, _ := r.s.ParkMemory(); b != 2<<30 {
		t.Fatalf("budget %d after the reload, want 2 GiB", b)
	}
	a := r.endpoint("a", spec.ParkOnReclaim, true, 1)
	aw := r.cudaWorker(a, []int{101}, []uint64{4 << 30})
	eventually(t, "frozen", func() bool { return r.workerState(aw.id) == WorkerFrozen })
	r.reclaimFrom()
	r.worker()
	if !aw.wasKilled() || slices.Contains(r.drv.CallsFor(101), ckpttest.OpLock) {
		t.Fatal("a 4 GiB park went ahead on a 2 GiB budget set by a reload")
	}
}
