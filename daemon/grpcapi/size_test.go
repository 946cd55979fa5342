package grpcapi

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	emberv1 "github.com/emberhq/ember/proto/ember/v1"
	"github.com/emberhq/ember/scheduler/limits"
)

// jobOfSize is a RunJobRequest whose encoding is exactly n bytes.
func jobOfSize(t *testing.T, n int) *emberv1.RunJobRequest {
	t.Helper()
	pad := n
	for range 8 {
		req := &emberv1.RunJobRequest{EndpointId: "ep", Input: structpb.NewStringValue(strings.Repeat("a", pad))}
		if size := proto.Size(req); size != n {
			pad += n - size
			continue
		}
		return req
	}
	t.Fatalf("no RunJobRequest of %d bytes", n)
	return nil
}

func TestSizeInterceptor(t *testing.T) {
	ic := SizeInterceptor()
	called := false
	handler := func(ctx context.Context, req any) (any, error) { called = true; return nil, nil }
	for _, tc := range []struct {
		name   string
		method string
		req    proto.Message
		want   codes.Code
		msg    []string
	}{
		{"run at the limit", emberv1.JobService_Run_FullMethodName, jobOfSize(t, limits.RunBody), codes.OK, nil},
		{"run over", emberv1.JobService_Run_FullMethodName, jobOfSize(t, limits.RunBody+1), codes.ResourceExhausted,
			[]string{"10 MiB (10485760 bytes)", "ember.v1.JobService/Run", `field "input"`}},
		{"runsync takes 20 MiB", emberv1.JobService_RunSync_FullMethodName, jobOfSize(t, limits.RunSyncBody), codes.OK, nil},
		{"runsync over", emberv1.JobService_RunSync_FullMethodName, jobOfSize(t, limits.RunSyncBody+1), codes.ResourceExhausted, []string{"20 MiB"}},
		{"other methods are small", emberv1.JobService_GetJob_FullMethodName, &emberv1.GetJobRequest{Id: strings.Repeat("x", limits.SmallBody)}, codes.ResourceExhausted,
			[]string{"64 KiB (65536 bytes)", `field "id"`}},
		{"small request", emberv1.JobService_GetJob_FullMethodName, &emberv1.GetJobRequest{Id: "j"}, codes.OK, nil},
	} {
		called = false
		_, err := ic(context.Background(), tc.req, &grpc.UnaryServerInfo{FullMethod: tc.method}, handler)
		st, _ := status.FromError(err)
		if st.Code() != tc.want || called != (tc.want == codes.OK) {
			t.Errorf("%s: %v (handler called %v), want %v", tc.name, err, called, tc.want)
			continue
		}
		for _, m := range tc.msg {
			if !strings.Contains(st.Message(), m) {
				t.Errorf("%s: %q does not say %q", tc.name, st.Message(), m)
			}
		}
	}
	if MaxRecvMsgSize != limits.RunSyncBody {
		t.Errorf("MaxRecvMsgSize %d, want the largest method limit %d", MaxRecvMsgSize, limits.RunSyncBody)
	}
}
