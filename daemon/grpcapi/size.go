package grpcapi

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	emberv1 "github.com/emberhq/ember/proto/ember/v1"
	"github.com/emberhq/ember/scheduler/limits"
)

// methodLimits are the request sizes of the methods that take more than a
// few fields: the same limits as their REST twins (scheduler/limits). A
// message's size is its protobuf encoding.
var methodLimits = map[string]int64{
	emberv1.JobService_Run_FullMethodName:                 limits.RunBody,
	emberv1.JobService_RunSync_FullMethodName:             limits.RunSyncBody,
	emberv1.EndpointService_CreateEndpoint_FullMethodName: limits.EndpointBody,
	emberv1.EndpointService_UpdateEndpoint_FullMethodName: limits.EndpointBody,
}

// MaxRecvMsgSize is the server's grpc.MaxRecvMsgSize: the largest method
// limit. Above it the transport refuses a message before decoding it
// (ResourceExhausted, "received message larger than max"); below it
// SizeInterceptor applies each method's own limit.
const MaxRecvMsgSize = max(limits.RunBody, limits.RunSyncBody, limits.EndpointBody)

// methodLimit is a method's request limit: its entry in methodLimits, else
// limits.SmallBody.
func methodLimit(fullMethod string) int64 {
	if n, ok := methodLimits[fullMethod]; ok {
		return n
	}
	return limits.SmallBody
}

// SizeInterceptor refuses a request message over its method's limit with
// ResourceExhausted, naming the method, the limit and the largest field.
func SizeInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		m, ok := req.(proto.Message)
		if !ok {
			return handler(ctx, req)
		}
		limit := methodLimit(info.FullMethod)
		if n := int64(proto.Size(m)); n > limit {
			return nil, status.Error(codes.ResourceExhausted, sizeMessage(info.FullMethod, m, n, limit))
		}
		return handler(ctx, req)
	}
}

// sizeMessage says which limit m broke, and which of its fields is the
// largest (the one to make smaller).
func sizeMessage(method string, m proto.Message, size, limit int64) string {
	msg := fmt.Sprintf("request message of %d bytes is over the %d MiB (%d bytes) limit of %s", size, limit>>20, limit, strings.TrimPrefix(method, "/"))
	if limit < 1<<20 {
		msg = fmt.Sprintf("request message of %d bytes is over the %d KiB (%d bytes) limit of %s", size, limit>>10, limit, strings.TrimPrefix(method, "/"))
	}
	if name, n := largestField(m); name != "" {
		msg += fmt.Sprintf(": field %q is %d bytes", name, n)
	}
	return msg
}

// largestField finds the top-level field of m whose encoding is largest
// (each field measured alone in an otherwise empty message).
func largestField(m proto.Message) (string, int) {
	r := m.ProtoReflect()
	best, bestN := "", 0
	r.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		one := r.New()
		one.Set(fd, v)
		if n := proto.Size(one.Interface()); n > bestN {
			best, bestN = fd.JSONName(), n
		}
		return true
	})
	return best, bestN
}
