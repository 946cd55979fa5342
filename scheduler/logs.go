package scheduler

import (
	"fmt"
	"slices"
	"sort"

	"github.com/emberhq/ember/scheduler/limits"
)

// rememberStoppedLocked keeps w, which has just exited, among ep's stopped
// workers for LogWorkers.
func rememberStoppedLocked(ep *endpointState, w *worker) {
	ep.stopped = append(ep.stopped, WorkerInfo{ID: w.id, EndpointID: w.endpoint, State: WorkerStopped,
		StartedAt: w.startedAt, Reason: w.reason, LogPath: w.logPath, Jobs: []string{}})
	if over := len(ep.stopped) - limits.LogStoppedWorkers; over > 0 {
		ep.stopped = append(ep.stopped[:0], ep.stopped[over:]...)
	}
}

// LogWorkers lists the workers whose logs make up endpoint endpointID's
// log, oldest first: the live ones and those that stopped since emberd
// started (up to limits.LogStoppedWorkers), whose files may since have
// been swept. It fails with ErrNotFound for an unknown endpoint.
func (s *Scheduler) LogWorkers(endpointID string) ([]WorkerInfo, error) {
	s.mu.Lock()
	ep, ok := s.endpoints[endpointID]
	if !ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: endpoint %s", ErrNotFound, endpointID)
	}
	out := slices.Clone(ep.stopped)
	for _, w := range ep.workers {
		out = append(out, WorkerInfo{ID: w.id, EndpointID: w.endpoint, State: w.state, StartedAt: w.startedAt,
			LogPath: w.logPath, Jobs: []string{}})
	}
	s.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool { return out[i].StartedAt.Before(out[j].StartedAt) })
	return out, nil
}
