// Package httpapi is emberd's HTTP surface: RunPod's client API (/v2/{ep}/run
// and friends), RunPod's worker API (job-take, job-done, ...), the REST
// gateway for Ember's own API (/v1, generated from proto/), the image
// upload (POST /v1/images:upload), the worker list and logs (GET
// /v1/workers, /v1/workers/{id}/logs) and POST /v1/workers/{id}:stop, the
// named API keys (/v1/keys), the GPUs (GET /v1/gpus), the probes (GET
// /healthz, /readyz), the OpenAPI document, and the Prometheus metrics
// (GET /metrics).
//
// RunPod's wire quirks live here on purpose: GET and POST on status and
// stream, success always HTTP 200 with single-line JSON, keys raw or
// Bearer, "//" in paths, form-labelled JSON bodies from workers, and 204
// long-polls.
package httpapi

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/emberhq/ember/daemon/ratelimit"
	"github.com/emberhq/ember/oci/image"
	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/limits"
)

// Config configures the HTTP surface.
type Config struct {
	Scheduler *scheduler.Scheduler
	// Keys returns the accepted admin keys. It is called per request so a
	// key change takes effect without a restart.
	Keys func() []string
	// KeyStore holds the named admin keys: adminOK accepts its keys too,
	// and /v1/keys creates, lists and revokes them (keys.go). Nil: only
	// Keys are accepted and /v1/keys answers 404.
	KeyStore KeyStore
	// GPUStats reads a GPU's live utilisation, memory and temperature for
	// GET /v1/gpus (gpus.go); nil leaves those fields out.
	GPUStats func(uuid string) (GPUStats, error)
	// Ready says whether the daemon is ready for work (GET /readyz,
	// health.go): nil when it is, else why not. A nil func means ready.
	Ready func() error
	// Started is when the daemon started, for the uptime in GET /healthz;
	// zero means when New was called.
	Started time.Time
	// Gateway serves /v1 (the grpc-gateway mux); nil leaves /v1 unserved.
	Gateway http.Handler
	// OpenAPI is served at /openapi.json.
	OpenAPI []byte
	Logger  *slog.Logger
	// Images is the image store that POST /v1/images:upload imports into;
	// nil (emberd runs with --runtime process) answers that route 404.
	Images *image.Store
	// MaxUploadBytes caps the body of POST /v1/images:upload (413 above
	// it). Zero means image.DefaultMaxImageBytes (64 GiB).
	MaxUploadBytes int64
	// Connections reports the client connections (daemon/connlimit's
	// Stats) for GET /healthz; nil leaves them out.
	Connections func() any
	// Metrics are collectors served at /metrics besides the built-in ones
	// (the scheduler's per-endpoint jobs, workers and durations, Go's
	// runtime, the process). They share one registry, so two collectors
	// exporting the same metric make New panic.
	Metrics []prometheus.Collector
	// RateLimiter limits RunPod's client operations, their /v1 twins and
	// the OpenAI route per key and endpoint (ratelimit.go); nil: no limits.
	RateLimiter *ratelimit.Limiter
}

// Server routes requests.
type Server struct {
	cfg     Config
	s       *scheduler.Scheduler
	log     *slog.Logger
	metrics http.Handler
	started time.Time
}

// New builds the handler.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Started.IsZero() {
		cfg.Started = time.Now()
	}
	return &Server{
		cfg: cfg, s: cfg.Scheduler, log: cfg.Logger,
		metrics: metricsHandler(cfg.Scheduler, cfg.Metrics, cfg.Logger),
		started: cfg.Started,
	}
}

// ServeHTTP routes on the cleaned path. Go's ServeMux would answer a
// non-canonical path ("//run", from a base URL with a trailing slash) with
// a 301, which breaks POSTs; here empty segments are simply dropped.
//
// Every body has a limit (classify, bodylimit.go): small ones are read
// here, before the key is checked; the large ones (job submissions,
// endpoints, results and stream chunks) after it. Routes that hold their
// request (long-polls) push the connection's deadlines out first
// (deadlines.go).
func (h *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	segs := splitPath(r.URL.Path)
	rt := classify(r.Method, segs)
	extendDeadlines(w, r, rt.hold)
	if rt.limit <= limits.SmallBody && !limitBody(w, r, rt) {
		return
	}
	// The rate limiter's one call: it needs the caller, so it belongs
	// after authentication (ratelimit.go).
	release, ok := h.limitRate(w, r, segs)
	if !ok {
		return
	}
	defer release()
	switch {
	case len(segs) == 1 && segs[0] == "openapi.json":
		w.Header().Set("Content-Type", "application/json")
		w.Write(h.cfg.OpenAPI)
	case len(segs) == 1 && segs[0] == "metrics":
		// No API key: Prometheus scrapers are usually set up without
		// one, and the default listener is loopback. The metrics are
		// endpoint ids, names, counts and durations: no job data and
		// no keys. Workers reach this listener too (host network, or
		// the worker API served in a network "none" namespace), so
		// they can read them as well.
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "method not allowed: "+r.Method+" /metrics takes GET")
			return
		}
		h.metrics.ServeHTTP(w, r)
	case len(segs) == 1 && (segs[0] == "healthz" || segs[0] == "readyz"):
		// No API key: probes are set up without one (health.go).
		h.serveHealth(w, r, segs[0])
	case len(segs) >= 2 && segs[0] == "v1" && (segs[1] == "keys" || segs[1] == "gpus"):
		// Named API keys (keys.go) and the GPUs with their holders and
		// live readings (gpus.go): plain routes, not in the gateway.
		if !h.adminOK(r) {
			writeError(w, http.StatusUnauthorized, "missing or wrong API key: send \"Authorization: Bearer KEY\" (or the bare key)")
			return
		}
		if segs[1] == "keys" {
			h.serveKeys(w, r, segs[2:])
		} else {
			h.serveGPUs(w, r, segs[2:])
		}
	case len(segs) == 2 && segs[0] == "v1" && segs[1] == "images:upload":
		// Served here rather than by the gateway: the body is a raw
		// archive, streamed to disk, not a protobuf message.
		if !h.adminOK(r) {
			writeError(w, http.StatusUnauthorized, "missing or wrong API key: send \"Authorization: Bearer KEY\" (or the bare key)")
			return
		}
		h.serveImageUpload(w, r)
	case len(segs) >= 2 && segs[0] == "v1" && segs[1] == "workers":
		// Workers and their logs (text, streamed) come from the scheduler
		// and the log files, not from the gateway.
		if !h.adminOK(r) {
			writeError(w, http.StatusUnauthorized, "missing or wrong API key: send \"Authorization: Bearer KEY\" (or the bare key)")
			return
		}
		h.serveWorkers(w, r, segs[2:])
	case len(segs) >= 2 && segs[0] == "v2":
		h.serveV2(w, r, segs[1], segs[2:])
	case len(segs) >= 1 && segs[0] == "v1" && h.cfg.Gateway != nil:
		if !h.adminOK(r) {
			writeError(w, http.StatusUnauthorized, "missing or wrong API key: send \"Authorization: Bearer KEY\" (or the bare key)")
			return
		}
		if !limitBody(w, r, rt) {
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/" + strings.Join(segs, "/")
		h.cfg.Gateway.ServeHTTP(w, r2)
	default:
		writeError(w, http.StatusNotFound, "no such route: "+r.Method+" "+r.URL.Path)
	}
}

func splitPath(p string) []string {
	parts := strings.Split(p, "/")
	out := parts[:0]
	for _, s := range parts {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// presentedKey extracts the key from Authorization, accepting "Bearer KEY"
// (the SDKs) and the bare key (RunPod's curl examples and the worker SDK).
func presentedKey(r *http.Request) string {
	v := strings.TrimSpace(r.Header.Get("Authorization"))
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.TrimSpace(v[7:])
	}
	return v
}

func (h *Server) adminOK(r *http.Request) bool {
	k := presentedKey(r)
	if k == "" {
		return false
	}
	ok := false
	if h.cfg.Keys != nil {
		for _, want := range h.cfg.Keys() {
			if want != "" && subtle.ConstantTimeCompare([]byte(k), []byte(want)) == 1 {
				ok = true
			}
		}
	}
	return ok || (h.cfg.KeyStore != nil && h.cfg.KeyStore.Valid(k))
}

func (h *Server) serveV2(w http.ResponseWriter, r *http.Request, ep string, rest []string) {
	if len(rest) == 0 {
		writeError(w, http.StatusNotFound, "no operation given after the endpoint id")
		return
	}
	if op, ok := workerOps[rest[0]]; ok {
		h.serveWorker(w, r, ep, op, rest[1:])
		return
	}
	if rest[0] == "openai" {
		// OpenAI's error shape, 401 included (openai.go).
		h.serveOpenAI(w, r, ep, rest[1:])
		return
	}
	if !h.adminOK(r) {
		writeError(w, http.StatusUnauthorized, "missing or wrong API key: send \"Authorization: Bearer KEY\" (or the bare key)")
		return
	}
	h.serveClient(w, r, ep, rest)
}

// writeJSON answers 200 with single-line JSON.
func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encode response: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

// writeError answers with {"error": msg}.
func writeError(w http.ResponseWriter, code int, msg string) {
	b, _ := json.Marshal(map[string]string{"error": msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(b)
}

// writeSchedErr maps scheduler errors to status codes. A full disk is 507
// with the free and needed bytes beside the message.
func writeSchedErr(w http.ResponseWriter, err error) {
	var se *scheduler.InsufficientStorageError
	if errors.As(err, &se) {
		writeJSONStatus(w, http.StatusInsufficientStorage, storageErrorBody(err.Error(), se))
		return
	}
	code, msg := schedErrStatus(err)
	writeError(w, code, msg)
}

// storageErrorBody is the JSON of a 507: {"error": msg, "freeBytes": N,
// "neededBytes": M}.
func storageErrorBody(msg string, se *scheduler.InsufficientStorageError) map[string]any {
	return map[string]any{"error": msg, "freeBytes": se.Free, "neededBytes": se.Needed}
}

// schedErrStatus is the status code of a scheduler error, and the message
// to show: a bad request's or a field error's own text, else err's.
func schedErrStatus(err error) (int, string) {
	var fe *scheduler.FieldError
	var br *badRequest
	var sl *scheduler.StreamLimitError
	switch {
	case errors.As(err, &br):
		return http.StatusBadRequest, br.msg
	case errors.As(err, &fe):
		return http.StatusBadRequest, fe.Error()
	case errors.Is(err, scheduler.ErrNotFound):
		return http.StatusNotFound, err.Error()
	case errors.Is(err, scheduler.ErrConflict):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, scheduler.ErrForbidden):
		return http.StatusUnauthorized, err.Error()
	case errors.Is(err, scheduler.ErrInsufficientStorage):
		return http.StatusInsufficientStorage, err.Error()
	case errors.Is(err, scheduler.ErrUnavailable):
		return http.StatusServiceUnavailable, err.Error()
	case errors.As(err, &sl):
		return http.StatusRequestEntityTooLarge, err.Error()
	case errors.Is(err, scheduler.ErrJobEnded):
		return http.StatusConflict, err.Error()
	}
	return http.StatusInternalServerError, err.Error()
}

// readBody reads a body of at most limit bytes (readLimited); tooBig
// reports a larger one, which has been drained as far as the bound allows,
// and size is then its size when known, else -1.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) (body []byte, tooBig bool, size int64, err error) {
	b, n, err := readLimited(w, r, limit)
	if errors.Is(err, errBodyTooLarge) {
		return nil, true, n, nil
	}
	return b, false, n, err
}

// ReservedRoute reports the routes a connection accepted past
// --max-connections may still serve (daemon/connlimit): the worker API
// (/v2/{endpoint}/job-take and the rest), so that workers keep their jobs
// moving when clients hold every connection, and the probes /healthz and
// /readyz.
func ReservedRoute(r *http.Request) bool {
	segs := splitPath(r.URL.Path)
	switch {
	case len(segs) == 1:
		return segs[0] == "healthz" || segs[0] == "readyz"
	case len(segs) >= 3 && segs[0] == "v2":
		_, ok := workerOps[segs[2]]
		return ok
	}
	return false
}

// waitParam reads ?wait= in ms, clamped to [min, max]; def when absent or
// unparsable (unknown or odd query parameters are ignored, as RunPod does).
func waitParam(r *http.Request, def, min, max time.Duration) time.Duration {
	v := r.URL.Query().Get("wait")
	if v == "" {
		return def
	}
	var ms int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return def
		}
		// Saturate far above any max (49 days) so that huge values clamp
		// to max instead of overflowing the conversion below.
		if ms < 1<<32 {
			ms = ms*10 + int64(c-'0')
		}
	}
	d := time.Duration(ms) * time.Millisecond
	if d < min {
		d = min
	}
	if d > max {
		d = max
	}
	return d
}
