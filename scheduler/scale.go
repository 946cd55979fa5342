package scheduler

import (
	"fmt"
	"sort"
	"time"

	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/scheduler/spec"
)

// The autoscaler. scaleLocked runs on every event that changes what an
// endpoint needs (a job queued, taken or finished, a worker ready or gone)
// and on the slow tick; it is cheap, so it simply recomputes the target.

// capacity describes an endpoint's workers that can take jobs: not
// draining, not frozen, not stopped. idle hold no job; free is the number
// of jobs they could still take at once, counting each worker's declared
// concurrency (a worker still starting counts as the endpoint's last
// declared concurrency), and busyFree the part of it on workers that hold
// a job already.
type capacity struct {
	alive, idle, free, busyFree int
}

func (ep *endpointState) capacity() capacity {
	var c capacity
	for _, w := range ep.workers {
		if !w.takesJobs() {
			continue
		}
		c.alive++
		free := max(0, ep.slotsOf(w)-len(w.held))
		c.free += free
		if len(w.held) == 0 {
			c.idle++
		} else {
			c.busyFree += free
		}
	}
	return c
}

// takesJobs says whether w may be handed jobs now or once it is ready. An
// outdated worker (rolling.go) does not: it only finishes what it holds.
func (w *worker) takesJobs() bool {
	return !w.draining && !w.frozen && !w.outdated && w.state != WorkerStopped
}

// slotsOf is how many jobs w runs at once: what it declared through its
// takes, or the endpoint's last declared concurrency until it has.
func (ep *endpointState) slotsOf(w *worker) int {
	if w.slots > 0 {
		return w.slots
	}
	return max(1, ep.slotsHint)
}

// desiredLocked is the scaler's target number of workers for an endpoint.
//
//   - REQUEST_COUNT: ceil((inQueue + inProgress) / scalerValue) slots, in
//     workers of the endpoint's declared concurrency.
//   - QUEUE_DELAY: the workers holding jobs, plus the idle ones the queued
//     jobs need; one more than now whenever the oldest queued job has
//     waited longer than scalerValue seconds with no free slot for it.
//
// Either way at least one worker while jobs wait (scale from zero the
// moment a job lands), never fewer than workersMin nor more than
// workersMax. Low-priority jobs never raise the target, except that an
// endpoint with no worker at all starts one so they are not stranded.
func (s *Scheduler) desiredLocked(ep *endpointState) int {
	d := &ep.def
	c := ep.capacity()
	hint := max(1, ep.slotsHint)
	queuedHigh := ep.inQueue - ep.lowQueued
	want := 0
	switch d.ScalerType {
	case spec.ScalerRequestCount:
		want = ceilDiv(ceilDiv(queuedHigh+ep.inProgress, d.ScalerValue), hint)
	default:
		busy := c.alive - c.idle
		want = busy + min(c.idle, ceilDiv(max(0, queuedHigh-c.busyFree), hint))
		if queuedHigh > c.free && ep.oldestWait(s.now()) > time.Duration(d.ScalerValue)*time.Second {
			want = c.alive + 1
		}
	}
	if want == 0 && queuedHigh > 0 {
		want = 1
	}
	if want == 0 && ep.inQueue > 0 && c.alive == 0 {
		want = 1
	}
	return min(max(want, d.WorkersMin), d.WorkersMax)
}

// scaleLocked brings an endpoint's workers to the target: frozen workers
// are revived before new ones are started; workers idle past idleTimeout
// beyond the target are frozen (FlashBoot) or stopped, longest idle first,
// never below workersMin and never one that holds a job or is loading.
func (s *Scheduler) scaleLocked(ep *endpointState) {
	if s.closed || ep.deleted {
		return
	}
	now := s.now()
	want := s.desiredLocked(ep)
	alive := ep.capacity().alive
	ep.throttled = 0
	for alive < want {
		if s.reviveLocked(ep) {
			alive++
			continue
		}
		if now.Before(ep.nextStart) {
			break // crash-loop back-off
		}
		if !s.startWorkerLocked(ep) {
			// Not placeable now (GPUs busy): the wanted workers show as
			// throttled, and idle or frozen workers of other endpoints
			// make room for them.
			ep.throttled = want - alive
			s.reclaimGPUsLocked(ep)
			break
		}
		alive++
	}
	if alive <= want {
		return
	}
	idleFor := time.Duration(ep.def.IdleTimeoutSec) * time.Second
	var idle []*worker
	for _, w := range ep.workers {
		if w.state == WorkerIdle && !w.frozen && !w.thawing && len(w.held) == 0 && now.Sub(w.lastActive) >= idleFor {
			idle = append(idle, w)
		}
	}
	sort.Slice(idle, func(i, j int) bool { return idle[i].lastActive.Before(idle[j].lastActive) })
	for _, w := range idle {
		if alive <= want || alive <= ep.def.WorkersMin {
			break
		}
		if !s.freezeLocked(ep, w) {
			s.retireWorkerLocked(w, "idle timeout")
		}
		alive--
	}
}

// freezeLocked suspends an idle worker of a FlashBoot endpoint instead of
// stopping it. It reports false when the endpoint does not use FlashBoot
// or the runtime cannot freeze.
func (s *Scheduler) freezeLocked(ep *endpointState, w *worker) bool {
	f, ok := w.handle.(oci.Freezer)
	if !(ep.def.Flashboot || s.parkableLocked(ep, w, true)) || !ok || w.unhealthy {
		return false
	}
	w.frozen = true
	w.frozenAt = s.now()
	s.setWorkerStateLocked(w)
	ep.stats.frozen++
	// Its pending take now waits for the thaw instead of for jobs.
	ep.wakeWorker(w.id)
	s.log.Info("freezing idle worker", "worker", w.id, "endpoint", w.endpoint, "window", time.Duration(ep.def.FlashbootWindowSec)*time.Second)
	s.goOwned(func() {
		w.freezeMu.Lock()
		defer w.freezeMu.Unlock()
		s.mu.Lock()
		still := w.frozen && !w.draining
		s.mu.Unlock()
		if !still {
			return // revived or stopped before it was frozen
		}
		err := f.Freeze()
		w.suspended = err == nil
		if err != nil {
			s.log.Warn("freeze worker; stopping it instead", "worker", w.id, "err", err)
			s.mu.Lock()
			w.frozen = false
			s.drainWorkerLocked(w, "could not be frozen")
			s.mu.Unlock()
		}
	})
	return true
}

// reviveLocked thaws the endpoint's most recently frozen worker, if any,
// or revives its most recently parked one whose GPUs are free (park.go).
// Its job-take, held while it was frozen, is released at once: a job
// written to it now is read the moment the worker runs again.
func (s *Scheduler) reviveLocked(ep *endpointState) bool {
	var pick *worker
	for _, w := range ep.workers {
		if !w.frozen || w.draining {
			continue
		}
		if p := w.park; p != nil && (p.phase != parkParked || !s.parkedGPUsFreeLocked(p)) {
			continue // being parked, or its GPUs are held
		}
		// A frozen worker thaws in milliseconds, a parked one restores
		// its GPU state in seconds: the frozen ones go first.
		switch {
		case pick == nil:
			pick = w
		case (w.park == nil) != (pick.park == nil):
			if w.park == nil {
				pick = w
			}
		case w.frozenAt.After(pick.frozenAt):
			pick = w
		}
	}
	if pick == nil {
		return false
	}
	w := pick
	if w.park != nil {
		s.unparkLocked(ep, w)
		return true
	}
	w.frozen = false
	w.thawing = true
	w.lastActive = s.now()
	// It sent no pings while frozen; that is not a sign of trouble.
	w.lastPing = s.now()
	s.setWorkerStateLocked(w)
	close(w.thawCh)
	w.thawCh = make(chan struct{})
	ep.stats.revived++
	begin := time.Now()
	s.goOwned(func() {
		w.freezeMu.Lock()
		var err error
		if w.suspended {
			err = w.handle.(oci.Freezer).Thaw()
			w.suspended = err != nil
		}
		w.freezeMu.Unlock()
		s.mu.Lock()
		defer s.mu.Unlock()
		w.thawing = false
		if err != nil {
			s.log.Error("thaw worker; stopping it", "worker", w.id, "err", err)
			s.drainWorkerLocked(w, "could not be thawed")
			return
		}
		took := time.Since(begin)
		ep.stats.revival.add(took)
		s.log.Info("worker revived", "worker", w.id, "endpoint", w.endpoint, "took", took)
	})
	return true
}

// expireFrozenLocked stops frozen workers past their FlashBoot window.
func (s *Scheduler) expireFrozenLocked(ep *endpointState) {
	window := time.Duration(ep.def.FlashbootWindowSec) * time.Second
	now := s.now()
	for _, w := range ep.workers {
		if w.frozen && !w.draining && now.Sub(w.frozenAt) >= window {
			s.retireWorkerLocked(w, fmt.Sprintf("frozen for the FlashBoot window (%s)", window))
		}
	}
}

// checkInitLocked marks workers that neither took a job nor pinged within
// the endpoint's init timeout unhealthy, and replaces them.
func (s *Scheduler) checkInitLocked(ep *endpointState) {
	limit := time.Duration(ep.def.InitTimeoutSec) * time.Second
	now := s.now()
	for _, w := range ep.workers {
		if w.ready || w.draining || w.unhealthy || now.Sub(w.startedAt) < limit {
			continue
		}
		w.unhealthy = true
		w.reason = fmt.Sprintf("no job-take or ping within the init timeout (%s) of starting", limit)
		s.backOffLocked(ep, w, w.reason)
		s.drainWorkerLocked(w, w.reason)
	}
}

// checkStopsLocked kills workers that still run a job they were told to
// stop (cancel, execution timeout, TTL) after the stop grace: synchronous
// handlers and SDKs older than 1.10 cannot be interrupted otherwise. The
// other jobs the worker held go back to the queue when it exits.
func (s *Scheduler) checkStopsLocked(w *worker) {
	now := s.now()
	for id, deadline := range w.stopping {
		if now.Before(deadline) {
			continue
		}
		if w.handle == nil || w.killed {
			return
		}
		w.killed = true
		w.draining = true
		s.setWorkerStateLocked(w)
		if ep := s.endpoints[w.endpoint]; ep != nil {
			ep.wakeWorker(w.id)
		}
		s.log.Warn("worker did not stop a cancelled, timed-out or failed job within the stop grace; killing it",
			"worker", w.id, "endpoint", w.endpoint, "job", id, "grace", s.tun().StopGrace)
		w.handle.Kill()
		return
	}
}
