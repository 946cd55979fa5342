package scheduler

import (
	"fmt"
	"time"
)

// Endpoints that cannot start. A worker that fails to start (a program
// that does not exist, an argument list too long, an image that cannot be
// resolved) or that exits, reports itself unhealthy or misses its init
// timeout before its first job-take or ping counts as a start failure.
// After MaxStartFailures of them in a row, with no worker of the endpoint
// ready in between, the endpoint's queued jobs fail with the last reason:
// nothing would ever run them, and a client learns why at once instead of
// at the TTL, a day later. The endpoint is not disabled: the crash-loop
// back-off (1 s to 64 s) goes on, and a job that arrives later starts a
// fresh series of attempts. An endpoint waiting for a GPU starts no worker
// and so never counts.

// DefaultMaxStartFailures is Config.MaxStartFailures's default: with the
// back-off doubling from 1 s, the fifth failure comes about 15 s after the
// first.
const DefaultMaxStartFailures = 5

// startFailedLocked records a start failure of one of ep's workers, and
// fails ep's queued jobs once there have been MaxStartFailures in a row.
func (s *Scheduler) startFailedLocked(ep *endpointState, reason string) {
	ep.startFails++
	ep.startErr = reason
	limit := s.tun().MaxStartFailures
	if ep.startFails < limit {
		return
	}
	var failed []*job
	for _, q := range []*fifo{&ep.high, &ep.low} {
		for _, j := range q.items[q.head:] {
			if j != nil && j.queued && !j.finalizing {
				failed = append(failed, j)
			}
		}
	}
	if len(failed) == 0 {
		return
	}
	// Out of the queue now, so that a worker that becomes ready before the
	// failure is written cannot take them.
	for _, j := range failed {
		ep.unqueue(j)
	}
	msg := fmt.Sprintf("worker start failed %d times in a row: %s", ep.startFails, reason)
	s.log.Error("workers of the endpoint keep failing to start; failing its queued jobs",
		"endpoint", ep.def.ID, "failures", ep.startFails, "jobs", len(failed), "reason", reason)
	s.goOwned(func() { s.failUnstartable(failed, msg) })
}

// failUnstartable fails jobs that no worker could be started for. Jobs
// whose failure could not be written go back to the head of the queue.
func (s *Scheduler) failUnstartable(jobs []*job, msg string) {
	now := s.now()
	_, err := s.finalize(s.ctx, jobs, "start failure", failedAt(msg, now))
	if err == nil {
		return
	}
	s.log.Error("fail the jobs of an endpoint whose workers cannot start", "err", err)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, j := range jobs {
		ep := s.endpoints[j.rec.EndpointID]
		if ep != nil && s.jobs[j.rec.ID] == j && !j.finalizing && !j.queued && j.worker == nil {
			ep.push(j, true)
		}
	}
}

// jobArrivedLocked gives an endpoint whose jobs were failed for start
// failures a new series of attempts, without back-off, when a job arrives:
// whatever was wrong may have been put right meanwhile. While a series is
// under way the job just waits for it.
func (s *Scheduler) jobArrivedLocked(ep *endpointState) {
	if ep.startFails >= s.tun().MaxStartFailures {
		resetStarts(ep)
	}
}

// resetStarts forgets an endpoint's start failures and back-off (its
// definition changed, or a job arrived after its jobs were failed).
func resetStarts(ep *endpointState) {
	ep.startFails = 0
	ep.startErr = ""
	ep.failures = 0
	ep.nextStart = time.Time{}
}
