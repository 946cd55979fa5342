package tests

// A Python worker in a real container: a Debian rootfs (debootstrap, cached
// in /var/cache/ember-test by internal/debroot) with python3 and
// python3-aiohttp, packed into an OCI image with Ember's own mkimage and
// imported, runs testdata/pyworker/worker.py under runc. The worker speaks
// the protocol as runpod-python does (asyncio, concurrent job-take and
// job-stop long-polls, pings, a generator handler, refresh_worker); the
// endpoint has no network but loopback, and the worker reads and writes
// /runpod-volume.
//
// emberd holds an empty job-stop poll for 60 s but kills a draining worker
// after a 12 s stop grace (under the harness's 15 s wait for emberd to stop,
// so that a regression kills its containers before the harness kills
// emberd). A worker whose stop poll emberd did not answer when it drained
// it would sit in that poll until SIGKILL; every worker here must instead
// exit by itself, with status 0, which emberd logs as "worker stopped".

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/debroot"
)

const (
	pyStopHold  = 60 * time.Second
	pyStopGrace = 12 * time.Second
	pyImage     = "ember/pyworker:test"
)

// pyPackages are the Debian packages of the worker image beyond minbase.
var pyPackages = []string{"python3", "python3-aiohttp"}

// pyExit is what worker.py writes into /runpod-volume/exits/ as it exits
// (times in Unix ms).
type pyExit struct {
	Worker         string   `json:"worker"`
	TermAt         int64    `json:"termAt"`
	ExitAt         int64    `json:"exitAt"`
	LastStopPollAt int64    `json:"lastStopPollAt"`
	StopPolls      int      `json:"stopPolls"`
	Jobs           int      `json:"jobs"`
	Cancelled      []string `json:"cancelled"`
}

// pythonImage builds (or finds cached) the Python rootfs, packs it with
// the worker script into an OCI archive with mkimage, and imports it into
// d. It skips the test when this machine cannot build the rootfs.
func pythonImage(t *testing.T, d *Daemon) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	t0 := time.Now()
	root, err := debroot.Get(ctx, debroot.Spec{Purpose: "python", Packages: pyPackages})
	if errors.Is(err, debroot.ErrUnavailable) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	how := "cached"
	if !root.Cached {
		how = fmt.Sprintf("built with debootstrap in %v from %s", root.BuildTime.Round(100*time.Millisecond), root.Mirror)
	}
	t.Logf("Python rootfs %s (%s), %v", root.Dir, how, time.Since(t0).Round(100*time.Millisecond))

	t0 = time.Now()
	archive := filepath.Join(t.TempDir(), "pyworker.tar")
	mk := exec.CommandContext(ctx, "go", "run", "../examples/worker/mkimage", "-rootfs", root.Dir,
		// What a worker never reads: apt's caches, documentation, translations.
		"-exclude", "var/cache/apt/archives", "-exclude", "var/lib/apt/lists",
		"-exclude", "usr/share/doc", "-exclude", "usr/share/man", "-exclude", "usr/share/locale",
		"-add", "testdata/pyworker/worker.py:/worker.py",
		"-entrypoint", "/usr/bin/python3 -u /worker.py",
		"-compress", "zstd", "-name", pyImage, "-o", archive)
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("mkimage -rootfs: %v\n%s", err, out)
	}
	st, err := os.Stat(archive)
	if err != nil {
		t.Fatal(err)
	}
	packed := time.Since(t0)
	t0 = time.Now()
	d.JSON("POST", "/v1/images:import", map[string]any{"path": archive, "name": pyImage}, 200)
	t.Logf("packed in %v (%d MiB, zstd), imported in %v", packed.Round(100*time.Millisecond), st.Size()>>20, time.Since(t0).Round(100*time.Millisecond))
}

// pyStopped waits (bounded) for emberd to see a drained worker end, and
// returns the exit report the worker wrote. It fails the test unless the
// worker exited by itself with status 0, which emberd logs as "worker
// stopped", rather than being killed when the stop grace ran out or dying
// ("worker exited", with the status).
func pyStopped(t *testing.T, d *Daemon, volume, worker string) pyExit {
	t.Helper()
	stopped, exited := `msg="worker stopped" worker=`+worker+" ", `msg="worker exited" worker=`+worker+" "
	var log string
	waitFor(t, pyStopGrace+15*time.Second, "emberd to log the end of worker "+worker, func() bool {
		b, _ := os.ReadFile(d.logPath)
		log = string(b)
		return strings.Contains(log, stopped) || strings.Contains(log, exited)
	})
	for line := range strings.SplitSeq(log, "\n") {
		if strings.Contains(line, exited) {
			t.Fatalf("worker %s did not exit by itself after it was drained: %s", worker, line)
		}
	}
	// Written before the process exits.
	var rep pyExit
	b, err := os.ReadFile(filepath.Join(volume, "exits", worker+".json"))
	if err == nil {
		err = json.Unmarshal(b, &rep)
	}
	if err != nil {
		t.Fatalf("worker %s exited cleanly but left no exit report: %v", worker, err)
	}
	return rep
}

// pyOutput decodes a job's output object.
func pyOutput(t *testing.T, st map[string]any) map[string]any {
	t.Helper()
	out, ok := st["output"].(map[string]any)
	if !ok {
		t.Fatalf("job output %v is not an object (status %v)", st["output"], st)
	}
	return out
}

func TestPythonWorker(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("container workers need root (CI runs as root)")
	}
	t.Parallel()
	began := time.Now()
	d := StartDaemon(t, "--runtime", "runc", "--stop-hold", pyStopHold.String(), "--stop-grace", pyStopGrace.String())
	pythonImage(t, d)

	ep := d.JSON("POST", "/v1/endpoints", map[string]any{"name": "python", "image": pyImage, "gpuCount": 0,
		"workersMin": 1, "workersMax": 1, "idleTimeout": 60, "network": "none",
		"env": map[string]string{"MODEL": "a"}}, 200)["id"].(string)
	t.Cleanup(func() {
		if t.Failed() { // before the daemon stops (cleanups run last first)
			_, logs := d.Do("GET", "/v1/endpoints/"+ep+"/logs", nil)
			t.Logf("the Python workers' output:\n%s", logs)
		}
	})
	volume := filepath.Join(d.DataDir, "volumes", ep)
	if err := os.MkdirAll(volume, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(volume, "seed.txt"), []byte("from the host"), 0o644); err != nil {
		t.Fatal(err)
	}
	created := time.Now()
	w1 := idleWorkers(t, d, ep, 1)[0]
	t.Logf("endpoint created to first Python worker idle: %v", time.Since(created).Round(10*time.Millisecond))

	// A plain handler: its input back, the volume read and written, the
	// endpoint's env, and only loopback in its network namespace.
	st := d.JSON("POST", "/v2/"+ep+"/runsync?wait=60000", map[string]any{"input": map[string]any{
		"msg": "hi", "interfaces": true, "read": "seed.txt", "echo_env": "MODEL",
		"write": map[string]any{"path": "from-python.txt", "text": "written by worker.py"}}}, 200)
	if st["status"] != "COMPLETED" || st["workerId"] != w1 {
		t.Fatalf("plain job: %v, want COMPLETED on %s\n%s", st, w1, d.Log())
	}
	out := pyOutput(t, st)
	if echo, _ := out["echo"].(map[string]any); echo["msg"] != "hi" {
		t.Errorf("plain job output %v does not echo the input", out)
	}
	if py, _ := out["python"].(string); !strings.HasPrefix(py, "3.") {
		t.Errorf("plain job ran under Python %q", py)
	}
	if got := fmt.Sprint(out["interfaces"]); got != "[lo]" {
		t.Errorf("network none: the worker sees interfaces %s, want only [lo]", got)
	}
	if out["read"] != "from the host" || out["env"] != "a" {
		t.Errorf("plain job read %q from /runpod-volume and MODEL=%q, want %q and a", out["read"], out["env"], "from the host")
	}
	if b, err := os.ReadFile(filepath.Join(volume, "from-python.txt")); err != nil || string(b) != "written by worker.py" {
		t.Errorf("what the worker wrote to /runpod-volume, on the host: %q, %v", b, err)
	}

	// A handler that raises: FAILED with the exception, the worker serves on.
	st = d.JSON("POST", "/v2/"+ep+"/runsync?wait=60000", map[string]any{"input": map[string]any{"raise": "boom from python"}}, 200)
	if st["status"] != "FAILED" || !strings.Contains(fmt.Sprint(st["error"]), "boom from python") {
		t.Errorf("a raising handler: %v, want FAILED naming the exception", st)
	}

	// A generator handler: every chunk, in order, through /stream.
	const chunks = 20
	gen := d.Submit(ep, map[string]any{"input": map[string]any{"handler": "count", "n": chunks, "every_ms": 20}})
	var got []int
	status := ""
	for i := 0; i < 200 && !slices.Contains([]string{"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}, status); i++ {
		page, _ := readStream(t, d, ep, gen)
		status = page.Status
		for _, c := range page.Stream {
			var chunk struct {
				I      int    `json:"i"`
				Worker string `json:"worker"`
			}
			if err := json.Unmarshal(c.Output, &chunk); err != nil || chunk.Worker != w1 {
				t.Fatalf("stream chunk %s (%v), want {i, worker %s}", c.Output, err, w1)
			}
			got = append(got, chunk.I)
		}
	}
	if status != "COMPLETED" || len(got) != chunks {
		t.Fatalf("generator job: status %q, chunks %v; want COMPLETED and %d chunks", status, got, chunks)
	}
	for i, v := range got {
		if v != i {
			t.Fatalf("stream chunks out of order: %v", got)
		}
	}

	// A cancel reaches the running async handler through job-stop: the
	// worker cancels the job and serves the next one.
	long := d.Submit(ep, map[string]any{"input": map[string]any{"sleep_ms": 30000}})
	d.WaitStatus(ep, long, 30*time.Second, "IN_PROGRESS")
	d.JSON("POST", "/v2/"+ep+"/cancel/"+long, nil, 200)

	// refresh_worker: the result carries stopPod, emberd replaces the
	// worker, which exits by itself.
	st = d.JSON("POST", "/v2/"+ep+"/runsync?wait=60000", map[string]any{"input": map[string]any{"refresh_worker": true}}, 200)
	if st["status"] != "COMPLETED" || st["workerId"] != w1 {
		t.Fatalf("refresh_worker job: %v, want COMPLETED on %s (the cancelled job's worker, still serving)\n%s", st, w1, d.Log())
	}
	if _, leaked := pyOutput(t, st)["refresh_worker"]; leaked {
		t.Errorf("refresh_worker was left in the output %v; the SDK turns it into stopPod", st["output"])
	}
	rep := pyStopped(t, d, volume, w1)
	if !slices.Contains(rep.Cancelled, long) {
		t.Errorf("worker %s did not cancel job %s on job-stop: %+v", w1, long, rep)
	}
	if rep.TermAt == 0 || rep.Jobs != 5 {
		t.Errorf("worker %s after refresh_worker: %+v, want SIGTERM received and 5 jobs run", w1, rep)
	}

	// Stop at once: the replacement, idle, is drained. Its one job-stop
	// poll (held up to 60 s) is answered, and it exits by itself long
	// before the 12 s grace would kill it.
	w2 := idleWorkers(t, d, ep, 1)[0]
	if w2 == w1 {
		t.Fatalf("worker %s was not replaced after refresh_worker", w1)
	}
	d.JSON("POST", "/v1/workers/"+w2+":stop", nil, 200)
	rep = pyStopped(t, d, volume, w2)
	if rep.TermAt == 0 || rep.StopPolls != 1 || rep.LastStopPollAt > rep.TermAt {
		t.Errorf("idle worker %s: %+v; want SIGTERM while its one job-stop poll was pending", w2, rep)
	}
	t.Logf("idle Python worker %s exited %v after SIGTERM (stop grace %v, stop hold %v)",
		w2, time.Duration(rep.ExitAt-rep.TermAt)*time.Millisecond, pyStopGrace, pyStopHold)

	// A rolling update: a job in flight finishes on the old generation
	// with the old env, the jobs after the PATCH run on a generation-2
	// worker with the new one, the old worker exits by itself, no job is
	// lost.
	w3 := idleWorkers(t, d, ep, 1)[0]
	inFlight := d.Submit(ep, map[string]any{"input": map[string]any{"sleep_ms": 2000, "echo_env": "MODEL"}})
	if st := d.WaitStatus(ep, inFlight, 30*time.Second, "IN_PROGRESS"); st["workerId"] != w3 {
		t.Fatalf("job before the update: %v, want it on %s", st, w3)
	}
	if g := generationOf(d.JSON("PATCH", "/v1/endpoints/"+ep, map[string]any{"env": map[string]string{"MODEL": "b"}}, 200)); g != "2" {
		t.Fatalf("generation after an env update %s, want 2", g)
	}
	after := []string{
		d.Submit(ep, map[string]any{"input": map[string]any{"echo_env": "MODEL"}}),
		d.Submit(ep, map[string]any{"input": map[string]any{"echo_env": "MODEL"}}),
	}
	var w4 string
	waitFor(t, 60*time.Second, "a generation-2 Python worker", func() bool {
		for _, w := range d.rollWorkers(ep) {
			if w.Generation == 2 && w.ID != w3 {
				w4 = w.ID
			}
		}
		return w4 != ""
	})
	st = d.WaitStatus(ep, inFlight, 60*time.Second, "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
	if st["status"] != "COMPLETED" || st["workerId"] != w3 || pyOutput(t, st)["env"] != "a" {
		t.Errorf("the job in flight during the update: %v, want COMPLETED on %s with MODEL=a", st, w3)
	}
	for _, id := range after {
		st = d.WaitStatus(ep, id, 60*time.Second, "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
		if st["status"] != "COMPLETED" || st["workerId"] != w4 || pyOutput(t, st)["env"] != "b" {
			t.Errorf("a job sent after the update: %v, want COMPLETED on the generation-2 worker %s with MODEL=b", st, w4)
		}
	}
	rep = pyStopped(t, d, volume, w3)
	if rep.Jobs != 1 {
		t.Errorf("the old-generation worker %s ran %d jobs, want 1: %+v", w3, rep.Jobs, rep)
	}
	t.Logf("TestPythonWorker: %v in all", time.Since(began).Round(100*time.Millisecond))
}
