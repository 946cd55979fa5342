package spec

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/emberhq/ember/runpod"
)

func TestSubmissionValidate(t *testing.T) {
	in := json.RawMessage(`{}`)
	cases := []struct {
		name string
		sub  Submission
		ok   bool
	}{
		{"defaults", Submission{Input: in}, true},
		{"no input", Submission{}, false},
		{"null input", Submission{Input: json.RawMessage(`null`)}, false},
		{"exec min", Submission{Input: in, ExecutionTimeoutMs: runpod.MinExecutionTimeoutMs}, true},
		{"exec below", Submission{Input: in, ExecutionTimeoutMs: runpod.MinExecutionTimeoutMs - 1}, false},
		{"exec max", Submission{Input: in, ExecutionTimeoutMs: runpod.MaxExecutionTimeoutMs}, true},
		{"exec above", Submission{Input: in, ExecutionTimeoutMs: runpod.MaxExecutionTimeoutMs + 1}, false},
		{"exec negative", Submission{Input: in, ExecutionTimeoutMs: -1}, false},
		{"ttl min", Submission{Input: in, TTLMs: runpod.MinTTLMs}, true},
		{"ttl below", Submission{Input: in, TTLMs: runpod.MinTTLMs - 1}, false},
		{"ttl above", Submission{Input: in, TTLMs: runpod.MaxTTLMs + 1}, false},
	}
	for _, tc := range cases {
		err := tc.sub.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tc.name, err, tc.ok)
		}
		var fe *FieldError
		if err != nil && !errors.As(err, &fe) {
			t.Errorf("%s: error %T is not a *FieldError", tc.name, err)
		}
	}
}
