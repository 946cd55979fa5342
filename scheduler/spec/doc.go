// Package spec is the endpoint and job-submission schema of Ember's core:
// what an endpoint definition is (Endpoint), what a create or update asks
// for (EndpointSpec), RunPod's defaults, and the rules a definition or a
// submission must meet (Validate, Submission.Validate), whose failures are
// *FieldError values naming the field by its JSON name.
//
// The package is pure: it holds no state, does no I/O and imports only the
// standard library and scheduler/limits, so that every layer (the store,
// the scheduler, the API adapters) may import it. It must not import the
// scheduler, the store, the daemon or the generated proto types; the wire
// schema is proto/ember/v1, mapped to and from these types by
// daemon/grpcapi. The limits are listed in docs/limits.md.
package spec
