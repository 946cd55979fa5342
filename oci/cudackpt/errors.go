package cudackpt

import (
	"errors"
	"fmt"
)

// ErrNotCUDA is matched (errors.Is) by an error from a call on a process
// the driver has no CUDA context for.
var ErrNotCUDA = errors.New("not a CUDA process")

// CUDA driver results (CUresult) that this package acts on or names.
const (
	ResultSuccess        = 0
	ResultInvalidValue   = 1
	ResultOutOfMemory    = 2
	ResultNotInitialized = 3
	ResultNoDevice       = 100
	ResultOperatingSys   = 304
	ResultIllegalState   = 401
	ResultNotFound       = 500
	ResultNotReady       = 600
	ResultNotPermitted   = 800
	ResultNotSupported   = 801
	ResultTimeout        = 909
	ResultUnknown        = 999
)

// resultNames are the driver's names for the results the checkpoint calls
// and cuInit are documented to return, and a few more seen from them.
var resultNames = map[int]string{
	0:   "CUDA_SUCCESS",
	1:   "CUDA_ERROR_INVALID_VALUE",
	2:   "CUDA_ERROR_OUT_OF_MEMORY",
	3:   "CUDA_ERROR_NOT_INITIALIZED",
	4:   "CUDA_ERROR_DEINITIALIZED",
	34:  "CUDA_ERROR_STUB_LIBRARY",
	35:  "CUDA_ERROR_INSUFFICIENT_DRIVER",
	100: "CUDA_ERROR_NO_DEVICE",
	101: "CUDA_ERROR_INVALID_DEVICE",
	304: "CUDA_ERROR_OPERATING_SYSTEM",
	401: "CUDA_ERROR_ILLEGAL_STATE",
	500: "CUDA_ERROR_NOT_FOUND",
	600: "CUDA_ERROR_NOT_READY",
	800: "CUDA_ERROR_NOT_PERMITTED",
	801: "CUDA_ERROR_NOT_SUPPORTED",
	802: "CUDA_ERROR_SYSTEM_NOT_READY",
	803: "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
	909: "CUDA_ERROR_TIMEOUT",
	999: "CUDA_ERROR_UNKNOWN",
}

// ResultName is the driver's name for a CUresult, or "CUresult N" for one
// this package does not know.
func ResultName(r int) string {
	if n, ok := resultNames[r]; ok {
		return n
	}
	return fmt.Sprintf("CUresult %d", r)
}

// Error is a CUDA driver call that failed.
type Error struct {
	// Call is the driver function: "cuCheckpointProcessLock".
	Call string
	// PID is the process the call was for; 0 for calls without one
	// (cuInit).
	PID int
	// Result is the CUresult the driver returned.
	Result int
}

func (e *Error) Error() string {
	if e.PID == 0 {
		return fmt.Sprintf("%s: %s (%d)", e.Call, ResultName(e.Result), e.Result)
	}
	return fmt.Sprintf("%s(pid %d): %s (%d)", e.Call, e.PID, ResultName(e.Result), e.Result)
}

// Is makes a call on a process without a CUDA context match ErrNotCUDA
// (the driver answers CUDA_ERROR_NOT_INITIALIZED for it), and a call the
// driver cannot do on this system or GPU match ErrUnsupported
// (CUDA_ERROR_NOT_SUPPORTED).
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotCUDA:
		return e.Result == ResultNotInitialized
	case ErrUnsupported:
		return e.Result == ResultNotSupported
	}
	return false
}
