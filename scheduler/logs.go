package scheduler

import (
	"os"
	"path/filepath"
	"strings"
	"time"
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
		if !ok || !strings.HasPrefix(id, "w-") || e.IsDir() {
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
