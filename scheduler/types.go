package scheduler

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/emberhq/ember/scheduler/store"
)

// Errors callers map to protocol status codes. They are wrapped with detail;
// test with errors.Is.
var (
	// ErrNotFound: unknown endpoint or job, or a job past its TTL/retention.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the operation does not apply to the object's state
	// (HTTP 409). Its errors come from conflictf and read as their
	// message alone, so that no "conflict:" prefix contradicts a status
	// code or repeats it.
	ErrConflict = errors.New("conflict")
	// ErrExists: a name is taken by another object. Its errors are
	// ErrConflict errors too.
	ErrExists = errors.New("already exists")
	// ErrForbidden: a worker credential used outside its endpoint or jobs.
	ErrForbidden = errors.New("forbidden")
	// ErrUnavailable: the daemon cannot take the work now (shutting
	// down, the store failed). Nothing was written.
	ErrUnavailable = errors.New("unavailable")
	// ErrInsufficientStorage: the data disk is too full for the write
	// (HTTP 507). The error is an *InsufficientStorageError naming the free
	// and the needed bytes; nothing was written.
	ErrInsufficientStorage = store.ErrNoSpace
	// ErrJobEnded: a worker's post about a job that is no longer running
	// (a stream chunk after the job ended). Nothing was written.
	ErrJobEnded = errors.New("job has ended")
)

// conflictError is an ErrConflict (and, when exists is set, an ErrExists)
// error whose text is its message alone.
type conflictError struct {
	msg    string
	exists bool
}

func (e *conflictError) Error() string { return e.msg }

func (e *conflictError) Is(target error) bool {
	return target == ErrConflict || (e.exists && target == ErrExists)
}

// conflictf makes an ErrConflict error: the operation does not apply to
// the object's state, and the message says why.
func conflictf(format string, a ...any) error {
	return &conflictError{msg: fmt.Sprintf(format, a...)}
}

// existsf makes an ErrExists error: the name is taken.
func existsf(format string, a ...any) error {
	return &conflictError{msg: fmt.Sprintf(format, a...), exists: true}
}

// InsufficientStorageError is what ErrInsufficientStorage errors are: the
// store's own refusal, or the disk guard (package diskguard) refusing new
// work.
type InsufficientStorageError = store.NoSpaceError

// Limits RunPod documents for policy values.
const (
	MinExecutionTimeoutMs = 5_000
	MaxExecutionTimeoutMs = 7 * 24 * 3600 * 1000
	MinTTLMs              = 10_000
	MaxTTLMs              = 7 * 24 * 3600 * 1000
	DefaultTTLMs          = 24 * 3600 * 1000
)

// JobView is the RunPod status object of a job.
type JobView struct {
	ID            string
	EndpointID    string
	Status        store.Status
	DelayTime     int64 // ms; 0 and HasDelay false while still queued
	HasDelay      bool
	ExecutionTime int64 // ms
	HasExecution  bool
	Output        json.RawMessage // nil: absent
	Error         string
	WorkerID      string
	Retries       int
}

// MarshalJSON writes the single-line RunPod status object, leaving out the
// fields RunPod leaves out.
func (v JobView) MarshalJSON() ([]byte, error) {
	type wire struct {
		ID            string          `json:"id"`
		Status        store.Status    `json:"status"`
		DelayTime     *int64          `json:"delayTime,omitempty"`
		ExecutionTime *int64          `json:"executionTime,omitempty"`
		Output        json.RawMessage `json:"output,omitempty"`
		Error         string          `json:"error,omitempty"`
		WorkerID      string          `json:"workerId,omitempty"`
	}
	w := wire{ID: v.ID, Status: v.Status, Output: v.Output, Error: v.Error, WorkerID: v.WorkerID}
	if v.HasDelay {
		w.DelayTime = &v.DelayTime
	}
	if v.HasExecution {
		w.ExecutionTime = &v.ExecutionTime
	}
	return json.Marshal(w)
}

// Chunk is one streamed output, as /stream returns it.
type Chunk struct {
	Output json.RawMessage `json:"output"`
}

// StreamView is the /stream answer.
type StreamView struct {
	Status store.Status `json:"status"`
	Stream []Chunk      `json:"stream"`
}

// Result is what a worker posts to job-done.
type Result struct {
	// Progress marks an intermediate update (body status IN_PROGRESS).
	Progress bool
	Output   json.RawMessage // nil: absent
	// Error is set when the handler failed; non-string errors arrive
	// JSON-encoded.
	Error    string
	HasError bool
	// StopPod asks for the worker to be recycled after this job.
	StopPod bool
}

// Health is the /health answer.
type Health struct {
	Jobs    JobCounts    `json:"jobs"`
	Workers WorkerCounts `json:"workers"`
}

// JobCounts are the /health job counters. Completed, Failed and Retried
// count over the last result-retention window.
type JobCounts struct {
	Completed  int `json:"completed"`
	Failed     int `json:"failed"`
	InProgress int `json:"inProgress"`
	InQueue    int `json:"inQueue"`
	Retried    int `json:"retried"`
}

// WorkerCounts are the /health worker counters.
type WorkerCounts struct {
	Idle         int `json:"idle"`
	Initializing int `json:"initializing"`
	Ready        int `json:"ready"`
	Running      int `json:"running"`
	Throttled    int `json:"throttled"`
	Unhealthy    int `json:"unhealthy"`
}

// TakenJob is a job handed to a worker, in the shape the worker SDK reads.
type TakenJob struct {
	ID       string          `json:"id"`
	Input    json.RawMessage `json:"input"`
	S3Config json.RawMessage `json:"s3Config,omitempty"`
	Webhook  string          `json:"webhook,omitempty"`
}
