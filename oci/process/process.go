// Package process is the development runtime: a worker is the endpoint's
// command run directly on the host. It gives no isolation and ignores the
// endpoint's image; it exists so the job path can be developed and tested
// without containers.
package process

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/oci/bundle"
	"github.com/emberhq/ember/oci/logindex"
)

// Runtime starts host processes.
type Runtime struct{}

// New returns the process runtime.
func New() *Runtime { return &Runtime{} }

// Name implements oci.Runtime.
func (*Runtime) Name() string { return "process" }

// Start implements oci.Runtime.
func (*Runtime) Start(ctx context.Context, spec oci.Spec) (oci.Worker, error) {
	if len(spec.Command) == 0 {
		return nil, errors.New("the process runtime needs the endpoint's command (it cannot run images)")
	}
	logf, err := os.OpenFile(spec.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open worker log: %w", err)
	}
	cmd := exec.Command(spec.Command[0], spec.Command[1:]...)
	cmd.Env = spec.Env
	if !hasVar(spec.Env, "PATH") {
		// A host process finds its tools on the host's PATH (a container
		// keeps its image's instead, so the scheduler does not set it).
		cmd.Env = append(cmd.Env, "PATH="+os.Getenv("PATH"))
	}
	cmd.Dir = spec.Dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group, so Stop reaches the worker's children too.
		Setpgid: true,
		// A worker must not outlive emberd: after a crash the restarted
		// daemon re-queues the worker's jobs, and a survivor could post a
		// second result for them.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", spec.Command[0], err)
	}
	// Workers, not emberd, are what the OOM killer should take: a worker
	// would otherwise inherit emberd's score (OOMScoreAdjust=-500 in its
	// unit). Set just after exec, so a child the worker forks in the first
	// instant keeps emberd's; the runc runtime sets it before exec.
	adj := strconv.Itoa(bundle.DefaultOOMScoreAdj)
	if err := os.WriteFile("/proc/"+strconv.Itoa(cmd.Process.Pid)+"/oom_score_adj", []byte(adj), 0); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
		return nil, fmt.Errorf("set the worker's oom_score_adj to %s: %w", adj, err)
	}
	w := &worker{cmd: cmd, done: make(chan struct{})}
	exited := make(chan struct{})
	indexed := make(chan struct{})
	go func() {
		defer close(indexed)
		markLog(spec.LogPath, exited)
	}()
	go func() {
		err := cmd.Wait()
		logf.Close()
		close(exited)
		<-indexed
		w.exit = exitStatus(cmd, err)
		close(w.done)
	}()
	return w, nil
}

// logMarkInterval is how often a worker's log gets a time mark
// (oci/logindex): how exact an endpoint log's timestamps are.
const logMarkInterval = 250 * time.Millisecond

// markLog marks the time index of the log at path until exited is closed,
// then once more for what the worker wrote last.
func markLog(path string, exited <-chan struct{}) {
	idx := logindex.Open(path)
	t := time.NewTicker(logMarkInterval)
	defer t.Stop()
	for {
		select {
		case <-exited:
			idx.Sample(time.Now())
			return
		case now := <-t.C:
			// A failed mark costs only timestamp precision.
			idx.Sample(now)
		}
	}
}

type worker struct {
	cmd      *exec.Cmd
	done     chan struct{}
	exit     oci.ExitStatus
	stopOnce sync.Once
	// freezeMu serialises Freeze and Thaw. Once Stop or Kill has been
	// called (ending), the worker is not frozen again.
	freezeMu sync.Mutex
	ending   atomic.Bool
}

var (
	_ oci.Worker    = (*worker)(nil)
	_ oci.Freezer   = (*worker)(nil)
	_ oci.Inspector = (*worker)(nil)
)

// Processes implements oci.Inspector: the worker's own process (the
// children it starts are not tracked).
func (w *worker) Processes() ([]int, error) {
	if w.isDone() {
		return nil, fmt.Errorf("list the processes of worker %d: %w", w.PID(), oci.ErrExited)
	}
	return []int{w.PID()}, nil
}

// MemoryLimit implements oci.Inspector: a host process has no limit.
func (w *worker) MemoryLimit() int64 { return 0 }

// SetMemoryLimit implements oci.Inspector: the process runtime cannot
// limit memory.
func (w *worker) SetMemoryLimit(int64) error {
	return fmt.Errorf("set the memory limit of worker %d: %w", w.PID(), oci.ErrUnsupported)
}

func (w *worker) PID() int { return w.cmd.Process.Pid }

func (w *worker) Done() <-chan struct{} { return w.done }

func (w *worker) Exit() oci.ExitStatus { return w.exit }

func (w *worker) signal(sig syscall.Signal) error {
	// Negative pid: the whole process group.
	return syscall.Kill(-w.cmd.Process.Pid, sig)
}

// Stop implements oci.Worker: SIGTERM to the worker's process group, then
// SIGCONT so that a frozen worker acts on it; SIGKILL after grace.
func (w *worker) Stop(grace time.Duration) {
	w.stopOnce.Do(func() {
		w.ending.Store(true)
		w.signal(syscall.SIGTERM)
		w.signal(syscall.SIGCONT)
		go func() {
			t := time.NewTimer(grace)
			defer t.Stop()
			select {
			case <-w.done:
			case <-t.C:
				w.Kill()
			}
		}()
	})
}

// Kill implements oci.Worker: SIGKILL to the worker's process group (a
// stopped process dies of it too), and SIGCONT for good measure.
func (w *worker) Kill() {
	w.ending.Store(true)
	w.signal(syscall.SIGKILL)
	w.signal(syscall.SIGCONT)
}

// Freeze implements oci.Freezer: SIGSTOP to the worker's process group (the
// worker and the children it did not move to another group), then it waits
// until every process of the group has stopped. A process that does not
// stop within freezeTimeout (one in an uninterruptible sleep, say) fails
// the Freeze, and the group is continued. Freezing a worker that Stop or
// Kill was called on fails.
func (w *worker) Freeze() error {
	w.freezeMu.Lock()
	defer w.freezeMu.Unlock()
	if w.ending.Load() {
		return fmt.Errorf("freeze worker %d: it is being stopped", w.PID())
	}
	if w.isDone() {
		return fmt.Errorf("freeze worker %d: %w", w.PID(), oci.ErrExited)
	}
	pgid := w.cmd.Process.Pid
	if err := w.signal(syscall.SIGSTOP); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("freeze worker %d: %w", pgid, oci.ErrExited)
		}
		return fmt.Errorf("freeze worker %d: %w", pgid, err)
	}
	if w.ending.Load() {
		// Stop or Kill came in between: their SIGCONT may have come
		// before the SIGSTOP.
		w.signal(syscall.SIGCONT)
		return fmt.Errorf("freeze worker %d: it is being stopped", pgid)
	}
	deadline := time.Now().Add(freezeTimeout)
	for {
		running, err := groupRunning(pgid)
		if err != nil {
			w.signal(syscall.SIGCONT)
			return fmt.Errorf("freeze worker %d: %w", pgid, err)
		}
		if running == 0 {
			return nil
		}
		if w.isDone() {
			return fmt.Errorf("freeze worker %d: %w", pgid, oci.ErrExited)
		}
		if time.Now().After(deadline) {
			w.signal(syscall.SIGCONT)
			return fmt.Errorf("freeze worker %d: %d processes did not stop within %v", pgid, running, freezeTimeout)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// Thaw implements oci.Freezer: SIGCONT to the worker's process group.
func (w *worker) Thaw() error {
	w.freezeMu.Lock()
	defer w.freezeMu.Unlock()
	if w.isDone() {
		return fmt.Errorf("thaw worker %d: %w", w.PID(), oci.ErrExited)
	}
	if err := w.signal(syscall.SIGCONT); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("thaw worker %d: %w", w.PID(), oci.ErrExited)
		}
		return fmt.Errorf("thaw worker %d: %w", w.PID(), err)
	}
	return nil
}

func (w *worker) isDone() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// freezeTimeout bounds Freeze's wait for the group to stop.
const freezeTimeout = 2 * time.Second

// groupRunning counts the processes of process group pgid that have not
// stopped yet: those whose state in /proc/PID/stat is neither stopped (T,
// t) nor dead (Z, X), nor an uninterruptible sleep (D) with SIGSTOP
// pending. The last is a process that cannot stop before the sleep ends
// but cannot return to its program without stopping: above all the parent
// of a vfork (sh runs its commands so) whose child stopped before exec,
// which waits for the child and would otherwise never count as stopped
// (the cgroup v2 freezer counts such a parent as frozen too). A syscall
// of such a process that was in flight may still complete.
func groupRunning(pgid int) (int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone
		}
		state, pg, ok := parseStat(b)
		if !ok || pg != pgid {
			continue
		}
		switch state {
		case 'T', 't', 'Z', 'X':
		case 'D':
			if !stopPending(e.Name()) {
				n++
			}
		default:
			n++
		}
	}
	return n, nil
}

// stopPending reports whether the process has SIGSTOP pending, for itself
// (SigPnd) or its thread group (ShdPnd), per /proc/PID/status.
func stopPending(pid string) bool {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return false
	}
	return sigPending(b, syscall.SIGSTOP)
}

// sigPending reads the pending-signal masks of a /proc/PID/status.
func sigPending(status []byte, sig syscall.Signal) bool {
	for line := range strings.Lines(string(status)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "SigPnd" && k != "ShdPnd") {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err == nil && mask&(1<<(uint(sig)-1)) != 0 {
			return true
		}
	}
	return false
}

// parseStat reads the state and the process group from /proc/PID/stat:
// "pid (comm) state ppid pgrp ...", where comm may hold spaces and ')'.
func parseStat(b []byte) (state byte, pgrp int, ok bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 3 || len(f[0]) != 1 {
		return 0, 0, false
	}
	pg, err := strconv.Atoi(f[2])
	if err != nil {
		return 0, 0, false
	}
	return f[0][0], pg, true
}

func exitStatus(cmd *exec.Cmd, err error) oci.ExitStatus {
	st, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok {
		if err == nil {
			err = errors.New("no wait status")
		}
		return oci.ExitStatus{Code: -1, Err: err}
	}
	if st.Signaled() {
		return oci.ExitStatus{Code: -1, Signal: st.Signal().String()}
	}
	return oci.ExitStatus{Code: st.ExitStatus()}
}

func hasVar(env []string, name string) bool {
	for _, kv := range env {
		if len(kv) > len(name) && kv[:len(name)] == name && kv[len(name)] == '=' {
			return true
		}
	}
	return false
}
