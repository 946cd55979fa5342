// Package process is the development runtime: a worker is the endpoint's
// command run directly on the host. It gives no isolation and ignores the
// endpoint's image; it exists so the job path can be developed and tested
// without containers.
package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/emberhq/ember/oci"
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
	w := &worker{cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		logf.Close()
		w.exit = exitStatus(cmd, err)
		close(w.done)
	}()
	return w, nil
}

type worker struct {
	cmd      *exec.Cmd
	done     chan struct{}
	exit     oci.ExitStatus
	stopOnce sync.Once
}

func (w *worker) PID() int { return w.cmd.Process.Pid }

func (w *worker) Done() <-chan struct{} { return w.done }

func (w *worker) Exit() oci.ExitStatus { return w.exit }

func (w *worker) signal(sig syscall.Signal) {
	// Negative pid: the whole process group.
	_ = syscall.Kill(-w.cmd.Process.Pid, sig)
}

func (w *worker) Stop(grace time.Duration) {
	w.stopOnce.Do(func() {
		w.signal(syscall.SIGTERM)
		go func() {
			t := time.NewTimer(grace)
			defer t.Stop()
			select {
			case <-w.done:
			case <-t.C:
				w.signal(syscall.SIGKILL)
			}
		}()
	})
}

func (w *worker) Kill() { w.signal(syscall.SIGKILL) }

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
