package emberd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/emberhq/ember/scheduler/workerid"
)

// Worker log retention. Workers log to <data dir>/workers/<id>.log (and
// rotated parts beside it, oci/runc); the scheduler forgets a worker when
// it exits, the files stay for `ember worker logs` and are swept here.
const (
	// workerLogRetention keeps the logs of stopped workers this long.
	workerLogRetention = 24 * time.Hour
	// logSweepEvery is how often the worker log directory is swept.
	logSweepEvery = 5 * time.Minute
)

// logSweeper deletes the log files (and rotated parts) of workers that
// are gone and whose log has not changed for longer than keep, so a busy
// appliance does not fill its disk with logs of workers long stopped.
type logSweeper struct {
	dir  string        // the worker log directory
	keep time.Duration // how long a gone worker's log stays
	// live says whether worker id still runs (Scheduler.WorkerLog); its
	// log stays whatever its age.
	live func(id string) bool
}

// startLogSweeper sweeps dir every logSweepEvery until the returned stop
// is called; stop returns once the sweeper has finished, and may be called
// again. emberd stops it before it closes the scheduler that live asks.
func startLogSweeper(dir string, live func(id string) bool) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	l := &logSweeper{dir: dir, keep: workerLogRetention, live: live}
	go func() {
		defer close(done)
		l.run(ctx, logSweepEvery)
	}()
	return sync.OnceFunc(func() { cancel(); <-done })
}

// run sweeps every interval until ctx ends.
func (l *logSweeper) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			l.sweep()
		}
	}
}

// sweep deletes what is due and returns how many files it removed.
func (l *logSweeper) sweep() int {
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return 0
	}
	removed := 0
	for _, e := range entries {
		name := e.Name()
		id, _, ok := strings.Cut(name, ".log")
		if !ok || !workerid.Valid(id) || e.IsDir() {
			continue
		}
		if l.live(id) {
			continue
		}
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < l.keep {
			continue
		}
		if os.Remove(filepath.Join(l.dir, name)) == nil {
			removed++
		}
	}
	return removed
}
