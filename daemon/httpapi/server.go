// Package httpapi is emberd's HTTP surface: RunPod's client API (/v2/{ep}/run
// and friends: runpodclient.go), RunPod's worker API (job-take, job-done,
// ...: runpodworker.go), the REST gateway for Ember's own API (/v1,
// generated from proto/), the image upload (POST /v1/images:upload:
// images.go), the worker list and logs (GET /v1/workers,
// /v1/workers/{id}/logs) and POST /v1/workers/{id}:stop (workers.go), an
// endpoint's logs (endpointlogs.go), RunPod's REST model of templates and
// endpoints under /runpod/v1 (runpodrest.go), the named API keys (/v1/keys), the
// GPUs (GET /v1/gpus), the probes (GET /healthz, /readyz), the OpenAPI
// document, and the Prometheus metrics (GET /metrics).
//
// Every route is a row of one table (routes.go) that gives its body limit,
// how long it may hold, and who may call it: no one in particular, a
// worker with its token, or a key of a given scope (the /v1 gateway routes
// take their gRPC method's scope from daemon/authz, as gRPC does).
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
	"io/fs"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/daemon/authz"
	"github.com/emberhq/ember/daemon/keys"
	"github.com/emberhq/ember/daemon/ratelimit"
	"github.com/emberhq/ember/daemon/templates"
	"github.com/emberhq/ember/oci/image"
	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/limits"
	"github.com/emberhq/ember/scheduler/spec"
)

// Config configures the HTTP surface.
type Config struct {
	Scheduler *scheduler.Scheduler
	// Keys returns admin keys accepted besides KeyStore's (compared in
	// constant time); it is called per request. emberd leaves it nil: its
	// bootstrap key is the key store's.
	Keys func() []string
	// KeyStore holds the API keys: the bootstrap admin key and the named
	// keys with their scopes (keys.go). ServeHTTP looks every presented
	// key up in it, and /v1/keys creates, lists and revokes them. Nil:
	// only Keys are accepted, as admin, and /v1/keys answers 404.
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
	// TLS reports the listeners' TLS for GET /healthz (health.go); nil
	// means TLS is off.
	TLS func() TLSStatus
	// InsecureListen is shown in GET /healthz: emberd serves plain HTTP
	// beyond loopback because --insecure-listen allows it.
	InsecureListen bool
	// Metrics are collectors served at /metrics besides the built-in ones
	// (the scheduler's per-endpoint jobs, workers and durations, Go's
	// runtime, the process). They share one registry, so two collectors
	// exporting the same metric make New panic.
	Metrics []prometheus.Collector
	// Templates holds the endpoint templates served at /v1/templates and
	// deployed by POST /v1/templates/{name}:deploy (templates.go); nil
	// answers those routes 404.
	Templates *templates.Store
	// RateLimiter limits RunPod's client operations, their /v1 twins and
	// the OpenAI route per key and endpoint (ratelimit.go); nil: no limits.
	RateLimiter *ratelimit.Limiter
	// Console is the web console's files (package daemon/console), served
	// at "/" and "/console/" (console.go); nil serves no console.
	Console fs.FS
	// Now is the clock of the console sessions (session.go); nil is
	// time.Now.
	Now func() time.Time
}

// Server routes requests.
type Server struct {
	cfg     Config
	s       *scheduler.Scheduler
	log     *slog.Logger
	metrics http.Handler
	started time.Time
	// sessions are the console's logins (session.go).
	sessions *sessions
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
		metrics:  metricsHandler(cfg.Scheduler, cfg.Metrics, cfg.Logger),
		started:  cfg.Started,
		sessions: newSessions(cfg.Now),
	}
}

// ServeHTTP routes on the cleaned path. Go's ServeMux would answer a
// non-canonical path ("//run", from a base URL with a trailing slash) with
// a 301, which breaks POSTs; here empty segments are simply dropped.
//
// Every request goes through the route table (routes.go), which gives its
// body limit, its hold and who may call it. Small bodies are read here,
// before the key is checked; the large ones (job submissions, endpoints,
// results and stream chunks) after it. Routes that hold their request
// (long-polls) push the connection's deadlines out first (deadlines.go).
// A request with a key carries its caller (auth.WithCaller) from here on.
func (h *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	segs := splitPath(r.URL.Path)
	rt, allow := findRoute(r.Method, segs)
	if rt == nil {
		h.noRoute(w, r, segs, allow)
		return
	}
	extendDeadlines(w, r, rt.hold)
	if rt.limit <= limits.SmallBody && !limitBody(w, r, *rt) {
		return
	}
	if rt.access == accessKey {
		// A key in the request wins; without one, the console's session
		// cookie stands for the key it was opened with (session.go).
		secret := presentedKey(r)
		var ref *authz.Refusal
		if secret == "" {
			secret, ref = h.sessionKey(r)
		}
		var c auth.Caller
		if ref == nil {
			c, ref = authz.Authenticate(h.lookup, secret)
		}
		if ref == nil {
			ref = authz.Authorize(c, rt.need, rt.name, rt.endpointOf(segs))
		}
		if ref != nil {
			ref.Count()
			writeRefusal(w, rt, ref)
			return
		}
		r = r.WithContext(auth.WithCaller(r.Context(), c))
	}
	// The gateway's large bodies (endpoints, jobs) are read once the key
	// is known to be good; the other large-body handlers read their own.
	if rt.rpc != "" && !limitBody(w, r, *rt) {
		return
	}
	// The caller is known and allowed here: the rate limits are kept by
	// its key and the route's endpoint (ratelimit.go).
	release, ok := h.limitRate(w, r, rt, segs)
	if !ok {
		return
	}
	defer release()
	rt.serve(h, w, r, segs)
}

// noRoute answers a path in no route (404) or a method the path does not
// take (405, with Allow). Neither needs a key: the routes are public in
// /openapi.json.
func (h *Server) noRoute(w http.ResponseWriter, r *http.Request, segs []string, allow []string) {
	if len(segs) > 0 && segs[0] == "runpod" {
		h.noRunPodRESTRoute(w, r, allow)
		return
	}
	if len(allow) > 0 {
		allow = slices.Compact(slices.Sorted(slices.Values(allow)))
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed on "+r.URL.Path+"; use "+strings.Join(allow, " or "))
		return
	}
	if len(segs) == 3 && segs[0] == "v2" && clientOpsBy[segs[2]].needID {
		writeError(w, http.StatusNotFound, "missing job id: /v2/"+segs[1]+"/"+segs[2]+"/{job_id}")
		return
	}
	if len(segs) == 2 && segs[0] == "v2" {
		writeError(w, http.StatusNotFound, "no operation given after the endpoint id")
		return
	}
	writeError(w, http.StatusNotFound, "no such route: "+r.Method+" "+r.URL.Path)
}

// writeRefusal answers a 401 or 403: {"error","reason"} with "keyId",
// "neededScope" and "expiresAt" when they apply; in OpenAI's error shape on
// the OpenAI routes, with the same fields beside it.
func writeRefusal(w http.ResponseWriter, rt *route, ref *authz.Refusal) {
	body := map[string]any{"error": ref.Message, "reason": ref.Reason}
	if rt.openAI {
		typ := "authentication_error"
		if ref.Code == http.StatusForbidden {
			typ = "permission_error"
		}
		body["error"] = map[string]any{"message": ref.Message, "type": typ, "code": ref.Code}
	}
	if rt.runpodREST {
		// RunPod's REST clients read {"message"}; "error" and "reason"
		// stay for Ember's own.
		body["message"] = ref.Message
	}
	if ref.KeyID != "" {
		body["keyId"] = ref.KeyID
	}
	if ref.NeededScope != "" {
		body["neededScope"] = ref.NeededScope
	}
	if !ref.ExpiresAt.IsZero() {
		body["expiresAt"] = ref.ExpiresAt.UTC().Format(time.RFC3339)
	}
	if ref.Code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="emberd"`)
	}
	writeJSONStatus(w, ref.Code, body)
}

// lookup finds the caller of a secret: a key of KeyStore (the bootstrap
// key and the named keys), else one of Config.Keys (admin keys given
// directly, compared in constant time).
func (h *Server) lookup(secret string) (auth.Caller, error) {
	if h.cfg.KeyStore != nil {
		c, err := h.cfg.KeyStore.Lookup(secret)
		if !errors.Is(err, keys.ErrWrong) {
			return c, err
		}
	}
	if secret != "" && h.cfg.Keys != nil {
		ok := false
		for _, want := range h.cfg.Keys() {
			if want != "" && subtle.ConstantTimeCompare([]byte(secret), []byte(want)) == 1 {
				ok = true
			}
		}
		if ok {
			return keys.AdminCaller(), nil
		}
	}
	if secret == "" {
		return auth.Caller{}, keys.ErrMissing
	}
	return auth.Caller{}, keys.ErrWrong
}

func serveProbe(h *Server, w http.ResponseWriter, r *http.Request, segs []string) {
	// No API key: probes are set up without one (health.go).
	h.serveHealth(w, r, segs[0])
}

func (h *Server) serveOpenAPI(w http.ResponseWriter, r *http.Request, _ []string) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(h.cfg.OpenAPI)
}

// serveMetrics serves the Prometheus metrics to a read key: they name the
// endpoints and count their work (no job data, no keys, no tokens), which
// is for the operators, not for every process on the network.
func (h *Server) serveMetrics(w http.ResponseWriter, r *http.Request, _ []string) {
	h.metrics.ServeHTTP(w, r)
}

// serveKeyRoutes: named API keys and the admin key's rotation (keys.go).
func (h *Server) serveKeyRoutes(w http.ResponseWriter, r *http.Request, segs []string) {
	if segs[1] == "keys:rotate-admin" {
		h.rotateAdmin(w, r)
		return
	}
	h.serveKeys(w, r, segs[2:])
}

// serveGPURoutes: the GPUs with their holders and live readings (gpus.go).
func (h *Server) serveGPURoutes(w http.ResponseWriter, r *http.Request, segs []string) {
	h.serveGPUs(w, r, segs[2:])
}

func (h *Server) serveUpload(w http.ResponseWriter, r *http.Request, _ []string) {
	h.serveImageUpload(w, r)
}

// serveWorkerRoutes: workers and their logs (text, streamed) come from the
// scheduler and the log files, not from the gateway.
func (h *Server) serveWorkerRoutes(w http.ResponseWriter, r *http.Request, segs []string) {
	h.serveWorkers(w, r, segs[2:])
}

// serveGateway hands a /v1 route to the grpc-gateway, which calls the gRPC
// servers in-process with this request's context (and so its caller).
func (h *Server) serveGateway(w http.ResponseWriter, r *http.Request, segs []string) {
	if h.cfg.Gateway == nil {
		writeError(w, http.StatusNotFound, "no such route: "+r.Method+" "+r.URL.Path)
		return
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/" + strings.Join(segs, "/")
	h.cfg.Gateway.ServeHTTP(w, r2)
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
	return authz.PresentedKey(r.Header.Get("Authorization"))
}

// serveV2 serves RunPod's routes under /v2/{endpoint}/: the worker API
// (the worker's token is checked there), the OpenAI routes and the client
// routes (the key was checked by ServeHTTP).
func (h *Server) serveV2(w http.ResponseWriter, r *http.Request, segs []string) {
	ep, rest := segs[1], segs[2:]
	if op, ok := workerOps[rest[0]]; ok {
		h.serveWorker(w, r, ep, op, rest[1:])
		return
	}
	if rest[0] == "openai" {
		// OpenAI's error shape, 401 included (openai.go).
		h.serveOpenAI(w, r, ep, rest[1:])
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
	var fe *spec.FieldError
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
		// The request is well formed but the object's state refuses it
		// (a CANCELLED job retried, a name taken): 409, as RunPod's
		// "other states: 4xx" allows; the message says why.
		return http.StatusConflict, err.Error()
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

// WorkerRoute reports the worker API's routes (/v2/{endpoint}/job-take
// and the rest of workerOps): all that emberd's loopback worker listener
// serves when the client listener speaks TLS.
func WorkerRoute(r *http.Request) bool {
	segs := splitPath(r.URL.Path)
	if len(segs) < 3 || segs[0] != "v2" {
		return false
	}
	_, ok := workerOps[segs[2]]
	return ok
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
