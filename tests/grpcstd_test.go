package tests

// End-to-end tests of the standard gRPC services on emberd's --grpc-listen:
// grpc.health.v1 through the standard health client (what
// grpc_health_probe and orchestrators' gRPC probes use), and server
// reflection (what grpcurl uses).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	emberv1 "github.com/emberhq/ember/proto/ember/v1"
)

// emberServices are the services reflection must list and describe.
var emberServices = []string{"ember.v1.EndpointService", "ember.v1.JobService", "ember.v1.HealthService", "ember.v1.ImageService"}

// TestGRPCStdHealth: Check and Watch need no key and say SERVING for the
// server ("") and each ember.v1 service; an unknown service is NOT_FOUND;
// a Watch open while emberd gets SIGTERM sees NOT_SERVING before the
// stream ends (the drain).
func TestGRPCStdHealth(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	cc := grpcConn(t, d)
	hc := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The health service may lag readiness by at most one update after
	// the HTTP probe answered; Watch tells when it is there.
	w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("Watch without a key: %v", err)
	}
	for {
		r, err := w.Recv()
		if err != nil {
			t.Fatalf("Watch without a key: %v\n%s", err, d.Log())
		}
		if r.Status == healthpb.HealthCheckResponse_SERVING {
			break
		}
	}
	for _, svc := range append([]string{""}, emberServices...) {
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatalf("Check(%q) without a key: %v", svc, err)
		}
		if r.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Check(%q) = %v, want SERVING", svc, r.Status)
		}
	}
	_, err = hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "no.such.Service"})
	grpcCode(t, "Check of an unknown service", err, codes.NotFound)

	// Drain: the Watch stream must say NOT_SERVING before it ends.
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var got []healthpb.HealthCheckResponse_ServingStatus
	for {
		r, err := w.Recv()
		if err != nil {
			break
		}
		got = append(got, r.Status)
	}
	if !slices.Contains(got, healthpb.HealthCheckResponse_NOT_SERVING) {
		t.Fatalf("Watch during SIGTERM saw %v, want NOT_SERVING before the stream ended\n%s", got, d.Log())
	}
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("emberd did not exit after SIGTERM\n%s", d.Log())
	}
}

// reflect opens a v1 reflection stream.
func reflectStream(t *testing.T, ctx context.Context, cc *grpc.ClientConn) reflectionpb.ServerReflection_ServerReflectionInfoClient {
	t.Helper()
	s, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatalf("ServerReflectionInfo: %v", err)
	}
	return s
}

func reflectAsk(t *testing.T, s reflectionpb.ServerReflection_ServerReflectionInfoClient, req *reflectionpb.ServerReflectionRequest) (*reflectionpb.ServerReflectionResponse, error) {
	t.Helper()
	// A server that refuses the stream (no key) may end it before the
	// request is sent: Send then answers io.EOF, and Recv carries the
	// stream's status.
	if err := s.Send(req); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return s.Recv()
}

// TestGRPCStdReflection: with a key, reflection (v1 and v1alpha) lists the
// ember.v1 services and grpc.health.v1.Health, and the file descriptors it
// serves resolve: each ember.v1 service with its imports (google/api,
// google/protobuf), as grpcurl needs them to describe and call a method.
func TestGRPCStdReflection(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	cc := grpcConn(t, d)
	base, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ctx := metadata.AppendToOutgoingContext(base, "authorization", "Bearer "+d.Key)

	s := reflectStream(t, ctx, cc)
	resp, err := reflectAsk(t, s, &reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	if err != nil {
		t.Fatalf("reflection ListServices with a key: %v", err)
	}
	var listed []string
	for _, sv := range resp.GetListServicesResponse().GetService() {
		listed = append(listed, sv.Name)
	}
	for _, want := range append(slices.Clone(emberServices), "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection") {
		if !slices.Contains(listed, want) {
			t.Errorf("reflection lists %v, want %s among them", listed, want)
		}
	}

	// Every file the server sends on this stream: a file comes with the
	// imports not sent before.
	files := map[string]*descriptorpb.FileDescriptorProto{}
	for _, svc := range emberServices {
		resp, err := reflectAsk(t, s, &reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: svc}})
		if err != nil {
			t.Fatalf("FileContainingSymbol %s: %v", svc, err)
		}
		if e := resp.GetErrorResponse(); e != nil {
			t.Fatalf("FileContainingSymbol %s: %d %s", svc, e.ErrorCode, e.ErrorMessage)
		}
		for _, b := range resp.GetFileDescriptorResponse().GetFileDescriptorProto() {
			fd := &descriptorpb.FileDescriptorProto{}
			if err := proto.Unmarshal(b, fd); err != nil {
				t.Fatalf("FileContainingSymbol %s: a descriptor that does not decode: %v", svc, err)
			}
			files[fd.GetName()] = fd
		}
	}
	// An import the server never sent fails NewFiles.
	set := &descriptorpb.FileDescriptorSet{}
	for _, fd := range files {
		set.File = append(set.File, fd)
	}
	reg, err := protodesc.NewFiles(set)
	if err != nil {
		t.Fatalf("the descriptors reflection serves do not resolve: %v", err)
	}
	for _, svc := range emberServices {
		desc, err := reg.FindDescriptorByName(protoreflect.FullName(svc))
		if err != nil {
			t.Errorf("%s is not in the descriptors reflection serves: %v", svc, err)
			continue
		}
		if sd, ok := desc.(protoreflect.ServiceDescriptor); !ok || sd.Methods().Len() == 0 {
			t.Errorf("%s: a service with methods expected, got %v", svc, desc)
		}
	}
	if _, ok := files["google/api/annotations.proto"]; !ok {
		t.Errorf("reflection sent %d files without google/api/annotations.proto", len(files))
	}
	s.CloseSend()

	// v1alpha, which older grpcurl and other tools still ask first.
	sa, err := reflectionv1alpha.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatalf("v1alpha ServerReflectionInfo: %v", err)
	}
	if err := sa.Send(&reflectionv1alpha.ServerReflectionRequest{MessageRequest: &reflectionv1alpha.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatalf("v1alpha ListServices: %v", err)
	}
	ra, err := sa.Recv()
	if err != nil {
		t.Fatalf("v1alpha ListServices: %v", err)
	}
	if n := len(ra.GetListServicesResponse().GetService()); n < len(emberServices)+1 {
		t.Errorf("v1alpha lists %d services, want at least %d", n, len(emberServices)+1)
	}
	sa.CloseSend()
	if strings.Contains(d.Log(), d.Key) {
		t.Error("emberd logged the API key")
	}
}

// TestGRPCStdReflectionNeedsKey: reflection describes the whole API, so it
// needs a valid key (any scope): without one, or with a wrong one, the
// stream ends UNAUTHENTICATED. The stream interceptor that enforces this
// is daemon/grpcapi's auth (issue 10, scopes).
func TestGRPCStdReflectionNeedsKey(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	cc := grpcConn(t, d)
	base, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for name, ctx := range map[string]context.Context{
		"no key":    base,
		"wrong key": metadata.AppendToOutgoingContext(base, "authorization", "Bearer wrong-key-0123456789abcdef0123456789"),
	} {
		s := reflectStream(t, ctx, cc)
		_, err := reflectAsk(t, s, &reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("reflection with %s: got %v, want UNAUTHENTICATED", name, err)
		}
	}
}

// watchFor reads a Watch stream until it says want; the stream's context
// bounds the wait.
func watchFor(t *testing.T, d *Daemon, w healthpb.Health_WatchClient, want healthpb.HealthCheckResponse_ServingStatus, what string) {
	t.Helper()
	for {
		r, err := w.Recv()
		if err != nil {
			t.Fatalf("%s: Watch ended (%v) before %v\n%s", what, err, want, d.Log())
		}
		if r.Status == want {
			return
		}
	}
}

// TestGRPCStdHealthDisk: grpc.health.v1 follows the data disk as /readyz
// does. Running, a disk below --min-free-disk-mb makes every service
// NOT_SERVING and freeing it SERVING again. Started on a disk too full to
// open the store (after a crash), gRPC is served at once: health says
// NOT_SERVING, ember.v1 calls are refused UNAVAILABLE instead of hanging,
// and both recover when space returns, without a restart.
func TestGRPCStdHealthDisk(t *testing.T) {
	t.Parallel()
	mnt := mountTmpfs(t, diskFSSize)
	data := filepath.Join(mnt, "data")
	filler := filepath.Join(mnt, "filler")
	d := StartDaemonWith(t, DaemonOptions{DataDir: data},
		"--min-free-disk-mb", fmt.Sprint(diskMinFreeMB), "--disk-reserve-mb", fmt.Sprint(diskReserveMB))
	cc := grpcConn(t, d)
	hc := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "ember.v1.JobService"})
	if err != nil {
		t.Fatal(err)
	}
	watchFor(t, d, w, healthpb.HealthCheckResponse_SERVING, "at start")
	fill(t, filler, (diskMinFreeMB+diskReserveMB)/2<<20)
	watchFor(t, d, w, healthpb.HealthCheckResponse_NOT_SERVING, "below --min-free-disk-mb")
	r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || r.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Check below --min-free-disk-mb: %v %v, want NOT_SERVING", r, err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	watchFor(t, d, w, healthpb.HealthCheckResponse_SERVING, "space freed")

	// A start that waits for disk space to open the store: a crash on a
	// full disk, and the store's reserve file used up by an earlier such
	// start, leave no room to open it (as in TestDiskFull).
	d.opts.StartProbe = "/healthz"
	for i := 0; ; i++ {
		d.Kill9()
		fill(t, filler, 0)
		d.Restart()
		if storeWaits(t, d) {
			break
		}
		if i == 2 {
			t.Fatalf("three starts on a full disk opened the store\n%s", d.Log())
		}
	}
	cc = grpcConn(t, d)
	hc = healthpb.NewHealthClient(cc)
	r, err = hc.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || r.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Check while the store waits for space: %v %v, want NOT_SERVING\n%s", r, err, d.Log())
	}
	auth := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+d.Key)
	_, err = emberv1.NewEndpointServiceClient(cc).ListEndpoints(auth, &emberv1.ListEndpointsRequest{})
	grpcCode(t, "ListEndpoints while the store waits for space", err, codes.Unavailable)
	w, err = hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	watchFor(t, d, w, healthpb.HealthCheckResponse_NOT_SERVING, "while the store waits for space")
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	watchFor(t, d, w, healthpb.HealthCheckResponse_SERVING, "space freed after a start on a full disk")
	if _, err := emberv1.NewEndpointServiceClient(cc).ListEndpoints(auth, &emberv1.ListEndpointsRequest{}); err != nil {
		t.Fatalf("ListEndpoints once the store is open: %v", err)
	}
}

// storeWaits reports whether emberd, just started, waits for disk space to
// open its store (/readyz names the bytes while it starts) rather than
// having opened it.
func storeWaits(t *testing.T, d *Daemon) bool {
	t.Helper()
	for range 100 { // bounded: 10 s
		code, body := d.Do("GET", "/readyz", nil)
		switch {
		case code == 503 && strings.Contains(string(body), `"starting"`) && strings.Contains(string(body), "neededBytes"):
			return true
		case code == 200 || (code == 503 && !strings.Contains(string(body), `"starting"`)):
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("/readyz still says the store is starting after 10 s\n%s", d.Log())
	return false
}
