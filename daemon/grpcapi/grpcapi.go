// Package grpcapi implements Ember's gRPC services (proto/ember/v1) on top
// of the scheduler. The REST gateway under /v1 calls the same servers.
package grpcapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/emberhq/ember/daemon/audit"
	emberv1 "github.com/emberhq/ember/proto/ember/v1"
	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/spec"
)

// Version is reported by the health service; set by the daemon at start.
var Version = "dev"

// Servers bundles the three services.
type Servers struct {
	emberv1.UnimplementedEndpointServiceServer
	emberv1.UnimplementedJobServiceServer
	emberv1.UnimplementedHealthServiceServer
	S *scheduler.Scheduler
	// Log receives the audit trail of endpoint changes and purges
	// (daemon/audit); nil: slog.Default().
	Log *slog.Logger
}

// Register adds the services to a gRPC server.
func (sv *Servers) Register(g *grpc.Server) {
	emberv1.RegisterEndpointServiceServer(g, sv)
	emberv1.RegisterJobServiceServer(g, sv)
	emberv1.RegisterHealthServiceServer(g, sv)
}

// toStatus maps scheduler errors to gRPC codes (the gateway maps those to
// HTTP: InvalidArgument 400, NotFound 404, AlreadyExists 409, and
// FailedPrecondition 409 through conflict, ...).
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	var fe *spec.FieldError
	if se, ok := asStorage(err); ok {
		return storageStatus(err, se)
	}
	switch {
	case errors.As(err, &fe):
		return status.Error(codes.InvalidArgument, fe.Error())
	case errors.Is(err, scheduler.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, scheduler.ErrExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, scheduler.ErrConflict):
		// FAILED_PRECONDITION is gRPC's code for a state that refuses the
		// call; through the gateway it is a 409, as on /v2.
		return conflict(status.New(codes.FailedPrecondition, err.Error()))
	case errors.Is(err, scheduler.ErrForbidden):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, scheduler.ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Internal, err.Error())
}

// ---- endpoints ----

// specFrom maps an endpoint message to the fields a create or update sets.
// mask nil (a create, or an update without a mask) gives every field the
// message holds: an optional field that is present, a string, list or map
// that is not empty. A mask gives the fields it names, empty ones too (a
// masked "" or [] clears); names it has that are not settable fields are
// ignored.
func specFrom(e *emberv1.Endpoint, mask []string) spec.EndpointSpec {
	var sp spec.EndpointSpec
	if e == nil {
		return sp
	}
	for _, f := range endpointFields {
		if mask == nil || slices.Contains(mask, f.path) {
			f.set(e, &sp, mask != nil)
		}
	}
	return sp
}

// endpointFields are the settable fields of emberv1.Endpoint, by the
// proto names an update mask uses, with what sets each in a spec. named
// says the update mask names the field, which then applies even empty.
// The read-only fields (id, generation, template, template_version,
// created_at, updated_at) are not
// here; a test checks that every other field of the message is.
var endpointFields = []struct {
	path string
	set  func(e *emberv1.Endpoint, sp *spec.EndpointSpec, named bool)
}{
	{"name", func(e *emberv1.Endpoint, sp *spec.EndpointSpec, named bool) {
		sp.Name = nonEmpty(e.Name, len(e.Name), named)
	}},
	{"image", func(e *emberv1.Endpoint, sp *spec.EndpointSpec, named bool) {
		sp.Image = nonEmpty(e.Image, len(e.Image), named)
	}},
	{"command", func(e *emberv1.Endpoint, sp *spec.EndpointSpec, named bool) {
		sp.Command = nonEmpty(e.Command, len(e.Command), named)
	}},
	{"env", func(e *emberv1.Endpoint, sp *spec.EndpointSpec, named bool) {
		sp.Env = nonEmpty(e.Env, len(e.Env), named)
	}},
	{"gpu_types", func(e *emberv1.Endpoint, sp *spec.EndpointSpec, named bool) {
		sp.GPUTypes = nonEmpty(e.GpuTypes, len(e.GpuTypes), named)
	}},
	{"workers_min", func(e *emberv1.Endpoint, sp *spec.EndpointSpec, _ bool) { sp.WorkersMin = i32(e.WorkersMin) }},
	{"workers_max", func(e *emberv1.Endpoint, sp *spec.EndpointSpec, _ bool) { sp.WorkersMax = i32(e.WorkersMax) }},
	{"idle_timeout", func(e *emberv1.Endpoint, sp *spec.EndpointSpec, _ bool) { sp.IdleTimeout = i32(e.IdleTimeout) }},
	{"execution_timeout_ms", func(e *emberv1.Endpoint, sp *spec.EndpointSpec, _ bool) {
		sp.ExecutionTimeoutMs = i64(e.ExecutionTimeoutMs)
	}},
	{"scaler_type", func(e *emberv1.Endpoint, sp *spec.EndpointSpec, _ bool) { sp.ScalerType = e.ScalerType }},
	{"scaler_value", func(e *emberv1.Endpoint, sp *spec.EndpointSpec, _ bool) { sp.ScalerValue = i32(e.ScalerValue) }},
	{"gpu_count", func(e *emberv1.Endpoint, sp *spec.EndpointSpec, _ bool) { sp.GPUCount = i32(e.GpuCount) }},
	{"memory_mb", func(e *emberv1.Endpoint, sp *spec.EndpointSpec, _ bool) { sp.MemoryMB = i32(e.MemoryMb) }},
	{"cpus", func(e *emberv1.Endpoint, sp *spec.EndpointSpec, _ bool) { sp.CPUs = e.Cpus }},
	{"pids_limit", func(e *emberv1.Endpoint, sp *spec.EndpointSpec, _ bool) { sp.PidsLimit = i32(e.PidsLimit) }},
	{"network", func(e *emberv1.Endpoint, sp *spec.EndpointSpec, _ bool) { sp.Network = e.Network }},
	{"init_timeout", func(e *emberv1.Endpoint, sp *spec.EndpointSpec, _ bool) { sp.InitTimeout = i32(e.InitTimeout) }},
	{"flashboot", func(e *emberv1.Endpoint, sp *spec.EndpointSpec, _ bool) { sp.Flashboot = e.Flashboot }},
	{"flashboot_window", func(e *emberv1.Endpoint, sp *spec.EndpointSpec, _ bool) {
		sp.FlashbootWindow = i32(e.FlashbootWindow)
	}},
	{"max_attempts", func(e *emberv1.Endpoint, sp *spec.EndpointSpec, _ bool) { sp.MaxAttempts = i32(e.MaxAttempts) }},
	{"gpu_memory_mb", func(e *emberv1.Endpoint, sp *spec.EndpointSpec, _ bool) { sp.GPUMemoryMB = i32(e.GpuMemoryMb) }},
	{"init", func(e *emberv1.Endpoint, sp *spec.EndpointSpec, _ bool) { sp.Init = e.Init }},
	{"gpu_park", func(e *emberv1.Endpoint, sp *spec.EndpointSpec, _ bool) { sp.GPUPark = e.GpuPark }},
	{"gpu_park_delay", func(e *emberv1.Endpoint, sp *spec.EndpointSpec, _ bool) { sp.GPUParkDelay = i32(e.GpuParkDelay) }},
}

// nonEmpty points at v, a proto3 field without presence whose length is n,
// when it counts as given: not empty, or named by an update mask.
func nonEmpty[T any](v T, n int, named bool) *T {
	if n == 0 && !named {
		return nil
	}
	return &v
}

// i32 widens an optional int32 field; nil stays nil (not given).
func i32(p *int32) *int {
	if p == nil {
		return nil
	}
	v := int(*p)
	return &v
}

// i64 widens an optional int32 field; nil stays nil (not given).
func i64(p *int32) *int64 {
	if p == nil {
		return nil
	}
	v := int64(*p)
	return &v
}

func p32(v int) *int32 {
	x := int32(v)
	return &x
}

// EndpointProto converts an endpoint definition to its API form, the
// inverse of specFrom.
func EndpointProto(e spec.Endpoint) *emberv1.Endpoint {
	st, cpus, network, flashboot, init, park := e.ScalerType, e.CPUs, e.Network, e.Flashboot, !e.NoInit, e.GPUPark
	return &emberv1.Endpoint{
		Id:                 e.ID,
		Name:               e.Name,
		Image:              e.Image,
		Command:            e.Command,
		Env:                e.Env,
		WorkersMin:         p32(e.WorkersMin),
		WorkersMax:         p32(e.WorkersMax),
		IdleTimeout:        p32(e.IdleTimeoutSec),
		ExecutionTimeoutMs: p32(int(e.ExecutionTimeoutMs)),
		ScalerType:         &st,
		ScalerValue:        p32(e.ScalerValue),
		GpuCount:           p32(e.GPUCount),
		GpuTypes:           e.GPUTypes,
		MemoryMb:           p32(e.MemoryMB),
		Cpus:               &cpus,
		PidsLimit:          p32(e.PidsLimit),
		Network:            &network,
		InitTimeout:        p32(e.InitTimeoutSec),
		Flashboot:          &flashboot,
		FlashbootWindow:    p32(e.FlashbootWindowSec),
		MaxAttempts:        p32(e.MaxAttempts),
		GpuMemoryMb:        p32(e.GPUMemoryMB),
		Generation:         e.Generation,
		Init:               &init,
		GpuPark:            &park,
		GpuParkDelay:       p32(e.GPUParkDelaySec),
		Template:           e.Template,
		TemplateVersion:    int32(e.TemplateVersion),
		CreatedAt:          timestamppb.New(time.UnixMilli(e.CreatedAt)),
		UpdatedAt:          timestamppb.New(time.UnixMilli(e.UpdatedAt)),
	}
}

// CreateEndpoint implements EndpointService.
func (sv *Servers) CreateEndpoint(ctx context.Context, req *emberv1.CreateEndpointRequest) (*emberv1.Endpoint, error) {
	sp, err := CreateSpec(req.GetEndpoint())
	if err != nil {
		return nil, err
	}
	e, err := sv.S.CreateEndpoint(ctx, sp)
	if err != nil {
		// No id yet: the object is the name asked for.
		audit.Record(ctx, sv.Log, audit.EndpointCreate, req.Endpoint.GetName(), err, slog.String("name", req.Endpoint.GetName()))
		return nil, toStatus(err)
	}
	audit.Record(ctx, sv.Log, audit.EndpointCreate, e.ID, nil, slog.String("endpoint", e.ID), slog.String("name", e.Name))
	return EndpointProto(e), nil
}

// ListEndpoints implements EndpointService.
func (sv *Servers) ListEndpoints(ctx context.Context, _ *emberv1.ListEndpointsRequest) (*emberv1.ListEndpointsResponse, error) {
	resp := &emberv1.ListEndpointsResponse{}
	for _, e := range sv.S.Endpoints() {
		resp.Endpoints = append(resp.Endpoints, EndpointProto(e))
	}
	return resp, nil
}

// GetEndpoint implements EndpointService.
func (sv *Servers) GetEndpoint(ctx context.Context, req *emberv1.GetEndpointRequest) (*emberv1.Endpoint, error) {
	e, err := sv.S.Endpoint(req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return EndpointProto(e), nil
}

// UpdateEndpoint implements EndpointService. Without an update mask every
// field present in the message is applied.
func (sv *Servers) UpdateEndpoint(ctx context.Context, req *emberv1.UpdateEndpointRequest) (*emberv1.Endpoint, error) {
	var mask []string
	if m := req.GetUpdateMask(); m != nil {
		mask = append([]string{}, m.GetPaths()...)
		for _, p := range mask {
			switch p {
			case "id", "created_at", "updated_at":
				return nil, status.Errorf(codes.InvalidArgument, "%s: cannot be changed", p)
			}
		}
	}
	e, err := sv.S.UpdateEndpoint(ctx, req.GetId(), specFrom(req.GetEndpoint(), mask))
	attrs := []slog.Attr{slog.String("endpoint", req.GetId()), slog.String("name", e.Name)}
	if mask != nil {
		attrs = append(attrs, slog.String("fields", strings.Join(mask, ",")))
	}
	audit.Record(ctx, sv.Log, audit.EndpointUpdate, req.GetId(), err, attrs...)
	if err != nil {
		return nil, toStatus(err)
	}
	return EndpointProto(e), nil
}

// GetEndpointStats implements EndpointService.
func (sv *Servers) GetEndpointStats(ctx context.Context, req *emberv1.GetEndpointStatsRequest) (*emberv1.EndpointStats, error) {
	if req.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "id: is required")
	}
	all, err := sv.S.Stats(req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return StatsProto(all[0]), nil
}

// StatsProto converts an endpoint's metrics to their API form.
func StatsProto(st scheduler.EndpointStats) *emberv1.EndpointStats {
	sum := func(q scheduler.Quantiles) *emberv1.DurationSummary {
		return &emberv1.DurationSummary{Count: q.Count, SumSeconds: q.Sum, P50Seconds: q.P50, P90Seconds: q.P90, P99Seconds: q.P99}
	}
	out := &emberv1.EndpointStats{
		EndpointId: st.EndpointID, Name: st.Name,
		InQueue: int32(st.InQueue), InProgress: int32(st.InProgress),
		Finished: st.Finished, Retried: st.Retried,
		Workers: make(map[string]int32, len(st.Workers)),
		Delay:   sum(st.Delay), Execution: sum(st.Execution), ColdStart: sum(st.ColdStart), Revival: sum(st.Revival),
		WorkersStarted: st.WorkersStarted, WorkersRevived: st.WorkersRevived,
		WorkersFrozen: st.WorkersFrozen, WorkersReclaimed: st.WorkersReclaimed,
		WorkersParked: st.WorkersParked, Park: sum(st.Park), ParkedBytes: int64(st.ParkedBytes),
	}
	for k, v := range st.Workers {
		out.Workers[k] = int32(v)
	}
	return out
}

// DeleteEndpoint implements EndpointService.
func (sv *Servers) DeleteEndpoint(ctx context.Context, req *emberv1.DeleteEndpointRequest) (*emberv1.DeleteEndpointResponse, error) {
	name := ""
	if e, err := sv.S.Endpoint(req.GetId()); err == nil {
		name = e.Name
	}
	err := sv.S.DeleteEndpoint(ctx, req.GetId())
	audit.Record(ctx, sv.Log, audit.EndpointDelete, req.GetId(), err, slog.String("endpoint", req.GetId()), slog.String("name", name))
	if err != nil {
		return nil, toStatus(err)
	}
	return &emberv1.DeleteEndpointResponse{}, nil
}

// ---- jobs ----

func submissionFrom(req *emberv1.RunJobRequest, sync bool) (spec.Submission, error) {
	sub := spec.Submission{Webhook: req.GetWebhook(), Sync: sync}
	if req.GetInput() == nil {
		return sub, status.Error(codes.InvalidArgument, "input: is required")
	}
	in, err := protojson.Marshal(req.GetInput())
	if err != nil {
		return sub, status.Errorf(codes.InvalidArgument, "input: %v", err)
	}
	sub.Input = in
	if req.GetS3Config() != nil {
		s3, err := protojson.Marshal(req.GetS3Config())
		if err != nil {
			return sub, status.Errorf(codes.InvalidArgument, "s3Config: %v", err)
		}
		sub.S3Config = s3
	}
	if p := req.GetPolicy(); p != nil {
		if p.ExecutionTimeout != nil {
			sub.ExecutionTimeoutMs = int64(*p.ExecutionTimeout)
			if sub.ExecutionTimeoutMs == 0 {
				sub.ExecutionTimeoutMs = -1 // explicit 0 is out of range, not "default"
			}
		}
		if p.Ttl != nil {
			sub.TTLMs = int64(*p.Ttl)
			if sub.TTLMs == 0 {
				sub.TTLMs = -1
			}
		}
		sub.LowPriority = p.GetLowPriority()
	}
	if err := sub.Validate(); err != nil {
		return sub, toStatus(err)
	}
	return sub, nil
}

// JobProto converts a status object.
func JobProto(v scheduler.JobView) *emberv1.Job {
	j := &emberv1.Job{
		Id:         v.ID,
		Status:     string(v.Status),
		Error:      v.Error,
		WorkerId:   v.WorkerID,
		Retries:    int32(v.Retries),
		EndpointId: v.EndpointID,
	}
	if v.HasDelay {
		j.DelayTime = int32(v.DelayTime)
	}
	if v.HasExecution {
		j.ExecutionTime = int32(v.ExecutionTime)
	}
	if v.Output != nil {
		j.Output = jsonValue(v.Output)
	}
	return j
}

func jsonValue(raw json.RawMessage) *structpb.Value {
	val := &structpb.Value{}
	if err := protojson.Unmarshal(raw, val); err != nil {
		return structpb.NewStringValue(string(raw))
	}
	return val
}

func clampWait(ms int32, def time.Duration) time.Duration {
	if ms <= 0 {
		return def
	}
	d := time.Duration(ms) * time.Millisecond
	return min(max(d, time.Second), 300*time.Second)
}

// Run implements JobService.
func (sv *Servers) Run(ctx context.Context, req *emberv1.RunJobRequest) (*emberv1.Job, error) {
	sub, err := submissionFrom(req, false)
	if err != nil {
		return nil, err
	}
	v, err := sv.S.Submit(ctx, req.GetEndpointId(), sub)
	if err != nil {
		return nil, toStatus(err)
	}
	return JobProto(v), nil
}

// RunSync implements JobService.
func (sv *Servers) RunSync(ctx context.Context, req *emberv1.RunJobRequest) (*emberv1.Job, error) {
	sub, err := submissionFrom(req, true)
	if err != nil {
		return nil, err
	}
	v, err := sv.S.RunSync(ctx, req.GetEndpointId(), sub, clampWait(req.GetWait(), 90*time.Second))
	if err != nil {
		return nil, toStatus(err)
	}
	return JobProto(v), nil
}

// GetJob implements JobService; a wait holds until the job is terminal.
func (sv *Servers) GetJob(ctx context.Context, req *emberv1.GetJobRequest) (*emberv1.Job, error) {
	var v scheduler.JobView
	var err error
	if req.GetWait() > 0 {
		v, err = sv.S.Wait(ctx, req.GetEndpointId(), req.GetId(), clampWait(req.GetWait(), 0))
	} else {
		v, err = sv.S.Status(req.GetEndpointId(), req.GetId())
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return JobProto(v), nil
}

// StreamJob implements JobService.
func (sv *Servers) StreamJob(ctx context.Context, req *emberv1.GetJobRequest) (*emberv1.StreamJobResponse, error) {
	v, err := sv.S.Stream(ctx, req.GetEndpointId(), req.GetId(), time.Duration(req.GetWait())*time.Millisecond)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &emberv1.StreamJobResponse{Status: string(v.Status), Stream: []*emberv1.StreamChunk{}}
	for _, c := range v.Stream {
		resp.Stream = append(resp.Stream, &emberv1.StreamChunk{Output: jsonValue(c.Output)})
	}
	return resp, nil
}

// CancelJob implements JobService.
func (sv *Servers) CancelJob(ctx context.Context, req *emberv1.CancelJobRequest) (*emberv1.Job, error) {
	v, err := sv.S.Cancel(ctx, req.GetEndpointId(), req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return JobProto(v), nil
}

// RetryJob implements JobService.
func (sv *Servers) RetryJob(ctx context.Context, req *emberv1.RetryJobRequest) (*emberv1.Job, error) {
	v, err := sv.S.Retry(ctx, req.GetEndpointId(), req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return JobProto(v), nil
}

// PurgeQueue implements JobService.
func (sv *Servers) PurgeQueue(ctx context.Context, req *emberv1.PurgeQueueRequest) (*emberv1.PurgeQueueResponse, error) {
	n, err := sv.S.Purge(ctx, req.GetEndpointId())
	audit.Record(ctx, sv.Log, audit.QueuePurge, req.GetEndpointId(), err, slog.String("endpoint", req.GetEndpointId()), slog.Int("removed", n))
	if err != nil {
		return nil, toStatus(err)
	}
	return &emberv1.PurgeQueueResponse{Removed: int32(n), Status: "completed"}, nil
}

// GetEndpointHealth implements JobService.
func (sv *Servers) GetEndpointHealth(ctx context.Context, req *emberv1.GetEndpointHealthRequest) (*emberv1.EndpointHealth, error) {
	h, err := sv.S.Health(req.GetEndpointId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &emberv1.EndpointHealth{
		Jobs: &emberv1.JobCounts{Completed: int32(h.Jobs.Completed), Failed: int32(h.Jobs.Failed), InProgress: int32(h.Jobs.InProgress), InQueue: int32(h.Jobs.InQueue), Retried: int32(h.Jobs.Retried)},
		Workers: &emberv1.WorkerCounts{Idle: int32(h.Workers.Idle), Initializing: int32(h.Workers.Initializing), Ready: int32(h.Workers.Ready),
			Running: int32(h.Workers.Running), Throttled: int32(h.Workers.Throttled), Unhealthy: int32(h.Workers.Unhealthy)},
	}, nil
}

// Check implements HealthService.
func (sv *Servers) Check(ctx context.Context, _ *emberv1.HealthCheckRequest) (*emberv1.HealthCheckResponse, error) {
	return &emberv1.HealthCheckResponse{Status: "SERVING", Version: Version}, nil
}
