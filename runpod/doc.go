// Package runpod is the RunPod Serverless wire contract as Ember speaks it:
// the job states and the JSON objects clients and workers read (the status
// object, /stream, /health, a taken job), the worker API's route names and
// the RUNPOD_* environment a worker starts with, the policy ranges RunPod
// documents, and the parser for the Python literals worker SDKs write into
// error strings.
//
// It owns the bytes on the wire, not what they mean to Ember: the scheduler
// keeps its own job records and converts them to these views; the HTTP and
// gRPC layers decide status codes and routing. Byte caps on request bodies
// are transport limits and live in scheduler/limits (docs/limits.md).
// docs/compat.md says which parts of the contract are RunPod's documented
// behaviour, which are inferred, and where Ember differs.
//
// The package imports nothing of Ember, only the standard library, so that
// every layer may depend on it and it can never form a cycle.
package runpod
