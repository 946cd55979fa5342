package scheduler

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emberhq/ember/scheduler/diskguard"
	"github.com/emberhq/ember/scheduler/store"
)

// AuthWorker checks a worker credential: the token must be the one issued
// to workerID, and that worker must serve endpointID.
func (s *Scheduler) AuthWorker(endpointID, workerID, token string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.workers[workerID]
	if !ok || subtle.ConstantTimeCompare([]byte(w.token), []byte(token)) != 1 {
		return fmt.Errorf("%w: bad worker credential", ErrForbidden)
	}
	if w.endpoint != endpointID {
		return fmt.Errorf("%w: worker %s does not serve endpoint %s", ErrForbidden, workerID, endpointID)
	}
	return nil
}

// Lease is what Take hands out: the jobs and a way to report whether they
// reached the worker. Until Delivered(true) the jobs are only provisionally
// taken; Delivered(false) puts them back at the head of the queue.
type Lease struct {
	Jobs []TakenJob
	s    *Scheduler
	ids  []string
	wid  string
}

// Delivered reports whether the take response was written to the worker.
func (l *Lease) Delivered(ok bool) {
	if ok || len(l.ids) == 0 {
		return
	}
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	for _, id := range l.ids {
		j, live := l.s.jobs[id]
		if !live || j.finalizing || j.worker == nil || j.worker.id != l.wid {
			continue
		}
		// The worker never saw it, so the attempt does not count.
		l.s.requeueLocked(j, "take response was not delivered", false)
	}
}

// Take leases up to max jobs to a worker, holding the request up to hold
// when none is ready. An empty lease means "no job" (HTTP 204).
func (s *Scheduler) Take(ctx context.Context, endpointID, workerID string, max int, hold time.Duration) (*Lease, error) {
	if max < 1 {
		max = 1
	}
	if hold <= 0 || hold > s.tun().TakeHold {
		hold = s.tun().TakeHold
	}
	timer := time.NewTimer(hold)
	defer timer.Stop()
	counted := false
	for {
		s.mu.Lock()
		w, ep, err := s.takerLocked(endpointID, workerID)
		if err != nil {
			s.mu.Unlock()
			return nil, err
		}
		switch {
		case w.draining || s.closed:
			// A draining worker must get nothing new: the SDK may queue a
			// job after its run loop has exited, and that job would be lost.
			s.mu.Unlock()
			return &Lease{s: s}, nil
		case w.outdated:
			// Finishing its jobs after an update (rolling.go): nothing new.
			// Held, not answered at once, so that the worker does not spin
			// on empty takes; answered when it is stopped (its jobs ended).
			ch := w.stopCh
			s.mu.Unlock()
			// A stop signal for one of its jobs, or its stop: answered
			// empty then, even if it has exited meanwhile.
			if waitTake(ctx, timer, ch) {
				s.mu.Lock()
				again := w.outdated && !w.draining && s.workers[workerID] == w
				s.mu.Unlock()
				if again {
					continue
				}
			}
			return &Lease{s: s}, nil
		case w.frozen || w.park != nil:
			// Held until the worker is revived (a parked one: restored);
			// then it takes at once.
			ch := w.thawCh
			s.mu.Unlock()
			if waitTake(ctx, timer, ch) {
				continue
			}
			return &Lease{s: s}, nil
		}
		if !counted {
			counted = true
			ep.ask(w, max)
			defer s.doneAsking(w, max)
		}
		if taken := s.leaseUpToLocked(ep, w, max); len(taken) > 0 {
			recs := make([]jobMeta, len(taken))
			for i, j := range taken {
				recs[i] = j.rec
			}
			s.mu.Unlock()
			return s.buildLease(ctx, workerID, taken, recs)
		}
		t := ep.wait(workerID)
		s.mu.Unlock()
		if waitTake(ctx, timer, t.ch) {
			continue
		}
		s.mu.Lock()
		ep.leave(t)
		s.mu.Unlock()
		return &Lease{s: s}, nil
	}
}

// takerLocked returns worker workerID, which is taking jobs of endpoint
// endpointID, and that endpoint, and notes that the worker was seen. It
// fails with ErrForbidden when the worker is not registered for it.
func (s *Scheduler) takerLocked(endpointID, workerID string) (*worker, *endpointState, error) {
	w, ok := s.workers[workerID]
	ep := s.endpoints[endpointID]
	if !ok || ep == nil || w.endpoint != endpointID {
		return nil, nil, fmt.Errorf("%w: worker %s is not registered for endpoint %s", ErrForbidden, workerID, endpointID)
	}
	s.markSeenLocked(w)
	return w, ep, nil
}

// waitTake holds a take until ch is ready (true), or until the take's
// hold ends or its request goes away (false).
func waitTake(ctx context.Context, hold *time.Timer, ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	case <-hold.C:
	case <-ctx.Done():
	}
	return false
}

// ask counts the n jobs a take of w, a worker of ep, asks for
// (Scheduler.doneAsking uncounts them); s.mu is held. The concurrency the
// worker declares is what it holds plus what its pending takes ask for (a
// batch size, or parallel single takes on SDKs up to 1.7.0).
func (ep *endpointState) ask(w *worker, n int) {
	w.asking += n
	if c := len(w.held) + w.asking; c > w.slots {
		w.slots = c
		ep.slotsHint = c
	}
}

// leaseUpToLocked leases up to max of ep's ready jobs to w, in queue order.
func (s *Scheduler) leaseUpToLocked(ep *endpointState, w *worker, max int) []*job {
	var taken []*job
	for len(taken) < max {
		j := ep.pop()
		if j == nil {
			break
		}
		s.leaseLocked(j, w, ep)
		taken = append(taken, j)
	}
	return taken
}

func (s *Scheduler) doneAsking(w *worker, n int) {
	s.mu.Lock()
	w.asking -= n
	s.mu.Unlock()
}

// leaseLocked hands j to w: IN_PROGRESS, attempt counted, timers armed.
func (s *Scheduler) leaseLocked(j *job, w *worker, ep *endpointState) {
	now := s.now()
	j.rec.Status = store.InProgress
	j.rec.WorkerID = w.id
	j.rec.StartedAt = now.UnixMilli()
	j.rec.DelayMs = msSince(j.rec.SubmittedAt, now)
	if j.rec.Attempts == 0 && j.runState == nil { // its first take (an attempt given back leaves 0)
		ep.stats.delay.add(time.Duration(j.rec.DelayMs) * time.Millisecond)
		ep.history.Delay(now, time.Duration(j.rec.DelayMs)*time.Millisecond)
	}
	j.rec.Attempts++
	j.worker = w
	if j.runState == nil {
		j.runState = &runState{}
	}
	j.leaseSeen = now
	j.progress = nil
	w.held[j.rec.ID] = j
	w.lastActive = now
	ep.inProgress++
	s.setWorkerStateLocked(w)
	attempt := j.rec.Attempts
	j.execTimer = time.AfterFunc(time.Duration(j.rec.ExecutionTimeoutMs)*time.Millisecond, func() { s.executionTimeout(j, attempt) })
}

// buildLease reads the jobs' inputs and records the take. The take record is
// written asynchronously: losing it in a crash only means the job is found
// IN_QUEUE instead of IN_PROGRESS on restart, and is re-queued either way.
func (s *Scheduler) buildLease(ctx context.Context, workerID string, taken []*job, recs []jobMeta) (*Lease, error) {
	l := &Lease{s: s, wid: workerID}
	b := s.store.NewBatch()
	for i, j := range taken {
		full, err := s.storedRecord(j)
		var input json.RawMessage
		if err == nil {
			input = full.Input
			if full.InputRef != "" {
				var loaded *store.Job
				if loaded, err = s.store.Job(ctx, j.rec.ID, true); err == nil {
					input = loaded.Input
				}
			}
		}
		if err != nil {
			// Put everything back: a half-built lease must not strand jobs.
			l.ids = make([]string, len(taken))
			for k, t := range taken {
				l.ids[k] = t.rec.ID
			}
			l.Delivered(false)
			return nil, fmt.Errorf("read job %s: %w", j.rec.ID, err)
		}
		l.Jobs = append(l.Jobs, TakenJob{ID: full.ID, Input: input, S3Config: full.S3Config, Webhook: full.Webhook})
		l.ids = append(l.ids, full.ID)
		s.mu.Lock()
		if j.runState != nil {
			j.stored = full
		}
		s.mu.Unlock()
		// A spilled input keeps its reference rather than being spilled again.
		rec := merged(recs[i], full)
		if err := b.PutJob(&rec, rec.Deadline()); err != nil {
			return nil, err
		}
	}
	s.store.CommitAsync(b)
	return l, nil
}

// Done records a worker's job-done post. Progress updates change what
// /status shows; a final result turns the job terminal exactly once. Posts
// for jobs that are already terminal, or that the worker no longer holds,
// are accepted and ignored (the SDK retries, and races progress against the
// final result).
func (s *Scheduler) Done(ctx context.Context, endpointID, workerID, jobID string, res Result) error {
	s.mu.Lock()
	w := s.workers[workerID]
	j, live := s.jobs[jobID]
	if !live || j.rec.EndpointID != endpointID || j.finalizing {
		if w != nil && !res.Progress {
			delete(w.stopping, jobID) // it finished the job it was told to stop
		}
		s.mu.Unlock()
		return s.checkFormerJob(endpointID, jobID)
	}
	holds := j.worker != nil && j.worker.id == workerID
	if !holds && (j.runState == nil || !contains(j.pastWorkers, workerID)) {
		s.mu.Unlock()
		return fmt.Errorf("%w: worker %s does not hold job %s", ErrForbidden, workerID, jobID)
	}
	if res.Progress {
		if holds {
			j.progress = res.Output
			j.leaseSeen = s.now()
		}
		s.mu.Unlock()
		return nil
	}
	if w != nil && res.StopPod {
		w.recycle = true
	}
	s.mu.Unlock()
	if err := s.disk.Check(diskguard.Finishing, int64(len(res.Output))); err != nil {
		return err
	}

	now := s.now()
	_, err := s.finalize(ctx, []*job{j}, "result", func(r *store.Job) {
		r.FinishedAt = now.UnixMilli()
		if r.StartedAt > 0 {
			r.ExecutionMs = msSince(r.StartedAt, now)
		}
		if !holds {
			r.WorkerID = workerID
		}
		r.Output = res.Output
		if res.HasError {
			r.Status = store.Failed
			r.Error = res.Error
		} else {
			r.Status = store.Completed
		}
	})
	if err != nil {
		return err
	}
	if w != nil && res.StopPod {
		s.mu.Lock()
		s.maybeRecycleLocked(w)
		s.mu.Unlock()
	}
	return nil
}

// checkFormerJob decides how to answer a post about a job that is not live:
// fine (ignored) if the job exists or existed, an error only if the worker
// could not have held it.
func (s *Scheduler) checkFormerJob(endpointID, jobID string) error {
	r, err := s.store.Job(s.ctx, jobID, false)
	if err == nil && r.EndpointID != endpointID {
		return fmt.Errorf("%w: job %s is not on endpoint %s", ErrForbidden, jobID, endpointID)
	}
	// Unknown (expired, deleted by TTL) or terminal: accept and discard.
	return nil
}

// AddChunk appends a stream chunk posted by the worker holding the job. The
// chunk waits on disk until /stream hands it out; memory keeps only the
// job's stream cursor. A chunk that would take the job's unread bytes past
// the cap is refused and fails the job (*StreamLimitError); a chunk for a
// job that has ended is refused (ErrJobEnded). Neither is stored.
func (s *Scheduler) AddChunk(ctx context.Context, endpointID, workerID, jobID string, output []byte) error {
	if err := s.disk.Check(diskguard.Finishing, int64(len(output))); err != nil {
		return err
	}
	// One post per job at a time: a chunk's index is used only once it is
	// on disk, so /stream never finds a gap or overtakes a write.
	lk := postLock(jobID)
	lk.Lock()
	defer lk.Unlock()
	s.mu.Lock()
	j, live := s.jobs[jobID]
	if !live || j.rec.EndpointID != endpointID || j.finalizing {
		s.mu.Unlock()
		return s.lateChunk(endpointID, jobID)
	}
	if j.worker == nil || j.worker.id != workerID {
		past := j.runState != nil && contains(j.pastWorkers, workerID)
		s.mu.Unlock()
		if past {
			return s.rejectLate(endpointID, fmt.Errorf("%w: worker %s no longer holds job %s (it was taken back); the chunk was not stored", ErrJobEnded, workerID, jobID))
		}
		return fmt.Errorf("%w: worker %s does not hold job %s", ErrForbidden, workerID, jobID)
	}
	if limit := s.tun().MaxUnreadStream; j.stream.unread+int64(len(output)) > limit {
		unread := j.stream.unread
		s.mu.Unlock()
		return s.overflowChunk(ctx, j, endpointID, jobID, workerID, limit, unread, len(output))
	}
	c := store.Chunk{JobID: jobID, Index: j.stream.next, Output: output}
	j.leaseSeen = s.now()
	expires := j.rec.Deadline().Add(s.tun().RunRetention)
	s.mu.Unlock()

	b := s.store.NewBatch()
	b.PutChunk(c, expires)
	// Waited for even when the worker hangs up: the cursor may only count
	// a chunk that is on disk.
	if err := s.store.Commit(context.WithoutCancel(ctx), b); err != nil {
		return persistErr("persist stream chunk", err)
	}
	s.mu.Lock()
	j.stream.added(c.Index, len(output))
	j.wakeStream()
	s.mu.Unlock()
	return nil
}

// Ping records a heartbeat. jobIDs is what the worker says it holds: held
// jobs listed there keep their lease; a held job missing from pings for
// longer than LeaseGrace is re-queued. An unhealthy report marks the worker
// unhealthy and stops it.
func (s *Scheduler) Ping(endpointID, workerID string, jobIDs []string, version, status, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.workers[workerID]
	if !ok || w.endpoint != endpointID {
		return fmt.Errorf("%w: worker %s is not registered for endpoint %s", ErrForbidden, workerID, endpointID)
	}
	now := s.now()
	unhealthy := strings.EqualFold(status, "unhealthy")
	if !unhealthy {
		// A worker whose first sign of life says it is unhealthy never
		// became ready: it counts as a start failure.
		s.markSeenLocked(w)
	}
	w.lastPing = now
	w.pinged = true
	if version != "" {
		w.version = version
	}
	if unhealthy {
		w.unhealthy = true
		w.reason = reason
		if ep := s.endpoints[endpointID]; ep != nil {
			s.backOffLocked(ep, w, reason)
		}
		s.drainWorkerLocked(w, "unhealthy: "+reason)
		return nil
	}
	listed := make(map[string]bool, len(jobIDs))
	for _, id := range jobIDs {
		listed[id] = true
	}
	for id := range w.stopping {
		if !listed[id] {
			delete(w.stopping, id) // it let go of the job it was told to stop
		}
	}
	for id, j := range w.held {
		if listed[id] {
			j.leaseSeen = now
		}
	}
	s.checkWorkerLeasesLocked(w, now)
	return nil
}

// checkLeasesLocked re-queues jobs whose worker has stopped listing them,
// and jobs of workers that stopped pinging altogether.
func (s *Scheduler) checkLeasesLocked() {
	now := s.now()
	for _, w := range s.workers {
		if w.pinged && now.Sub(w.lastPing) > s.tun().LeaseGrace && len(w.held) > 0 {
			s.log.Warn("worker stopped pinging", "worker", w.id, "endpoint", w.endpoint, "since", w.lastPing)
			w.unhealthy = true
			w.reason = "stopped sending pings"
			for _, j := range w.held {
				if j.finalizing {
					continue // its result is being written; publishing releases it
				}
				// A worker stopped for no fault of its own may go
				// quiet while it shuts down.
				s.requeueLocked(j, "worker stopped sending pings", !w.retired)
			}
			s.drainWorkerLocked(w, "stopped pinging")
			continue
		}
		s.checkWorkerLeasesLocked(w, now)
	}
}

func (s *Scheduler) checkWorkerLeasesLocked(w *worker, now time.Time) {
	if !w.pinged {
		return
	}
	for _, j := range w.held {
		if !j.finalizing && now.Sub(j.leaseSeen) > s.tun().LeaseGrace {
			s.requeueLocked(j, "worker no longer lists the job in its pings", !w.retired)
		}
	}
}

// requeueLocked takes j back from its worker. counted says the attempt was
// used up; once MaxAttempts are used the job fails with the reason, which
// is therefore always a counted one: the job's last real failure, never a
// stop of its worker by the operator or by Ember. An attempt that does not
// count is given back, and written back, so that a restart of emberd does
// not count it either.
func (s *Scheduler) requeueLocked(j *job, reason string, counted bool) {
	ep := s.endpoints[j.rec.EndpointID]
	w := j.worker
	if w != nil {
		j.pastWorkers = append(j.pastWorkers, w.id)
	}
	s.releaseLocked(j)
	if !counted && j.rec.Attempts > 0 {
		j.rec.Attempts--
	}
	if counted && j.rec.Attempts >= s.maxAttempts(ep) {
		attempts := j.rec.Attempts
		j.finalizing = false
		msg := fmt.Sprintf("%s after %d %s", reason, attempts, plural(attempts, "attempt"))
		s.goOwned(func() { s.failLost(j, msg) })
		return
	}
	j.rec.Status = store.InQueue
	j.rec.WorkerID = ""
	j.rec.StartedAt = 0
	j.rec.DelayMs = 0
	j.progress = nil
	if ep != nil && counted {
		ep.stats.retried++
	}
	if !counted {
		s.writeRequeueLocked(j)
	}
	if ep != nil {
		ep.push(j, true)
		s.scaleLocked(ep)
	}
	s.log.Info("job re-queued", "job", j.rec.ID, "endpoint", j.rec.EndpointID, "reason", reason, "attempt", j.rec.Attempts, "counted", counted)
}

// writeRequeueLocked writes a re-queued job's record back as IN_QUEUE with
// its attempts, from the record kept in memory since the take (the store
// is not read under the lock). Without it a restart would find the take
// record, IN_PROGRESS, and count the attempt after all. The write rides
// along with the next durable one, like the take's.
func (s *Scheduler) writeRequeueLocked(j *job) {
	full := j.unsaved
	if full == nil && j.runState != nil {
		full = j.stored
	}
	if full == nil {
		return
	}
	rec := merged(j.rec, full)
	b := s.store.NewBatch()
	if err := b.PutJob(&rec, rec.Deadline()); err != nil {
		s.log.Warn("write re-queued job", "job", rec.ID, "err", err)
		return
	}
	s.store.CommitAsync(b)
}

// failedAt is the finalize mutation that fails a job with reason at now;
// a job that had started also gets its execution time. Every failure
// decided by the scheduler (not posted by a worker) goes through it.
func failedAt(reason string, now time.Time) func(*store.Job) {
	return func(r *store.Job) {
		r.Status = store.Failed
		r.Error = reason
		r.FinishedAt = now.UnixMilli()
		if r.StartedAt > 0 {
			r.ExecutionMs = msSince(r.StartedAt, now)
		}
	}
}

// failLost fails a job whose worker was lost too often.
func (s *Scheduler) failLost(j *job, reason string) {
	now := s.now()
	_, err := s.finalize(s.ctx, []*job{j}, "failure", failedAt(reason, now))
	if err != nil {
		s.log.Error("fail lost job", "job", j.rec.ID, "err", err)
	}
}

// releaseLocked detaches j from its worker (if any).
func (s *Scheduler) releaseLocked(j *job) {
	w := j.worker
	if w == nil {
		return
	}
	delete(w.held, j.rec.ID)
	j.worker = nil
	if j.runState != nil && j.execTimer != nil {
		j.execTimer.Stop()
		j.execTimer = nil
	}
	if ep := s.endpoints[j.rec.EndpointID]; ep != nil {
		ep.inProgress--
	}
	w.lastActive = s.now()
	s.setWorkerStateLocked(w)
	s.maybeRecycleLocked(w)
}

// executionTimeout fires when a job has run longer than its execution
// timeout: TIMED_OUT, and the worker is told to stop it.
func (s *Scheduler) executionTimeout(j *job, attempt int) {
	s.mu.Lock()
	if s.jobs[j.rec.ID] != j || j.finalizing || j.worker == nil || j.rec.Attempts != attempt {
		s.mu.Unlock()
		return
	}
	limit := j.rec.ExecutionTimeoutMs
	s.mu.Unlock()
	now := s.now()
	_, err := s.finalize(s.ctx, []*job{j}, "timeout", func(r *store.Job) {
		r.Status = store.TimedOut
		r.Error = fmt.Sprintf("execution timeout of %d ms exceeded", limit)
		r.FinishedAt = now.UnixMilli()
		r.ExecutionMs = msSince(r.StartedAt, now)
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		s.log.Error("time out job", "job", j.rec.ID, "err", err)
	}
}

// StopSignals long-polls for the jobs a worker must abandon (job-stop).
// Signals already queued are answered first; a draining worker's poll (and
// any poll once the scheduler is closed) is then answered empty at once,
// never held.
func (s *Scheduler) StopSignals(ctx context.Context, endpointID, workerID string, hold time.Duration) ([]string, error) {
	if hold <= 0 || hold > s.tun().StopHold {
		hold = s.tun().StopHold
	}
	timer := time.NewTimer(hold)
	defer timer.Stop()
	for {
		s.mu.Lock()
		w, ok := s.workers[workerID]
		if !ok || w.endpoint != endpointID {
			s.mu.Unlock()
			return nil, fmt.Errorf("%w: worker %s is not registered for endpoint %s", ErrForbidden, workerID, endpointID)
		}
		s.markSeenLocked(w)
		if len(w.stopQ) > 0 {
			ids := w.stopQ
			w.stopQ = nil
			s.mu.Unlock()
			return ids, nil
		}
		if w.draining || s.closed {
			// Not held: the SDK leaves its stop loop only when this poll
			// returns (then after its 1 s pause after an empty answer), and
			// a draining worker must be free to exit. A busy one polls again
			// and still gets the stop signals for the jobs it finishes.
			s.mu.Unlock()
			return nil, nil
		}
		ch := w.stopCh
		s.mu.Unlock()
		select {
		case <-ch:
			continue
		case <-timer.C:
		case <-ctx.Done():
		}
		return nil, nil
	}
}

func (s *Scheduler) signalStopLocked(w *worker, jobID string) {
	if !contains(w.stopQ, jobID) {
		w.stopQ = append(w.stopQ, jobID)
	}
	if w.stopping == nil {
		w.stopping = make(map[string]time.Time)
	}
	if _, ok := w.stopping[jobID]; !ok {
		w.stopping[jobID] = s.now().Add(s.tun().StopGrace)
	}
	s.wakeStopPollLocked(w)
}

// wakeStopPollLocked wakes w's pending job-stop poll, if any, so that it
// looks at the worker again.
func (s *Scheduler) wakeStopPollLocked(w *worker) {
	close(w.stopCh)
	w.stopCh = make(chan struct{})
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// maxAttempts is how often a job of ep may be handed to a worker.
func (s *Scheduler) maxAttempts(ep *endpointState) int {
	if ep != nil && ep.def.MaxAttempts > 0 {
		return ep.def.MaxAttempts
	}
	return s.tun().MaxAttempts
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
