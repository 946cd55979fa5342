package scheduler

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/emberhq/ember/scheduler/limits"
	"github.com/emberhq/ember/scheduler/workerid"
)

// sweepWorkerLogs deletes the log files (and rotated parts) of workers that
// are gone and whose log has not changed for longer than keep, so a busy
// appliance does not fill its disk with logs of workers long stopped.
func (s *Scheduler) sweepWorkerLogs(keep time.Duration) int {
	if s.cfg.InMemoryStore {
		return 0
	}
	dir := filepath.Join(s.cfg.DataDir, "workers")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	removed := 0
	for _, e := range entries {
		name := e.Name()
		id, _, ok := strings.Cut(name, ".log")
		if !ok || !strings.HasPrefix(id, workerid.Prefix) || e.IsDir() {
			continue
		}
		s.mu.Lock()
		_, live := s.workers[id]
		s.mu.Unlock()
		if live {
			continue
		}
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < keep {
			continue
		}
		if os.Remove(filepath.Join(dir, name)) == nil {
			removed++
		}
	}
	return removed
}

// logSweepLoop runs sweepWorkerLogs every few minutes until the scheduler
// closes.
func (s *Scheduler) logSweepLoop() {
	t := time.NewTicker(5 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.sweepWorkerLogs(s.cfg.WorkerLogRetention)
		}
	}
}

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
