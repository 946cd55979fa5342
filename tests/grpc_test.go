package tests

// End-to-end test of Ember's gRPC API (proto/ember/v1) with a real Go gRPC
// client against emberd's --grpc-listen.

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/structpb"

	emberv1 "github.com/emberhq/ember/proto/ember/v1"
)

func grpcConn(t testing.TB, d *Daemon) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(d.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient %s: %v", d.GRPC, err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func grpcCode(t testing.TB, what string, err error, want codes.Code) {
	t.Helper()
	if status.Code(err) != want {
		t.Errorf("%s: got %v (%v), want %v", what, status.Code(err), err, want)
	}
}

// TestGRPC_API: endpoint CRUD, a job run to completion, and authentication.
func TestGRPC_API(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	cc := grpcConn(t, d)
	eps := emberv1.NewEndpointServiceClient(cc)
	jobs := emberv1.NewJobServiceClient(cc)
	health := emberv1.NewHealthServiceClient(cc)

	base, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ctx := metadata.AppendToOutgoingContext(base, "authorization", "Bearer "+d.Key)

	// Authentication: no key, wrong key; the bare key works too.
	_, err := eps.ListEndpoints(base, &emberv1.ListEndpointsRequest{})
	grpcCode(t, "ListEndpoints without a key", err, codes.Unauthenticated)
	_, err = eps.CreateEndpoint(base, &emberv1.CreateEndpointRequest{Endpoint: &emberv1.Endpoint{Name: "grpc-nokey", Command: []string{workerBin}}})
	grpcCode(t, "CreateEndpoint without a key", err, codes.Unauthenticated)
	_, err = jobs.Run(metadata.AppendToOutgoingContext(base, "authorization", "Bearer wrong"), &emberv1.RunJobRequest{EndpointId: "x", Input: structpb.NewStringValue("x")})
	grpcCode(t, "Run with a wrong key", err, codes.Unauthenticated)
	if _, err := eps.ListEndpoints(metadata.AppendToOutgoingContext(base, "authorization", d.Key), &emberv1.ListEndpointsRequest{}); err != nil {
		t.Errorf("ListEndpoints with the bare key: %v", err)
	}
	if hc, err := health.Check(base, &emberv1.HealthCheckRequest{}); err != nil || hc.GetStatus() != "SERVING" {
		t.Errorf("Check (no key needed): %v %v", hc, err)
	}

	// Create with defaults.
	created, err := eps.CreateEndpoint(ctx, &emberv1.CreateEndpointRequest{Endpoint: &emberv1.Endpoint{
		Name:        "grpc-ep",
		Command:     []string{workerBin},
		GpuCount:    proto.Int32(0),
		IdleTimeout: proto.Int32(5),
	}})
	if err != nil {
		t.Fatalf("CreateEndpoint: %v", err)
	}
	if created.GetId() == "" || created.GetName() != "grpc-ep" || created.GetWorkersMax() != 3 || created.GetScalerType() != "QUEUE_DELAY" ||
		created.GetScalerValue() != 4 || created.GetExecutionTimeoutMs() != 600000 || created.GetGpuCount() != 0 || created.GetIdleTimeout() != 5 {
		t.Errorf("created endpoint %v", created)
	}
	if created.GetCreatedAt() == nil || created.GetUpdatedAt() == nil {
		t.Errorf("created endpoint lacks timestamps: %v", created)
	}
	id := created.GetId()
	_, err = eps.CreateEndpoint(ctx, &emberv1.CreateEndpointRequest{Endpoint: &emberv1.Endpoint{Name: "grpc-bad", Command: []string{workerBin}, WorkersMax: proto.Int32(0)}})
	grpcCode(t, "CreateEndpoint workersMax 0", err, codes.InvalidArgument)
	if err != nil && !strings.Contains(err.Error(), "workersMax") {
		t.Errorf("CreateEndpoint workersMax 0: %v does not name the field", err)
	}

	// A taken name: ALREADY_EXISTS (409 through the gateway), the message
	// naming the name and not starting with "conflict:".
	_, err = eps.CreateEndpoint(ctx, &emberv1.CreateEndpointRequest{Endpoint: &emberv1.Endpoint{Name: "grpc-ep", Command: []string{workerBin}}})
	grpcCode(t, "CreateEndpoint with a taken name", err, codes.AlreadyExists)
	if msg := status.Convert(err).Message(); !strings.HasPrefix(msg, `an endpoint named "grpc-ep" already exists`) {
		t.Errorf("CreateEndpoint with a taken name: message %q", msg)
	}

	got, err := eps.GetEndpoint(ctx, &emberv1.GetEndpointRequest{Id: id})
	if err != nil || !proto.Equal(got, created) {
		t.Errorf("GetEndpoint: %v %v, want %v", got, err, created)
	}
	_, err = eps.GetEndpoint(ctx, &emberv1.GetEndpointRequest{Id: "nosuchendpoint"})
	grpcCode(t, "GetEndpoint unknown", err, codes.NotFound)

	list, err := eps.ListEndpoints(ctx, &emberv1.ListEndpointsRequest{})
	if err != nil || len(list.GetEndpoints()) != 1 || list.GetEndpoints()[0].GetId() != id {
		t.Errorf("ListEndpoints: %v %v", list, err)
	}

	// Update one field through the mask; the rest stays.
	upd, err := eps.UpdateEndpoint(ctx, &emberv1.UpdateEndpointRequest{
		Id:         id,
		Endpoint:   &emberv1.Endpoint{WorkersMax: proto.Int32(2), ScalerValue: proto.Int32(99)},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"workers_max"}},
	})
	if err != nil {
		t.Fatalf("UpdateEndpoint: %v", err)
	}
	if upd.GetWorkersMax() != 2 || upd.GetScalerValue() != 4 || upd.GetName() != "grpc-ep" || upd.GetIdleTimeout() != 5 || len(upd.GetCommand()) != 1 {
		t.Errorf("UpdateEndpoint workers_max: %v", upd)
	}
	if got, _ := eps.GetEndpoint(ctx, &emberv1.GetEndpointRequest{Id: id}); got.GetWorkersMax() != 2 {
		t.Errorf("GetEndpoint after update: %v", got)
	}

	// A job through Run and GetJob(wait).
	input, _ := structpb.NewValue(map[string]any{"hello": "grpc", "n": 3})
	run, err := jobs.Run(ctx, &emberv1.RunJobRequest{EndpointId: id, Input: input})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if run.GetId() == "" || run.GetStatus() != "IN_QUEUE" || strings.HasPrefix(run.GetId(), "sync-") {
		t.Errorf("Run answered %v", run)
	}
	var job *emberv1.Job
	for i := 0; i < 5; i++ {
		job, err = jobs.GetJob(ctx, &emberv1.GetJobRequest{EndpointId: id, Id: run.GetId(), Wait: 5000})
		if err != nil {
			t.Fatalf("GetJob: %v", err)
		}
		if job.GetStatus() == "COMPLETED" || job.GetStatus() == "FAILED" {
			break
		}
	}
	if job.GetStatus() != "COMPLETED" {
		t.Fatalf("job after GetJob(wait): %v\n%s", job, d.Log())
	}
	want, _ := structpb.NewValue(map[string]any{"echo": map[string]any{"hello": "grpc", "n": 3}})
	if !proto.Equal(job.GetOutput(), want) {
		t.Errorf("output %v, want %v", job.GetOutput(), want)
	}
	if job.GetWorkerId() == "" || job.GetEndpointId() != id || job.GetId() != run.GetId() {
		t.Errorf("job %v", job)
	}
	_, err = jobs.GetJob(ctx, &emberv1.GetJobRequest{EndpointId: id, Id: "no-such-job"})
	grpcCode(t, "GetJob unknown", err, codes.NotFound)
	// A COMPLETED job cannot be retried: FAILED_PRECONDITION, the message
	// saying why.
	_, err = jobs.RetryJob(ctx, &emberv1.RetryJobRequest{EndpointId: id, Id: run.GetId()})
	grpcCode(t, "RetryJob of a COMPLETED job", err, codes.FailedPrecondition)
	if msg := status.Convert(err).Message(); msg != "job "+run.GetId()+" is COMPLETED; only FAILED or TIMED_OUT jobs can be retried" {
		t.Errorf("RetryJob of a COMPLETED job: message %q", msg)
	}
	_, err = jobs.Run(ctx, &emberv1.RunJobRequest{EndpointId: id})
	grpcCode(t, "Run without input", err, codes.InvalidArgument)
	_, err = jobs.GetJob(base, &emberv1.GetJobRequest{EndpointId: id, Id: run.GetId()})
	grpcCode(t, "GetJob without a key", err, codes.Unauthenticated)

	// The REST client API sees the same job.
	st := caJSON(t, d, "GET", "/v2/"+id+"/status/"+run.GetId(), nil, 200)
	if st["status"] != "COMPLETED" || st["workerId"] != job.GetWorkerId() {
		t.Errorf("/status of the gRPC job: %v", st)
	}

	// Delete.
	if _, err := eps.DeleteEndpoint(ctx, &emberv1.DeleteEndpointRequest{Id: id}); err != nil {
		t.Fatalf("DeleteEndpoint: %v", err)
	}
	_, err = eps.GetEndpoint(ctx, &emberv1.GetEndpointRequest{Id: id})
	grpcCode(t, "GetEndpoint after delete", err, codes.NotFound)
	_, err = eps.DeleteEndpoint(ctx, &emberv1.DeleteEndpointRequest{Id: id})
	grpcCode(t, "DeleteEndpoint twice", err, codes.NotFound)
	if list, err := eps.ListEndpoints(ctx, &emberv1.ListEndpointsRequest{}); err != nil || len(list.GetEndpoints()) != 0 {
		t.Errorf("ListEndpoints after delete: %v %v", list, err)
	}
}
