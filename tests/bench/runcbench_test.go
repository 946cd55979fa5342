package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/oci/runc"
)

func TestMain(m *testing.M) {
	runc.InitIfChild() // Bench starts containers in-process
	os.Exit(m.Run())
}

// probeSource is the program the bench runs: it exits at once, or, given
// "pause", runs until it is killed.
const probeSource = `package main

import (
	"os"
	"time"
)

func main() {
	for len(os.Args) > 1 && os.Args[1] == "pause" {
		time.Sleep(time.Hour)
	}
}
`

// benchRuntime builds the probe into a one-layer image and returns a runc
// runtime that has it as "probe", or skips when containers cannot run.
func benchRuntime(t testing.TB) (*runc.Runtime, oci.Images) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the runc bench needs root (containers)")
	}
	tmp := t.TempDir()
	layer := filepath.Join(tmp, "layer")
	if err := os.MkdirAll(layer, 0o755); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(tmp, "probe.go")
	if err := os.WriteFile(src, []byte(probeSource), 0o644); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(layer, "probe"), src)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the probe: %v\n%s", err, out)
	}
	images := runc.StaticImages{"probe": oci.RootFS{Layers: []string{layer}}}
	rt, err := runc.New(runc.Options{Images: images, StateDir: filepath.Join(tmp, "state"), AllowNoSeccomp: true})
	if err != nil {
		t.Skipf("no runc runtime here: %v", err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt, images
}

// TestBench runs Bench briefly (the numbers are logged with -v).
func TestBench(t *testing.T) {
	rt, images := benchRuntime(t)
	res, err := Bench(context.Background(), BenchOptions{
		Runtime:      rt,
		Images:       images,
		Image:        "probe",
		Args:         []string{"/probe"},
		N:            5,
		WorkDir:      t.TempDir(),
		RunArgs:      []string{"/probe", "pause"},
		FreezeCycles: 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.N != 5 || res.Bare.Total <= 0 || res.Worker.Total <= 0 || res.Worker.Mount <= 0 || res.Worker.Lifetime < res.Worker.Total {
		t.Errorf("implausible result %+v", res)
	}
	if f := res.Freeze; f.Cycles != 20 || f.Freeze <= 0 || f.Thaw <= 0 || f.ThawAmongFrozen <= 0 {
		t.Errorf("implausible freeze result %+v", f)
	}
	logBench(t, res)
}

func logBench(t testing.TB, r BenchResult) {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	t.Logf("medians of %d runs (ms)", r.N)
	t.Logf("bare libcontainer: create %.2f run %.2f wait %.2f destroy %.2f total %.2f",
		ms(r.Bare.Create), ms(r.Bare.Run), ms(r.Bare.Wait), ms(r.Bare.Destroy), ms(r.Bare.Total))
	w := r.Worker
	t.Logf("worker: resolve %.2f mount %.2f spec %.2f create %.2f start %.2f = Start %.2f; wait %.2f cleanup %.2f lifetime %.2f",
		ms(w.Resolve), ms(w.Mount), ms(w.Spec), ms(w.Create), ms(w.StartTimings.Start), ms(w.Total), ms(w.Wait), ms(w.Cleanup), ms(w.Lifetime))
	if f := r.Freeze; f.Cycles > 0 {
		t.Logf("freeze/thaw of a running worker, medians of %d cycles: freeze %.3f thaw %.3f; thaw while another worker is frozen %.3f",
			f.Cycles, ms(f.Freeze), ms(f.Thaw), ms(f.ThawAmongFrozen))
	}
}

// BenchmarkStart reports, per op, one bare libcontainer run and one worker
// lifetime; the phase medians are reported as metrics.
func BenchmarkStart(b *testing.B) {
	rt, images := benchRuntime(b)
	b.ResetTimer()
	res, err := Bench(context.Background(), BenchOptions{Runtime: rt, Images: images, Image: "probe", Args: []string{"/probe"}, N: b.N, WorkDir: b.TempDir(), RunArgs: []string{"/probe", "pause"}})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(res.Bare.Total.Microseconds())/1000, "bare-ms")
	b.ReportMetric(float64(res.Worker.Total.Microseconds())/1000, "start-ms")
	b.ReportMetric(float64(res.Worker.Mount.Microseconds())/1000, "mount-ms")
	b.ReportMetric(float64(res.Worker.Lifetime.Microseconds())/1000, "lifetime-ms")
	b.ReportMetric(float64(res.Freeze.Thaw.Microseconds())/1000, "thaw-ms")
	b.ReportMetric(float64(res.Freeze.ThawAmongFrozen.Microseconds())/1000, "thaw-among-frozen-ms")
	logBench(b, res)
}
