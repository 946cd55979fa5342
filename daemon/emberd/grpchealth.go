package emberd

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	emberv1 "github.com/emberhq/ember/proto/ember/v1"
)

// grpcHealthInterval is how often the standard gRPC health service reads
// readiness again. Start, stop and the scheduler's opening change it through
// update at once; the poll is for the data disk, whose free space changes
// without an event (a statfs per tick).
const grpcHealthInterval = time.Second

// grpcHealthServices are the services grpc.health.v1 reports: "" (the
// server as a whole, what grpc_health_probe asks by default) and each
// ember.v1 service. All follow the daemon's readiness, the answer of GET
// /readyz: none of them can do work while the job store is closed or the
// disk is below its reserve.
var grpcHealthServices = []string{
	"",
	emberv1.HealthService_ServiceDesc.ServiceName,
	emberv1.EndpointService_ServiceDesc.ServiceName,
	emberv1.JobService_ServiceDesc.ServiceName,
	emberv1.ImageService_ServiceDesc.ServiceName,
}

// grpcHealth drives the standard grpc.health.v1 service (Check and Watch,
// for grpc_health_probe and orchestrators' gRPC probes) from the daemon's
// readiness: SERVING when ready is nil, NOT_SERVING otherwise, and
// NOT_SERVING for good once shutdown is called.
type grpcHealth struct {
	srv   *health.Server
	ready func() error
	log   *slog.Logger

	mu      sync.Mutex
	serving bool
	known   bool // serving has been set once
}

// newGRPCHealth returns the health service with every service NOT_SERVING
// until the first update.
func newGRPCHealth(ready func() error, log *slog.Logger) *grpcHealth {
	h := &grpcHealth{srv: health.NewServer(), ready: ready, log: log}
	for _, s := range grpcHealthServices {
		h.srv.SetServingStatus(s, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	return h
}

// register adds grpc.health.v1.Health to g.
func (h *grpcHealth) register(g *grpc.Server) { healthpb.RegisterHealthServer(g, h.srv) }

// update reads readiness and, when it changed, sets every service's status
// (Watch streams see the change) and logs it.
func (h *grpcHealth) update() {
	err := h.ready()
	h.mu.Lock()
	defer h.mu.Unlock()
	serving := err == nil
	if h.known && serving == h.serving {
		return
	}
	wasServing := h.known && h.serving
	h.known, h.serving = true, serving
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	for _, s := range grpcHealthServices {
		h.srv.SetServingStatus(s, st)
	}
	switch {
	case serving:
		h.log.Info("grpc health: serving")
	case wasServing:
		// Lost readiness while running: the disk is below its reserve.
		h.log.Warn("grpc health: not serving", "reason", err)
	default:
		h.log.Info("grpc health: not serving", "reason", err)
	}
}

// run updates every interval until ctx ends.
func (h *grpcHealth) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		h.update()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// shutdown sets every service NOT_SERVING and ignores later updates: the
// daemon drains, and Watch streams learn it before the server stops.
func (h *grpcHealth) shutdown() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.known, h.serving = true, false
	h.srv.Shutdown()
	h.log.Info("grpc health: not serving", "reason", "shutting down")
}

// gatedService reports whether a method needs the scheduler: the ember.v1
// services do; grpc.health.v1 and server reflection answer from the start.
func gatedService(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/ember.v1.")
}

// errStarting is the gate's answer while the job queue is being recovered
// and the caller's deadline ends first.
var errStarting = errors.New("emberd is starting: recovering the job queue")

// waitReady holds an ember.v1 call until the scheduler is open, like
// lazyHandler does for HTTP: UNAVAILABLE at once while the store waits for
// disk space (that can take hours), else the wait ends with the caller's
// context.
func (l *lazyHandler) waitReady(ctx context.Context) error {
	select {
	case <-l.ready:
		return nil
	default:
	}
	if se := l.diskWait.Load(); se != nil {
		return status.Error(codes.Unavailable, se.Error())
	}
	select {
	case <-l.ready:
		return nil
	case <-ctx.Done():
		return status.Error(codes.Unavailable, errStarting.Error())
	}
}

// unaryGate and streamGate hold ember.v1 calls until the scheduler they
// call is open (waitReady); the gRPC server is served from the start so that
// grpc.health.v1 can say NOT_SERVING while the store waits for disk.
func (l *lazyHandler) unaryGate() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if gatedService(info.FullMethod) {
			if err := l.waitReady(ctx); err != nil {
				return nil, err
			}
		}
		return handler(ctx, req)
	}
}

func (l *lazyHandler) streamGate() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if gatedService(info.FullMethod) {
			if err := l.waitReady(ss.Context()); err != nil {
				return err
			}
		}
		return handler(srv, ss)
	}
}

// state is the daemon's readiness at any time, for grpc.health.v1: as
// readiness (GET /readyz), and not ready until the scheduler is open.
func (l *lazyHandler) state() error {
	if l.stopping.Load() {
		return errors.New("shutting down: draining workers")
	}
	select {
	case <-l.ready:
	default:
		if se := l.diskWait.Load(); se != nil {
			return se
		}
		return errStarting
	}
	return l.readiness()
}
