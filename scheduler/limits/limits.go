// Package limits is the one home of the sizes Ember accepts from clients
// and workers. Every transport (the RunPod routes, the /v1 REST gateway,
// gRPC, the worker API) and the scheduler's own validation read them
// from here, so the same thing gets the same limit everywhere; the README
// has the table.
//
// The package has no dependencies so that every layer may import it.
package limits

// Job payloads, from RunPod's documented limits (shared/spec/runpod-compat.md,
// section 1: "/run body 10 MB", "/runsync body 20 MB", "result posted by a
// worker about 20 MB").
const (
	// RunBody caps a job submitted to run later: /run, POST
	// /v1/endpoints/{id}/jobs, gRPC SubmitJob and the OpenAI route.
	RunBody = 10 << 20
	// RunSyncBody caps a job submitted to /runsync, whose caller waits.
	RunSyncBody = 20 << 20
	// ResultBody caps a worker's job-done body.
	ResultBody = 20 << 20
	// ChunkBody caps one job-stream body.
	ChunkBody = 20 << 20
)

// Endpoint fields. A worker is started with execve, and Linux refuses an
// argument or environment string longer than MAX_ARG_STRLEN (32 pages,
// 128 KiB) and an argv plus environment above a quarter of the stack
// limit (2 MiB with the usual 8 MiB stack), with "argument list too long".
// These bounds keep every endpoint startable.
const (
	// EnvEntry caps one environment entry, "KEY=VALUE" with its NUL.
	EnvEntry = 128 << 10
	// EnvTotal caps all of an endpoint's environment entries together.
	EnvTotal = 1 << 20
	// EndpointBody caps a request that creates or updates an endpoint: the
	// environment at its limit plus room for the other fields.
	EndpointBody = EnvTotal + 1<<20
)

// Small request bodies: the routes that take a few fields or none.
const (
	// KeyBody caps POST /v1/keys: {"name"} and nothing more.
	KeyBody = 4 << 10
	// SmallBody caps the body of every other request: the RunPod status,
	// cancel, retry and purge routes (some SDKs POST them with a small
	// body), the worker job-take, job-stop and ping, the /v1 routes that
	// are not endpoint or job submissions, the probes and /metrics.
	SmallBody = 64 << 10
)

// DrainSlack is how far past its limit an oversized body is still read,
// and thrown away, before the 413 is sent; see DrainBound.
const DrainSlack = 1 << 20

// DrainBound is how many bytes of an oversized body are read and thrown
// away before the 413 is answered: the limit again, and at least
// DrainSlack past it. A client that writes its whole body before it reads
// (Python's urllib and requests do) then reads the 413 instead of
// "connection reset by peer", which is what it sees when a server closes
// a socket with unread data in it. A body longer than this (by its
// Content-Length, or as it arrives) is answered 413 at once and the
// connection is closed: reading on would let a client make emberd read
// without end.
func DrainBound(limit int64) int64 { return limit + max(limit, DrainSlack) }
