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
	"github.com/emberhq/ember/daemon/authz"
	"github.com/emberhq/ember/daemon/ratelimit"
)

// RateLimitInterceptor applies l to JobService's calls, keyed on the
// caller's key id (auth.FromContext; a call with no caller is on a public
// method and has no budget) and the request's endpoint id. It must come after
// authentication in the chain. Over a limit it answers RESOURCE_EXHAUSTED
// with a RetryInfo detail (the delay) and an ErrorInfo detail (reason
// "rate" or "concurrency"), and counts the refusal as a 429. A nil l
// limits nothing.
func RateLimitInterceptor(l *ratelimit.Limiter) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		op, limited := authz.MethodRateOp(info.FullMethod)
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
