package runc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
	"unsafe"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"

	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/oci/bundle"
)

// ErrExitUnknown is the ExitStatus.Err of an adopted worker whose exit
// status could not be read: emberd is not its parent (the emberd that
// started it is; after that one died, the worker's init was re-parented to
// the nearest subreaper or PID 1, which reaps it).
var ErrExitUnknown = errors.New("the exit status of a worker started by an earlier emberd run is unknown")

// Leftover is a container that an earlier emberd run started and did not
// clean up (it crashed, was killed, or restarted), found in the state dir.
// The scheduler adopts it (it goes on as a worker) or destroys it.
//
// Call Leftovers before anything removes the workers' directories: a
// leftover's overlay is mounted in its Dir.
type Leftover struct {
	// ID is the container's id, which is its worker's id.
	ID string
	// Labels are the container's labels: the spec's annotations
	// (bundle.AnnotationWorker, AnnotationEndpoint, AnnotationImage,
	// AnnotationLogPath, AnnotationDir, AnnotationMemory) and "bundle".
	Labels map[string]string
	// Status is libcontainer's: "created" (never started), "running",
	// "paused" or "stopped" (exited while emberd was away).
	Status string
	// PID is the host pid of the container's init; 0 unless running.
	PID int
	// Created is when the container was created.
	Created time.Time

	r *Runtime
	c *libcontainer.Container
}

// Leftovers lists the containers in the state dir. Containers whose state
// cannot be loaded are reported in the error, the others are returned.
func (r *Runtime) Leftovers(ctx context.Context) ([]*Leftover, error) {
	ents, err := os.ReadDir(r.stateDir)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	var out []*Leftover
	var errs []error
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		if !e.IsDir() {
			continue
		}
		c, err := libcontainer.Load(r.stateDir, e.Name())
		if err != nil {
			errs = append(errs, fmt.Errorf("load container %s: %w", e.Name(), err))
			continue
		}
		st, err := c.State()
		if err != nil {
			errs = append(errs, fmt.Errorf("container %s: state: %w", e.Name(), err))
			continue
		}
		status, err := c.Status()
		if err != nil {
			errs = append(errs, fmt.Errorf("container %s: status: %w", e.Name(), err))
			continue
		}
		l := &Leftover{
			ID:      c.ID(),
			Labels:  labelMap(c.Config().Labels),
			Status:  status.String(),
			Created: st.Created,
			r:       r,
			c:       c,
		}
		if status == libcontainer.Running || status == libcontainer.Paused {
			l.PID = st.InitProcessPid
		}
		out = append(out, l)
	}
	return out, errors.Join(errs...)
}

func labelMap(labels []string) map[string]string {
	m := make(map[string]string, len(labels))
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		m[k] = v
	}
	return m
}

func (l *Leftover) paths() paths {
	if dir := l.Labels[bundle.AnnotationDir]; dir != "" {
		return workerPaths(dir)
	}
	return paths{}
}

// Adopt makes a running leftover a Worker again: Stop, Kill, Done and Exit
// work as for a worker this run started, and on exit the container, its
// overlay and files are cleaned up. Its exit status is known only when this
// process is its parent (emberd was its subreaper); else Exit has Code -1
// and Err ErrExitUnknown (an OOM kill is still reported).
//
// A paused leftover (a worker frozen when emberd went away) is adopted
// frozen: Thaw (oci.Freezer) makes it go on; Stop and Kill work as well.
func (l *Leftover) Adopt() (*Worker, error) {
	status, err := l.c.Status()
	if err != nil {
		return nil, fmt.Errorf("adopt %s: %w", l.ID, err)
	}
	if status != libcontainer.Running && status != libcontainer.Paused {
		return nil, fmt.Errorf("adopt %s: the container is %s, not running: destroy it", l.ID, status)
	}
	st, err := l.c.State()
	if err != nil {
		return nil, fmt.Errorf("adopt %s: %w", l.ID, err)
	}
	pid := st.InitProcessPid
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("adopt %s: open pid %d: %w", l.ID, pid, err)
	}
	// libcontainer checks the pid's start time: still running (or
	// paused) after the pidfd was opened means the pidfd is the
	// container's init.
	if s, err := l.c.Status(); err != nil || (s != libcontainer.Running && s != libcontainer.Paused) {
		unix.Close(pidfd)
		return nil, fmt.Errorf("adopt %s: the container stopped", l.ID)
	}
	w := newWorker(l.r, l.c, pid, l.paths(), l.Labels[bundle.AnnotationLogPath], st.CgroupPaths, l.c.Config().Cgroups.Resources.Memory)
	go w.run(func() oci.ExitStatus {
		defer unix.Close(pidfd)
		if err := waitPidfd(context.Background(), pidfd); err != nil {
			return oci.ExitStatus{Code: -1, Err: err}
		}
		return reapPidfd(pidfd)
	})
	return w, nil
}

// Destroy kills a leftover (SIGKILL to its init kills the whole container),
// waits for it to exit (bounded by ctx), and removes the container, its
// overlay and files.
func (l *Leftover) Destroy(ctx context.Context) error {
	status, err := l.c.Status()
	if err != nil {
		return fmt.Errorf("destroy %s: %w", l.ID, err)
	}
	if status != libcontainer.Stopped {
		st, err := l.c.State()
		if err != nil {
			return fmt.Errorf("destroy %s: %w", l.ID, err)
		}
		// ESRCH: gone already.
		pidfd, err := unix.PidfdOpen(st.InitProcessPid, 0)
		havePidfd := err == nil
		if err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("destroy %s: open pid %d: %w", l.ID, st.InitProcessPid, err)
		}
		if err := l.c.Signal(unix.SIGKILL); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
			if havePidfd {
				unix.Close(pidfd)
			}
			return fmt.Errorf("destroy %s: kill: %w", l.ID, err)
		}
		if havePidfd {
			err := waitPidfd(ctx, pidfd)
			if err == nil {
				reapPidfd(pidfd)
			}
			unix.Close(pidfd)
			if err != nil {
				return fmt.Errorf("destroy %s: %w", l.ID, err)
			}
		}
	}
	var errs []error
	if err := l.c.Destroy(); err != nil {
		errs = append(errs, fmt.Errorf("destroy %s: %w", l.ID, err))
	}
	if p := l.paths(); p.dir != "" {
		if err := cleanupFiles(p); err != nil {
			errs = append(errs, fmt.Errorf("destroy %s: %w", l.ID, err))
		}
	}
	return errors.Join(errs...)
}

// waitPidfd waits until the process exits (its pidfd becomes readable), or
// ctx ends.
func waitPidfd(ctx context.Context, pidfd int) error {
	timeout := -1
	if ctx.Done() != nil {
		timeout = 100 // ms: look at ctx between polls
	}
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, timeout)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("wait for the container: %w", err)
		}
		if n > 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("wait for the container: %w", err)
		}
	}
}

// reapPidfd reaps an exited process through its pidfd when it is this
// process's child, and reads its exit status; otherwise the status is
// unknown.
func reapPidfd(pidfd int) oci.ExitStatus {
	var info unix.Siginfo
	// The process has exited: if it is a child, this does not block; if
	// not, it fails with ECHILD.
	if err := unix.Waitid(unix.P_PIDFD, pidfd, &info, unix.WEXITED, nil); err != nil {
		return oci.ExitStatus{Code: -1, Err: ErrExitUnknown}
	}
	// siginfo_t for SIGCHLD: si_signo, si_errno, si_code, then (aligned to
	// a pointer) si_pid, si_uid, si_status.
	const union = (3*4 + unsafe.Sizeof(uintptr(0)) - 1) &^ (unsafe.Sizeof(uintptr(0)) - 1)
	status := *(*int32)(unsafe.Add(unsafe.Pointer(&info), union+8))
	const cldExited, cldKilled, cldDumped = 1, 2, 3 // si_code of SIGCHLD
	switch info.Code {
	case cldExited:
		return oci.ExitStatus{Code: int(status)}
	case cldKilled, cldDumped:
		return oci.ExitStatus{Code: -1, Signal: unix.Signal(status).String()}
	}
	return oci.ExitStatus{Code: -1, Err: ErrExitUnknown}
}
