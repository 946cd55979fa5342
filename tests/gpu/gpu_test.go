package gpu

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// job runs input on ep with /runsync and returns its output and how long
// the call took (the job's end-to-end latency).
func job(t *testing.T, d *daemon, ep string, input map[string]any) (map[string]any, time.Duration) {
	t.Helper()
	t0 := time.Now()
	st := d.json("POST", "/v2/"+ep+"/runsync?wait=300000", map[string]any{"input": input}, 200)
	el := time.Since(t0)
	if st["status"] != "COMPLETED" {
		t.Fatalf("job %v on %s: %v\n%s", input, ep, st, tail(d.log()))
	}
	out, _ := st["output"].(map[string]any)
	return out, el
}

func tail(s string) string {
	if len(s) > 6000 {
		return "..." + s[len(s)-6000:]
	}
	return s
}

type workerInfo struct {
	ID    string   `json:"id"`
	State string   `json:"state"`
	GPUs  []string `json:"gpus"`
}

func workers(t *testing.T, d *daemon, ep string) []workerInfo {
	t.Helper()
	_, b := d.do("GET", "/v1/workers?endpoint="+ep, nil)
	var v struct {
		Workers []workerInfo `json:"workers"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("/v1/workers: %v: %s", err, b)
	}
	return v.Workers
}

// onlyWorker returns ep's single live worker.
func onlyWorker(t *testing.T, d *daemon, ep string) workerInfo {
	t.Helper()
	var live []workerInfo
	for _, w := range workers(t, d, ep) {
		if w.State != "stopped" {
			live = append(live, w)
		}
	}
	if len(live) != 1 {
		t.Fatalf("endpoint %s has workers %+v, want one", ep, live)
	}
	return live[0]
}

// waitState polls until worker id of ep is in state and returns how long
// that took.
func waitState(t *testing.T, d *daemon, ep, id, state string, timeout time.Duration) time.Duration {
	t.Helper()
	t0 := time.Now()
	var last []workerInfo
	for time.Since(t0) < timeout {
		last = workers(t, d, ep)
		for _, w := range last {
			if w.ID == id && w.State == state {
				return time.Since(t0)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("worker %s of %s not %s within %v: %+v\n%s", id, ep, state, timeout, last, tail(d.log()))
	return 0
}

// gone says whether worker id of ep has ended.
func gone(t *testing.T, d *daemon, ep, id string) bool {
	for _, w := range workers(t, d, ep) {
		if w.ID == id && w.State != "stopped" {
			return false
		}
	}
	return true
}

func counter(t *testing.T, out map[string]any) int {
	t.Helper()
	n, ok := out["counter"].(float64)
	if !ok {
		t.Fatalf("no counter in %v", out)
	}
	return int(n)
}

// parkSizes are the GPU memory sizes (MiB) parked in turn, from
// EMBER_GPU_PARK_MB ("1024,4096" by default).
func parkSizes(t *testing.T) []int {
	s := os.Getenv("EMBER_GPU_PARK_MB")
	if s == "" {
		s = "1024,4096"
	}
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			t.Fatalf("EMBER_GPU_PARK_MB %q: want MiB sizes separated by commas", s)
		}
		out = append(out, n)
	}
	return out
}

// baselineSlackMiB is how far a GPU's used memory may stay above its
// baseline after Ember's workers are gone (NVML's own rounding and the
// driver's bookkeeping; a leaked CUDA context is hundreds of MiB).
const baselineSlackMiB = 32

func TestGPU(t *testing.T) {
	host := hostGPUs(t)
	base := map[string]uint64{}
	for _, g := range host {
		base[g.uuid] = g.used
	}
	t.Logf("host GPUs: %d; used memory before emberd (MiB): %v", len(host), base)
	archive := workerImage(t)
	d := startDaemon(t)
	d.json("POST", "/v1/images:import", map[string]any{"path": archive, "name": testImage}, 200)

	endpoint := func(name string, extra map[string]any) string {
		spec := map[string]any{"name": name, "image": testImage, "gpuCount": 1, "workersMax": 1,
			"idleTimeout": 5, "flashboot": true, "flashbootWindow": 3600, "memoryMb": 2048}
		for k, v := range extra {
			spec[k] = v
		}
		return d.json("POST", "/v1/endpoints", spec, 200)["id"].(string)
	}
	a := endpoint("cuda-a", nil)

	// CUDA in the container, with exactly the GPU emberd gave it.
	info, cold := job(t, d, a, map[string]any{"cuda": "info"})
	w := onlyWorker(t, d, a)
	if len(w.GPUs) != 1 {
		t.Fatalf("worker %s holds GPUs %v, want one", w.ID, w.GPUs)
	}
	if info["devices"] != 1.0 || info["uuid"] != w.GPUs[0] {
		t.Errorf("CUDA in the worker sees %v devices, device 0 %v; want 1 device, %s", info["devices"], info["uuid"], w.GPUs[0])
	}
	t.Logf("cold start (container, CUDA init, first job): %v; device %v", cold.Round(time.Millisecond), info["name"])
	ls, _ := job(t, d, a, map[string]any{"ls": "/dev"})
	var gpuNodes []string
	names, _ := ls["names"].([]any)
	for _, n := range names {
		if s := fmt.Sprint(n); strings.HasPrefix(s, "nvidia") && strings.Trim(s[len("nvidia"):], "0123456789") == "" && s != "nvidia" {
			gpuNodes = append(gpuNodes, s)
		}
	}
	if len(gpuNodes) != 1 {
		t.Errorf("the worker's /dev has GPU nodes %v, want exactly one", gpuNodes)
	}

	// nvidia-smi inside: the driver's, seeing the one GPU.
	smi, _ := job(t, d, a, map[string]any{"exec": []string{"nvidia-smi", "-L"}})
	lines := strings.Split(strings.TrimSpace(fmt.Sprint(smi["stdout"])), "\n")
	if smi["code"] != 0.0 || len(lines) != 1 || !strings.Contains(lines[0], w.GPUs[0]) {
		t.Errorf("nvidia-smi -L in the worker: code %v, output %q; want one line naming %s", smi["code"], smi["stdout"], w.GPUs[0])
	}

	// FlashBoot with a live CUDA context: frozen, thawed, state intact.
	out, _ := job(t, d, a, map[string]any{"cuda": "inc"})
	if n := counter(t, out); n != 1 {
		t.Errorf("counter %d, want 1", n)
	}
	waitState(t, d, a, w.ID, "frozen", time.Minute)
	out, revive := job(t, d, a, map[string]any{"cuda": "inc"})
	if n := counter(t, out); n != 2 {
		t.Errorf("after a freeze and thaw: counter %d, want 2 (the CUDA context lost its state)", n)
	}
	if w2 := onlyWorker(t, d, a); w2.ID != w.ID {
		t.Errorf("FlashBoot: job ran on worker %s, want the frozen %s", w2.ID, w.ID)
	}
	t.Logf("FlashBoot revival of a frozen CUDA worker (job latency): %v; cold start %v", revive.Round(time.Millisecond), cold.Round(time.Millisecond))

	// Reclaim: an endpoint that needs every GPU takes the frozen worker's.
	waitState(t, d, a, w.ID, "frozen", time.Minute)
	all := endpoint("cuda-all", map[string]any{"gpuCount": len(host), "flashboot": false})
	out, _ = job(t, d, all, map[string]any{"cuda": "info"})
	if out["devices"] != float64(len(host)) {
		t.Errorf("the all-GPU worker sees %v devices, want %d", out["devices"], len(host))
	}
	if !gone(t, d, a, w.ID) {
		t.Errorf("frozen worker %s of %s still there after its GPU was reclaimed: %+v", w.ID, a, workers(t, d, a))
	}
	d.json("DELETE", "/v1/endpoints/"+a, nil, 200)

	// Parking: the worker's GPU memory moves to host memory, another
	// endpoint uses the GPU, the worker revives with its state.
	for i, mb := range parkSizes(t) {
		p := endpoint(fmt.Sprintf("cuda-park-%d", i), map[string]any{"gpuPark": "onReclaim"})
		_, pcold := job(t, d, p, map[string]any{"cuda": "alloc", "mb": mb})
		for range 3 {
			out, _ = job(t, d, p, map[string]any{"cuda": "inc"})
		}
		pw := onlyWorker(t, d, p)
		gpu := pw.GPUs[0]
		waitState(t, d, p, pw.ID, "frozen", time.Minute)
		held := usedMiB(t, gpu)
		// The all-GPU endpoint's worker is gone (idle, reclaimed) or idle;
		// its next job needs the parked worker's GPU.
		t0 := time.Now()
		id := d.json("POST", "/v2/"+all+"/run", map[string]any{"input": map[string]any{"cuda": "info"}}, 200)["id"].(string)
		park := waitState(t, d, p, pw.ID, "parked", 5*time.Minute)
		after := usedMiB(t, gpu)
		if after >= base[gpu]+uint64(mb)/2 {
			t.Errorf("%d MiB: GPU %s uses %d MiB with the worker parked (baseline %d, %d while it held the GPU)", mb, gpu, after, base[gpu], held)
		}
		st := waitJob(t, d, all, id)
		if o, _ := st["output"].(map[string]any); o["devices"] != float64(len(host)) {
			t.Errorf("%d MiB: the other endpoint's job while parked: %v", mb, st)
		}
		other := time.Since(t0)
		out, prev := job(t, d, p, map[string]any{"cuda": "inc"})
		if n := counter(t, out); n != 4 {
			t.Errorf("%d MiB: after park and revive the counter is %d, want 4", mb, n)
		}
		if w2 := onlyWorker(t, d, p); w2.ID != pw.ID || len(w2.GPUs) != 1 || w2.GPUs[0] != gpu {
			t.Errorf("%d MiB: revived on %+v, want worker %s on %s", mb, w2, pw.ID, gpu)
		}
		t.Logf("park %d MiB: parked in %v (from the other endpoint's submit), the other endpoint's job done %v after submit; "+
			"revive (job latency, taking the GPU back) %v; cold start of the same worker (container, CUDA init, allocation) %v; GPU used %d -> %d MiB (baseline %d)",
			mb, park.Round(time.Millisecond), other.Round(time.Millisecond), prev.Round(time.Millisecond), pcold.Round(time.Millisecond),
			held, after, base[gpu])
		d.json("DELETE", "/v1/endpoints/"+p, nil, 200)
	}

	// GPU memory back to baseline once emberd and its workers are gone.
	d.stop()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var over []string
		for _, g := range hostGPUs(t) {
			if g.used > base[g.uuid]+baselineSlackMiB {
				over = append(over, fmt.Sprintf("%s: %d MiB (baseline %d)", g.uuid, g.used, base[g.uuid]))
			}
		}
		if len(over) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("GPU memory not back to baseline 30 s after emberd stopped: %v", over)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitJob waits for a job of ep to complete and returns its status.
func waitJob(t *testing.T, d *daemon, ep, id string) map[string]any {
	t.Helper()
	st := d.json("POST", "/v2/"+ep+"/status-sync/"+id+"?wait=300000", nil, 200)
	if st["status"] != "COMPLETED" {
		t.Fatalf("job %s on %s: %v\n%s", id, ep, st, tail(d.log()))
	}
	return st
}
