package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/oci/image"
	"github.com/emberhq/ember/oci/runc"
)

// containerFigures prints the container runtime's figures: bare
// libcontainer start against Ember's worker start (phases), cold start
// from zero to the first result through emberd, and image import rate.
// They need root (containers, overlay mounts).
func containerFigures(tmp string) error {
	if os.Geteuid() != 0 {
		fmt.Println("\n(container figures skipped: they need root)")
		return nil
	}
	ctx := context.Background()
	fmt.Println("\n# Containers (runc runtime)")

	// 1. Bare libcontainer Create+Run+Wait+Destroy of a static no-op
	// program, against a worker start of the same program through the
	// runtime (image lookup, overlay, spec, create, start) and its exit.
	layer := filepath.Join(tmp, "true-layer")
	if err := os.MkdirAll(layer, 0o755); err != nil {
		return err
	}
	src := filepath.Join(tmp, "true.go")
	if err := os.WriteFile(src, []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		return err
	}
	build := exec.Command("go", "build", "-o", filepath.Join(layer, "true"), src)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build the no-op program: %v\n%s", err, out)
	}
	images := runc.StaticImages{"true": oci.RootFS{Layers: []string{layer}}}
	rt, err := runc.New(runc.Options{
		Images:   images,
		StateDir: filepath.Join(tmp, "runc-state"),
	})
	if err != nil {
		return err
	}
	defer rt.Close()
	work := filepath.Join(tmp, "bench-work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	res, err := Bench(ctx, BenchOptions{Runtime: rt, Images: images, Image: "true", Args: []string{"/true"}, N: 20, WorkDir: work})
	if err != nil {
		return err
	}
	fmt.Printf("%-52s %12s\n", fmt.Sprintf("bare libcontainer create+run+wait+destroy (median of %d)", res.N), ms3(res.Bare.Total))
	fmt.Printf("%-52s %12s\n", "  create / run / wait / destroy", fmt.Sprintf("%s / %s / %s / %s", ms3(res.Bare.Create), ms3(res.Bare.Run), ms3(res.Bare.Wait), ms3(res.Bare.Destroy)))
	fmt.Printf("%-52s %12s  (%.2fx bare)\n", "Ember worker start+exit+cleanup (same program)", ms3(res.Worker.Lifetime), float64(res.Worker.Lifetime)/float64(res.Bare.Total))
	fmt.Printf("%-52s %12s\n", "  resolve / overlay / spec / create / start", fmt.Sprintf("%s / %s / %s / %s / %s",
		ms3(res.Worker.Resolve), ms3(res.Worker.Mount), ms3(res.Worker.Spec), ms3(res.Worker.Create), ms3(res.Worker.Start)))

	// 2. Import rate of a 1 GiB image, plain and gzipped layers.
	for _, gz := range []bool{false, true} {
		m, err := image.MeasureImport(ctx, filepath.Join(tmp, fmt.Sprintf("import-%v", gz)), image.SyntheticImage{Size: 1 << 30, Gzip: gz})
		if err != nil {
			return err
		}
		kind := "plain"
		if gz {
			kind = "gzip"
		}
		fmt.Printf("%-52s %12s\n", fmt.Sprintf("import of a 1 GiB image, %s layers", kind), fmt.Sprintf("%.0f MB/s", m.MBPerSec))
	}
	return sharedBaseFigure(ctx, tmp)
}

// coldStarts measures scale-from-zero to the first result through emberd
// with the runc runtime: an endpoint with no worker gets a job; the time to
// its answer includes the container start and the worker's first take.
func coldStarts(d *daemon, workerImage string, n int) error {
	if err := d.post("/v1/images:import", fmt.Sprintf(`{"path":%q,"name":"bench/worker:latest"}`, workerImage), nil); err != nil {
		return err
	}
	ep, err := d.createEndpoint(map[string]any{"name": "cold", "image": "bench/worker:latest", "gpuCount": 0, "workersMax": 1, "idleTimeout": 1})
	if err != nil {
		return err
	}
	var cold, warm []time.Duration
	for i := 0; i < n; i++ {
		if err := d.waitWorkers(ep, 0, 30*time.Second); err != nil {
			return err
		}
		t := time.Now()
		if err := d.post("/v2/"+ep+"/runsync", `{"input":{"output":1}}`, nil); err != nil {
			return err
		}
		cold = append(cold, time.Since(t))
		t = time.Now()
		if err := d.post("/v2/"+ep+"/runsync", `{"input":{"output":1}}`, nil); err != nil {
			return err
		}
		warm = append(warm, time.Since(t))
	}
	fmt.Printf("%-52s %12s\n", fmt.Sprintf("cold start: zero workers to first result (median of %d)", n), ms3(median(cold)))
	fmt.Printf("%-52s %12s\n", "  next job on that warm worker", ms3(median(warm)))
	return nil
}

func (d *daemon) waitWorkers(ep string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		h, err := d.health(ep)
		if err != nil {
			return err
		}
		if h.Workers.Idle+h.Workers.Running == n {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("endpoint %s did not reach %d workers within %v", ep, n, timeout)
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func ms3(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
