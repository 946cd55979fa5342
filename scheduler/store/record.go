package store

import (
	"encoding/json"
	"time"

	"github.com/emberhq/ember/runpod"
	"github.com/emberhq/ember/scheduler/spec"
)

// Status is a job's RunPod state, stored as its wire name.
type Status = runpod.Status

// The job states (runpod/status.go).
const (
	InQueue    = runpod.InQueue
	InProgress = runpod.InProgress
	Completed  = runpod.Completed
	Failed     = runpod.Failed
	Cancelled  = runpod.Cancelled
	TimedOut   = runpod.TimedOut
)

// Job is the persisted form of one job. Times are Unix milliseconds so the
// record stays small and round-trips exactly through JSON.
type Job struct {
	ID         string `json:"id"`
	EndpointID string `json:"ep"`
	Status     Status `json:"st"`
	// Seq orders jobs of one endpoint by arrival; the ready queues are
	// rebuilt in Seq order after a restart.
	Seq uint64 `json:"seq"`

	Input    json.RawMessage `json:"in,omitempty"`
	InputRef string          `json:"inref,omitempty"` // input kept apart (Badger: a spill file); opaque (Store.Job)
	Webhook  string          `json:"wh,omitempty"`
	// WebhookV2 is accepted and stored because RunPod's SDK types carry it;
	// its semantics are undocumented, so Ember does not act on it.
	WebhookV2 string          `json:"wh2,omitempty"`
	S3Config  json.RawMessage `json:"s3,omitempty"`

	ExecutionTimeoutMs int64 `json:"xto"`
	TTLMs              int64 `json:"ttl"`
	LowPriority        bool  `json:"low,omitempty"`
	Sync               bool  `json:"sync,omitempty"` // submitted by /runsync: shorter result retention

	SubmittedAt int64  `json:"sub"`
	StartedAt   int64  `json:"start,omitempty"`
	FinishedAt  int64  `json:"fin,omitempty"`
	WorkerID    string `json:"wk,omitempty"`
	// Attempts counts how many times the job was handed to a worker. It bounds
	// re-queues after worker deaths and daemon crashes.
	Attempts int `json:"att,omitempty"`
	// Retries counts client /retry calls.
	Retries int `json:"rt,omitempty"`

	Output    json.RawMessage `json:"out,omitempty"`
	OutputRef string          `json:"outref,omitempty"`
	Error     string          `json:"err,omitempty"`
	// ExecutionMs is the measured run time, fixed when the job turns terminal.
	ExecutionMs int64 `json:"exec,omitempty"`
	// DelayMs is the measured queue time, fixed when a worker takes the job.
	DelayMs int64 `json:"delay,omitempty"`
}

// Deadline is the job's hard TTL: after it the job no longer exists.
func (j *Job) Deadline() time.Time {
	return time.UnixMilli(j.SubmittedAt + j.TTLMs)
}

// Endpoint is the persisted form of an endpoint definition. Its type (and
// so its JSON form) is the endpoint schema's, in scheduler/spec.
type Endpoint = spec.Endpoint

// Chunk is one streamed output value of a job, in arrival order.
type Chunk struct {
	JobID  string
	Index  uint64
	Output json.RawMessage
	// at is where a chunk read by the Badger engine lies in its job's
	// stream file (-1: kept in its index record, as earlier versions wrote
	// chunks); ReleaseChunks punches it out. Other engines leave it zero.
	at int64
}

// Delivery is a pending webhook POST in the durable outbox.
type Delivery struct {
	JobID string `json:"job"`
	URL   string `json:"url"`
	// Body is the status object as it was when the job turned terminal.
	Body     json.RawMessage `json:"body"`
	Attempts int             `json:"att"`
	// NextAt is when the next attempt is due, Unix milliseconds.
	NextAt int64 `json:"next"`
}

// WorkerRecord is a running worker as the store remembers it, so that a
// restarted emberd can take back the containers that outlived it: its
// credential and GPUs must survive with it.
type WorkerRecord struct {
	ID        string   `json:"id"`
	Endpoint  string   `json:"ep"`
	Token     string   `json:"token"`
	GPUs      []string `json:"gpus,omitempty"`
	StartedAt int64    `json:"start"`
	LogPath   string   `json:"log,omitempty"`
	Dir       string   `json:"dir,omitempty"`
	// Generation is the endpoint generation the worker was started with
	// (0 in records written before it existed: read as 1).
	Generation int64 `json:"gen,omitempty"`
	// Park is set from the decision to park the worker to its revival
	// (scheduler/park.go); GPUs are then the GPUs it was parked from,
	// which it may not hold.
	Park *ParkRecord `json:"park,omitempty"`
}

// ParkRecord is what a restarted emberd needs of a parked worker.
type ParkRecord struct {
	// Bytes is the host memory its GPU state takes.
	Bytes uint64 `json:"bytes"`
	// MemoryBase is its memory limit before parking raised it (0: it had
	// none, and it was not raised).
	MemoryBase int64 `json:"memBase,omitempty"`
}
