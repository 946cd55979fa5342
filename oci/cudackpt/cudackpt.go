// Package cudackpt is the seam between Ember and the CUDA driver's
// checkpoint API (cuCheckpointProcessLock, Checkpoint, Restore, Unlock and
// GetState; drivers 570 and later), which moves a live CUDA process's GPU
// state into that process's own host memory and back, called from another
// process by PID.
//
// The scheduler parks a worker through a Driver: lock each CUDA process of
// the worker's container, checkpoint it, then freeze the cgroup; it revives
// it by thawing, restoring and unlocking. The order matters: restore needs
// the process to run. Tests drive the scheduler's state machine with a
// fake Driver (package ckpttest); the real one loads libcuda at run time
// (package libcuda: dlopen, no link-time dependency on the driver).
//
// # Where the calls run
//
// emberd makes the checkpoint calls through Helper, in a helper process
// (ember-ckpt, daemon/cmd/ember-ckpt) that it starts on first use and
// again after it exits, and not in its own process:
//   - A fault in the driver during a call (SIGSEGV inside libcuda has been
//     reported from the lock call) kills the helper, not the daemon with
//     its job queue; the call fails and the next one starts a new helper.
//   - A call that hangs (the state query has been seen to block while
//     another process is locked) cannot be interrupted in a Go program: its
//     thread is stuck in C. A helper past its time is killed (CallTimeout,
//     TransferTimeout) and started again.
//   - Memory does not decide it. Measured without a GPU: the helper's RSS
//     is 5.5 MB idle, 8.0 MB after loading the libcuda of driver 550 (a
//     28.7 MB file); that load would cost the daemon the same 2.4 MB.
//     cuInit on a GPU host adds more, in the helper only.
//
// The price is small against a checkpoint's seconds: starting the helper
// and its first answer took 4-8 ms here (libcuda 550 loaded, no GPU), a
// call's round trip 0.1 ms, over a line protocol (protocol.go) that runs
// calls for several processes at once.
// GPUMemory needs no helper: it is NVML's accounting, which emberd loads
// already.
//
// It imports nothing of Ember.
package cudackpt

import (
	"context"
	"errors"
	"time"
)

// State is a process's checkpoint state as the driver reports it.
type State int

const (
	// NotCUDA: the process has no CUDA context (the driver does not know it).
	NotCUDA State = iota
	// Running: a CUDA process in its normal state.
	Running
	// Locked: CUDA calls are blocked; the GPU state is still on the GPU.
	Locked
	// Checkpointed: the GPU state is in the process's host memory and the
	// GPU memory it held is free.
	Checkpointed
	// Failed: the driver reports the process's checkpoint state as failed.
	Failed
)

// String names the state as the logs and the API show it.
func (s State) String() string {
	switch s {
	case NotCUDA:
		return "not-cuda"
	case Running:
		return "running"
	case Locked:
		return "locked"
	case Checkpointed:
		return "checkpointed"
	case Failed:
		return "failed"
	}
	return "unknown"
}

// ErrUnsupported is returned (wrapped, with the driver version found and
// the one needed) when there is no driver or the driver has no checkpoint
// API.
var ErrUnsupported = errors.New("CUDA checkpointing is not supported")

// Driver is the hardware boundary for parking: the CUDA driver's checkpoint
// API and the per-process GPU memory the driver reports. Every call is by
// host PID; the process may be in another PID namespace (a worker
// container). Implementations are safe for concurrent use.
type Driver interface {
	// Supported returns nil when checkpointing works here, or an error
	// wrapping ErrUnsupported that names the driver version needed.
	Supported() error
	// State reports pid's checkpoint state.
	State(ctx context.Context, pid int) (State, error)
	// GPUMemory is the GPU memory pid holds now, in bytes, as the driver
	// accounts it (0 when checkpointed or not a CUDA process). It bounds
	// the host memory a checkpoint of pid will take.
	GPUMemory(ctx context.Context, pid int) (uint64, error)
	// Lock blocks pid's CUDA calls, waiting at most timeout for work in
	// flight to finish.
	Lock(ctx context.Context, pid int, timeout time.Duration) error
	// Checkpoint moves a locked pid's GPU state to its host memory.
	Checkpoint(ctx context.Context, pid int) error
	// Restore moves a checkpointed pid's GPU state back to the GPU it came
	// from; pid must be running (not frozen).
	Restore(ctx context.Context, pid int) error
	// Unlock lets a locked (or restored) pid's CUDA calls go on.
	Unlock(ctx context.Context, pid int) error
}
