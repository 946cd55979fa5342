package scheduler

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/emberhq/ember/runpod"
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

// JobView is what the scheduler tells of a job: the RunPod status object
// and what Ember's own API adds to it (the endpoint, the retries).
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

// wire is the job's RunPod status object.
func (v JobView) wire() runpod.JobStatus {
	w := runpod.JobStatus{ID: v.ID, Status: v.Status, Output: v.Output, Error: v.Error, WorkerID: v.WorkerID}
	if v.HasDelay {
		w.DelayTime = &v.DelayTime
	}
	if v.HasExecution {
		w.ExecutionTime = &v.ExecutionTime
	}
	return w
}

// MarshalJSON writes the job's RunPod status object.
func (v JobView) MarshalJSON() ([]byte, error) { return json.Marshal(v.wire()) }

// Chunk is one streamed output, as /stream returns it.
type Chunk = runpod.StreamChunk

// StreamView is the /stream answer.
type StreamView = runpod.StreamStatus

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
type Health = runpod.Health

// JobCounts are the /health job counters. Completed, Failed and Retried
// count over the last result-retention window.
type JobCounts = runpod.JobCounts

// WorkerCounts are the /health worker counters.
type WorkerCounts = runpod.WorkerCounts

// TakenJob is a job handed to a worker, in the shape the worker SDK reads.
type TakenJob = runpod.TakenJob
