package runpod

import (
	"net/url"
	"strconv"
	"time"
)

// The worker API's routes: the path segment after /v2/{endpoint}/ of each
// route a worker calls. Each is followed by the worker's id; job-done and
// job-stream then by the job's.
const (
	RouteJobTake      = "job-take"
	RouteJobTakeBatch = "job-take-batch"
	RouteJobStop      = "job-stop"
	RouteJobDone      = "job-done"
	RouteJobStream    = "job-stream"
	RoutePing         = "ping"
)

// JobIDPlaceholder is what the worker SDK replaces with a job's id in the
// result and stream URLs it is given.
const JobIDPlaceholder = "$ID"

// The environment variables a worker starts with (docs/compat.md).
const (
	EnvGetJob       = "RUNPOD_WEBHOOK_GET_JOB"
	EnvPostOutput   = "RUNPOD_WEBHOOK_POST_OUTPUT"
	EnvPostStream   = "RUNPOD_WEBHOOK_POST_STREAM"
	EnvPing         = "RUNPOD_WEBHOOK_PING"
	EnvAPIKey       = "RUNPOD_AI_API_KEY"
	EnvPodID        = "RUNPOD_POD_ID"
	EnvEndpointID   = "RUNPOD_ENDPOINT_ID"
	EnvPingInterval = "RUNPOD_PING_INTERVAL"
	EnvPodHostname  = "RUNPOD_POD_HOSTNAME"
	EnvGPUCount     = "RUNPOD_GPU_COUNT"
	EnvCPUCount     = "RUNPOD_CPU_COUNT"
	EnvDCID         = "RUNPOD_DC_ID"
	// EnvSkipSystemChecks and EnvAllowPrivateURLs suit air-gapped
	// appliances: SDK >= 1.9 otherwise fails its fitness check (TCP to
	// 8.8.8.8:53) and exits before taking a job, and SDK 1.12 refuses
	// private download URLs.
	EnvSkipSystemChecks = "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS"
	EnvAllowPrivateURLs = "RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS"
	EnvLogLevel         = "RUNPOD_LOG_LEVEL"
)

// Worker is what a worker is told about itself and the worker API when it
// starts.
type Worker struct {
	// APIBase is the worker API's URL without a path ("http://host:port").
	APIBase    string
	EndpointID string
	WorkerID   string
	// Token is the worker's own credential for the worker API.
	Token        string
	PingInterval time.Duration
	Hostname     string
	GPUCount     int
	CPUCount     int
}

// Env returns the worker's RUNPOD_* environment as "NAME=value" entries,
// always in the same order. The worker id is rendered into the URLs; only
// JobIDPlaceholder is left for the SDK to substitute in the result and
// stream URLs.
func (w Worker) Env() []string {
	base := w.APIBase + "/v2/" + url.PathEscape(w.EndpointID)
	q := "?gpu=" + url.QueryEscape(gpuLabel(w.GPUCount))
	return []string{
		EnvGetJob + "=" + base + "/" + RouteJobTake + "/" + w.WorkerID + q,
		EnvPostOutput + "=" + base + "/" + RouteJobDone + "/" + w.WorkerID + "/" + JobIDPlaceholder + q,
		EnvPostStream + "=" + base + "/" + RouteJobStream + "/" + w.WorkerID + "/" + JobIDPlaceholder + q,
		EnvPing + "=" + base + "/" + RoutePing + "/" + w.WorkerID + q,
		EnvAPIKey + "=" + w.Token,
		EnvPodID + "=" + w.WorkerID,
		EnvEndpointID + "=" + w.EndpointID,
		EnvPingInterval + "=" + strconv.FormatInt(w.PingInterval.Milliseconds(), 10),
		EnvPodHostname + "=" + w.Hostname,
		EnvGPUCount + "=" + strconv.Itoa(w.GPUCount),
		EnvCPUCount + "=" + strconv.Itoa(w.CPUCount),
		EnvDCID + "=ember",
		EnvSkipSystemChecks + "=true",
		EnvAllowPrivateURLs + "=true",
		EnvLogLevel + "=INFO",
	}
}

// gpuLabel is the gpu query parameter of the worker URLs: "cpu" or "<n>gpu".
func gpuLabel(n int) string {
	if n == 0 {
		return "cpu"
	}
	return strconv.Itoa(n) + "gpu"
}
