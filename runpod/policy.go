package runpod

import "fmt"

// The ranges RunPod documents for a job's policy (docs/limits.md). A zero
// in a request's policy is out of range; leaving the field out means the
// default.
const (
	MinExecutionTimeoutMs = 5_000
	MaxExecutionTimeoutMs = 7 * 24 * 3600 * 1000
	MinTTLMs              = 10_000
	MaxTTLMs              = 7 * 24 * 3600 * 1000
	// DefaultTTLMs is a job's TTL when its request gives none.
	DefaultTTLMs = 24 * 3600 * 1000
)

// CheckExecutionTimeout checks an execution timeout in milliseconds
// against the documented range. It returns "" when ms is in range, or else
// what is wrong, for the caller to put after the field's name.
func CheckExecutionTimeout(ms int64) string {
	if ms >= MinExecutionTimeoutMs && ms <= MaxExecutionTimeoutMs {
		return ""
	}
	return fmt.Sprintf("must be between %d and %d ms (5 s to 7 days), got %d", MinExecutionTimeoutMs, MaxExecutionTimeoutMs, ms)
}

// CheckTTL checks a TTL in milliseconds as CheckExecutionTimeout checks an
// execution timeout.
func CheckTTL(ms int64) string {
	if ms >= MinTTLMs && ms <= MaxTTLMs {
		return ""
	}
	return fmt.Sprintf("must be between %d and %d ms (10 s to 7 days), got %d", MinTTLMs, MaxTTLMs, ms)
}
