// Package libcuda makes the CUDA driver's checkpoint calls in this process,
// through libcuda loaded at run time (dlopen, as go-nvml loads NVML): no
// link-time dependency on the driver, so the binary runs, and says why
// checkpointing is unsupported, on a host without one.
//
// It is what the helper process (daemon/cmd/ember-ckpt) runs; emberd
// itself reaches it through cudackpt.Helper, so that a driver fault or a
// hung call never happens in the daemon.
package libcuda

/*
#cgo LDFLAGS: -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdlib.h>
#include <string.h>

// The driver's CUcheckpointLockArgs (cuda.h, CUDA 12.8 and later).
typedef struct {
	unsigned int timeoutMs;
	unsigned int reserved0;
	unsigned long long reserved1[7];
} ember_lock_args;

// The other calls' args structs are optional; NULL is passed.

static int ember_int_out(void *f, int *out) { return ((int (*)(int *))f)(out); }
static int ember_uint_in(void *f, unsigned int v) { return ((int (*)(unsigned int))f)(v); }
static int ember_pid_int_out(void *f, int pid, int *out) { return ((int (*)(int, int *))f)(pid, out); }
static int ember_pid_null(void *f, int pid) { return ((int (*)(int, void *))f)(pid, NULL); }
static int ember_lock(void *f, int pid, unsigned int ms) {
	ember_lock_args a;
	memset(&a, 0, sizeof a);
	a.timeoutMs = ms;
	return ((int (*)(int, ember_lock_args *))f)(pid, &a);
}
static int ember_error_name(void *f, int r, const char **s) { return ((int (*)(int, const char **))f)(r, s); }
static const char *ember_lib_path(void *h) {
	struct link_map *m = NULL;
	if (dlinfo(h, RTLD_DI_LINKMAP, &m) != 0 || m == NULL) return NULL;
	return m->l_name;
}
*/
import "C"

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/emberhq/ember/oci/cudackpt"
)

// MinDriverVersion is the CUDA version (as cuDriverGetVersion reports it:
// 1000*major + 10*minor) that brought the checkpoint API: CUDA 12.8,
// NVIDIA driver 570.
const MinDriverVersion = 12080

// LibDirs are searched for libcuda.so.1 when the loader cannot find it by
// name: NVIDIA's container layouts (/usr/local/nvidia/lib64), RPM
// distributions' packages (/usr/lib64/nvidia), Debian's non-free packages
// (/usr/lib/x86_64-linux-gnu/nvidia/current, reached by name only through
// update-alternatives).
var LibDirs = []string{
	"/usr/local/nvidia/lib64",
	"/usr/lib64/nvidia",
	"/usr/lib/x86_64-linux-gnu/nvidia/current",
	"/usr/lib/aarch64-linux-gnu/nvidia/current",
}

// The driver functions used; the checkpoint ones are looked up only on a
// driver new enough.
const (
	fnInit          = "cuInit"
	fnDriverVersion = "cuDriverGetVersion"
	fnErrorName     = "cuGetErrorName"
	fnGetState      = "cuCheckpointProcessGetState"
	fnLock          = "cuCheckpointProcessLock"
	fnCheckpoint    = "cuCheckpointProcessCheckpoint"
	fnRestore       = "cuCheckpointProcessRestore"
	fnUnlock        = "cuCheckpointProcessUnlock"
)

var checkpointFns = []string{fnGetState, fnLock, fnCheckpoint, fnRestore, fnUnlock}

// The driver's CUprocessState values.
const (
	cuRunning       = 0
	cuLocked        = 1
	cuCheckpointed  = 2
	cuFailed        = 3
	cuCheckpointing = 4 // CUDA 13.x, while a checkpoint is under way
	cuRestoring     = 5 // CUDA 13.x, while a restore is under way
)

// Local is a cudackpt.Driver that calls libcuda in this process. The
// library is loaded, and cuInit called, on the first call; a failure there
// is kept and returned by every later call. It is safe for concurrent use.
type Local struct {
	name string
	nvml nvml.Interface

	once    sync.Once
	err     error
	handle  unsafe.Pointer
	fns     map[string]unsafe.Pointer
	path    string // the loaded file, symlinks resolved
	version int    // cuDriverGetVersion
}

var _ cudackpt.Driver = (*Local)(nil)

// New returns a Local that loads lib (a file name or path; "" for
// libcuda.so.1, looked up by the loader, then in LibDirs). nvmlLib, which
// must be initialised, serves GPUMemory; nil makes GPUMemory fail.
func New(lib string, nvmlLib nvml.Interface) *Local {
	return &Local{name: lib, nvml: nvmlLib}
}

// Path is the libcuda file loaded, and DriverVersion what its
// cuDriverGetVersion reported; both empty or 0 before a successful load.
func (l *Local) Path() string { l.load(); return l.path }

// DriverVersion: see Path.
func (l *Local) DriverVersion() int { l.load(); return l.version }

// Supported loads the driver and says whether it has the checkpoint API;
// the error wraps cudackpt.ErrUnsupported and names the versions found
// and needed.
func (l *Local) Supported() error { return l.load() }

func (l *Local) load() error {
	l.once.Do(func() { l.err = l.open() })
	return l.err
}

func unsupported(format string, args ...any) error {
	return fmt.Errorf("%w: %s", cudackpt.ErrUnsupported, fmt.Sprintf(format, args...))
}

func (l *Local) open() error {
	candidates := []string{l.name}
	if l.name == "" {
		candidates = []string{"libcuda.so.1"}
		for _, d := range LibDirs {
			candidates = append(candidates, filepath.Join(d, "libcuda.so.1"))
		}
	}
	var tried []string
	for _, c := range candidates {
		cs := C.CString(c)
		h := C.dlopen(cs, C.RTLD_NOW|C.RTLD_LOCAL)
		C.free(unsafe.Pointer(cs))
		if h != nil {
			l.handle = h
			break
		}
		tried = append(tried, C.GoString(C.dlerror()))
	}
	if l.handle == nil {
		return unsupported("no CUDA driver library (%s); the checkpoint API needs NVIDIA driver 570 or later", strings.Join(tried, "; "))
	}
	if p := C.ember_lib_path(l.handle); p != nil {
		l.path = C.GoString(p)
		if r, err := filepath.EvalSymlinks(l.path); err == nil {
			l.path = r
		}
	}
	l.fns = map[string]unsafe.Pointer{}
	if err := l.sym(fnDriverVersion); err != nil {
		return err
	}
	var v C.int
	if r := int(C.ember_int_out(l.fns[fnDriverVersion], &v)); r != cudackpt.ResultSuccess {
		return unsupported("%s: %s", l.describe(), l.cudaErr(fnDriverVersion, 0, r))
	}
	l.version = int(v)
	if l.version < MinDriverVersion {
		return unsupported("%s reports CUDA %s; the checkpoint API needs CUDA %s (NVIDIA driver 570) or later",
			l.describe(), versionText(l.version), versionText(MinDriverVersion))
	}
	for _, f := range append([]string{fnInit}, checkpointFns...) {
		if err := l.sym(f); err != nil {
			return err
		}
	}
	if p := l.lookup(fnErrorName); p != nil {
		l.fns[fnErrorName] = p
	}
	if r := int(C.ember_uint_in(l.fns[fnInit], 0)); r != cudackpt.ResultSuccess {
		return fmt.Errorf("%w: %s: %w", cudackpt.ErrUnsupported, l.describe(), l.cudaErr(fnInit, 0, r))
	}
	return nil
}

// driverFile matches a driver library named with the driver's version.
var driverFile = regexp.MustCompile(`\.so\.([0-9]{3,}(?:\.[0-9]+)+)$`)

// describe names the loaded library and, where its file name tells, the
// driver version.
func (l *Local) describe() string {
	p := l.path
	if p == "" {
		p = "libcuda"
	}
	if m := driverFile.FindStringSubmatch(p); m != nil {
		return fmt.Sprintf("%s (driver %s)", p, m[1])
	}
	return p
}

// versionText writes a cuDriverGetVersion figure as "12.8".
func versionText(v int) string { return fmt.Sprintf("%d.%d", v/1000, v%1000/10) }

func (l *Local) lookup(name string) unsafe.Pointer {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	return C.dlsym(l.handle, cs)
}

func (l *Local) sym(name string) error {
	p := l.lookup(name)
	if p == nil {
		v := "unknown"
		if l.version != 0 {
			v = versionText(l.version)
		}
		return unsupported("%s (CUDA %s) has no %s; the checkpoint API needs CUDA %s (NVIDIA driver 570) or later",
			l.describe(), v, name, versionText(MinDriverVersion))
	}
	l.fns[name] = p
	return nil
}

// cudaErr is the error for a failed call. A result cudackpt does not name
// is named by the driver (cuGetErrorName) where it can.
func (l *Local) cudaErr(call string, pid, r int) error {
	e := &cudackpt.Error{Call: call, PID: pid, Result: r}
	if cudackpt.ResultName(r) == "CUresult "+strconv.Itoa(r) {
		if f := l.fns[fnErrorName]; f != nil {
			var s *C.char
			if C.ember_error_name(f, C.int(r), &s) == 0 && s != nil {
				return fmt.Errorf("%w (%s)", e, C.GoString(s))
			}
		}
	}
	return e
}

// ready loads the driver and checks ctx before a call: a driver call
// cannot be interrupted once made.
func (l *Local) ready(ctx context.Context) error {
	if err := l.load(); err != nil {
		return err
	}
	return ctx.Err()
}

// State reports pid's checkpoint state. The driver answers
// CUDA_ERROR_NOT_INITIALIZED ("initialization error") for a process
// without a CUDA context, and CUDA_ERROR_INVALID_VALUE for a PID it cannot
// use (no such process): both are NotCUDA here, since the call's only
// other argument is this package's own pointer.
func (l *Local) State(ctx context.Context, pid int) (cudackpt.State, error) {
	if err := l.ready(ctx); err != nil {
		return cudackpt.NotCUDA, err
	}
	var s C.int
	r := int(C.ember_pid_int_out(l.fns[fnGetState], C.int(pid), &s))
	switch r {
	case cudackpt.ResultSuccess:
	case cudackpt.ResultNotInitialized, cudackpt.ResultInvalidValue:
		return cudackpt.NotCUDA, nil
	default:
		return cudackpt.NotCUDA, l.cudaErr(fnGetState, pid, r)
	}
	switch int(s) {
	case cuRunning:
		return cudackpt.Running, nil
	case cuLocked:
		return cudackpt.Locked, nil
	case cuCheckpointed:
		return cudackpt.Checkpointed, nil
	case cuFailed:
		return cudackpt.Failed, nil
	case cuCheckpointing, cuRestoring:
		return cudackpt.NotCUDA, fmt.Errorf("%s(pid %d): a checkpoint or restore is under way (CUprocessState %d)", fnGetState, pid, int(s))
	}
	return cudackpt.NotCUDA, fmt.Errorf("%s(pid %d): unknown CUprocessState %d", fnGetState, pid, int(s))
}

// GPUMemory is cudackpt.GPUMemory through the NVML given to New.
func (l *Local) GPUMemory(ctx context.Context, pid int) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return cudackpt.GPUMemory(l.nvml, pid)
}

// Lock blocks pid's CUDA calls, waiting at most timeout (rounded up to a
// millisecond; the driver's 0, no timeout, is never passed).
func (l *Local) Lock(ctx context.Context, pid int, timeout time.Duration) error {
	if err := l.ready(ctx); err != nil {
		return err
	}
	ms := (timeout + time.Millisecond - 1) / time.Millisecond
	ms = max(1, min(ms, 1<<32-1))
	if r := int(C.ember_lock(l.fns[fnLock], C.int(pid), C.uint(ms))); r != cudackpt.ResultSuccess {
		return l.cudaErr(fnLock, pid, r)
	}
	return nil
}

// Checkpoint moves a locked pid's GPU memory to its host memory.
func (l *Local) Checkpoint(ctx context.Context, pid int) error {
	return l.pidCall(ctx, fnCheckpoint, pid)
}

// Restore moves a checkpointed pid's GPU memory back.
func (l *Local) Restore(ctx context.Context, pid int) error {
	return l.pidCall(ctx, fnRestore, pid)
}

// Unlock lets a locked pid's CUDA calls go on.
func (l *Local) Unlock(ctx context.Context, pid int) error {
	return l.pidCall(ctx, fnUnlock, pid)
}

func (l *Local) pidCall(ctx context.Context, fn string, pid int) error {
	if err := l.ready(ctx); err != nil {
		return err
	}
	if r := int(C.ember_pid_null(l.fns[fn], C.int(pid))); r != cudackpt.ResultSuccess {
		return l.cudaErr(fn, pid, r)
	}
	return nil
}
