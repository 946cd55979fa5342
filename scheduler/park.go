package scheduler

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/oci/cudackpt"
	"github.com/emberhq/ember/scheduler/limits"
	"github.com/emberhq/ember/scheduler/spec"
	"github.com/emberhq/ember/scheduler/store"
)

// GPU parking. A parked worker is a frozen one (FlashBoot, scale.go) whose
// CUDA processes have had their GPU state moved to their own host memory
// through the CUDA driver's checkpoint API (Config.GPUPark, package
// oci/cudackpt), and whose GPUs are free for other endpoints' workers. It
// revives on the GPUs it was parked from, in about a second per 4 GiB
// instead of a cold start.
//
// Park (parkLocked, parkWorker, park): thaw if FlashBoot froze it (the
// driver needs the processes running), find its CUDA processes (every pid
// of the worker whose checkpoint state is not NotCUDA), reserve their GPU
// memory from the park budget (--park-memory-mb, and the host's
// MemAvailable), remember the park in the worker's record, raise the
// worker's memory limit by as much (the copy is charged to its memory
// cgroup: without room it would be OOM-killed), lock each process,
// checkpoint each, then freeze the cgroup and release the GPUs. Any
// failure undoes what was done in reverse and falls back to what happens
// without parking: a worker reclaimed for another endpoint is killed, one
// parked for being idle stays frozen on its GPU.
//
// Revive (unparkLocked, unpark): claim the GPUs again (only when every one
// is free: the state goes back to the GPU it came from), thaw, restore
// each process, unlock each, put the memory limit back, and only then
// answer the job-take the worker has pending (Take waits while w.park is
// set). After a crash, adoption (adoptParkedLocked) takes a parked worker
// back parked, or stops it.
//
// Policy per endpoint (gpuPark): never; onReclaim parks a worker that
// another endpoint's reclaim would stop; idle also freezes idle workers
// past their idle timeout (as FlashBoot does) and parks them once frozen
// for gpuParkDelay.

// parkPhase is where a worker is in parking.
type parkPhase int

const (
	// parkParking: decided; the driver calls may be under way. The worker
	// still holds its GPUs.
	parkParking parkPhase = iota + 1
	// parkParked: its GPU state is in host memory, its GPUs are free.
	parkParked
	// parkReviving: its GPUs are claimed again; the restore may be under
	// way. Its pending take is answered once it is done.
	parkReviving
)

// parkLockTimeout bounds how long the driver's lock waits for a parked
// process's CUDA work in flight (an idle worker has none).
const parkLockTimeout = 10 * time.Second

// parkState is a worker's parking, from the decision to its revival.
type parkState struct {
	phase parkPhase
	// reclaim: parked for another endpoint's GPU (a failure stops the
	// worker); otherwise for being idle (a failure leaves it frozen).
	reclaim bool
	// gpus are the GPUs it was parked from, and revives on.
	gpus []string
	// pids are its CUDA processes, as found when it was parked (or
	// adopted).
	pids []int
	// bytes is the GPU memory they held, which the checkpoints hold in
	// host memory; reserved from the park budget while reserved is set.
	bytes    uint64
	reserved bool
	// baseLimit is the worker's memory limit before parking (0: none,
	// then it is not raised); raised says it was raised by bytes.
	baseLimit int64
	raised    bool
	at        time.Time
}

// parkBudget is the host memory parked workers may hold in all, in bytes:
// the ParkMemory tunable.
func (s *Scheduler) parkBudget() uint64 { return uint64(max(s.tun().ParkMemory, 0)) }

// ParkMemory reports the park budget and the host memory parked workers
// hold now (or have reserved for a park under way), in bytes, for `ember
// status` and /metrics.
func (s *Scheduler) ParkMemory() (budget, used uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.parkBudget(), s.parkUsed
}

// ParkSupported says whether workers can be parked here: nil, or why not
// (no driver configured, or the driver's own error naming the version
// needed).
func (s *Scheduler) ParkSupported() error {
	if s.cfg.GPUPark == nil {
		return fmt.Errorf("%w: emberd has no CUDA checkpoint driver (it needs an NVIDIA driver with the checkpoint API, 570 or later, and the runc runtime)", cudackpt.ErrUnsupported)
	}
	return s.cfg.GPUPark.Supported()
}

// checkPark refuses a gpuPark other than never where parking cannot work,
// naming what the driver needs.
func (s *Scheduler) checkPark(e *store.Endpoint, sp spec.EndpointSpec, create bool) error {
	if e.GPUPark == spec.ParkNever || (!create && sp.GPUPark == nil) {
		return nil
	}
	if err := s.ParkSupported(); err != nil {
		return spec.Errorf("gpuPark", "is %q, but parking is not available here: %v; use %q", e.GPUPark, err, spec.ParkNever)
	}
	return nil
}

// parkableLocked says whether w, a worker of ep, may be parked now: ep's
// policy allows it (idleOnly: for being idle, which needs gpuPark idle),
// there is a driver, the runtime can list the worker's processes and
// freeze it, and it is idle or frozen, healthy and staying.
func (s *Scheduler) parkableLocked(ep *endpointState, w *worker, idleOnly bool) bool {
	if s.cfg.GPUPark == nil || ep == nil || ep.deleted {
		return false
	}
	switch ep.def.GPUPark {
	case spec.ParkIdle:
	case spec.ParkOnReclaim:
		if idleOnly {
			return false
		}
	default:
		return false
	}
	if w.handle == nil || w.park != nil || w.draining || w.unhealthy || w.outdated || w.thawing || !w.ready || len(w.held) > 0 {
		return false
	}
	if idleOnly && w.parkRefused {
		return false
	}
	if _, ok := w.handle.(oci.Freezer); !ok {
		return false
	}
	if _, ok := w.handle.(oci.Inspector); !ok {
		return false
	}
	return s.parkUsed < s.parkBudget()
}

// parkLocked decides to park w, a worker of ep that is idle or frozen
// (parkableLocked), and starts the park. The worker stops taking jobs at
// once (it is frozen from here on, as far as the queue is concerned);
// its GPUs are released when the park is done.
func (s *Scheduler) parkLocked(ep *endpointState, w *worker, reclaim bool) {
	if !w.frozen {
		w.frozen = true
		w.frozenAt = s.now()
		ep.wakeWorker(w.id) // its pending take now waits for the revival
	}
	p := &parkState{phase: parkParking, reclaim: reclaim, gpus: append([]string(nil), w.gpus...), at: s.now()}
	w.park = p
	s.setWorkerStateLocked(w)
	why := "idle for gpuParkDelay"
	if reclaim {
		why = "its GPU is reclaimed"
	}
	s.log.Info("parking worker", "worker", w.id, "endpoint", w.endpoint, "reason", why, "gpus", p.gpus)
	s.goOwned(func() { s.parkWorker(ep, w, p) })
}

// parkWorker runs a park decided by parkLocked.
func (s *Scheduler) parkWorker(ep *endpointState, w *worker, p *parkState) {
	w.freezeMu.Lock()
	defer w.freezeMu.Unlock()
	s.mu.Lock()
	still := w.park == p && !w.draining
	s.mu.Unlock()
	if !still {
		return // stopped before it was parked: workerExited cleans up
	}
	begin := time.Now()
	wasSuspended := w.suspended
	err := s.park(w, p)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.parkFailedLocked(ep, w, p, wasSuspended, err)
		return
	}
	w.suspended = true
	if w.park != p || w.draining {
		return // stopped meanwhile: its exit releases what it holds
	}
	p.phase = parkParked
	hadGPUs := len(w.gpus) > 0
	s.releaseGPUsLocked(w)
	s.setWorkerStateLocked(w)
	ep.stats.parked++
	ep.stats.park.add(time.Since(begin))
	s.log.Info("worker parked", "worker", w.id, "endpoint", w.endpoint, "gpus", p.gpus,
		"host_bytes", p.bytes, "processes", len(p.pids), "took", time.Since(begin).Round(time.Millisecond))
	if hadGPUs && !s.closed {
		for _, other := range s.endpoints {
			if other.throttled > 0 {
				s.scaleLocked(other)
			}
		}
	}
}

// parkFailedLocked undoes the decision to park after park failed (park has
// undone its own steps) and falls back to what happens without parking: a
// reclaimed worker is stopped; an idle one stays frozen on its GPU (frozen
// again if FlashBoot had frozen it) and is not parked for being idle
// again.
func (s *Scheduler) parkFailedLocked(ep *endpointState, w *worker, p *parkState, wasSuspended bool, err error) {
	s.releaseParkLocked(p)
	if w.park == p {
		w.park = nil
	}
	undone := !errors.Is(err, errParkNotUndone)
	switch {
	case w.draining:
		// Stopped meanwhile.
	case p.reclaim || !undone:
		s.log.Warn("park worker failed; stopping it instead", "worker", w.id, "endpoint", w.endpoint, "err", err)
		s.retireWorkerLocked(w, "its GPU was reclaimed and it could not be parked: "+err.Error())
		if w.handle != nil {
			w.handle.Kill()
		}
	default:
		s.log.Warn("park idle worker failed; it stays frozen on its GPU", "worker", w.id, "endpoint", w.endpoint, "err", err)
		w.parkRefused = true
		if wasSuspended && !w.suspended {
			// Frozen again where FlashBoot had frozen it; the undo ran
			// with it thawed.
			if ferr := w.handle.(oci.Freezer).Freeze(); ferr != nil {
				s.drainWorkerLocked(w, "could not be frozen again after a failed park")
				return
			}
			w.suspended = true
		}
	}
	s.setWorkerStateLocked(w)
}

// errParkNotUndone marks a park failure whose undo failed too: the worker
// is in no known state and is stopped.
var errParkNotUndone = errors.New("the undo failed too")

// park does the driver's and the runtime's part of a park; w.freezeMu is
// held, s.mu is not. On failure it has undone what it did, or its error
// wraps errParkNotUndone.
func (s *Scheduler) park(w *worker, p *parkState) error {
	ctx := s.ctx
	drv := s.cfg.GPUPark
	f := w.handle.(oci.Freezer)
	in := w.handle.(oci.Inspector)
	if w.suspended {
		// The checkpoint API works on running processes.
		if err := f.Thaw(); err != nil {
			return fmt.Errorf("thaw before parking: %w", err)
		}
		w.suspended = false
	}
	pids, err := cudaProcesses(ctx, drv, in)
	if err != nil {
		return err
	}
	var total uint64
	for _, pid := range pids {
		n, err := drv.GPUMemory(ctx, pid)
		if err != nil {
			return fmt.Errorf("read the GPU memory of pid %d: %w", pid, err)
		}
		total += n
	}
	base := in.MemoryLimit()
	s.mu.Lock()
	p.pids, p.bytes, p.baseLimit = pids, total, base
	if w.park != p || w.draining {
		err = errors.New("the worker is being stopped")
	} else {
		err = s.reserveParkLocked(p)
	}
	if err == nil {
		// Remembered before anything changes, so that an emberd started
		// after a crash mid-park knows the worker's limit before it.
		b := s.workerBatchLocked(w)
		s.mu.Unlock()
		err = s.store.Commit(ctx, b)
		if err != nil {
			err = fmt.Errorf("remember the park: %w", err)
		}
	} else {
		s.mu.Unlock()
	}
	if err != nil {
		return err
	}
	var u undo
	if base > 0 && total > 0 {
		if err := in.SetMemoryLimit(base + int64(total)); err != nil {
			return fmt.Errorf("raise the memory limit from %s by %s: %w", oci.FormatBytes(base), oci.FormatBytes(int64(total)), err)
		}
		p.raised = true
		u.add(func() error { return s.lowerLimit(in, p) })
	}
	for _, pid := range pids {
		if err := drv.Lock(ctx, pid, parkLockTimeout); err != nil {
			return u.run(fmt.Errorf("lock pid %d: %w", pid, err))
		}
		u.add(func() error { return drv.Unlock(ctx, pid) })
	}
	for _, pid := range pids {
		if err := drv.Checkpoint(ctx, pid); err != nil {
			return u.run(fmt.Errorf("checkpoint pid %d: %w", pid, err))
		}
		u.add(func() error { return drv.Restore(ctx, pid) })
	}
	if err := f.Freeze(); err != nil {
		return u.run(fmt.Errorf("freeze: %w", err))
	}
	return nil
}

// undo is the steps a park has done, undone in reverse when a later one
// fails.
type undo struct{ steps []func() error }

func (u *undo) add(f func() error) { u.steps = append(u.steps, f) }

// run undoes every step and returns cause, wrapping errParkNotUndone with
// what failed when a step could not be undone.
func (u *undo) run(cause error) error {
	var errs []error
	for i := len(u.steps) - 1; i >= 0; i-- {
		if err := u.steps[i](); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w (%w: %w)", cause, errParkNotUndone, errors.Join(errs...))
	}
	return cause
}

// cudaProcesses lists the worker's processes that have a CUDA context, all
// of them running (a process locked or checkpointed by someone else, or
// failed, makes the park fail).
func cudaProcesses(ctx context.Context, drv cudackpt.Driver, in oci.Inspector) ([]int, error) {
	all, err := in.Processes()
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, pid := range all {
		st, err := drv.State(ctx, pid)
		if err != nil {
			return nil, fmt.Errorf("read the checkpoint state of pid %d: %w", pid, err)
		}
		switch st {
		case cudackpt.NotCUDA:
			continue
		case cudackpt.Running:
			pids = append(pids, pid)
		default:
			return nil, fmt.Errorf("pid %d is %s, not running", pid, st)
		}
	}
	return pids, nil
}

// reserveParkLocked takes p.bytes from the park budget, or says why it
// cannot: the budget or the host's available memory cannot take them.
func (s *Scheduler) reserveParkLocked(p *parkState) error {
	budget := s.parkBudget()
	if s.parkUsed+p.bytes > budget {
		return fmt.Errorf("the park budget cannot take %s: %s of %s in use (--park-memory-mb)",
			oci.FormatBytes(int64(p.bytes)), oci.FormatBytes(int64(s.parkUsed)), oci.FormatBytes(int64(budget)))
	}
	avail, err := s.cfg.MemAvailable()
	if err != nil {
		return fmt.Errorf("read the host's available memory: %w", err)
	}
	if p.bytes > avail {
		return fmt.Errorf("the host cannot take %s: %s available (MemAvailable)",
			oci.FormatBytes(int64(p.bytes)), oci.FormatBytes(int64(avail)))
	}
	s.parkUsed += p.bytes
	p.reserved = true
	return nil
}

// releaseParkLocked gives p's bytes back to the park budget, once.
func (s *Scheduler) releaseParkLocked(p *parkState) {
	if p.reserved {
		s.parkUsed -= p.bytes
		p.reserved = false
	}
}

// lowerLimit puts the worker's memory limit back to what it was before
// the park.
func (s *Scheduler) lowerLimit(in oci.Inspector, p *parkState) error {
	if !p.raised {
		return nil
	}
	if err := in.SetMemoryLimit(p.baseLimit); err != nil {
		return fmt.Errorf("put the memory limit back to %s: %w", oci.FormatBytes(p.baseLimit), err)
	}
	p.raised = false
	return nil
}

// parkedGPUsFreeLocked says whether every GPU a parked worker was parked
// from is free and healthy.
func (s *Scheduler) parkedGPUsFreeLocked(p *parkState) bool {
	for _, u := range p.gpus {
		if _, busy := s.gpuOwner[u]; busy {
			return false
		}
		if _, bad := s.badGPUs[u]; bad {
			return false
		}
	}
	return true
}

// unparkLocked starts the revival of a parked worker whose GPUs are free:
// it claims them, counts as a worker that takes jobs from now on, and its
// pending take is answered once the restore is done.
func (s *Scheduler) unparkLocked(ep *endpointState, w *worker) {
	p := w.park
	for _, u := range p.gpus {
		s.gpuOwner[u] = w.id
	}
	w.gpus = append([]string(nil), p.gpus...)
	p.phase = parkReviving
	w.frozen = false
	w.thawing = true
	w.lastActive = s.now()
	w.lastPing = s.now()
	s.setWorkerStateLocked(w)
	ep.stats.revived++
	s.log.Info("reviving parked worker", "worker", w.id, "endpoint", w.endpoint, "gpus", p.gpus)
	begin := time.Now()
	s.goOwned(func() {
		w.freezeMu.Lock()
		err := s.unpark(w, p)
		w.freezeMu.Unlock()
		s.mu.Lock()
		defer s.mu.Unlock()
		w.thawing = false
		if w.park == p {
			w.park = nil
		}
		s.releaseParkLocked(p)
		// The pending take goes on: to its job, or to the worker's stop.
		close(w.thawCh)
		w.thawCh = make(chan struct{})
		if err != nil {
			s.log.Error("revive parked worker; stopping it", "worker", w.id, "endpoint", w.endpoint, "err", err)
			s.drainWorkerLocked(w, "could not be revived from parked: "+err.Error())
			if w.handle != nil {
				w.handle.Kill()
			}
			return
		}
		if w.state == WorkerStopped {
			return // exited meanwhile: its record is gone
		}
		s.setWorkerStateLocked(w)
		s.rememberWorker(w)
		took := time.Since(begin)
		ep.stats.revival.add(took)
		s.log.Info("parked worker revived", "worker", w.id, "endpoint", w.endpoint, "took", took.Round(time.Millisecond))
	})
}

// unpark does the driver's and the runtime's part of a revival: thaw,
// restore each process, unlock each, then the memory limit back.
// w.freezeMu is held, s.mu is not.
func (s *Scheduler) unpark(w *worker, p *parkState) error {
	ctx := s.ctx
	drv := s.cfg.GPUPark
	if w.suspended {
		if err := w.handle.(oci.Freezer).Thaw(); err != nil {
			return fmt.Errorf("thaw: %w", err)
		}
		w.suspended = false
	}
	if drv == nil {
		return errors.New("no CUDA checkpoint driver")
	}
	for _, pid := range p.pids {
		if err := drv.Restore(ctx, pid); err != nil {
			return fmt.Errorf("restore pid %d: %w", pid, err)
		}
	}
	for _, pid := range p.pids {
		if err := drv.Unlock(ctx, pid); err != nil {
			return fmt.Errorf("unlock pid %d: %w", pid, err)
		}
	}
	if in, ok := w.handle.(oci.Inspector); ok {
		return s.lowerLimit(in, p)
	}
	return nil
}

// parkIdleLocked parks ep's workers frozen for gpuParkDelay, where its
// gpuPark is idle.
func (s *Scheduler) parkIdleLocked(ep *endpointState) {
	if ep.def.GPUPark != spec.ParkIdle || s.cfg.GPUPark == nil {
		return
	}
	delay := time.Duration(ep.def.GPUParkDelaySec) * time.Second
	now := s.now()
	for _, w := range ep.workers {
		if w.frozen && now.Sub(w.frozenAt) >= delay && s.parkableLocked(ep, w, true) {
			s.parkLocked(ep, w, false)
		}
	}
}

// parkExitedLocked releases what a parked (or parking, or reviving)
// worker held once it has exited: its share of the park budget. Its GPUs
// were released when it was parked, or are in w.gpus again.
func (s *Scheduler) parkExitedLocked(w *worker) {
	if p := w.park; p != nil {
		s.releaseParkLocked(p)
		w.park = nil
	}
}

// parkedFor says whether ep has a parked worker waiting for the GPU uuid.
func parkedFor(ep *endpointState, uuid string) bool {
	for _, w := range ep.workers {
		if w.park != nil && w.park.phase == parkParked && !w.draining {
			for _, u := range w.park.gpus {
				if u == uuid {
					return true
				}
			}
		}
	}
	return false
}

// adoptParkedLocked looks at an adopted worker's CUDA processes: a worker
// parked when the earlier emberd went away (every CUDA process
// checkpointed, and its record says how much it parked) goes on parked,
// to be revived when a job needs it and its GPUs are free; one caught
// mid-park or mid-revival, or with no driver to revive it, is stopped. A
// worker whose record says it was parked but whose processes all run again
// (a revival done but not yet remembered) gets its memory limit back. It
// reports false when the worker is to be stopped, and why.
func (s *Scheduler) adoptParkedLocked(w *worker, r store.WorkerRecord) (ok bool, why string) {
	in, isInspector := w.handle.(oci.Inspector)
	if s.cfg.GPUPark == nil || !isInspector {
		if r.Park != nil {
			return false, "it was parked, and this emberd has no CUDA checkpoint driver to revive it"
		}
		return true, ""
	}
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	all, err := in.Processes()
	if err != nil {
		return false, err.Error()
	}
	var running, checkpointed, other []int
	for _, pid := range all {
		st, err := s.cfg.GPUPark.State(ctx, pid)
		switch {
		case err != nil:
			return false, fmt.Sprintf("read the checkpoint state of pid %d: %v", pid, err)
		case st == cudackpt.Running:
			running = append(running, pid)
		case st == cudackpt.Checkpointed:
			checkpointed = append(checkpointed, pid)
		case st != cudackpt.NotCUDA:
			other = append(other, pid)
		}
	}
	pr := r.Park
	switch {
	case len(other) > 0 || (len(checkpointed) > 0 && len(running) > 0):
		return false, "it was caught between running and parked (a park or revival cut short)"
	case len(checkpointed) > 0 && pr == nil:
		return false, "its CUDA processes are checkpointed, but its record does not say it was parked"
	case len(checkpointed) > 0:
		p := &parkState{phase: parkParked, gpus: append([]string(nil), r.GPUs...), pids: checkpointed,
			bytes: pr.Bytes, baseLimit: pr.MemoryBase, raised: pr.MemoryBase > 0, at: s.now()}
		// Counted even past the budget: the memory is held already.
		s.parkUsed += p.bytes
		p.reserved = true
		w.park = p
		w.gpus = nil
		w.frozen = true
		w.frozenAt = s.now()
		return true, ""
	case pr != nil && pr.MemoryBase > 0 && in.MemoryLimit() != pr.MemoryBase:
		if err := in.SetMemoryLimit(pr.MemoryBase); err != nil {
			return false, err.Error()
		}
	}
	return true, ""
}

// workerBatchLocked is a batch that writes w's record (rememberWorker),
// with what a restarted emberd needs of its parking.
func (s *Scheduler) workerBatchLocked(w *worker) store.Batch {
	rec := &store.WorkerRecord{ID: w.id, Endpoint: w.endpoint, Token: w.token, GPUs: w.gpus,
		StartedAt: w.startedAt.UnixMilli(), LogPath: w.logPath, Dir: w.dir, Generation: w.generation}
	if p := w.park; p != nil && p.phase != parkReviving {
		rec.GPUs = p.gpus
		rec.Park = &store.ParkRecord{Bytes: p.bytes, MemoryBase: p.baseLimit}
	}
	b := s.store.NewBatch()
	if err := b.PutWorker(rec); err != nil {
		s.log.Warn("remember worker", "worker", w.id, "err", err)
	}
	return b
}

// defaultParkMemory is the park budget when none is given:
// limits.DefaultParkMemoryPercent of the host's memory.
func defaultParkMemory() int64 {
	total, err := meminfo("MemTotal")
	if err != nil {
		return 0
	}
	return int64(total / 100 * limits.DefaultParkMemoryPercent)
}

// hostMemAvailable is MemAvailable from /proc/meminfo, in bytes.
func hostMemAvailable() (uint64, error) { return meminfo("MemAvailable") }

// meminfo reads one "Key: N kB" line of /proc/meminfo, in bytes.
func meminfo(key string) (uint64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != key {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/meminfo %s: %w", key, err)
		}
		return n << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read /proc/meminfo: %w", err)
	}
	return 0, fmt.Errorf("/proc/meminfo has no %s", key)
}
