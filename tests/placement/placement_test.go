// Package placement tests GPU placement with real containers: the
// scheduler, the runc runtime and the worker API run in this test process
// (the GPUs come from go-nvml's DGX H100 mock, which no daemon flag could
// give emberd), and the workers are the example worker image under
// libcontainer, talking HTTP to 127.0.0.1.
package placement

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/emberhq/ember/daemon/httpapi"
	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/oci/gpu"
	"github.com/emberhq/ember/oci/runc"
	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/spec"
)

func TestMain(m *testing.M) {
	runc.InitIfChild() // containers start by re-running this binary
	os.Exit(m.Run())
}

// markGPUs stands in for device injection, the one part that needs real
// GPUs: it only tells the worker which GPUs it got.
type markGPUs struct{}

func (markGPUs) Inject(s *specs.Spec, uuids []string) error {
	s.Process.Env = append(s.Process.Env, "NVIDIA_VISIBLE_DEVICES="+strings.Join(uuids, ","))
	return nil
}

type rig struct {
	t   *testing.T
	s   *scheduler.Scheduler
	url string
	key string
}

// newRig runs a scheduler on the first n GPUs of the mock DGX H100, with
// the runc runtime and the example worker image.
func newRig(t *testing.T, n int) *rig {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("container workers need root (CI runs as root)")
	}
	dir := t.TempDir()
	layer := filepath.Join(dir, "layer")
	for _, d := range []string{"etc", "tmp"} {
		os.MkdirAll(filepath.Join(layer, d), 0o755)
	}
	os.Chmod(filepath.Join(layer, "tmp"), 0o1777)
	os.WriteFile(filepath.Join(layer, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	build := exec.Command("go", "build", "-o", filepath.Join(layer, "worker"), "../../examples/worker")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the example worker: %v\n%s", err, out)
	}
	inv, err := gpu.Discover(dgxh100.New())
	if err != nil {
		t.Fatal(err)
	}
	var gpus []scheduler.GPU
	for _, d := range inv.Devices[:n] {
		gpus = append(gpus, scheduler.GPU{UUID: d.UUID, Name: d.Name, MemoryBytes: d.MemoryTotal})
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	cgroupParent := fmt.Sprintf("/ember-placement-%d-%d", os.Getpid(), n)
	rt, err := runc.New(runc.Options{
		Images:         runc.StaticImages{"worker": {Layers: []string{layer}, Config: oci.ImageConfig{Entrypoint: []string{"/worker"}}}},
		Devices:        markGPUs{},
		StateDir:       filepath.Join(dir, "state"),
		CgroupParent:   cgroupParent,
		Logger:         log,
		AllowNoSeccomp: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	s, err := scheduler.Open(scheduler.Config{
		DataDir: filepath.Join(dir, "data"), Runtime: rt, WorkerAPIBase: url,
		AllocateGPUs: true, GPUs: gpus, RequireImage: true,
		Tunables: scheduler.Tunables{StopGrace: 2 * time.Second, PingInterval: time.Second}, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	const key = "test-key"
	srv := &http.Server{Handler: httpapi.New(httpapi.Config{Scheduler: s, Keys: func() []string { return []string{key} }, Logger: log})}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		s.Close()
		rt.Close()
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*" + cgroupParent)
		for _, d := range dirs {
			os.Remove(d)
		}
	})
	return &rig{t: t, s: s, url: url, key: key}
}

func (r *rig) endpoint(name string, sp spec.EndpointSpec) string {
	r.t.Helper()
	img, one := "worker", 1
	sp.Name, sp.Image = &name, &img
	if sp.GPUCount == nil {
		sp.GPUCount = &one
	}
	e, err := r.s.CreateEndpoint(context.Background(), sp)
	if err != nil {
		r.t.Fatalf("create %s: %v", name, err)
	}
	return e.ID
}

// runsync runs one job through the RunPod client API and returns its
// status object.
func (r *rig) runsync(ep string, input string) map[string]any {
	r.t.Helper()
	req, _ := http.NewRequest("POST", r.url+"/v2/"+ep+"/runsync?wait=90000", strings.NewReader(`{"input":`+input+`}`))
	req.Header.Set("Authorization", "Bearer "+r.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Errorf("runsync: %v", err)
		return nil
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	if m["status"] != "COMPLETED" {
		r.t.Errorf("runsync on %s: %d %v", ep, resp.StatusCode, m)
	}
	return m
}

func (r *rig) workers(ep string) []scheduler.WorkerInfo { return r.s.Workers(ep) }

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func stats(t *testing.T, s *scheduler.Scheduler, ep string) scheduler.EndpointStats {
	st, err := s.Stats(ep)
	if err != nil {
		t.Fatal(err)
	}
	return st[0]
}

// TestReclaimFrozenAndIdle: with both GPUs held, one by a frozen worker
// and one by an idle worker of other endpoints, an endpoint with jobs and
// no GPU takes the frozen worker's GPU first, then the idle one's, and
// runs its jobs.
func TestReclaimFrozenAndIdle(t *testing.T) {
	r := newRig(t, 2)
	yes, idle1, idleLong, window, two := true, 1, 600, 600, 2
	flash := r.endpoint("flash", spec.EndpointSpec{Flashboot: &yes, IdleTimeout: &idle1, FlashbootWindow: &window})
	lazy := r.endpoint("lazy", spec.EndpointSpec{IdleTimeout: &idleLong})
	r.runsync(flash, `{"output":1}`)
	waitFor(t, 30*time.Second, "flash worker frozen", func() bool {
		ws := r.workers(flash)
		return len(ws) == 1 && ws[0].State == scheduler.WorkerFrozen
	})
	frozenGPU := r.workers(flash)[0].GPUs[0]
	r.runsync(lazy, `{"output":1}`)
	idleGPU := r.workers(lazy)[0].GPUs[0]
	if frozenGPU == idleGPU {
		t.Fatalf("two workers hold GPU %s", frozenGPU)
	}

	rc, one := spec.ScalerRequestCount, 1
	needy := r.endpoint("needy", spec.EndpointSpec{WorkersMax: &two, ScalerType: &rc, ScalerValue: &one})

	// The first needy job takes the frozen worker's GPU.
	first := r.runsync(needy, `{"output":"a"}`)
	if ws := r.workers(flash); len(ws) != 0 {
		t.Fatalf("the frozen worker is still there: %+v", ws)
	}
	if len(r.workers(lazy)) != 1 {
		t.Fatal("the idle worker was reclaimed although the frozen one's GPU was enough")
	}
	var gotGPU string
	for _, w := range r.workers(needy) {
		if w.ID == first["workerId"] {
			gotGPU = w.GPUs[0]
		}
	}
	if gotGPU != frozenGPU {
		t.Fatalf("needy's worker got %q, want the frozen worker's %s", gotGPU, frozenGPU)
	}

	// Two jobs at once need a second worker: the idle one goes.
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.runsync(needy, `{"sleep_ms":3000}`)
		}()
	}
	wg.Wait()
	if len(r.workers(lazy)) != 0 {
		t.Fatal("the idle worker was not reclaimed for a second needy worker")
	}
	if n := stats(t, r.s, flash).WorkersReclaimed; n != 1 {
		t.Errorf("flash reclaimed %d, want 1", n)
	}
	if n := stats(t, r.s, lazy).WorkersReclaimed; n != 1 {
		t.Errorf("lazy reclaimed %d, want 1", n)
	}
}

// TestNoDoubleAllocation: many endpoints scale up at once on 8 GPUs, with
// real containers; no GPU is ever held by two live workers, and every job
// completes.
func TestNoDoubleAllocation(t *testing.T) {
	r := newRig(t, 8)
	rc, one, four, idle := spec.ScalerRequestCount, 1, 4, 1
	var eps []string
	for i := 0; i < 5; i++ {
		eps = append(eps, r.endpoint(fmt.Sprintf("e%d", i), spec.EndpointSpec{ScalerType: &rc, ScalerValue: &one, WorkersMax: &four, IdleTimeout: &idle}))
	}
	stop := make(chan struct{})
	violations := make(chan string, 1)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			owner := map[string]string{}
			for _, w := range r.s.Workers("") {
				if w.State == scheduler.WorkerStopped || w.State == scheduler.WorkerUnhealthy {
					continue
				}
				for _, g := range w.GPUs {
					if other, dup := owner[g]; dup {
						select {
						case violations <- fmt.Sprintf("GPU %s held by %s and %s", g, other, w.ID):
						default:
						}
					}
					owner[g] = w.ID
				}
			}
		}
	}()
	var wg sync.WaitGroup
	for _, ep := range eps {
		for k := 0; k < 3; k++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.runsync(ep, `{"sleep_ms":500}`)
			}()
		}
	}
	wg.Wait()
	close(stop)
	select {
	case v := <-violations:
		t.Fatal(v)
	default:
	}
}
