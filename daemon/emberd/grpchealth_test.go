package emberd

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/diskguard"
)

func checkAll(t *testing.T, h *grpcHealth, want healthpb.HealthCheckResponse_ServingStatus, step string) {
	t.Helper()
	for _, s := range grpcHealthServices {
		resp, err := h.srv.Check(context.Background(), &healthpb.HealthCheckRequest{Service: s})
		if err != nil {
			t.Fatalf("%s: Check(%q): %v", step, s, err)
		}
		if resp.Status != want {
			t.Fatalf("%s: Check(%q) = %v, want %v", step, s, resp.Status, want)
		}
	}
}

// TestGRPCHealthFollowsReadiness: the standard health service follows the
// lazy handler's state through start, disk wait, ready, disk below the
// reserve, ready again and shutdown, for "" and every ember.v1 service.
func TestGRPCHealthFollowsReadiness(t *testing.T) {
	const (
		serving    = healthpb.HealthCheckResponse_SERVING
		notServing = healthpb.HealthCheckResponse_NOT_SERVING
	)
	full := &scheduler.InsufficientStorageError{Dir: "/data", Free: 1, Needed: 2}
	lazy := &lazyHandler{ready: make(chan struct{})}
	var diskErr error
	h := newGRPCHealth(lazy.state, slog.New(slog.NewTextHandler(io.Discard, nil)))
	steps := []struct {
		name  string
		apply func()
		want  healthpb.HealthCheckResponse_ServingStatus
	}{
		{"before the first update", func() {}, notServing},
		{"recovering the queue", func() { h.update() }, notServing},
		{"waiting for disk", func() { lazy.diskWait.Store(full); h.update() }, notServing},
		{"scheduler open", func() {
			lazy.diskWait.Store(nil)
			lazy.disk = func() error { return diskErr }
			lazy.set(nil)
			h.update()
		}, serving},
		{"disk below the reserve", func() { diskErr = full; h.update() }, notServing},
		{"disk freed", func() { diskErr = nil; h.update() }, serving},
		{"draining", func() { lazy.stopping.Store(true); h.shutdown() }, notServing},
		{"an update after shutdown", func() { lazy.stopping.Store(false); h.update() }, notServing},
	}
	for _, s := range steps {
		s.apply()
		checkAll(t, h, s.want, s.name)
	}
}

// TestGRPCHealthWatch: a Watch stream sees each change, NOT_SERVING at
// shutdown included.
func TestGRPCHealthWatch(t *testing.T) {
	var ready error = errors.New("not yet")
	h := newGRPCHealth(func() error { return ready }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws := &watchStream{ctx: ctx, got: make(chan healthpb.HealthCheckResponse_ServingStatus, 8)}
	done := make(chan error, 1)
	go func() { done <- h.srv.Watch(&healthpb.HealthCheckRequest{}, ws) }()
	want := func(st healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		select {
		case got := <-ws.got:
			if got != st {
				t.Fatalf("Watch sent %v, want %v", got, st)
			}
		case <-ctx.Done():
			t.Fatalf("Watch sent nothing, want %v", st)
		}
	}
	want(healthpb.HealthCheckResponse_NOT_SERVING)
	ready = nil
	h.update()
	want(healthpb.HealthCheckResponse_SERVING)
	h.shutdown()
	want(healthpb.HealthCheckResponse_NOT_SERVING)
	cancel()
	<-done
}

// watchStream is the server side of a Watch stream, recording what it sends.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx context.Context
	got chan healthpb.HealthCheckResponse_ServingStatus
}

func (w *watchStream) Context() context.Context { return w.ctx }
func (w *watchStream) Send(r *healthpb.HealthCheckResponse) error {
	w.got <- r.Status
	return nil
}

func TestGatedService(t *testing.T) {
	tests := []struct {
		method string
		want   bool
	}{
		{"/ember.v1.JobService/Run", true},
		{"/ember.v1.HealthService/Check", true},
		{"/ember.v1.ImageService/ListImages", true},
		{"/grpc.health.v1.Health/Check", false},
		{"/grpc.health.v1.Health/Watch", false},
		{"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", false},
		{"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", false},
	}
	for _, tt := range tests {
		if got := gatedService(tt.method); got != tt.want {
			t.Errorf("gatedService(%q) = %v, want %v", tt.method, got, tt.want)
		}
	}
}

// TestWaitReady: an ember.v1 call before the scheduler is open is refused
// UNAVAILABLE at once while the store waits for disk, waits otherwise (until
// the caller gives up), and passes once the scheduler is open.
func TestWaitReady(t *testing.T) {
	lazy := &lazyHandler{ready: make(chan struct{})}
	lazy.diskWait.Store(&scheduler.InsufficientStorageError{Dir: "/data", Free: 1, Needed: 2})
	if err := lazy.waitReady(context.Background()); status.Code(err) != codes.Unavailable {
		t.Fatalf("waiting for disk: %v, want UNAVAILABLE", err)
	}
	lazy.diskWait.Store(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := lazy.waitReady(ctx); status.Code(err) != codes.Unavailable {
		t.Fatalf("recovering, caller gave up: %v, want UNAVAILABLE", err)
	}
	passed := make(chan error, 1)
	go func() { passed <- lazy.waitReady(context.Background()) }()
	lazy.set(nil)
	if err := <-passed; err != nil {
		t.Fatalf("once open: %v, want nil", err)
	}
}

// BenchmarkGRPCHealthUpdate is the cost of one tick of the health
// goroutine (once a second): readiness as emberd reads it, with the data
// disk's guard. Baseline: the guard's readiness alone, same run.
func BenchmarkGRPCHealthUpdate(b *testing.B) {
	guard := diskguard.New(b.TempDir(), 1, 1)
	lazy := &lazyHandler{ready: make(chan struct{}), disk: guard.Ready}
	lazy.set(nil)
	b.Run("baseline-disk-ready", func(b *testing.B) {
		for b.Loop() {
			_ = guard.Ready()
		}
	})
	b.Run("update", func(b *testing.B) {
		h := newGRPCHealth(lazy.state, slog.New(slog.DiscardHandler))
		for b.Loop() {
			h.update()
		}
	})
}
