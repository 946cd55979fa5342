package runpod

import "encoding/json"

// Status is a job's state. The names are the wire values.
type Status string

// The job states. RUNNING is deliberately absent: the real API never
// returns it (docs/compat.md).
const (
	InQueue    Status = "IN_QUEUE"
	InProgress Status = "IN_PROGRESS"
	Completed  Status = "COMPLETED"
	Failed     Status = "FAILED"
	Cancelled  Status = "CANCELLED"
	TimedOut   Status = "TIMED_OUT"
)

// Terminal reports whether no further transition is possible except retry.
func (s Status) Terminal() bool {
	switch s {
	case Completed, Failed, Cancelled, TimedOut:
		return true
	}
	return false
}

// JobStatus is the status object /run, /runsync, /status, /status-sync,
// /cancel and /retry answer with, and the body of a job's webhook. It is
// written on one line; the fields RunPod leaves out are left out: no
// delayTime while the job is queued, no executionTime before it ran, no
// output, error or workerId while they are empty. Field order is the wire
// order.
type JobStatus struct {
	ID            string          `json:"id"`
	Status        Status          `json:"status"`
	DelayTime     *int64          `json:"delayTime,omitempty"`     // ms
	ExecutionTime *int64          `json:"executionTime,omitempty"` // ms
	Output        json.RawMessage `json:"output,omitempty"`
	Error         string          `json:"error,omitempty"`
	WorkerID      string          `json:"workerId,omitempty"`
}

// StreamChunk is one streamed output, as /stream returns it.
type StreamChunk struct {
	Output json.RawMessage `json:"output"`
}

// StreamStatus is the /stream answer: the job's state and the chunks handed
// out by this call.
type StreamStatus struct {
	Status Status        `json:"status"`
	Stream []StreamChunk `json:"stream"`
}

// Health is the /health answer of an endpoint.
type Health struct {
	Jobs    JobCounts    `json:"jobs"`
	Workers WorkerCounts `json:"workers"`
}

// JobCounts are the /health job counters.
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

// TakenJob is a job handed to a worker by job-take, in the shape the worker
// SDK reads.
type TakenJob struct {
	ID       string          `json:"id"`
	Input    json.RawMessage `json:"input"`
	S3Config json.RawMessage `json:"s3Config,omitempty"`
	Webhook  string          `json:"webhook,omitempty"`
}
