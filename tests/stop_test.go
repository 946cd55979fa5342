package tests

// Stop at once: a worker that behaves as runpod-python does (sdkworker_test.go:
// concurrent job-take and job-stop long-polls, exit only when both have
// returned) exits promptly when emberd stops it, instead of waiting out the
// stop-hold of its pending job-stop poll. emberd runs with a long
// --stop-hold and a longer --stop-grace, so that a worker that waited for
// its stop poll would take most of the stop-hold to exit, and SIGKILL
// could not hide it: "exits before half the stop-hold" is then a property,
// not a speed.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	sdkStopHold = 20 * time.Second
	// sdkPrompt: an SDK-like worker that exits later than this after
	// SIGTERM waited for its stop poll. Its pending poll is checked to
	// have started less than this before SIGTERM, so waiting for it would
	// have taken at least sdkStopHold - sdkPrompt.
	sdkPrompt = sdkStopHold / 2
)

// startStopDaemon runs emberd with the long stop-hold and a stop grace
// longer than it (SIGKILL would otherwise end a lingering worker first).
func startStopDaemon(t testing.TB) *Daemon {
	t.Helper()
	return StartDaemon(t, "--stop-hold", sdkStopHold.String(), "--stop-grace", "60s")
}

// sdkEndpoint creates an endpoint whose workers are SDK-like (the test
// binary in worker mode) and returns its id and the directory the workers
// write their exit reports into.
func sdkEndpoint(t testing.TB, d *Daemon, name string, fields map[string]any) (string, string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir: the workers may write into it until the daemon stops.
	dir, err := os.MkdirTemp("", "ember-sdk-worker-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop(); os.RemoveAll(dir) })
	spec := map[string]any{
		"command": []string{exe},
		"env":     map[string]string{sdkWorkerEnv: "1", "SDK_WORKER_DIR": dir},
	}
	for k, v := range fields {
		spec[k] = v
	}
	return d.CreateEndpoint(name, spec), dir
}

// sdkExitOf waits (bounded) for a worker's exit report.
func sdkExitOf(t testing.TB, d *Daemon, dir, workerID string, limit time.Duration) sdkExit {
	t.Helper()
	var rep sdkExit
	waitFor(t, limit, "SDK-like worker "+workerID+" to exit", func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "exit."+workerID+".json"))
		return err == nil && json.Unmarshal(b, &rep) == nil
	})
	return rep
}

// checkPrompt fails unless the worker exited within sdkPrompt of its
// SIGTERM although its job-stop poll, had it been held, would have kept it
// longer.
func checkPrompt(t testing.TB, rep sdkExit) {
	t.Helper()
	if rep.TermAt == 0 {
		t.Fatalf("worker %s exited without a SIGTERM: %+v", rep.Worker, rep)
	}
	if age := time.Duration(rep.TermAt-rep.LastStopPollAt) * time.Millisecond; age >= sdkPrompt {
		t.Fatalf("worker %s: its last job-stop poll started %v before SIGTERM, too early for this test to tell a held poll from an answered one", rep.Worker, age)
	}
	took := time.Duration(rep.ExitAt-rep.TermAt) * time.Millisecond
	t.Logf("worker %s exited %v after SIGTERM (stop-hold %v; %d stop polls, %d jobs)", rep.Worker, took, sdkStopHold, rep.StopPolls, rep.Jobs)
	if took >= sdkPrompt {
		t.Errorf("worker %s exited %v after SIGTERM: it waited for its job-stop poll (stop-hold %v)", rep.Worker, took, sdkStopHold)
	}
}

// idleWorkers waits (bounded) for n idle workers of ep and returns their ids.
func idleWorkers(t testing.TB, d *Daemon, ep string, n int) []string {
	t.Helper()
	var ids []string
	waitFor(t, 60*time.Second, "idle workers", func() bool {
		ids = ids[:0]
		for _, w := range d.Workers(ep) {
			if w.State == "idle" {
				ids = append(ids, w.ID)
			}
		}
		return len(ids) == n
	})
	return ids
}

// TestStopSDKWorkerIdleTimeout: an idle SDK-like worker past its endpoint's
// idle timeout exits at once, and emberd forgets it.
func TestStopSDKWorkerIdleTimeout(t *testing.T) {
	t.Parallel()
	d := startStopDaemon(t)
	ep, dir := sdkEndpoint(t, d, "sdk-idle", map[string]any{"workersMin": 0, "workersMax": 1, "idleTimeout": 1})
	id := d.Submit(ep, map[string]any{"input": map[string]any{"n": 1}})
	st := d.WaitStatus(ep, id, 60*time.Second, "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
	if st["status"] != "COMPLETED" {
		t.Fatalf("job: %v\n%s", st, d.Log())
	}
	wid, _ := st["workerId"].(string)
	rep := sdkExitOf(t, d, dir, wid, 3*sdkStopHold)
	checkPrompt(t, rep)
	if rep.Jobs != 1 {
		t.Errorf("the worker ran %d jobs, want 1", rep.Jobs)
	}
	waitFor(t, sdkPrompt, "the exited worker to leave the list", func() bool { return live(d.Workers(ep)) == 0 })
}

// TestStopSDKWorkerStop: `ember worker stop` (POST /v1/workers/{id}:stop)
// on an idle SDK-like worker ends it at once; a busy one finishes its job,
// posts the result, and then exits at once.
func TestStopSDKWorkerStop(t *testing.T) {
	t.Parallel()
	d := startStopDaemon(t)

	idleEP, idleDir := sdkEndpoint(t, d, "sdk-stop-idle", map[string]any{"workersMin": 1, "workersMax": 1, "idleTimeout": 60})
	wid := idleWorkers(t, d, idleEP, 1)[0]
	d.JSON("POST", "/v1/workers/"+wid+":stop", nil, 200)
	checkPrompt(t, sdkExitOf(t, d, idleDir, wid, 3*sdkStopHold))

	busyEP, busyDir := sdkEndpoint(t, d, "sdk-stop-busy", map[string]any{"workersMin": 1, "workersMax": 1, "idleTimeout": 60})
	idleWorkers(t, d, busyEP, 1)
	id := d.Submit(busyEP, map[string]any{"input": map[string]any{"sleep_ms": 1500}})
	st := d.WaitStatus(busyEP, id, 30*time.Second, "IN_PROGRESS")
	busy, _ := st["workerId"].(string)
	if st["status"] != "IN_PROGRESS" || busy == "" {
		t.Fatalf("job: %v", st)
	}
	d.JSON("POST", "/v1/workers/"+busy+":stop", nil, 200)
	st = d.WaitStatus(busyEP, id, 30*time.Second, "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
	if st["status"] != "COMPLETED" || st["workerId"] != busy {
		t.Errorf("the draining worker's job: %v, want COMPLETED by %s", st, busy)
	}
	rep := sdkExitOf(t, d, busyDir, busy, 3*sdkStopHold)
	checkPrompt(t, rep)
	if rep.Jobs != 1 {
		t.Errorf("the busy worker ran %d jobs, want 1", rep.Jobs)
	}
}

// TestStopSDKWorkersShutdown: emberd's shutdown with idle SDK-like workers
// ends without waiting out the stop-hold.
func TestStopSDKWorkersShutdown(t *testing.T) {
	t.Parallel()
	d := startStopDaemon(t)
	const n = 4
	ep, dir := sdkEndpoint(t, d, "sdk-shutdown", map[string]any{"workersMin": n, "workersMax": n, "idleTimeout": 60})
	ids := idleWorkers(t, d, ep, n)
	took := stopDaemonTimed(t, d, 3*sdkStopHold)
	t.Logf("emberd stopped %v after SIGTERM with %d idle SDK-like workers (stop-hold %v)", took, n, sdkStopHold)
	for _, id := range ids {
		checkPrompt(t, sdkExitOf(t, d, dir, id, time.Second))
	}
	if took >= sdkPrompt {
		t.Errorf("emberd took %v to stop: it waited for its workers' job-stop polls (stop-hold %v)", took, sdkStopHold)
	}
	if !strings.Contains(d.Log(), "emberd stopped") {
		t.Errorf("emberd did not stop cleanly:\n%s", d.Log())
	}
}

// stopDaemonTimed sends emberd SIGTERM and returns how long it took to
// exit (bounded: killed after limit).
func stopDaemonTimed(t testing.TB, d *Daemon, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.exited:
	case <-time.After(limit):
		d.cmd.Process.Kill()
		<-d.exited
		t.Fatalf("emberd still running %v after SIGTERM", limit)
	}
	return time.Since(start)
}

// BenchmarkStopShutdownIdleSDKWorkers measures emberd's shutdown (SIGTERM
// to exit) with 8 idle SDK-like workers, at emberd's default --stop-hold
// (20 s) and --stop-grace (30 s). It runs this build and, when
// EMBER_BASELINE_EMBERD names another emberd binary, that one in the same
// run. This build is the harness's, race-instrumented (the race runtime
// sleeps 1 s at exit), unless EMBER_BENCH_EMBERD names one built without
// -race:
//
//	go build -tags seccomp -o /tmp/emberd-after-stop ./daemon/cmd/emberd
//	EMBER_BENCH_EMBERD=/tmp/emberd-after-stop EMBER_BASELINE_EMBERD=/tmp/emberd-before-stop \
//	  go test -tags seccomp -run '^$' -bench StopShutdown -benchtime 1x ./tests/
func BenchmarkStopShutdownIdleSDKWorkers(b *testing.B) {
	this := emberdBin
	if p := os.Getenv("EMBER_BENCH_EMBERD"); p != "" {
		this = p
	}
	builds := [][2]string{{"this", this}}
	if p := os.Getenv("EMBER_BASELINE_EMBERD"); p != "" {
		builds = append(builds, [2]string{"baseline", p})
	}
	for _, build := range builds {
		b.Run("build="+build[0], func(b *testing.B) {
			// StartDaemon runs emberdBin; benchmarks run one at a time.
			saved := emberdBin
			emberdBin = build[1]
			defer func() { emberdBin = saved }()
			const n = 8
			var total time.Duration
			runs := 0
			for b.Loop() {
				runs++
				b.StopTimer()
				d := StartDaemon(b, "--stop-hold", "20s", "--stop-grace", "30s")
				ep, _ := sdkEndpoint(b, d, "sdk-bench", map[string]any{"workersMin": n, "workersMax": n, "idleTimeout": 60})
				idleWorkers(b, d, ep, n)
				b.StartTimer()
				total += stopDaemonTimed(b, d, 2*time.Minute)
			}
			b.ReportMetric(total.Seconds()/float64(runs), "shutdown-s/op")
		})
	}
}
