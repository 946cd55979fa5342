package grpcapi

import (
	"context"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/daemon/authz"
)

// refusalStatus is a refusal as a gRPC status: Unauthenticated or
// PermissionDenied, with the REST refusal's message.
func refusalStatus(r *authz.Refusal) *status.Status {
	if r.Code == http.StatusForbidden {
		return status.New(codes.PermissionDenied, r.Message)
	}
	return status.New(codes.Unauthenticated, r.Message)
}

// metadataKey is the key in the "authorization" metadata, Bearer or bare
// (as on REST).
func metadataKey(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get("authorization")
	if len(v) == 0 {
		return ""
	}
	return authz.PresentedKey(v[0])
}

// authorizeCall authenticates and authorizes a call to method; req is its
// request message (nil for a stream, whose endpoint is checked on its
// first message). It returns the context carrying the caller.
func authorizeCall(ctx context.Context, lookup authz.Lookup, method string, req any) (context.Context, authz.Need, error) {
	need, ok := authz.MethodNeed(method)
	if !ok {
		return nil, need, status.Errorf(codes.Unimplemented, "method %s has no entry in emberd's scope table; refused", method)
	}
	if need.Public {
		return ctx, need, nil
	}
	c, ref := authz.Authenticate(lookup, metadataKey(ctx))
	if ref == nil {
		ep := ""
		if req != nil {
			ep = endpointOf(req, need.EndpointField)
		}
		if req != nil || need.EndpointField == "" || c.Scope != auth.Invoke || len(c.Endpoints) == 0 {
			ref = authz.Authorize(c, need, strings.TrimPrefix(method, "/"), ep)
		} else {
			// A stream with an endpoint field: the scope now, the
			// endpoint on the first message.
			ref = authz.Authorize(c, authz.Need{Scopes: need.Scopes}, strings.TrimPrefix(method, "/"), "")
		}
	}
	if ref != nil {
		ref.Count()
		return nil, need, refusalStatus(ref).Err()
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
// public ones (authz.MethodNeed) with the "authorization" metadata,
// authorizes it by the method's scope and endpoint, and puts the caller in
// the context (auth.WithCaller). Refusals are Unauthenticated or
// PermissionDenied with the REST refusal's text.
func UnaryAuth(lookup authz.Lookup) grpc.UnaryServerInterceptor {
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
func StreamAuth(lookup authz.Lookup) grpc.StreamServerInterceptor {
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
	need   authz.Need
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
	if ref := authz.Authorize(c, s.need, strings.TrimPrefix(s.method, "/"), endpointOf(m, s.need.EndpointField)); ref != nil {
		ref.Count()
		return refusalStatus(ref).Err()
	}
	return nil
}
