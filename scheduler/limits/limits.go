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

// Streamed output (job-stream posts, read back by /stream).
const (
	// MaxUnreadStream is the default cap on a job's unread stream bytes:
	// chunks a worker has posted that no /stream call has handed out yet.
	// Unread chunks wait on disk, but a worker that streams faster than its
	// client reads (or a client that never reads) would fill it; past the
	// cap the chunk is refused and the job fails, saying so. emberd's
	// --max-unread-stream-mib changes it.
	MaxUnreadStream = 64 << 20
	// StreamPage is the byte budget of one /stream answer: chunks are
	// handed out in order until the next would pass it, and at least one
	// is, so a page is at most max(StreamPage, ChunkBody). It matches
	// RunPod's documented 1 MB per streamed chunk.
	StreamPage = 1 << 20
)
