package httpapi

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/daemon/authz"
	"github.com/emberhq/ember/daemon/ratelimit"
	emberv1 "github.com/emberhq/ember/proto/ember/v1"
	"github.com/emberhq/ember/runpod"
	"github.com/emberhq/ember/scheduler/limits"
)

// access is who may call a route. The zero value is no access at all: a
// route added to the table without saying who may call it makes
// checkRoutes fail (and the package's every test with it).
type access uint8

const (
	accessUnset  access = iota
	accessPublic        // no key: the probes, the OpenAPI document
	accessWorker        // a worker's own token, checked by the worker API against its endpoint and worker id
	accessKey           // an API key whose scope is in route.need (or, with rpc, the method's)
)

// route is a row of the route table: everything the HTTP surface knows of
// a request before serving it. ServeHTTP takes from it the body limit
// (scheduler/limits, the one table for every transport), how long the
// request may legitimately take (deadlines.go), and who may call it.
type route struct {
	// methods the route answers; nil for any (the handler checks).
	methods []string
	// pattern is the path: literal segments, "{name}" for one segment,
	// "{name}:verb" for one segment ending in ":verb", and a last
	// "{name...}" for the rest of the path (one or more segments).
	pattern string
	// name is the route in messages: "POST /v2/{endpoint}/run".
	name string
	// limit caps the body. Routes with a limit above limits.SmallBody read
	// their body after their key is checked (an unauthenticated client
	// cannot make emberd buffer megabytes); the rest are read up front.
	limit int64
	// streamed marks the image upload: its body goes to disk under its own
	// limit (Config.MaxUploadBytes) and is never buffered.
	streamed bool
	// hold is how long the handler may wait before it answers (long-polls),
	// pushed onto the connection's deadlines; holdForever clears them.
	hold holdKind
	// access says who may call the route; need, for accessKey, which
	// scopes (and whether an invoke key's endpoint list applies).
	access access
	need   authz.Need
	// rpc is the gRPC method a /v1 gateway route calls; its need comes
	// from authz.MethodNeed, the table gRPC itself uses.
	rpc string
	// openAI routes answer errors in OpenAI's shape.
	openAI bool
	// runpodREST routes (RunPod's REST model, runpodrest.go) answer
	// errors in RunPod's v1 shape, {"message"}.
	runpodREST bool
	// rate is the rate-limited operation the route counts as (RunPod's
	// table, docs/limits.md; ratelimit.go), nil for a route with no budget. A
	// gateway route takes its method's (authz.MethodRateOp).
	rate *ratelimit.Op
	// serve handles the request once it is allowed.
	serve func(h *Server, w http.ResponseWriter, r *http.Request, segs []string)

	segs  []string // pattern, split
	epSeg int      // index of the endpoint id segment; -1 for none
	// rateSeg is the index of the endpoint id segment a rate-limited
	// route's budget is kept under.
	rateSeg int
}

// rated is a route's rate-limited operation.
func rated(op ratelimit.Op) *ratelimit.Op { return &op }

var (
	get        = []string{http.MethodGet, http.MethodHead}
	post       = []string{http.MethodPost}
	getPost    = []string{http.MethodGet, http.MethodPost, http.MethodHead}
	needRead   = authz.Need{Scopes: []auth.Scope{auth.Read}}
	needAdmin  = authz.Need{Scopes: []auth.Scope{auth.Admin}}
	needInvoke = authz.Need{Scopes: []auth.Scope{auth.Invoke}, EndpointField: "endpoint"}
	// needHealth: an endpoint's health is for monitoring (read) and for
	// the SDKs' clients (invoke).
	needHealth = authz.Need{Scopes: []auth.Scope{auth.Read, auth.Invoke}, EndpointField: "endpoint"}
	// needRecentJobs: a read key sees an endpoint's recent jobs redacted,
	// an invoke key in full for the endpoints it lists.
	needRecentJobs = authz.Need{Scopes: []auth.Scope{auth.Read, auth.Invoke}, EndpointField: "endpoint_id"}
)

// routeTable is every route of the HTTP surface, and the one place that
// says who may call each. Scopes:
//   - public: /healthz, /readyz (probes are set up without keys),
//     /openapi.json (the API's shape is no secret), /v1/health (the
//     gateway twin of the public gRPC health check), the web console's
//     files and its login (/console/session), which checks the key itself;
//   - worker: the worker API, with the worker's own token;
//   - invoke: RunPod's client routes of an endpoint (run, runsync, status,
//     status-sync, stream, cancel, retry, health), the OpenAI routes, and
//     the /v1 job routes; the job reads are invoke, not read, since they
//     carry the job's input and output;
//   - read: /metrics, GPUs, workers and their logs, endpoint and image
//     metadata and stats, an endpoint's health, templates;
//   - admin: the rest: endpoints, images and templates changed (and a
//     template deployed), keys, a worker stopped, and purge-queue (it
//     throws away every client's queued work, so it is not an invoke
//     key's to do).
var routeTable = []route{
	{methods: get, pattern: "/healthz", access: accessPublic, serve: serveProbe},
	{methods: get, pattern: "/readyz", access: accessPublic, serve: serveProbe},
	{methods: get, pattern: "/openapi.json", access: accessPublic, serve: (*Server).serveOpenAPI},
	{methods: get, pattern: "/metrics", access: accessKey, need: needRead, serve: (*Server).serveMetrics},

	// The web console (console.go): its files are public, its data comes
	// from the routes below behind a session (session.go), which the
	// login exchanges for a key.
	{methods: get, pattern: "/", access: accessPublic, serve: (*Server).serveConsole},
	{methods: []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodDelete}, pattern: "/console/session", limit: limits.KeyBody, access: accessPublic, serve: (*Server).serveSession},
	{methods: get, pattern: "/console/{file...}", access: accessPublic, serve: (*Server).serveConsole},

	// RunPod's worker API (runpodworker.go): the handler checks the token.
	{pattern: "/v2/{endpoint}/" + runpod.RouteJobTake + "/{worker}", hold: holdWorkerPoll, access: accessWorker, serve: (*Server).serveV2},
	{pattern: "/v2/{endpoint}/" + runpod.RouteJobTakeBatch + "/{worker}", hold: holdWorkerPoll, access: accessWorker, serve: (*Server).serveV2},
	{pattern: "/v2/{endpoint}/" + runpod.RouteJobStop + "/{worker}", hold: holdWorkerPoll, access: accessWorker, serve: (*Server).serveV2},
	{pattern: "/v2/{endpoint}/" + runpod.RouteJobDone + "/{worker}/{job}", limit: limits.ResultBody, access: accessWorker, serve: (*Server).serveV2},
	{pattern: "/v2/{endpoint}/" + runpod.RouteJobStream + "/{worker}/{job}", limit: limits.ChunkBody, access: accessWorker, serve: (*Server).serveV2},
	{pattern: "/v2/{endpoint}/" + runpod.RoutePing + "/{worker}", access: accessWorker, serve: (*Server).serveV2},

	// RunPod's client API (runpodclient.go).
	{methods: post, pattern: "/v2/{endpoint}/run", rate: rated(ratelimit.Run), limit: limits.RunBody, access: accessKey, need: needInvoke, serve: (*Server).serveV2},
	{methods: post, pattern: "/v2/{endpoint}/runsync", rate: rated(ratelimit.RunSync), limit: limits.RunSyncBody, hold: holdWait, access: accessKey, need: needInvoke, serve: (*Server).serveV2},
	{methods: getPost, pattern: "/v2/{endpoint}/status/{job}", rate: rated(ratelimit.Status), access: accessKey, need: needInvoke, serve: (*Server).serveV2},
	{methods: getPost, pattern: "/v2/{endpoint}/status-sync/{job}", rate: rated(ratelimit.Status), hold: holdWait, access: accessKey, need: needInvoke, serve: (*Server).serveV2},
	{methods: getPost, pattern: "/v2/{endpoint}/stream/{job}", rate: rated(ratelimit.Stream), hold: holdWait, access: accessKey, need: needInvoke, serve: (*Server).serveV2},
	{methods: getPost, pattern: "/v2/{endpoint}/cancel/{job}", rate: rated(ratelimit.Cancel), access: accessKey, need: needInvoke, serve: (*Server).serveV2},
	{methods: post, pattern: "/v2/{endpoint}/retry/{job}", rate: rated(ratelimit.Run), access: accessKey, need: needInvoke, serve: (*Server).serveV2},
	{methods: getPost, pattern: "/v2/{endpoint}/health", access: accessKey, need: needHealth, serve: (*Server).serveV2},
	{methods: post, pattern: "/v2/{endpoint}/purge-queue", rate: rated(ratelimit.PurgeQueue), hold: holdWait, access: accessKey, need: needAdmin, serve: (*Server).serveV2},
	// Held until the job ends, or streamed as it runs (openai.go).
	{pattern: "/v2/{endpoint}/openai/{route...}", rate: rated(ratelimit.OpenAI), limit: limits.RunBody, hold: holdForever, access: accessKey, need: needInvoke, openAI: true, serve: (*Server).serveV2},

	// Plain /v1 routes, not in the gateway.
	{methods: get, pattern: "/v1/keys", access: accessKey, need: needAdmin, serve: (*Server).serveKeyRoutes},
	{methods: post, pattern: "/v1/keys", limit: limits.KeyBody, access: accessKey, need: needAdmin, serve: (*Server).serveKeyRoutes},
	{methods: []string{http.MethodDelete}, pattern: "/v1/keys/{id}", access: accessKey, need: needAdmin, serve: (*Server).serveKeyRoutes},
	{methods: post, pattern: "/v1/keys:rotate-admin", access: accessKey, need: needAdmin, serve: (*Server).serveKeyRoutes},
	{methods: get, pattern: "/v1/gpus", access: accessKey, need: needRead, serve: (*Server).serveGPURoutes},
	// The body is a raw archive, streamed to disk (images.go).
	{methods: post, pattern: "/v1/images:upload", streamed: true, hold: holdForever, access: accessKey, need: needAdmin, serve: (*Server).serveUpload},
	{methods: get, pattern: "/v1/workers", access: accessKey, need: needRead, serve: (*Server).serveWorkerRoutes},
	// logs?follow=1 streams until the client goes away.
	{methods: get, pattern: "/v1/workers/{id}/logs", hold: holdForever, access: accessKey, need: needRead, serve: (*Server).serveWorkerRoutes},
	// An endpoint's workers' logs, merged; follow=1 streams until the
	// client goes away (endpointlogs.go).
	{methods: get, pattern: "/v1/endpoints/{id}/logs", hold: holdForever, access: accessKey, need: needRead, serve: (*Server).serveEndpointLogs},
	// :stop waits for the worker to drain.
	{methods: post, pattern: "/v1/workers/{id}:stop", hold: holdWait, access: accessKey, need: needAdmin, serve: (*Server).serveWorkerRoutes},
	// The console's history and recent jobs (history.go), kept together.
	// The recent jobs answer GET on the path where the gateway's POST
	// submits a job (findRoute picks the row by method); read keys get
	// them without input, output and error, invoke keys only for their
	// endpoints.
	{methods: get, pattern: "/v1/endpoints/{id}/history", access: accessKey, need: needRead, serve: (*Server).serveHistory},
	{methods: get, pattern: "/v1/endpoints/{endpoint_id}/jobs", access: accessKey, need: needRecentJobs, serve: (*Server).serveRecentJobs},

	// Templates and Quick Deploy (templates.go); these rows stay together.
	// Reads are read's; changes and deploys (which create an endpoint)
	// admin's, as endpoint changes are.
	{methods: get, pattern: "/v1/templates", access: accessKey, need: needRead, serve: (*Server).serveTemplates},
	{methods: post, pattern: "/v1/templates", limit: limits.TemplateBody, access: accessKey, need: needAdmin, serve: (*Server).serveTemplates},
	{methods: post, pattern: "/v1/templates/{name}:deploy", limit: limits.TemplateDeployBody, access: accessKey, need: needAdmin, serve: (*Server).serveTemplates},
	{methods: get, pattern: "/v1/templates/{name}", access: accessKey, need: needRead, serve: (*Server).serveTemplates},
	{methods: []string{http.MethodPatch}, pattern: "/v1/templates/{name}", limit: limits.TemplateBody, access: accessKey, need: needAdmin, serve: (*Server).serveTemplates},
	{methods: []string{http.MethodDelete}, pattern: "/v1/templates/{name}", access: accessKey, need: needAdmin, serve: (*Server).serveTemplates},

	// RunPod's REST model (runpodrest.go): templates and endpoints as
	// rest.runpod.io/v1 has them, under /runpod/v1. Reads need read,
	// changes admin. These rows stay together.
	{methods: get, pattern: "/runpod/v1/templates", access: accessKey, need: needRead, runpodREST: true, serve: (*Server).serveRunPodREST},
	{methods: post, pattern: "/runpod/v1/templates", limit: limits.TemplateBody, access: accessKey, need: needAdmin, runpodREST: true, serve: (*Server).serveRunPodREST},
	{methods: get, pattern: "/runpod/v1/templates/{templateId}", access: accessKey, need: needRead, runpodREST: true, serve: (*Server).serveRunPodREST},
	{methods: []string{http.MethodPatch}, pattern: "/runpod/v1/templates/{templateId}", limit: limits.TemplateBody, access: accessKey, need: needAdmin, runpodREST: true, serve: (*Server).serveRunPodREST},
	{methods: post, pattern: "/runpod/v1/templates/{templateId}/update", limit: limits.TemplateBody, access: accessKey, need: needAdmin, runpodREST: true, serve: (*Server).serveRunPodREST},
	{methods: []string{http.MethodDelete}, pattern: "/runpod/v1/templates/{templateId}", access: accessKey, need: needAdmin, runpodREST: true, serve: (*Server).serveRunPodREST},
	{methods: get, pattern: "/runpod/v1/endpoints", access: accessKey, need: needRead, runpodREST: true, serve: (*Server).serveRunPodREST},
	{methods: post, pattern: "/runpod/v1/endpoints", access: accessKey, need: needAdmin, runpodREST: true, serve: (*Server).serveRunPodREST},
	{methods: get, pattern: "/runpod/v1/endpoints/{endpointId}", access: accessKey, need: needRead, runpodREST: true, serve: (*Server).serveRunPodREST},
	{methods: []string{http.MethodPatch}, pattern: "/runpod/v1/endpoints/{endpointId}", access: accessKey, need: needAdmin, runpodREST: true, serve: (*Server).serveRunPodREST},
	{methods: post, pattern: "/runpod/v1/endpoints/{endpointId}/update", access: accessKey, need: needAdmin, runpodREST: true, serve: (*Server).serveRunPodREST},
	{methods: []string{http.MethodDelete}, pattern: "/runpod/v1/endpoints/{endpointId}", access: accessKey, need: needAdmin, runpodREST: true, serve: (*Server).serveRunPodREST},

	// The gateway (proto/ember/v1's google.api.http rules): each route's
	// need is its gRPC method's.
	{methods: post, pattern: "/v1/endpoints", limit: limits.EndpointBody, rpc: emberv1.EndpointService_CreateEndpoint_FullMethodName},
	{methods: get, pattern: "/v1/endpoints", rpc: emberv1.EndpointService_ListEndpoints_FullMethodName},
	{methods: get, pattern: "/v1/endpoints/{id}", rpc: emberv1.EndpointService_GetEndpoint_FullMethodName},
	{methods: []string{http.MethodPatch}, pattern: "/v1/endpoints/{id}", limit: limits.EndpointBody, rpc: emberv1.EndpointService_UpdateEndpoint_FullMethodName},
	{methods: get, pattern: "/v1/endpoints/{id}/stats", rpc: emberv1.EndpointService_GetEndpointStats_FullMethodName},
	{methods: []string{http.MethodDelete}, pattern: "/v1/endpoints/{id}", rpc: emberv1.EndpointService_DeleteEndpoint_FullMethodName},
	{methods: post, pattern: "/v1/endpoints/{endpoint_id}/jobs", limit: limits.RunBody, rpc: emberv1.JobService_Run_FullMethodName},
	{methods: post, pattern: "/v1/endpoints/{endpoint_id}/jobs:sync", limit: limits.RunSyncBody, hold: holdWait, rpc: emberv1.JobService_RunSync_FullMethodName},
	// Job reads with a wait, streams, purges: held like their /v2 twins.
	{methods: get, pattern: "/v1/endpoints/{endpoint_id}/jobs/{id}", hold: holdWait, rpc: emberv1.JobService_GetJob_FullMethodName},
	{methods: get, pattern: "/v1/endpoints/{endpoint_id}/jobs/{id}/stream", hold: holdWait, rpc: emberv1.JobService_StreamJob_FullMethodName},
	{methods: post, pattern: "/v1/endpoints/{endpoint_id}/jobs/{id}:cancel", hold: holdWait, rpc: emberv1.JobService_CancelJob_FullMethodName},
	{methods: post, pattern: "/v1/endpoints/{endpoint_id}/jobs/{id}:retry", hold: holdWait, rpc: emberv1.JobService_RetryJob_FullMethodName},
	{methods: post, pattern: "/v1/endpoints/{endpoint_id}/queue:purge", hold: holdWait, rpc: emberv1.JobService_PurgeQueue_FullMethodName},
	{methods: get, pattern: "/v1/endpoints/{endpoint_id}/health", rpc: emberv1.JobService_GetEndpointHealth_FullMethodName},
	{methods: get, pattern: "/v1/health", rpc: emberv1.HealthService_Check_FullMethodName},
	// An import or a pull of many gigabytes takes minutes.
	{methods: post, pattern: "/v1/images:import", hold: holdForever, rpc: emberv1.ImageService_ImportImage_FullMethodName},
	{methods: post, pattern: "/v1/images:pull", hold: holdForever, rpc: emberv1.ImageService_PullImage_FullMethodName},
	{methods: get, pattern: "/v1/images", rpc: emberv1.ImageService_ListImages_FullMethodName},
	{methods: get, pattern: "/v1/images/{ref...}", rpc: emberv1.ImageService_GetImage_FullMethodName},
	{methods: []string{http.MethodDelete}, pattern: "/v1/images/{ref...}", rpc: emberv1.ImageService_DeleteImage_FullMethodName},
}

// routes is routeTable, checked and completed at start: a route without a
// scope stops the program (and fails every test of the package).
var routes []route

func init() {
	var err error
	if routes, err = checkRoutes(routeTable); err != nil {
		panic(err)
	}
}

// checkRoutes completes the table (names, split patterns, the gateway
// routes' needs and serve, the endpoint segment) and refuses a route
// without access, without scopes, with an rpc that has no scope, or
// without a handler.
func checkRoutes(table []route) ([]route, error) {
	out := slices.Clone(table)
	for i := range out {
		rt := &out[i]
		rt.segs = splitPath(rt.pattern)
		m := "*"
		if len(rt.methods) > 0 {
			m = rt.methods[0]
		}
		rt.name = m + " " + rt.pattern
		if rt.limit == 0 && !rt.streamed {
			rt.limit = limits.SmallBody
		}
		if rt.rpc != "" {
			need, ok := authz.MethodNeed(rt.rpc)
			if !ok {
				return nil, fmt.Errorf("route %s: gRPC method %s has no scope in daemon/authz's table", rt.name, rt.rpc)
			}
			rt.need, rt.serve = need, (*Server).serveGateway
			if op, ok := authz.MethodRateOp(rt.rpc); ok {
				rt.rate = &op
			}
			rt.access = accessKey
			if need.Public {
				rt.access = accessPublic
			}
		}
		switch {
		case rt.access == accessUnset:
			return nil, fmt.Errorf("route %s has no scope: say public, worker or the key scopes it needs", rt.name)
		case rt.access == accessKey && len(rt.need.Scopes) == 0:
			return nil, fmt.Errorf("route %s needs a key but names no scope", rt.name)
		case rt.serve == nil:
			return nil, fmt.Errorf("route %s has no handler", rt.name)
		}
		if rt.rate != nil {
			rt.rateSeg = slices.IndexFunc(rt.segs, func(seg string) bool { return seg == "{endpoint}" || seg == "{endpoint_id}" })
			if rt.rateSeg < 0 {
				return nil, fmt.Errorf("route %s is rate-limited but has no {endpoint} segment", rt.name)
			}
		}
		rt.epSeg = -1
		if f := rt.need.EndpointField; f != "" {
			rt.epSeg = slices.Index(rt.segs, "{"+f+"}")
			if rt.epSeg < 0 {
				return nil, fmt.Errorf("route %s: its need names endpoint field %s, not in the path", rt.name, f)
			}
		}
	}
	return out, nil
}

// matchSegs reports whether segs (a cleaned path) match pattern.
func matchSegs(pattern, segs []string) bool {
	for i, p := range pattern {
		if strings.HasPrefix(p, "{") && strings.HasSuffix(p, "...}") {
			return i < len(segs)
		}
		if i >= len(segs) {
			return false
		}
		s := segs[i]
		switch {
		case !strings.HasPrefix(p, "{"):
			if s != p {
				return false
			}
		case strings.HasSuffix(p, "}"):
			if s == "" {
				return false
			}
		default:
			// "{id}:verb"
			_, verb, _ := strings.Cut(p, "}")
			if len(s) <= len(verb) || !strings.HasSuffix(s, verb) {
				return false
			}
		}
	}
	return len(pattern) == len(segs)
}

// findRoute returns the route for method and segs; when none matches, nil
// and the methods the path takes (none: no such path).
func findRoute(method string, segs []string) (*route, []string) {
	var allow []string
	for i := range routes {
		rt := &routes[i]
		if !matchSegs(rt.segs, segs) {
			continue
		}
		if rt.methods == nil || slices.Contains(rt.methods, method) {
			return rt, nil
		}
		allow = append(allow, rt.methods...)
	}
	return nil, allow
}

// endpointOf is the endpoint id a request to rt names ("" for none).
func (rt *route) endpointOf(segs []string) string {
	if rt.epSeg < 0 || rt.epSeg >= len(segs) {
		return ""
	}
	return segs[rt.epSeg]
}

// RouteInfo describes a route of the table: what end-to-end tests walk,
// so that they follow the table rather than a copy of it.
type RouteInfo struct {
	// Methods the route answers; nil for any.
	Methods []string
	// Pattern as in the table: "/v2/{endpoint}/run",
	// "/v1/workers/{id}:stop", "/v1/images/{ref...}".
	Pattern string
	// Access is "public", "worker" (a worker's token) or "key".
	Access string
	// Scopes are those that may call a "key" route (admin always may).
	Scopes []auth.Scope
	// Endpoint says the route is on the endpoint in its {endpoint} or
	// {endpoint_id} segment, which an invoke key must list (if it lists
	// any).
	Endpoint bool
	// RPC is the gRPC method a /v1 gateway route calls.
	RPC string
}

// Routes lists the route table.
func Routes() []RouteInfo {
	out := make([]RouteInfo, len(routes))
	for i, rt := range routes {
		a := map[access]string{accessPublic: "public", accessWorker: "worker", accessKey: "key"}[rt.access]
		out[i] = RouteInfo{Methods: slices.Clone(rt.methods), Pattern: rt.pattern, Access: a,
			Scopes: slices.Clone(rt.need.Scopes), Endpoint: rt.epSeg >= 0, RPC: rt.rpc}
	}
	return out
}
