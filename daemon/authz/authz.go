// Package authz is the one check of who may call what, for every
// transport of emberd: REST (daemon/httpapi), the /v1 gateway (its routes
// name their gRPC method) and gRPC (daemon/grpcapi). It owns the table of
// what each gRPC method needs (scopes, and the request field naming its
// endpoint) and which rate-limited operation it counts as, the key check
// (Authenticate), the scope check (Authorize), and the refusals' texts,
// which both transports show word for word.
//
// The vocabulary (scopes, the caller, refusal reasons) is daemon/auth's;
// the keys and their lookup errors are daemon/keys'. It is a package of its
// own, not part of daemon/auth, because it reads daemon/keys' errors (keys
// imports auth) and names the generated gRPC methods (proto/ember/v1),
// which auth's importers (keys, audit, ratelimit) need not link. This
// package must not import the transports (daemon/httpapi,
// daemon/grpcapi): they import it.
package authz

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/daemon/keys"
	"github.com/emberhq/ember/daemon/ratelimit"
	emberv1 "github.com/emberhq/ember/proto/ember/v1"
)

// Need is what a method (or a REST route) asks of its caller.
type Need struct {
	// Public methods need no key.
	Public bool
	// Scopes are the scopes that may call it; an admin key may call
	// everything. Empty only when Public.
	Scopes []auth.Scope
	// EndpointField names the request field holding the endpoint id, for
	// methods on one endpoint: an invoke key that lists endpoints may call
	// them only for those. Empty for methods not on one endpoint.
	EndpointField string
}

var (
	needAdmin      = Need{Scopes: []auth.Scope{auth.Admin}}
	needRead       = Need{Scopes: []auth.Scope{auth.Read}}
	needInvoke     = Need{Scopes: []auth.Scope{auth.Invoke}, EndpointField: "endpoint_id"}
	needReadInvoke = Need{Scopes: []auth.Scope{auth.Read, auth.Invoke}, EndpointField: "endpoint_id"}
	// needAnyKey is reflection's: any valid key, whatever its scope.
	needAnyKey = Need{Scopes: []auth.Scope{auth.Read, auth.Invoke}}
	needPublic = Need{Public: true}
)

// methodNeeds is the one table of what each Ember gRPC method needs. The
// /v1 REST gateway routes take their need from here too (httpapi's route
// table names each one's method), so the two transports cannot disagree.
//
// Job submission and job reads (status, stream: they carry the job's input
// and output) are invoke, as on /v2; endpoint and image metadata, stats and
// health are read; what changes the daemon's set-up, and PurgeQueue (it
// throws away every client's queued work), is admin.
var methodNeeds = map[string]Need{
	emberv1.EndpointService_CreateEndpoint_FullMethodName:   needAdmin,
	emberv1.EndpointService_ListEndpoints_FullMethodName:    needRead,
	emberv1.EndpointService_GetEndpoint_FullMethodName:      needRead,
	emberv1.EndpointService_UpdateEndpoint_FullMethodName:   needAdmin,
	emberv1.EndpointService_GetEndpointStats_FullMethodName: needRead,
	emberv1.EndpointService_DeleteEndpoint_FullMethodName:   needAdmin,

	emberv1.JobService_Run_FullMethodName:               needInvoke,
	emberv1.JobService_RunSync_FullMethodName:           needInvoke,
	emberv1.JobService_GetJob_FullMethodName:            needInvoke,
	emberv1.JobService_StreamJob_FullMethodName:         needInvoke,
	emberv1.JobService_CancelJob_FullMethodName:         needInvoke,
	emberv1.JobService_RetryJob_FullMethodName:          needInvoke,
	emberv1.JobService_PurgeQueue_FullMethodName:        needAdmin,
	emberv1.JobService_GetEndpointHealth_FullMethodName: needReadInvoke,

	emberv1.HealthService_Check_FullMethodName: needPublic,

	emberv1.ImageService_ImportImage_FullMethodName: needAdmin,
	emberv1.ImageService_PullImage_FullMethodName:   needAdmin,
	emberv1.ImageService_GetImage_FullMethodName:    needRead,
	emberv1.ImageService_ListImages_FullMethodName:  needRead,
	emberv1.ImageService_DeleteImage_FullMethodName: needAdmin,
}

// serviceNeeds covers whole services that are not Ember's own: the
// standard health service needs no key (like /healthz and
// ember.v1.HealthService), server reflection any valid key.
var serviceNeeds = map[string]Need{
	"grpc.health.v1.Health":                    needPublic,
	"grpc.reflection.v1.ServerReflection":      needAnyKey,
	"grpc.reflection.v1alpha.ServerReflection": needAnyKey,
}

// MethodNeed returns what fullMethod ("/ember.v1.JobService/Run") needs,
// and false for a method in no table (refused: a method added without a
// scope is closed, not open).
func MethodNeed(fullMethod string) (Need, bool) {
	if n, ok := methodNeeds[fullMethod]; ok {
		return n, true
	}
	svc, _, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if !ok {
		return Need{}, false
	}
	n, ok := serviceNeeds[svc]
	return n, ok
}

// Refusal is why a request was refused: 401 (no key, a wrong or expired
// key) or 403 (a key without the scope, or without the endpoint). Its
// message names the key's id and name and what was needed, never a secret;
// REST and gRPC show the same text.
type Refusal struct {
	// Code is http.StatusUnauthorized or http.StatusForbidden.
	Code int
	// Reason is one of auth's Reason constants.
	Reason  string
	Message string
	// KeyID is the key's id when known.
	KeyID string
	// NeededScope is set on a 403.
	NeededScope auth.Scope
	// ExpiresAt is set when the key expired.
	ExpiresAt time.Time
}

// Count adds the refusal to auth.Refused.
func (r *Refusal) Count() { auth.CountRefused(r.Code, r.Reason) }

// Lookup returns the caller a secret proves (keys.Store.Lookup): errors
// keys.ErrMissing, keys.ErrWrong or *keys.ExpiredError.
type Lookup func(secret string) (auth.Caller, error)

// keyHint says how to send a key, in 401s.
const keyHint = `send "authorization: Bearer KEY"`

// Authenticate finds the caller of secret, or says why there is none.
func Authenticate(lookup Lookup, secret string) (auth.Caller, *Refusal) {
	if secret == "" {
		return auth.Caller{}, &Refusal{Code: http.StatusUnauthorized, Reason: auth.ReasonMissingKey, Message: "missing API key: " + keyHint}
	}
	c, err := lookup(secret)
	var ee *keys.ExpiredError
	switch {
	case err == nil:
		return c, nil
	case errors.As(err, &ee):
		return auth.Caller{}, &Refusal{Code: http.StatusUnauthorized, Reason: auth.ReasonExpired,
			Message:   fmt.Sprintf("API key %s (%s) expired at %s; create a new key (ember key create)", ee.Caller.KeyID, ee.Caller.Name, ee.Caller.ExpiresAt.UTC().Format(time.RFC3339)),
			KeyID:     ee.Caller.KeyID,
			ExpiresAt: ee.Caller.ExpiresAt.UTC()}
	case errors.Is(err, keys.ErrMissing):
		return auth.Caller{}, &Refusal{Code: http.StatusUnauthorized, Reason: auth.ReasonMissingKey, Message: "missing API key: " + keyHint}
	}
	// ErrWrong, or anything else: never the presented secret in the text.
	return auth.Caller{}, &Refusal{Code: http.StatusUnauthorized, Reason: auth.ReasonWrongKey,
		Message: "wrong API key: no live key has it (revoked, rotated or mistyped); " + keyHint}
}

// Authorize says whether c may call what (a route or method, as shown in
// the message) that needs need, on endpoint (the request's endpoint id;
// "" for none): nil when it may.
func Authorize(c auth.Caller, need Need, what, endpoint string) *Refusal {
	if need.Public {
		return nil
	}
	scope := auth.Scope("")
	for _, s := range need.Scopes {
		if c.Allows(s) {
			scope = s
			break
		}
	}
	if scope == "" {
		want := need.Scopes
		if len(want) == 0 {
			want = []auth.Scope{auth.Admin}
		}
		names := make([]string, len(want))
		for i, s := range want {
			names[i] = string(s)
		}
		return &Refusal{Code: http.StatusForbidden, Reason: auth.ReasonScope, KeyID: c.KeyID, NeededScope: want[0],
			Message: fmt.Sprintf("key %s (%s) has scope %s; %s needs scope %s", c.KeyID, c.Name, c.Scope, what, strings.Join(names, " or "))}
	}
	// Only an invoke key carries an endpoint list; read and admin keys
	// reach every endpoint.
	if c.Scope == auth.Invoke && need.EndpointField != "" && !c.AllowsEndpoint(endpoint) {
		return &Refusal{Code: http.StatusForbidden, Reason: auth.ReasonEndpoint, KeyID: c.KeyID, NeededScope: auth.Invoke,
			Message: fmt.Sprintf("key %s (%s) does not list endpoint %s; it may invoke only %s", c.KeyID, c.Name, endpoint, strings.Join(c.Endpoints, ", "))}
	}
	return nil
}

// PresentedKey is the secret in an Authorization header (HTTP) or
// "authorization" metadata (gRPC): "Bearer KEY" (the SDKs) or the bare key
// (RunPod's curl examples and the worker SDK).
func PresentedKey(v string) string {
	v = strings.TrimSpace(v)
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.TrimSpace(v[7:])
	}
	return v
}

// rateOps are the JobService methods the rate limiter counts, as the /v2
// routes they mirror (GetEndpointHealth, like /health, is not limited).
var rateOps = map[string]ratelimit.Op{
	emberv1.JobService_Run_FullMethodName:        ratelimit.Run,
	emberv1.JobService_RunSync_FullMethodName:    ratelimit.RunSync,
	emberv1.JobService_GetJob_FullMethodName:     ratelimit.Status,
	emberv1.JobService_StreamJob_FullMethodName:  ratelimit.Stream,
	emberv1.JobService_CancelJob_FullMethodName:  ratelimit.Cancel,
	emberv1.JobService_RetryJob_FullMethodName:   ratelimit.Run,
	emberv1.JobService_PurgeQueue_FullMethodName: ratelimit.PurgeQueue,
}

// MethodRateOp is the rate-limited operation method counts as, for gRPC's
// rate limiter and the /v1 gateway routes that call it (httpapi's route
// table).
func MethodRateOp(method string) (ratelimit.Op, bool) {
	op, ok := rateOps[method]
	return op, ok
}
