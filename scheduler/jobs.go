package scheduler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/emberhq/ember/runpod"
	"github.com/emberhq/ember/scheduler/diskguard"
	"github.com/emberhq/ember/scheduler/spec"
	"github.com/emberhq/ember/scheduler/store"
)

// Submit validates nothing (the caller decoded and range-checked the
// request); it persists the job durably and only then makes it takeable.
// When Submit returns nil the job has been fsynced.
func (s *Scheduler) Submit(ctx context.Context, endpointID string, sub spec.Submission) (JobView, error) {
	if err := s.disk.Check(diskguard.NewWork, int64(len(sub.Input))); err != nil {
		return JobView{}, err
	}
	now := s.now()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return JobView{}, fmt.Errorf("%w: emberd is shutting down", ErrUnavailable)
	}
	ep, ok := s.endpoints[endpointID]
	if !ok || ep.deleted {
		s.mu.Unlock()
		return JobView{}, fmt.Errorf("%w: endpoint %s", ErrNotFound, endpointID)
	}
	s.seq++
	rec := store.Job{
		ID:                 newJobID(sub.Sync),
		EndpointID:         ep.def.ID, // shared by every job of the endpoint, not a copy per request
		Status:             store.InQueue,
		Seq:                s.seq,
		Input:              sub.Input,
		Webhook:            sub.Webhook,
		WebhookV2:          sub.WebhookV2,
		S3Config:           sub.S3Config,
		ExecutionTimeoutMs: sub.ExecutionTimeoutMs,
		TTLMs:              sub.TTLMs,
		LowPriority:        sub.LowPriority,
		Sync:               sub.Sync,
		SubmittedAt:        now.UnixMilli(),
	}
	if rec.ExecutionTimeoutMs == 0 {
		rec.ExecutionTimeoutMs = ep.def.ExecutionTimeoutMs
	}
	s.mu.Unlock()
	if rec.TTLMs == 0 {
		rec.TTLMs = runpod.DefaultTTLMs
	}

	b := s.store.NewBatch()
	if err := b.PutJob(&rec, rec.Deadline()); err != nil {
		return JobView{}, persistErr("persist job", err)
	}
	// The job is handed out while its record is being written: the single
	// committer lands every later write (take, result) after this one, and
	// the caller is answered only once it is durable, so a worker starts
	// sooner. A /runsync job is not acknowledged until RunSync answers, so
	// its record rides along with the next durable write (usually its own
	// result) instead of costing an fsync of its own.
	var durable <-chan error
	if sub.Sync {
		s.store.CommitAsync(b)
	} else {
		durable = s.store.CommitLater(b)
	}
	j := newJob(&rec)
	j.unsaved = &rec
	s.mu.Lock()
	s.admitLocked(ep, j)
	ep.history.Submitted(now)
	ep.recent.add(rec.ID)
	s.jobArrivedLocked(ep)
	s.scaleLocked(ep)
	s.mu.Unlock()
	if sub.Sync {
		// unsaved stays set for the job's life: the store may not hold the
		// record until its result is written.
		return JobView{ID: rec.ID, EndpointID: endpointID, Status: store.InQueue}, nil
	}
	err := <-durable
	s.mu.Lock()
	j.unsaved = nil
	s.mu.Unlock()
	if err != nil {
		s.abandon(j)
		return JobView{}, persistErr("persist job", err)
	}
	return JobView{ID: rec.ID, EndpointID: endpointID, Status: store.InQueue}, nil
}

// admitLocked makes a new queued job live: indexed by id, takeable from its
// endpoint's ready queue and in the TTL heap. Submit and recovery both come
// through here, so what a queued job costs in memory is decided in one place
// (TestQueuedJobFootprint bounds it).
func (s *Scheduler) admitLocked(ep *endpointState, j *job) {
	s.jobs[j.rec.ID] = j
	ep.push(j, false)
	s.armTTLLocked(j)
}

// abandon withdraws a job whose record could not be written: it was never
// acknowledged, so it must not run on.
func (s *Scheduler) abandon(j *job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.jobs[j.rec.ID] != j || j.finalizing {
		return
	}
	if ep := s.endpoints[j.rec.EndpointID]; ep != nil {
		ep.unqueue(j)
	}
	w := j.worker
	s.publishLocked(j, nil, nil)
	if w != nil {
		s.signalStopLocked(w, j.rec.ID)
	}
}

// RunSync submits a /runsync job and holds until it is terminal or wait has
// passed. An answer that is not terminal hands the client a job id, so the
// job is made durable first.
func (s *Scheduler) RunSync(ctx context.Context, endpointID string, sub spec.Submission, wait time.Duration) (JobView, error) {
	sub.Sync = true
	v, err := s.Submit(ctx, endpointID, sub)
	if err != nil {
		return JobView{}, err
	}
	v, err = s.Wait(ctx, endpointID, v.ID, wait)
	if err != nil {
		return JobView{}, err
	}
	if !v.Status.Terminal() {
		if err := s.store.Flush(ctx); err != nil {
			return JobView{}, persistErr("persist job", err)
		}
	}
	return v, nil
}

// viewLocked renders a live job's status object.
func (s *Scheduler) viewLocked(j *job) JobView {
	v := JobView{ID: j.rec.ID, EndpointID: j.rec.EndpointID, Status: j.rec.Status, Retries: j.rec.Retries, WorkerID: j.rec.WorkerID}
	if j.rec.StartedAt > 0 {
		v.DelayTime, v.HasDelay = j.rec.DelayMs, true
		v.ExecutionTime, v.HasExecution = msSince(j.rec.StartedAt, s.now()), true
	}
	if j.runState != nil && j.progress != nil {
		v.Output = j.progress
	}
	return v
}

// recordView renders a stored (usually terminal) record.
func recordView(r *store.Job) JobView {
	v := JobView{ID: r.ID, EndpointID: r.EndpointID, Status: r.Status, Retries: r.Retries, WorkerID: r.WorkerID, Output: r.Output, Error: r.Error}
	if r.StartedAt > 0 {
		v.DelayTime, v.HasDelay = r.DelayMs, true
	}
	if r.Status.Terminal() && r.StartedAt > 0 {
		v.ExecutionTime, v.HasExecution = r.ExecutionMs, true
	}
	return v
}

// Status returns a job's status object.
func (s *Scheduler) Status(endpointID, id string) (JobView, error) {
	s.mu.Lock()
	if j, ok := s.jobs[id]; ok {
		defer s.mu.Unlock()
		if j.rec.EndpointID != endpointID {
			return JobView{}, fmt.Errorf("%w: job %s", ErrNotFound, id)
		}
		return s.viewLocked(j), nil
	}
	s.mu.Unlock()
	r, err := s.store.Job(s.ctx, id, true)
	if errors.Is(err, store.ErrNotFound) || (err == nil && r.EndpointID != endpointID) {
		return JobView{}, fmt.Errorf("%w: job %s", ErrNotFound, id)
	}
	if err != nil {
		return JobView{}, err
	}
	if !r.Status.Terminal() {
		// A live record that is not in memory is being written right now
		// (Submit between commit and publish): report it as queued.
		return JobView{ID: r.ID, EndpointID: r.EndpointID, Status: store.InQueue}, nil
	}
	return recordView(r), nil
}

// Wait holds until the job is terminal or wait has passed, then returns its
// status object (/runsync, /status-sync).
func (s *Scheduler) Wait(ctx context.Context, endpointID, id string, wait time.Duration) (JobView, error) {
	s.mu.Lock()
	j, ok := s.jobs[id]
	if !ok || j.rec.EndpointID != endpointID {
		s.mu.Unlock()
		return s.Status(endpointID, id)
	}
	done := j.doneCh()
	s.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-done:
		if j.final == nil {
			return JobView{}, fmt.Errorf("%w: job %s expired", ErrNotFound, id)
		}
		return *j.final, nil
	case <-t.C:
	case <-ctx.Done():
	}
	return s.Status(endpointID, id)
}

// Cancel stops a job: a queued job leaves the queue, a running one is
// marked CANCELLED and its worker is told through job-stop. Cancelling a
// job that is already terminal changes nothing and returns its status.
func (s *Scheduler) Cancel(ctx context.Context, endpointID, id string) (JobView, error) {
	s.mu.Lock()
	j, ok := s.jobs[id]
	if !ok || j.rec.EndpointID != endpointID {
		s.mu.Unlock()
		return s.Status(endpointID, id)
	}
	if j.finalizing {
		done := j.doneCh()
		s.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
		}
		return s.Status(endpointID, id)
	}
	s.mu.Unlock()
	now := s.now()
	views, err := s.finalize(ctx, []*job{j}, "cancel", func(r *store.Job) {
		r.Status = store.Cancelled
		r.FinishedAt = now.UnixMilli()
		if r.StartedAt > 0 {
			r.ExecutionMs = msSince(r.StartedAt, now)
		}
	})
	if err != nil {
		return JobView{}, err
	}
	if len(views) == 0 {
		return s.Status(endpointID, id)
	}
	return views[0], nil
}

// Purge cancels every queued job of the endpoint; running jobs go on.
// Purged jobs become CANCELLED (rather than vanishing) so a client polling
// one sees a terminal state instead of a 404.
func (s *Scheduler) Purge(ctx context.Context, endpointID string) (int, error) {
	s.mu.Lock()
	if _, ok := s.endpoints[endpointID]; !ok {
		s.mu.Unlock()
		return 0, fmt.Errorf("%w: endpoint %s", ErrNotFound, endpointID)
	}
	var queued []*job
	for _, j := range s.jobs {
		if j.rec.EndpointID == endpointID && j.queued && !j.finalizing {
			queued = append(queued, j)
		}
	}
	s.mu.Unlock()
	now := s.now()
	views, err := s.finalize(ctx, queued, "purge", func(r *store.Job) {
		r.Status = store.Cancelled
		r.FinishedAt = now.UnixMilli()
	})
	return len(views), err
}

// Retry re-queues a FAILED or TIMED_OUT job that is still retained, with
// the same id and input; its previous output and error are cleared.
func (s *Scheduler) Retry(ctx context.Context, endpointID, id string) (JobView, error) {
	s.retryMu.Lock()
	defer s.retryMu.Unlock()
	s.mu.Lock()
	if j, ok := s.jobs[id]; ok && j.rec.EndpointID == endpointID {
		st := j.rec.Status
		s.mu.Unlock()
		return JobView{}, conflictf("job %s is %s; only FAILED or TIMED_OUT jobs can be retried", id, st)
	}
	ep, ok := s.endpoints[endpointID]
	s.mu.Unlock()
	if !ok {
		return JobView{}, fmt.Errorf("%w: endpoint %s", ErrNotFound, endpointID)
	}
	r, err := s.store.Job(ctx, id, false)
	if errors.Is(err, store.ErrNotFound) || (err == nil && r.EndpointID != endpointID) {
		return JobView{}, fmt.Errorf("%w: job %s", ErrNotFound, id)
	}
	if err != nil {
		return JobView{}, err
	}
	if r.Status != store.Failed && r.Status != store.TimedOut {
		return JobView{}, conflictf("job %s is %s; only FAILED or TIMED_OUT jobs can be retried", id, r.Status)
	}
	now := s.now()
	s.mu.Lock()
	s.seq++
	seq := s.seq
	s.mu.Unlock()
	if err := s.disk.Check(diskguard.NewWork, 0); err != nil {
		return JobView{}, err
	}
	rec := *r
	rec.Status = store.InQueue
	rec.Seq = seq
	rec.Output, rec.OutputRef, rec.Error = nil, "", ""
	rec.WorkerID, rec.StartedAt, rec.FinishedAt, rec.ExecutionMs, rec.DelayMs, rec.Attempts = "", 0, 0, 0, 0, 0
	rec.Retries++
	// The TTL runs again from the retry: a job that failed near its end of
	// life would otherwise expire the moment it is re-queued.
	rec.SubmittedAt = now.UnixMilli()
	b := s.store.NewBatch()
	if err := b.PutJob(&rec, rec.Deadline()); err != nil {
		return JobView{}, persistErr("persist retry", err)
	}
	if err := s.store.Commit(ctx, b); err != nil {
		return JobView{}, persistErr("persist retry", err)
	}
	// The earlier run's unread chunks stay readable, ahead of the new run's.
	span, err := s.store.ChunkSpanOf(s.ctx, id) // the retry is committed: no cancelling now
	if err != nil {
		return JobView{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	j := newJob(&rec)
	if span.Next > 0 {
		j.runState = &runState{stream: fromSpan(span)}
	}
	s.mu.Lock()
	s.jobs[id] = j
	ep.push(j, false)
	ep.counters.add(now, store.InQueue, true)
	ep.stats.retried++
	s.armTTLLocked(j)
	s.jobArrivedLocked(ep)
	s.scaleLocked(ep)
	s.mu.Unlock()
	return JobView{ID: id, EndpointID: endpointID, Status: store.InQueue}, nil
}

// finalize moves live jobs to a terminal state durably, in one batch. mutate
// sets the terminal fields on each stored record. Jobs that are already
// finalizing are skipped. It returns the views of the jobs it finalized.
func (s *Scheduler) finalize(ctx context.Context, jobs []*job, why string, mutate func(*store.Job)) ([]JobView, error) {
	type prepared struct {
		j         *job
		wasQueued bool
	}
	var ps []prepared
	s.mu.Lock()
	for _, j := range jobs {
		if j.finalizing || s.jobs[j.rec.ID] != j {
			continue
		}
		j.finalizing = true
		ps = append(ps, prepared{j: j, wasQueued: j.queued})
		if ep := s.endpoints[j.rec.EndpointID]; ep != nil {
			ep.unqueue(j)
		}
	}
	s.mu.Unlock()
	if len(ps) == 0 {
		return nil, nil
	}
	b := s.store.NewBatch()
	recs := make([]*store.Job, 0, len(ps))
	var deliveries []*store.Delivery
	var err error
	for _, p := range ps {
		var r *store.Job
		r, err = s.storedRecord(p.j)
		if err != nil {
			break
		}
		s.mu.Lock()
		*r = merged(p.j.rec, r)
		s.mu.Unlock()
		mutate(r)
		if err = b.PutJob(r, s.expiryFor(r)); err != nil {
			break
		}
		var d *store.Delivery
		if d, err = putWebhook(b, r); err != nil {
			break
		}
		if d != nil {
			deliveries = append(deliveries, d)
		}
		recs = append(recs, r)
	}
	if err == nil {
		err = s.store.Commit(ctx, b)
	}
	if err != nil {
		s.mu.Lock()
		for _, p := range ps {
			p.j.finalizing = false
			if p.j.ttlIdx < 0 {
				s.armTTLLocked(p.j) // expire may have popped it meanwhile
			}
			if p.wasQueued {
				if ep := s.endpoints[p.j.rec.EndpointID]; ep != nil {
					ep.push(p.j, true)
				}
			}
		}
		s.mu.Unlock()
		return nil, persistErr("persist "+why, err)
	}
	s.webhooks.Schedule(deliveries)
	views := make([]JobView, len(ps))
	s.mu.Lock()
	for i, p := range ps {
		v := recordView(recs[i])
		views[i] = v
		s.publishLocked(p.j, recs[i], &v)
	}
	s.mu.Unlock()
	return views, nil
}

// publishLocked makes a finished (or deleted, final == nil) job visible:
// it leaves memory, its worker lets go of it, waiters wake.
func (s *Scheduler) publishLocked(j *job, r *store.Job, final *JobView) {
	now := s.now()
	w := j.worker
	s.releaseLocked(j)
	if w != nil && r != nil && (r.Status == store.Cancelled || r.Status == store.TimedOut) {
		// The worker may still be running it: tell it to stop.
		s.signalStopLocked(w, j.rec.ID)
	}
	j.stopTimers()
	s.disarmTTLLocked(j)
	delete(s.jobs, j.rec.ID)
	if r != nil {
		j.rec = metaOf(r)
	}
	j.final = final
	if j.done != nil {
		close(j.done)
	}
	j.wakeStream()
	if ep := s.endpoints[j.rec.EndpointID]; ep != nil && r != nil {
		ep.counters.add(now, r.Status, false)
		ep.recordFinishedLocked(now, r)
		s.scaleLocked(ep)
	}
}

func (s *Scheduler) expire(j *job) {
	s.mu.Lock()
	if j.finalizing || s.jobs[j.rec.ID] != j || s.closed {
		s.mu.Unlock()
		return
	}
	j.finalizing = true
	if ep := s.endpoints[j.rec.EndpointID]; ep != nil {
		ep.unqueue(j)
	}
	mem := j.rec
	s.mu.Unlock()

	full, err := s.storedRecord(j)
	if err != nil {
		full = &store.Job{} // the webhook URL is lost with it; the job expires regardless
	}
	rec := merged(mem, full)
	now := s.now()
	rec.Status = store.TimedOut
	rec.Error = fmt.Sprintf("job TTL of %d ms expired", rec.TTLMs)
	rec.FinishedAt = now.UnixMilli()
	b := s.store.NewBatch()
	b.DeleteJob(rec.ID)
	d, err := putWebhook(b, &rec)
	if err != nil {
		s.log.Error("queue TTL webhook", "job", rec.ID, "err", err)
	}
	if err := s.store.Commit(s.ctx, b); err != nil {
		// The record carries the same deadline as its Badger expiry, so it
		// vanishes anyway; only the webhook is at risk.
		s.log.Error("delete expired job", "job", rec.ID, "err", err)
	}
	if d != nil {
		s.webhooks.Schedule([]*store.Delivery{d})
	}
	s.mu.Lock()
	w := j.worker
	s.publishLocked(j, nil, nil)
	if w != nil {
		s.signalStopLocked(w, rec.ID)
	}
	s.mu.Unlock()
	s.log.Info("job TTL expired", "job", rec.ID, "endpoint", rec.EndpointID)
}

// Health returns the /health counters of an endpoint.
func (s *Scheduler) Health(endpointID string) (Health, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ep, ok := s.endpoints[endpointID]
	if !ok {
		return Health{}, fmt.Errorf("%w: endpoint %s", ErrNotFound, endpointID)
	}
	var h Health
	h.Jobs.Completed, h.Jobs.Failed, h.Jobs.Retried = ep.counters.sum(s.now())
	h.Jobs.InQueue = ep.inQueue
	h.Jobs.InProgress = ep.inProgress
	h.Workers = s.workerCountsLocked(ep)
	return h, nil
}

// storedRecord returns the job's full record: from memory while its first
// write is still in flight, from the store after. With payloads the
// spilled input is loaded.
func (s *Scheduler) storedRecord(j *job) (*store.Job, error) {
	s.mu.Lock()
	u := j.unsaved
	if u == nil && j.runState != nil {
		u = j.stored
	}
	if u != nil {
		r := *u
		s.mu.Unlock()
		return &r, nil
	}
	s.mu.Unlock()
	return s.store.Job(s.ctx, j.rec.ID, false)
}
