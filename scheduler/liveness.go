package scheduler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/emberhq/ember/internal/faults"
)

// ErrWedged: a liveness check could not take the scheduler lock before its
// deadline; something holds it (a wedged loop, a deadlock).
var ErrWedged = errors.New("scheduler lock not acquired")

// lockProbe is one attempt to take the scheduler lock. done is closed once
// the lock was taken and released; closed is what s.closed said then.
type lockProbe struct {
	done   chan struct{}
	closed bool
}

// lockProbe returns the probe in flight, starting one if there is none, so
// that a wedged scheduler has at most one goroutine blocked on its lock
// however often it is checked: later checks wait on the probe already in
// flight. That goroutine ends as soon as it gets the lock.
func (s *Scheduler) lockProbe() *lockProbe {
	s.probeMu.Lock()
	defer s.probeMu.Unlock()
	if s.probe != nil {
		return s.probe
	}
	p := &lockProbe{done: make(chan struct{})}
	s.probe = p
	go func() {
		s.mu.Lock()
		p.closed = s.closed
		s.mu.Unlock()
		s.probeMu.Lock()
		s.probe = nil
		s.probeMu.Unlock()
		close(p.done)
	}()
	return p
}

// Check proves the scheduler is alive, not just the process: it takes the
// scheduler lock (which every loop and API call holds while it works) and
// reads from the store. It fails with ErrWedged when the lock is not free
// before ctx ends, with ErrUnavailable once the scheduler is closed, and
// with the store's error when the read fails. Cheap: meant for a watchdog.
func (s *Scheduler) Check(ctx context.Context) error {
	// No early return on an ended ctx: a deadline that passed before the
	// call (a loaded machine, a short watchdog budget) still means the lock
	// was not had in time, and the answer must say ErrWedged, as it does
	// for one that passes while waiting.
	p := s.lockProbe()
	select {
	case <-p.done:
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrWedged, context.Cause(ctx))
	}
	if p.closed {
		return fmt.Errorf("%w: scheduler closed", ErrUnavailable)
	}
	if err := s.store.Ping(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// The fault-injection hook for tests of liveness checks (Check, emberd's
// systemd watchdog): emberd calls it only from its opt-in debug listener
// (--debug-listen, POST /debug/wedge?for=5s).
func init() {
	faults.WedgeScheduler = func(sched any, d time.Duration) { sched.(*Scheduler).wedge(d) }
}

// wedge holds the scheduler lock for d, as a wedged scheduler loop would,
// and returns when it has let go. Every API call blocks while it holds the
// lock.
func (s *Scheduler) wedge(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	time.Sleep(d)
}

// Summary is the daemon at a glance: what a status line shows.
type Summary struct {
	Endpoints int
	// Queued and InProgress count jobs over every endpoint.
	Queued     int
	InProgress int
	// Workers counts live workers by state; every state but stopped has a
	// key, zero included.
	Workers map[WorkerState]int
	// Throttled counts workers wanted but not placeable (no free GPU).
	Throttled int
}

// Summary counts jobs and workers now.
func (s *Scheduler) Summary() Summary {
	sum := Summary{Workers: make(map[WorkerState]int)}
	for _, st := range liveStates {
		sum.Workers[st] = 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ep := range s.endpoints {
		if !ep.deleted {
			sum.Endpoints++
		}
		sum.Queued += ep.inQueue
		sum.InProgress += ep.inProgress
		sum.Throttled += ep.throttled
	}
	for _, w := range s.workers {
		if w.state != WorkerStopped {
			sum.Workers[w.state]++
		}
	}
	return sum
}
