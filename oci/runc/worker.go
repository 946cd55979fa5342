package runc

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"

	"github.com/emberhq/ember/oci"
)

// Worker is a worker's container. It implements oci.Worker.
type Worker struct {
	r           *Runtime
	c           *libcontainer.Container
	id          string
	pid         int
	paths       paths
	logPath     string
	cgroupPaths map[string]string
	// memLimit is the memory limit now (SetMemoryLimit changes it);
	// guarded by mu.
	memLimit int64
	timings  StartTimings

	stopOnce sync.Once
	// mu serialises Freeze and Thaw, and orders them against Stop, Kill
	// and the exit: once Stop or Kill has been called (ending) or the init
	// has exited (exited, set before the clean-up), the worker is not
	// frozen again.
	mu     sync.Mutex
	ending bool
	exited bool
	// thawer is the container's freezer file, opened by the first Freeze
	// and written by Thaw; nil before that and once the init has exited.
	thawer *thawer
	done   chan struct{}
	// Set before done is closed.
	exit    oci.ExitStatus
	cleanup time.Duration
}

var (
	_ oci.Worker    = (*Worker)(nil)
	_ oci.Freezer   = (*Worker)(nil)
	_ oci.Inspector = (*Worker)(nil)
)

func newWorker(r *Runtime, c *libcontainer.Container, pid int, p paths, logPath string, cgroupPaths map[string]string, memLimit int64) *Worker {
	w := &Worker{
		r:           r,
		c:           c,
		id:          c.ID(),
		pid:         pid,
		paths:       p,
		logPath:     logPath,
		cgroupPaths: cgroupPaths,
		memLimit:    max(memLimit, 0),
		done:        make(chan struct{}),
	}
	return w
}

// run owns the worker until it has exited and is cleaned up: it keeps the
// log under its cap, waits for the exit (wait), reads the OOM count, destroys
// the container, unmounts and removes the worker's files, then closes done.
func (w *Worker) run(wait func() oci.ExitStatus) {
	stopLogs := make(chan struct{})
	logsDone := make(chan struct{})
	go func() {
		defer close(logsDone)
		w.r.keepLogCapped(w.logPath, stopLogs)
	}()

	st := wait()
	w.mu.Lock()
	w.exited = true
	if w.thawer != nil {
		w.thawer.f.Close()
		w.thawer = nil
	}
	w.mu.Unlock()
	// The memory cgroup counts OOM kills in the container (any process,
	// not only init); read it before the cgroup goes.
	if n, err := oomKillCount(w.cgroupPaths); err != nil {
		w.r.log.Debug("read the OOM kill count", "worker", w.id, "err", err)
	} else if n > 0 {
		st.OOMKilled = true
		st.MemoryLimit = w.MemoryLimit()
	}
	close(stopLogs)
	<-logsDone

	t := time.Now()
	if err := w.destroy(); err != nil {
		w.r.log.Error("clean up an exited worker", "worker", w.id, "err", err)
	}
	w.cleanup = time.Since(t)
	w.exit = st
	close(w.done)
}

// destroy removes the exited container: cgroups and state (libcontainer),
// then the overlay and the worker's files.
func (w *Worker) destroy() error {
	var errs []error
	if err := w.c.Destroy(); err != nil {
		errs = append(errs, fmt.Errorf("destroy container: %w", err))
	}
	if w.paths.dir != "" {
		if err := cleanupFiles(w.paths); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ID is the worker's (and container's) id.
func (w *Worker) ID() string { return w.id }

// PID implements oci.Worker: the host pid of the container's init.
func (w *Worker) PID() int { return w.pid }

// Done implements oci.Worker. It is closed once the worker has exited and
// its container, overlay mount and files are gone.
func (w *Worker) Done() <-chan struct{} { return w.done }

// Exit implements oci.Worker.
func (w *Worker) Exit() oci.ExitStatus {
	<-w.done
	return w.exit
}

// Timings are the durations of the worker's start; zero for an adopted
// worker.
func (w *Worker) Timings() StartTimings { return w.timings }

// CleanupTime is how long the clean-up after the exit took (destroy,
// unmount, remove); valid once Done is closed.
func (w *Worker) CleanupTime() time.Duration {
	<-w.done
	return w.cleanup
}

// Stop implements oci.Worker: SIGTERM to the container's init, SIGKILL
// after grace. As in Docker, an init (PID 1 of its namespace) that does not
// handle SIGTERM ignores it and is killed after grace; killing init kills
// every process of the container. A frozen worker is thawed after the
// SIGTERM, so that it handles the signal before anything else.
func (w *Worker) Stop(grace time.Duration) {
	w.stopOnce.Do(func() {
		w.signal(unix.SIGTERM)
		go func() {
			t := time.NewTimer(grace)
			defer t.Stop()
			select {
			case <-w.done:
			case <-t.C:
				w.signal(unix.SIGKILL)
			}
		}()
	})
}

// Kill implements oci.Worker. It works on a frozen worker too (the cgroup
// is thawed after the SIGKILL).
func (w *Worker) Kill() { w.signal(unix.SIGKILL) }

// signal sends sig to the container's init, then thaws the container if it
// is frozen: a frozen process does not act on a signal, not even SIGKILL
// under the cgroup v1 freezer, until it is thawed. Once signalled, the
// worker is not frozen again (Freeze fails).
func (w *Worker) signal(sig unix.Signal) {
	w.mu.Lock()
	w.ending = true
	w.mu.Unlock()
	if w.isDone() {
		return
	}
	if err := w.c.Signal(sig); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
		w.r.log.Debug("signal worker", "worker", w.id, "signal", sig, "err", err)
	}
	// libcontainer thaws after a SIGKILL itself; this covers SIGTERM.
	if err := w.Thaw(); err != nil && !errors.Is(err, oci.ErrExited) {
		w.r.log.Debug("thaw a signalled worker", "worker", w.id, "signal", sig, "err", err)
	}
}

// Freeze implements oci.Freezer with the cgroup freezer (libcontainer's
// Pause: freezer.state on cgroup v1, cgroup.freeze on v2). It returns once
// every process of the container is frozen. Freezing a frozen worker does
// nothing; freezing one that has exited fails with oci.ErrExited, and one
// that Stop or Kill was called on fails too.
func (w *Worker) Freeze() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ending {
		return fmt.Errorf("freeze worker %s: it is being stopped", w.id)
	}
	if w.exited {
		return fmt.Errorf("freeze worker %s: %w", w.id, oci.ErrExited)
	}
	if w.thawer == nil {
		// For Thaw; without it, Thaw goes through libcontainer.
		if t, err := openThawer(w.cgroupPaths); err == nil {
			w.thawer = t
		} else {
			w.r.log.Debug("open the freezer file", "worker", w.id, "err", err)
		}
	}
	err := w.c.Pause()
	if err == nil {
		return nil
	}
	if errors.Is(err, libcontainer.ErrNotRunning) {
		// Pause says so of a paused container too.
		if st, serr := w.c.Status(); serr == nil && st == libcontainer.Paused {
			return nil
		}
		return fmt.Errorf("freeze worker %s: %w", w.id, oci.ErrExited)
	}
	return fmt.Errorf("freeze worker %s: %w", w.id, err)
}

// Thaw implements oci.Freezer. Thawing a worker that is not frozen does
// nothing; thawing one that has exited fails with oci.ErrExited (one that
// is exiting may succeed: Done reports the exit).
//
// Thaw is the critical path of a frozen worker's revival, so it is one
// write(2) to the freezer file that Freeze opened (freezer.state on cgroup
// v1, cgroup.freeze on v2) rather than libcontainer's Resume, which reads
// the freezer state, the init's /proc stat and the state dir, and opens
// the file, first. Writing the file is what Resume does, and libcontainer
// reads the freezer state back from the cgroup on every call, so the two
// do not disagree. Without the file (the first Freeze could not open it,
// or the worker has exited) Thaw is libcontainer's Resume.
func (w *Worker) Thaw() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.exited || w.isDone() {
		return fmt.Errorf("thaw worker %s: %w", w.id, oci.ErrExited)
	}
	if t := w.thawer; t != nil {
		_, err := t.f.WriteAt(t.thawed, 0)
		if err == nil {
			return nil
		}
		if errors.Is(err, unix.ENODEV) {
			// The cgroup was removed: the worker exited.
			return fmt.Errorf("thaw worker %s: %w", w.id, oci.ErrExited)
		}
		w.r.log.Debug("write the freezer file", "worker", w.id, "err", err)
	}
	err := w.c.Resume()
	if err == nil {
		return nil
	}
	if errors.Is(err, libcontainer.ErrNotPaused) {
		if st, serr := w.c.Status(); serr == nil && st != libcontainer.Stopped {
			return nil // running: nothing to thaw
		}
		return fmt.Errorf("thaw worker %s: %w", w.id, oci.ErrExited)
	}
	return fmt.Errorf("thaw worker %s: %w", w.id, err)
}

// thawer is an open freezer file and what thaws the cgroup when written.
type thawer struct {
	f      *os.File
	thawed []byte
}

// openThawer opens the container's freezer file: freezer.state of the
// freezer controller on cgroup v1, cgroup.freeze on v2 (where the paths'
// only key is "").
func openThawer(cgroupPaths map[string]string) (*thawer, error) {
	dir, file, thawed := cgroupPaths["freezer"], "freezer.state", "THAWED"
	if dir == "" {
		dir, file, thawed = cgroupPaths[""], "cgroup.freeze", "0"
	}
	if dir == "" {
		return nil, errors.New("the container has no freezer cgroup")
	}
	f, err := cgroups.OpenFile(dir, file, unix.O_WRONLY)
	if err != nil {
		return nil, err
	}
	return &thawer{f: f, thawed: []byte(thawed)}, nil
}

// isDone reports whether Done is closed.
func (w *Worker) isDone() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// exitStatus reads a wait result.
func exitStatus(ps *os.ProcessState, err error) oci.ExitStatus {
	if ps == nil {
		if err == nil {
			err = errors.New("no wait status")
		}
		return oci.ExitStatus{Code: -1, Err: fmt.Errorf("wait for the container: %w", err)}
	}
	ws, ok := ps.Sys().(syscall.WaitStatus)
	if !ok {
		return oci.ExitStatus{Code: -1, Err: errors.New("wait for the container: no wait status")}
	}
	if ws.Signaled() {
		return oci.ExitStatus{Code: -1, Signal: ws.Signal().String()}
	}
	return oci.ExitStatus{Code: ws.ExitStatus()}
}

// oomKillCount is the number of OOM kills in a container's memory cgroup:
// oom_kill in memory.oom_control on cgroup v1 (kernel >= 4.13), in
// memory.events on v2 (which counts the whole subtree).
func oomKillCount(cgroupPaths map[string]string) (uint64, error) {
	if p := cgroupPaths["memory"]; p != "" {
		return readKey(filepath.Join(p, "memory.oom_control"), "oom_kill")
	}
	if p := cgroupPaths[""]; p != "" {
		return readKey(filepath.Join(p, "memory.events"), "oom_kill")
	}
	return 0, errors.New("the container has no memory cgroup")
}

// readKey reads "key value" lines.
func readKey(path, key string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	return 0, fmt.Errorf("%s has no %s", path, key)
}

// Processes implements oci.Inspector: the host pids of every process in
// the container's cgroup. While the container runs, a pid listed may
// have exited since.
func (w *Worker) Processes() ([]int, error) {
	if w.isDone() {
		return nil, fmt.Errorf("list the processes of worker %s: %w", w.id, oci.ErrExited)
	}
	pids, err := w.c.Processes()
	if err != nil {
		return nil, fmt.Errorf("list the processes of worker %s: %w", w.id, err)
	}
	return pids, nil
}

// MemoryLimit implements oci.Inspector.
func (w *Worker) MemoryLimit() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.memLimit
}

// SetMemoryLimit implements oci.Inspector through libcontainer's Set: the
// container's resources with the memory limit changed, and the swap limit
// moved by as much where one is set (cgroup v1 refuses a memory limit
// above memory+swap). The change is saved in the container's state, so
// an emberd that adopts the container later reads it.
func (w *Worker) SetMemoryLimit(bytes int64) error {
	if bytes <= 0 {
		return fmt.Errorf("set the memory limit of worker %s: %d bytes is not a limit", w.id, bytes)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.exited {
		return fmt.Errorf("set the memory limit of worker %s: %w", w.id, oci.ErrExited)
	}
	cfg := w.c.Config()
	cg := *cfg.Cgroups
	res := *cg.Resources
	if res.MemorySwap > 0 && res.Memory > 0 {
		res.MemorySwap += bytes - res.Memory
	}
	res.Memory = bytes
	cg.Resources = &res
	cfg.Cgroups = &cg
	if err := w.c.Set(cfg); err != nil {
		if errors.Is(err, libcontainer.ErrNotRunning) {
			return fmt.Errorf("set the memory limit of worker %s: %w", w.id, oci.ErrExited)
		}
		return fmt.Errorf("set the memory limit of worker %s to %s: %w", w.id, oci.FormatBytes(bytes), err)
	}
	w.memLimit = bytes
	return nil
}
