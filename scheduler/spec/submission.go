package spec

import (
	"encoding/json"

	"github.com/emberhq/ember/runpod"
)

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

// Validate checks the policy ranges RunPod documents (runpod/policy.go).
// Zero values mean "default" and pass.
func (sub *Submission) Validate() error {
	if sub.ExecutionTimeoutMs != 0 {
		if msg := runpod.CheckExecutionTimeout(sub.ExecutionTimeoutMs); msg != "" {
			return Errorf("policy.executionTimeout", "%s", msg)
		}
	}
	if sub.TTLMs != 0 {
		if msg := runpod.CheckTTL(sub.TTLMs); msg != "" {
			return Errorf("policy.ttl", "%s", msg)
		}
	}
	if len(sub.Input) == 0 || string(sub.Input) == "null" {
		return Errorf("input", "is required")
	}
	return nil
}
