package grpcapi

import (
	"context"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/daemon/ratelimit"
	emberv1 "github.com/emberhq/ember/proto/ember/v1"
)

func TestRateLimitInterceptor(t *testing.T) {
	lims, err := ratelimit.Parse("run=2/10s,cancel=-:1")
	if err != nil {
		t.Fatal(err)
	}
	ic := RateLimitInterceptor(ratelimit.New(lims))
	ctx := auth.WithCaller(context.Background(), auth.Caller{KeyID: "k-g", Name: "g", Scope: auth.Invoke})
	call := func(ctx context.Context, method string, req any, handler grpc.UnaryHandler) error {
		if handler == nil {
			handler = func(context.Context, any) (any, error) { return "ok", nil }
		}
		_, err := ic(ctx, req, &grpc.UnaryServerInfo{FullMethod: method}, handler)
		return err
	}
	run := &emberv1.RunJobRequest{EndpointId: "ep1"}
	for i := range 2 {
		if err := call(ctx, emberv1.JobService_Run_FullMethodName, run, nil); err != nil {
			t.Fatalf("run %d: %v", i+1, err)
		}
	}
	// RetryJob shares Run's budget, as /retry shares /run's.
	err = call(ctx, emberv1.JobService_RetryJob_FullMethodName, &emberv1.RetryJobRequest{EndpointId: "ep1", Id: "j"}, nil)
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("3rd: %v, want RESOURCE_EXHAUSTED", err)
	}
	var retry *errdetails.RetryInfo
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.RetryInfo:
			retry = d
		case *errdetails.ErrorInfo:
			info = d
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() != 5*time.Second || info == nil || info.GetReason() != auth.ReasonRate {
		t.Errorf("details: retry %v, info %v", retry, info)
	}
	// Another endpoint, and methods not limited, pass.
	if err := call(ctx, emberv1.JobService_Run_FullMethodName, &emberv1.RunJobRequest{EndpointId: "ep2"}, nil); err != nil {
		t.Errorf("another endpoint: %v", err)
	}
	for range 5 {
		if err := call(ctx, emberv1.JobService_GetEndpointHealth_FullMethodName, &emberv1.GetEndpointHealthRequest{EndpointId: "ep1"}, nil); err != nil {
			t.Errorf("health: %v", err)
		}
	}
	// The concurrency slot is held while the handler runs.
	cancel := &emberv1.CancelJobRequest{EndpointId: "ep1", Id: "j"}
	err = call(ctx, emberv1.JobService_CancelJob_FullMethodName, cancel, func(ctx context.Context, _ any) (any, error) {
		inner := call(ctx, emberv1.JobService_CancelJob_FullMethodName, cancel, nil)
		if status.Code(inner) != codes.ResourceExhausted {
			t.Errorf("a 2nd cancel in flight: %v", inner)
		}
		return "ok", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := call(ctx, emberv1.JobService_CancelJob_FullMethodName, cancel, nil); err != nil {
		t.Errorf("cancel after the first ended: %v", err)
	}
	// A nil limiter limits nothing.
	for range 5 {
		if _, err := RateLimitInterceptor(nil)(ctx, run, &grpc.UnaryServerInfo{FullMethod: emberv1.JobService_Run_FullMethodName},
			func(context.Context, any) (any, error) { return nil, nil }); err != nil {
			t.Fatal(err)
		}
	}
}
