package main

import (
	"context"
	"errors"
	"sync"
)

// Job is one job as the daemon delivered it. Raw keeps every key (s3Config, webhook,
// batchId...) because the SDK hands the whole object to the handler.
type Job struct {
	ID    string
	Input any
	Raw   map[string]any
}

// errStoppedByDaemon is the cancel cause of a job named on the stop channel.
var errStoppedByDaemon = errors.New("job stopped by the daemon (job-stop)")

// jobSet is the worker's list of held jobs: what pings report, what job_in_progress
// reflects, and where stop signals find the job to cancel. Order is kept so pings list
// jobs in the order they were taken.
type jobSet struct {
	mu     sync.Mutex
	order  []string
	cancel map[string]context.CancelCauseFunc
	// freed is signalled (without blocking) whenever a job leaves, to wake the take loop.
	freed chan struct{}
}

func newJobSet() *jobSet {
	return &jobSet{cancel: map[string]context.CancelCauseFunc{}, freed: make(chan struct{}, 1)}
}

// add registers a job; it refuses a job id that is already held, since the worker
// cannot tell two runs of one id apart in pings or stop signals.
func (s *jobSet) add(id string, cancel context.CancelCauseFunc) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.cancel[id]; dup {
		return false
	}
	s.cancel[id] = cancel
	s.order = append(s.order, id)
	return true
}

// remove forgets a job once its result is posted (or dropped) or it was stopped.
func (s *jobSet) remove(id string) {
	s.mu.Lock()
	if _, ok := s.cancel[id]; ok {
		delete(s.cancel, id)
		for i, v := range s.order {
			if v == id {
				s.order = append(s.order[:i], s.order[i+1:]...)
				break
			}
		}
	}
	s.mu.Unlock()
	select {
	case s.freed <- struct{}{}:
	default:
	}
}

// stop cancels a held job's context; it reports false for ids the worker does not hold.
func (s *jobSet) stop(id string) bool {
	s.mu.Lock()
	cancel, ok := s.cancel[id]
	s.mu.Unlock()
	if ok {
		cancel(errStoppedByDaemon)
	}
	return ok
}

// ids returns the held job ids, oldest first.
func (s *jobSet) ids() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.order...)
}

func (s *jobSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.order)
}

// waitFree blocks until fewer than limit jobs are held and returns how many more the
// worker may take. The SDK polls every second for a free slot; waking on the release is
// the same on the wire, only sooner. It returns 0 when ctx ends.
func (s *jobSet) waitFree(ctx context.Context, limit int) int {
	for {
		if n := limit - s.len(); n > 0 {
			return n
		}
		select {
		case <-ctx.Done():
			return 0
		case <-s.freed:
		}
	}
}
