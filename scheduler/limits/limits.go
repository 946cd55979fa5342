// Package limits is the one home of the sizes Ember accepts from clients
// and workers. Every transport (the RunPod routes, the /v1 REST gateway,
// gRPC, the worker API) and the scheduler's own validation read them
// from here, so the same thing gets the same limit everywhere; the README
// has the table.
//
// The package has no dependencies so that every layer may import it.
package limits

// Job payloads, from RunPod's documented limits (docs/limits.md: "/run body
// 10 MB", "/runsync body 20 MB", "result posted by a worker about 20 MB").
// They stay here rather than in package runpod: they are byte caps every
// transport applies, the gRPC and /v1 routes included, not RunPod wire.
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
// 128 KiB) and an argv plus environment (strings and their pointers) above
// a quarter of the stack limit (2 MiB with the usual 8 MiB stack), with
// "argument list too long". These bounds keep every endpoint startable:
// the endpoint's environment and command together stay below that budget
// with ExecReserve to spare for what Ember and the image add.
const (
	// EnvEntry caps one environment entry, "KEY=VALUE" with its NUL.
	EnvEntry = 128 << 10
	// EnvTotal caps all of an endpoint's environment entries together,
	// each counted as "KEY=VALUE" with its NUL.
	EnvTotal = 1 << 20
	// EnvEntries caps the number of an endpoint's environment variables:
	// each costs execve a pointer besides its string.
	EnvEntries = 4096
	// CommandArg caps one argument of an endpoint's command, with its NUL.
	CommandArg = 128 << 10
	// CommandTotal caps all of an endpoint's command arguments together,
	// each counted with its NUL.
	CommandTotal = 512 << 10
	// CommandArgs caps the number of arguments of an endpoint's command.
	CommandArgs = 256
	// ExecBudget is what execve takes for argv plus environment, strings
	// and pointers: a quarter of an 8 MiB stack limit.
	ExecBudget = 2 << 20
	// ExecReserve is the part of ExecBudget kept for what a worker gets
	// besides its endpoint's env and command: Ember's RUNPOD_* variables
	// (about 1 KiB), the image's Env or the host's PATH, and the pointers
	// of every argument and variable.
	ExecReserve = 256 << 10
	// EndpointName caps an endpoint's name, in bytes: one DNS label.
	EndpointName = 63
	// ImageRef caps an endpoint's image reference.
	ImageRef = 512
	// EndpointBody caps a request that creates or updates an endpoint: the
	// environment at its limit plus room for the other fields.
	EndpointBody = EnvTotal + 1<<20
)

// The endpoint limits fit execve's budget: this fails to compile if they
// do not.
const _ = uint(ExecBudget - ExecReserve - EnvTotal - CommandTotal)

// Free space on the data disk (scheduler/diskguard). emberd refuses new work
// below DefaultMinFreeDisk (--min-free-disk-mb) and refuses every write
// below DefaultDiskReserve (--disk-reserve-mb); between the two only writes
// that finish accepted work go through.
const (
	// DefaultMinFreeDisk is the free space below which new jobs, endpoint
	// writes, API keys and image imports are refused with 507.
	DefaultMinFreeDisk = 64 << 20
	// DefaultDiskReserve is the free space kept for the store's own needs
	// (a memtable flush, its new write-ahead log, an L0 compaction).
	DefaultDiskReserve = 32 << 20
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

// MaxTemplates caps the operator's templates (daemon/templates; the
// built-in ones are not counted): with TemplateBody it bounds the store's
// file and memory to 64 MiB.
const MaxTemplates = 256

// Small request bodies: the routes that take a few fields or none.
const (
	// KeyBody caps POST /v1/keys: {"name"} and nothing more, and the
	// console's login, POST /console/session: {"key"}.
	KeyBody = 4 << 10
	// TemplateBody caps a template as JSON (daemon/templates): POST and
	// PATCH /v1/templates, a preload *.template.json file, and each
	// template in the store's file. Its variables' descriptions and
	// defaults are short; an endpoint's full environment is not a preset.
	TemplateBody = 256 << 10
	// TemplateDeployBody caps POST /v1/templates/{name}:deploy: the
	// endpoint's name, its variables' values (an environment at its
	// limit, as an endpoint's) and a few numbers.
	TemplateDeployBody = EndpointBody
	// SmallBody caps the body of every other request: the RunPod status,
	// cancel, retry and purge routes (some SDKs POST them with a small
	// body), the worker job-take, job-stop and ping, the /v1 routes that
	// are not endpoint or job submissions, the probes and /metrics.
	SmallBody = 64 << 10
)

// Console sessions (daemon/httpapi/session.go): a login exchanges an API
// key for a session cookie. Sessions live in emberd's memory only, so a
// restart logs every console out.
const (
	// ConsoleSessions caps the live sessions; a login past it ends the
	// session that was used least recently.
	ConsoleSessions = 1024
	// ConsoleSessionTTL is a session's longest life, however busy.
	ConsoleSessionTTL = 12 * 3600
	// ConsoleSessionIdle ends a session unused for this many seconds.
	ConsoleSessionIdle = 3600
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

// Rate limiter (daemon/ratelimit).
const (
	// RateBuckets caps the (key, endpoint, operation) buckets the rate
	// limiter tracks at once, about 150 bytes each: 64 Ki of them is about
	// 10 MiB, whatever endpoint ids clients send.
	RateBuckets = 64 << 10
	// RateEndpointID is the longest endpoint id the rate limiter keys a
	// bucket on; longer ones (no endpoint has one: ids are 14 characters)
	// share one bucket per key and operation, so a client cannot make the
	// limiter hold long strings.
	RateEndpointID = 64
)

// Image imports (oci/image).
const (
	// ZstdWindow caps the window a zstd frame of an image layer or archive
	// may declare: the decoder allocates about that much per layer being
	// read (up to the store's parallelism at once), and a frame header
	// can ask for up to 3.75 TiB. 128 MiB (window log 27) covers every
	// standard level, --ultra -22 and --long; beyond it the import is
	// refused.
	ZstdWindow = 128 << 20
)

// Endpoint logs (GET /v1/endpoints/{id}/logs, oci/logindex).
const (
	// LogIndexMarks caps the time marks kept beside one worker log (about
	// 30 bytes each): past it every other old mark is dropped, so the
	// index of a worker that logs for months stays small and only grows
	// coarser for its oldest lines.
	LogIndexMarks = 4096
	// LogLine caps one log line as the endpoint log merges it: a longer
	// line is sent in pieces of this size (docker splits at 16 KiB too),
	// each prefixed, so that a worker that never writes a newline cannot
	// make emberd buffer it. A merge holds about two per worker.
	LogLine = 16 << 10
	// LogStoppedWorkers caps the stopped workers an endpoint remembers
	// for its logs (their files are swept after --worker-log-retention).
	LogStoppedWorkers = 64
)

// GPU parking (scheduler/park.go).
const (
	// DefaultParkMemoryPercent is the share of the host's memory (MemTotal)
	// that parked workers' GPU state may take when --park-memory-mb is not
	// given: 25%, so that parking a handful of models never crowds out the
	// running workers, the page cache and emberd. A park that would go past
	// it is refused and the worker is stopped instead.
	DefaultParkMemoryPercent = 25
)

// Console reads: an endpoint's recent jobs (GET /v1/endpoints/{id}/jobs,
// scheduler/recent.go). The chart history's size is fixed by its own
// package (scheduler/history: 360 buckets of 10 s per endpoint).
const (
	// RecentJobs is how many of its newest job ids an endpoint remembers
	// for its recent-jobs list, and the largest ?limit= that list takes.
	RecentJobs = 200
	// RecentJobPreview caps the input and the output a recent-jobs entry
	// shows, in bytes; a longer one is cut and shown as a JSON string of
	// its first bytes, flagged inputTruncated or outputTruncated.
	RecentJobPreview = 4096
)
