package spec

import "encoding/json"

// Submission is a validated /run or /runsync request.
type Submission struct {
	Input     json.RawMessage
	Webhook   string
	WebhookV2 string
	S3Config  json.RawMessage
	// ExecutionTimeoutMs and TTLMs are zero when the request left them to
	// the endpoint's and the daemon's defaults.
	ExecutionTimeoutMs int64
	TTLMs              int64
	LowPriority        bool
	// Sync marks a /runsync job: its id gets the "sync-" prefix and its
	// result is kept for the shorter sync retention.
	Sync bool
}

// The policy ranges RunPod documents (docs/limits.md): a job's execution
// timeout and its TTL, in milliseconds.
const (
	MinExecutionTimeoutMs = 5_000
	MaxExecutionTimeoutMs = 7 * 24 * 3600 * 1000
	MinTTLMs              = 10_000
	MaxTTLMs              = 7 * 24 * 3600 * 1000
)

// Validate checks the policy ranges RunPod documents. Zero values mean
// "default" and pass.
func (sub *Submission) Validate() error {
	if sub.ExecutionTimeoutMs != 0 && (sub.ExecutionTimeoutMs < MinExecutionTimeoutMs || sub.ExecutionTimeoutMs > MaxExecutionTimeoutMs) {
		return Errorf("policy.executionTimeout", "must be between %d and %d ms (5 s to 7 days), got %d", MinExecutionTimeoutMs, MaxExecutionTimeoutMs, sub.ExecutionTimeoutMs)
	}
	if sub.TTLMs != 0 && (sub.TTLMs < MinTTLMs || sub.TTLMs > MaxTTLMs) {
		return Errorf("policy.ttl", "must be between %d and %d ms (10 s to 7 days), got %d", MinTTLMs, MaxTTLMs, sub.TTLMs)
	}
	if len(sub.Input) == 0 || string(sub.Input) == "null" {
		return Errorf("input", "is required")
	}
	return nil
}
