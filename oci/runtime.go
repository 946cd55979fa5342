// Package oci holds what runs workers: the Runtime seam the scheduler talks
// to, and (in subpackages) its implementations. Nothing here knows about
// jobs, endpoints' queues or HTTP.
//
// oci/ is the home of every worker runtime, whether it runs containers or
// not: oci/runc (OCI containers through runc's libcontainer, the
// production runtime) and oci/process (the development runtime: the
// command run directly on the host, no image, no isolation). The tree is
// named for the OCI runtime spec that Spec and the Runtime seam follow,
// not for what every runtime must be. Beside the runtimes live what they
// share or need: oci/image (the image store), oci/bundle (OCI bundles),
// oci/gpu (GPU inventory and injection), oci/logindex and oci/workerlog
// (workers' log files). A new runtime goes in a subpackage here and
// imports nothing above oci/.
package oci

import (
	"context"
	"errors"
	"fmt"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Spec describes one worker to start.
type Spec struct {
	// ID is the worker id, unique for the daemon's lifetime.
	ID string
	// Endpoint is the id of the endpoint the worker serves (for logs and
	// labels only).
	Endpoint string
	// Image is the OCI image reference; runtimes that do not use images
	// ignore it.
	Image string
	// Command is the argv to run. For image-based runtimes an empty Command
	// means the image's own entrypoint.
	Command []string
	// Env is the complete environment, KEY=VALUE.
	Env []string
	// LogPath is where the worker's stdout and stderr go.
	LogPath string
	// Dir is a private scratch directory for the worker, removed by the
	// caller after the worker has exited.
	Dir string

	// The fields below are for container runtimes; the process runtime
	// ignores them.

	// Resources are the worker's limits.
	Resources Resources
	// Network is "host" (the worker reaches emberd's worker API on
	// loopback) or "none".
	Network string
	// VolumeDir is bound read-write at /runpod-volume.
	VolumeDir string
	// GPUs are the UUIDs of the GPUs given to this worker, exclusively.
	GPUs []string
	// NoInit runs the entrypoint itself as the container's PID 1, without
	// the runtime's init (the endpoint's init: false).
	NoInit bool
}

// Resources are a worker's limits. Zero means the runtime's default.
type Resources struct {
	MemoryBytes int64
	// CPUs is a number of CPUs (1.5 = one and a half), enforced as a CFS
	// quota.
	CPUs      float64
	PidsLimit int64
}

// ImageConfig is what a worker bundle takes from an image's config.
type ImageConfig struct {
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	User       string
}

// RootFS is an imported image ready to run: its unpacked layers, read-only,
// and its config.
type RootFS struct {
	// Layers are directories, top (last applied) layer first: the order of
	// overlayfs lowerdir.
	Layers []string
	Config ImageConfig
}

// Images resolves image references to unpacked root filesystems.
type Images interface {
	Resolve(ref string) (RootFS, error)
}

// DeviceInjector edits a container's OCI runtime spec so that it gets
// exactly the listed GPUs (device nodes, cgroup rules, driver mounts, env).
type DeviceInjector interface {
	Inject(spec *specs.Spec, gpuUUIDs []string) error
}

// Runtime starts workers.
type Runtime interface {
	// Name is the runtime's flag value ("process", "runc").
	Name() string
	// Start launches the worker and returns once it is running.
	Start(ctx context.Context, spec Spec) (Worker, error)
}

// Worker is a running worker.
type Worker interface {
	// Stop asks the worker to exit (SIGTERM: the RunPod SDK drains its
	// in-flight jobs) and kills it when it has not exited after grace.
	// It returns at once; Done reports the exit.
	Stop(grace time.Duration)
	// Kill ends the worker at once.
	Kill()
	// Done is closed when the worker has exited.
	Done() <-chan struct{}
	// Exit is the worker's exit status; valid once Done is closed.
	Exit() ExitStatus
	// PID is the worker's main process id on the host, or 0 if unknown.
	PID() int
}

// Freezer is implemented by workers that can be suspended in place: every
// process stops (cgroup freezer, or SIGSTOP for plain processes) and keeps
// its memory, including GPU memory, and resumes where it was on Thaw.
//
// Both are idempotent: freezing a frozen worker, or thawing one that is
// not frozen, does nothing. On a worker that has exited both return an
// error wrapping ErrExited. Stop and Kill work on a frozen worker: they
// thaw it so that the signal takes effect; once either has been called,
// Freeze fails. Freeze returns once every process has stopped.
type Freezer interface {
	Freeze() error
	Thaw() error
}

// Inspector is implemented by workers whose processes can be listed and
// whose memory limit can change while they run: what parking a GPU
// worker needs (scheduler/park.go), to find its CUDA processes and to
// make room in its memory cgroup for the GPU state they move to host
// memory.
type Inspector interface {
	// Processes lists the host pids of every process of the worker.
	Processes() ([]int, error)
	// MemoryLimit is the worker's memory limit now, in bytes; 0 when it
	// has none.
	MemoryLimit() int64
	// SetMemoryLimit sets the worker's memory limit to bytes (> 0). It
	// fails with an error wrapping ErrUnsupported where the runtime cannot
	// limit memory.
	SetMemoryLimit(bytes int64) error
}

// ErrUnsupported is wrapped by the errors of operations a runtime does not
// offer.
var ErrUnsupported = errors.New("not supported by this runtime")

// ErrExited is wrapped by the errors of operations that need a running
// worker, such as Freeze and Thaw, on one that has exited.
var ErrExited = errors.New("the worker has exited")

// ExitStatus says how a worker ended.
type ExitStatus struct {
	// Code is the exit code, or -1 when the worker was killed by a signal.
	Code int
	// Signal names the signal that killed the worker, if any.
	Signal string
	// OOMKilled is set when the kernel killed the worker for memory.
	OOMKilled bool
	// MemoryLimit is the memory limit, in bytes, that the worker ran out
	// of; 0 when unknown or unlimited. Only meaningful with OOMKilled.
	MemoryLimit int64
	// Err is set when the status could not be determined.
	Err error
}

// String reads like the end of a sentence: "exited with code 1",
// "was killed by signal killed", "was killed: out of memory (limit 2 GiB)".
func (e ExitStatus) String() string {
	switch {
	case e.Err != nil:
		return fmt.Sprintf("ended with an unknown status: %v", e.Err)
	case e.OOMKilled && e.MemoryLimit > 0:
		return fmt.Sprintf("was killed: out of memory (limit %s)", FormatBytes(e.MemoryLimit))
	case e.OOMKilled:
		return "was killed: out of memory"
	case e.Signal != "":
		return fmt.Sprintf("was killed by signal %s", e.Signal)
	default:
		return fmt.Sprintf("exited with code %d", e.Code)
	}
}

// FormatBytes writes a byte count exactly, in the largest binary unit that
// divides it: "2 GiB", "1536 MiB", "4097 bytes".
func FormatBytes(n int64) string {
	for _, u := range []struct {
		size int64
		name string
	}{{1 << 40, "TiB"}, {1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d %s", n/u.size, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}
