package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/daemon/keys"
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

// GRPCStatus is the refusal as a gRPC status: Unauthenticated or
// PermissionDenied, with the same message.
func (r *Refusal) GRPCStatus() *status.Status {
	if r.Code == http.StatusForbidden {
		return status.New(codes.PermissionDenied, r.Message)
	}
	return status.New(codes.Unauthenticated, r.Message)
}

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

// metadataKey is the key in the "authorization" metadata, Bearer or bare
// (as on REST).
func metadataKey(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get("authorization")
	if len(v) == 0 {
		return ""
	}
	got := strings.TrimSpace(v[0])
	if len(got) > 7 && strings.EqualFold(got[:7], "bearer ") {
		got = strings.TrimSpace(got[7:])
	}
	return got
}

// authorizeCall authenticates and authorizes a call to method; req is its
// request message (nil for a stream, whose endpoint is checked on its
// first message). It returns the context carrying the caller.
func authorizeCall(ctx context.Context, lookup Lookup, method string, req any) (context.Context, Need, error) {
	need, ok := MethodNeed(method)
	if !ok {
		return nil, need, status.Errorf(codes.Unimplemented, "method %s has no entry in emberd's scope table; refused", method)
	}
	if need.Public {
		return ctx, need, nil
	}
	c, ref := Authenticate(lookup, metadataKey(ctx))
	if ref == nil {
		ep := ""
		if req != nil {
			ep = endpointOf(req, need.EndpointField)
		}
		if req != nil || need.EndpointField == "" || c.Scope != auth.Invoke || len(c.Endpoints) == 0 {
			ref = Authorize(c, need, strings.TrimPrefix(method, "/"), ep)
		} else {
			// A stream with an endpoint field: the scope now, the
			// endpoint on the first message.
			ref = Authorize(c, Need{Scopes: need.Scopes}, strings.TrimPrefix(method, "/"), "")
		}
	}
	if ref != nil {
		ref.Count()
		return nil, need, ref.GRPCStatus().Err()
	}
	return auth.WithCaller(ctx, c), need, nil
}

// endpointOf reads the string field named field of a request message.
func endpointOf(req any, field string) string {
	m, ok := req.(proto.Message)
	if field == "" || !ok {
		return ""
	}
	r := m.ProtoReflect()
	fd := r.Descriptor().Fields().ByName(protoreflect.Name(field))
	if fd == nil {
		return ""
	}
	return r.Get(fd).String()
}

// UnaryAuth is the unary interceptor that authenticates every call but the
// public ones (MethodNeed) with the "authorization" metadata, authorizes it
// by the method's scope and endpoint, and puts the caller in the context
// (auth.WithCaller). Refusals are Unauthenticated or PermissionDenied with
// the REST refusal's text.
func UnaryAuth(lookup Lookup) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, _, err := authorizeCall(ctx, lookup, info.FullMethod, req)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamAuth is UnaryAuth for streams. A stream's endpoint (for an invoke
// key that lists endpoints) is checked on each message the client sends.
func StreamAuth(lookup Lookup) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, need, err := authorizeCall(ss.Context(), lookup, info.FullMethod, nil)
		if err != nil {
			return err
		}
		return handler(srv, &authStream{ServerStream: ss, ctx: ctx, need: need, method: info.FullMethod})
	}
}

// authStream carries the caller's context and checks each received
// message's endpoint.
type authStream struct {
	grpc.ServerStream
	ctx    context.Context
	need   Need
	method string
}

func (s *authStream) Context() context.Context { return s.ctx }

func (s *authStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	c, ok := auth.FromContext(s.ctx)
	if !ok || s.need.EndpointField == "" {
		return nil
	}
	if ref := Authorize(c, s.need, strings.TrimPrefix(s.method, "/"), endpointOf(m, s.need.EndpointField)); ref != nil {
		ref.Count()
		return ref.GRPCStatus().Err()
	}
	return nil
}
