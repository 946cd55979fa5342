// Package ckpttest is an in-memory cudackpt.Driver for tests of the code
// that parks workers: no GPU and no libcuda, a checkpoint state and a GPU
// memory figure per PID, failures injected per call, and a record of the
// calls made.
//
// The Fake follows the driver's state machine: Lock takes a running
// process to locked, Checkpoint a locked one to checkpointed (its GPU
// memory drops to 0), Restore a checkpointed one back to locked (its GPU
// memory comes back), Unlock a locked one to running. A call in the wrong
// state fails and changes nothing, as the driver's does; so does a call on
// a PID the Fake was not told about (a process with no CUDA context).
package ckpttest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/emberhq/ember/oci/cudackpt"
)

// The operations, as Fail and Call name them: the Driver's method names.
const (
	OpSupported  = "Supported"
	OpState      = "State"
	OpGPUMemory  = "GPUMemory"
	OpLock       = "Lock"
	OpCheckpoint = "Checkpoint"
	OpRestore    = "Restore"
	OpUnlock     = "Unlock"
)

var ops = []string{OpSupported, OpState, OpGPUMemory, OpLock, OpCheckpoint, OpRestore, OpUnlock}

// AnyPID given to Fail makes the failure apply to every PID.
const AnyPID = 0

// Call is one call made on the Fake, in the order made.
type Call struct {
	Op  string
	PID int // 0 for Supported
	// Timeout is Lock's timeout; 0 for the other operations.
	Timeout time.Duration
}

// String writes the call as "Lock(42)".
func (c Call) String() string { return fmt.Sprintf("%s(%d)", c.Op, c.PID) }

type process struct {
	state cudackpt.State
	gpu   uint64 // the GPU memory the process uses when not checkpointed
}

type failKey struct {
	op  string
	pid int
}

// Fake is a cudackpt.Driver kept in memory. The zero value is not usable;
// call New. It is safe for concurrent use.
type Fake struct {
	mu    sync.Mutex
	procs map[int]*process
	fails map[failKey]error
	calls []Call
}

var _ cudackpt.Driver = (*Fake)(nil)

// New returns a Fake that supports checkpointing and knows no process.
func New() *Fake {
	return &Fake{procs: map[int]*process{}, fails: map[failKey]error{}}
}

// SetProcess makes pid a running CUDA process that holds gpuBytes of GPU
// memory, replacing what the Fake knew of pid.
func (f *Fake) SetProcess(pid int, gpuBytes uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.procs[pid] = &process{state: cudackpt.Running, gpu: gpuBytes}
}

// SetState puts a known pid in state s directly, without calls: for
// tests that start from a process left checkpointed or failed (a daemon
// restarted while a worker was parked). Setting cudackpt.NotCUDA forgets
// pid, as RemoveProcess does. It panics if pid is unknown and s is not
// NotCUDA.
func (f *Fake) SetState(pid int, s cudackpt.State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s == cudackpt.NotCUDA {
		delete(f.procs, pid)
		return
	}
	p, ok := f.procs[pid]
	if !ok {
		panic(fmt.Sprintf("ckpttest: SetState(%d, %s): unknown pid; call SetProcess first", pid, s))
	}
	p.state = s
}

// RemoveProcess forgets pid: the process exited. The Fake then answers for
// it as for a process with no CUDA context.
func (f *Fake) RemoveProcess(pid int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.procs, pid)
}

// Fail makes every later call of op (one of the Op constants) for pid
// return err and change nothing, until Fail is called again for the same
// op and pid with a nil err. pid AnyPID fails op for every PID (a failure
// for the exact pid is returned first); for OpSupported the pid is
// ignored, and err should wrap cudackpt.ErrUnsupported as the real
// driver's does. It panics on an unknown op.
func (f *Fake) Fail(op string, pid int, err error) {
	if !slices.Contains(ops, op) {
		panic(fmt.Sprintf("ckpttest: Fail: unknown op %q (want one of %v)", op, ops))
	}
	if op == OpSupported {
		pid = AnyPID
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k := failKey{op, pid}
	if err == nil {
		delete(f.fails, k)
		return
	}
	f.fails[k] = err
}

// Calls returns the calls made so far, oldest first.
func (f *Fake) Calls() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// CallsFor returns the operations called for pid so far, oldest first.
func (f *Fake) CallsFor(pid int) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if c.PID == pid {
			out = append(out, c.Op)
		}
	}
	return out
}

// Peek reports pid's state and GPU memory without recording a call.
func (f *Fake) Peek(pid int) (cudackpt.State, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.procs[pid]
	if !ok {
		return cudackpt.NotCUDA, 0
	}
	return p.state, p.used()
}

func (p *process) used() uint64 {
	if p.state == cudackpt.Checkpointed {
		return 0
	}
	return p.gpu
}

// begin records the call and returns the injected failure, or the
// context's error, for it. f.mu must be held.
func (f *Fake) begin(ctx context.Context, c Call) error {
	f.calls = append(f.calls, c)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ckpttest: %s: %w", c, err)
	}
	if err, ok := f.fails[failKey{c.Op, c.PID}]; ok {
		return err
	}
	if err, ok := f.fails[failKey{c.Op, AnyPID}]; ok {
		return err
	}
	return nil
}

// Supported returns the error injected with Fail(OpSupported, ...), or nil.
func (f *Fake) Supported() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.begin(context.Background(), Call{Op: OpSupported})
}

// State reports pid's state: NotCUDA for a PID the Fake does not know.
func (f *Fake) State(ctx context.Context, pid int) (cudackpt.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, Call{Op: OpState, PID: pid}); err != nil {
		return cudackpt.NotCUDA, err
	}
	if p, ok := f.procs[pid]; ok {
		return p.state, nil
	}
	return cudackpt.NotCUDA, nil
}

// GPUMemory reports the GPU memory pid holds: its SetProcess figure, or 0
// while checkpointed or for a PID the Fake does not know.
func (f *Fake) GPUMemory(ctx context.Context, pid int) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, Call{Op: OpGPUMemory, PID: pid}); err != nil {
		return 0, err
	}
	if p, ok := f.procs[pid]; ok {
		return p.used(), nil
	}
	return 0, nil
}

// Lock takes a running pid to locked.
func (f *Fake) Lock(ctx context.Context, pid int, timeout time.Duration) error {
	return f.step(ctx, Call{Op: OpLock, PID: pid, Timeout: timeout}, cudackpt.Running, cudackpt.Locked)
}

// Checkpoint takes a locked pid to checkpointed.
func (f *Fake) Checkpoint(ctx context.Context, pid int) error {
	return f.step(ctx, Call{Op: OpCheckpoint, PID: pid}, cudackpt.Locked, cudackpt.Checkpointed)
}

// Restore takes a checkpointed pid back to locked.
func (f *Fake) Restore(ctx context.Context, pid int) error {
	return f.step(ctx, Call{Op: OpRestore, PID: pid}, cudackpt.Checkpointed, cudackpt.Locked)
}

// Unlock takes a locked pid to running.
func (f *Fake) Unlock(ctx context.Context, pid int) error {
	return f.step(ctx, Call{Op: OpUnlock, PID: pid}, cudackpt.Locked, cudackpt.Running)
}

func (f *Fake) step(ctx context.Context, c Call, from, to cudackpt.State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, c); err != nil {
		return err
	}
	p, ok := f.procs[c.PID]
	if !ok {
		return fmt.Errorf("ckpttest: %s: pid %d is not a CUDA process", c, c.PID)
	}
	if p.state != from {
		return fmt.Errorf("ckpttest: %s: pid %d is %s, want %s", c, c.PID, p.state, from)
	}
	p.state = to
	return nil
}
