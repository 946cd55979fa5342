package grpcapi

import (
	"context"
	"net/http"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/daemon/ratelimit"
	emberv1 "github.com/emberhq/ember/proto/ember/v1"
)

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

// MethodRateOp is the rate-limited operation method counts as, for the
// /v1 gateway routes that call it (httpapi's route table).
func MethodRateOp(method string) (ratelimit.Op, bool) {
	op, ok := rateOps[method]
	return op, ok
}

// RateLimitInterceptor applies l to JobService's calls, keyed on the
// caller's key id (auth.FromContext; a call with no caller is on a public
// method and has no budget) and the request's endpoint id. It must come after
// authentication in the chain. Over a limit it answers RESOURCE_EXHAUSTED
// with a RetryInfo detail (the delay) and an ErrorInfo detail (reason
// "rate" or "concurrency"), and counts the refusal as a 429. A nil l
// limits nothing.
func RateLimitInterceptor(l *ratelimit.Limiter) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		op, limited := rateOps[info.FullMethod]
		er, hasEP := req.(interface{ GetEndpointId() string })
		if l == nil || !limited || !hasEP {
			return handler(ctx, req)
		}
		c, ok := auth.FromContext(ctx)
		if !ok {
			return handler(ctx, req)
		}
		release, refused := l.Allow(c.KeyID, er.GetEndpointId(), op)
		if refused != nil {
			auth.CountRefused(http.StatusTooManyRequests, refused.Reason)
			return nil, rateStatus(refused)
		}
		defer release()
		return handler(ctx, req)
	}
}

// rateStatus is the RESOURCE_EXHAUSTED status of a refusal.
func rateStatus(ref *ratelimit.Refusal) error {
	st := status.New(codes.ResourceExhausted, ref.Error())
	if d, err := st.WithDetails(
		&errdetails.RetryInfo{RetryDelay: durationpb.New(ref.RetryAfter)},
		&errdetails.ErrorInfo{Reason: ref.Reason, Domain: "ember"},
	); err == nil {
		st = d
	}
	return st.Err()
}
