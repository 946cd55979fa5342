package scheduler

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/scheduler/limits"
	"github.com/emberhq/ember/scheduler/spec"
	"github.com/emberhq/ember/scheduler/store"
)

// split divides total bytes into the fewest pieces of at most max bytes,
// as evenly as possible, so that no piece is too small to hold a name.
func split(total, max int) []int {
	n := (total + max - 1) / max
	out := make([]int, n)
	for i := range out {
		out[i] = total / n
		if i < total%n {
			out[i]++
		}
	}
	return out
}

// envOfSize is an environment whose entries ("KEY=VALUE" and NUL) have
// the given sizes.
func envOfSize(sizes ...int) map[string]string {
	env := make(map[string]string, len(sizes))
	for i, n := range sizes {
		k := fmt.Sprintf("V%04d", i)
		env[k] = strings.Repeat("v", n-len(k)-2)
	}
	return env
}

// commandOfSize is a command whose arguments (with their NUL) have the
// given sizes; the first is an absolute path.
func commandOfSize(sizes ...int) []string {
	cmd := make([]string, len(sizes))
	for i, n := range sizes {
		cmd[i] = strings.Repeat("a", n-1)
		if i == 0 {
			cmd[i] = "/" + cmd[i][1:]
		}
	}
	return cmd
}

// TestValidateEndpointSizes: every size an endpoint carries to execve is
// accepted at its limit and refused one byte (or one entry) past it, with
// the field and the limit named.
func TestValidateEndpointSizes(t *testing.T) {
	many := func(n int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = 8
		}
		return s
	}
	cases := []struct {
		name  string
		mod   func(e *store.Endpoint)
		field string // "" = accepted
		limit int
	}{
		{"name at limit", func(e *store.Endpoint) { e.Name = strings.Repeat("n", limits.EndpointName) }, "", 0},
		{"name past limit", func(e *store.Endpoint) { e.Name = strings.Repeat("n", limits.EndpointName+1) }, "name", limits.EndpointName},
		{"image at limit", func(e *store.Endpoint) { e.Image = strings.Repeat("i", limits.ImageRef) }, "", 0},
		{"image past limit", func(e *store.Endpoint) { e.Image = strings.Repeat("i", limits.ImageRef+1) }, "image", limits.ImageRef},
		{"argument at limit", func(e *store.Endpoint) { e.Command = commandOfSize(8, limits.CommandArg) }, "", 0},
		{"argument past limit", func(e *store.Endpoint) { e.Command = commandOfSize(8, limits.CommandArg+1) }, "command", limits.CommandArg},
		{"command at total", func(e *store.Endpoint) { e.Command = commandOfSize(split(limits.CommandTotal, limits.CommandArg)...) }, "", 0},
		{"command past total", func(e *store.Endpoint) {
			e.Command = commandOfSize(split(limits.CommandTotal+1, limits.CommandArg)...)
		}, "command", limits.CommandTotal},
		{"arguments at count", func(e *store.Endpoint) { e.Command = commandOfSize(many(limits.CommandArgs)...) }, "", 0},
		{"arguments past count", func(e *store.Endpoint) { e.Command = commandOfSize(many(limits.CommandArgs + 1)...) }, "command", limits.CommandArgs},
		{"variable at limit", func(e *store.Endpoint) { e.Env = envOfSize(limits.EnvEntry) }, "", 0},
		{"variable past limit", func(e *store.Endpoint) { e.Env = envOfSize(limits.EnvEntry + 1) }, "env", limits.EnvEntry},
		{"env at total", func(e *store.Endpoint) { e.Env = envOfSize(split(limits.EnvTotal, limits.EnvEntry)...) }, "", 0},
		{"env past total", func(e *store.Endpoint) { e.Env = envOfSize(split(limits.EnvTotal+1, limits.EnvEntry)...) }, "env", limits.EnvTotal},
		{"variables at count", func(e *store.Endpoint) { e.Env = envOfSize(many(limits.EnvEntries)...) }, "", 0},
		{"variables past count", func(e *store.Endpoint) { e.Env = envOfSize(many(limits.EnvEntries + 1)...) }, "env", limits.EnvEntries},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := spec.Default()
			e.Name, e.Command = "x", []string{"/w"}
			tc.mod(&e)
			err := spec.Validate(&e)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("refused at the limit: %v", err)
				}
				return
			}
			var fe *spec.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(fe.Msg, strconv.Itoa(tc.limit)) {
				t.Fatalf("got %v, want a %s error naming the limit %d", err, tc.field, tc.limit)
			}
		})
	}
}

// TestWorkerEnvFitsReserve: what Ember adds to a worker's environment, and
// the pointers of a command and env at their counts, fit in ExecReserve
// with room for the image's own variables.
func TestWorkerEnvFitsReserve(t *testing.T) {
	h := newHarness(t, nil)
	w := h.worker()
	added := 0
	for _, kv := range w.spec.Env {
		added += len(kv) + 1
	}
	pointers := 8 * (limits.CommandArgs + limits.EnvEntries + len(w.spec.Env) + 2)
	if added+pointers > limits.ExecReserve/2 {
		t.Errorf("Ember's variables (%d bytes) and the pointers (%d bytes) take more than half of the %d-byte reserve", added, pointers, limits.ExecReserve)
	}
}

// TestCheckRunnable: a container endpoint whose image is not imported, and
// a process endpoint whose program is not an absolute path, are refused
// saying what to do, at create and at an update that sets them.
func TestCheckRunnable(t *testing.T) {
	rt := newFakeRuntime()
	cfg := testConfig(t, rt)
	cfg.RequireImage = true
	imported := "ember/worker:1"
	cfg.ImageExists = func(ref string) error {
		if ref == imported {
			return nil
		}
		return fmt.Errorf("image %q: not found", ref)
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	name, img, missing, zero := "c", "ember/worker:1", "ember/nope:1", 0
	_, err = s.CreateEndpoint(ctx, spec.EndpointSpec{Name: &name, Image: &missing, GPUCount: &zero})
	var fe *spec.FieldError
	if !errors.As(err, &fe) || fe.Field != "image" || !strings.Contains(fe.Msg, "ember image import FILE") || !strings.Contains(fe.Msg, `"ember/nope:1"`) {
		t.Fatalf("create with an image not imported: %v", err)
	}
	e, err := s.CreateEndpoint(ctx, spec.EndpointSpec{Name: &name, Image: &img, GPUCount: &zero})
	if err != nil {
		t.Fatalf("create with an imported image: %v", err)
	}
	if _, err := s.UpdateEndpoint(ctx, e.ID, spec.EndpointSpec{Image: &missing}); !errors.As(err, &fe) || fe.Field != "image" {
		t.Fatalf("update to an image not imported: %v", err)
	}
	// Image removal is refused while an endpoint uses it, but a damaged
	// store may still lose one: other fields stay editable.
	imported = ""
	two := 2
	if _, err := s.UpdateEndpoint(ctx, e.ID, spec.EndpointSpec{WorkersMax: &two}); err != nil {
		t.Fatalf("update of another field: %v", err)
	}

	prt := newFakeRuntime()
	pcfg := testConfig(t, prt)
	pcfg.AbsoluteCommand = true
	ps, err := Open(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	for _, tc := range []struct {
		cmd []string
		ok  bool
	}{
		{[]string{"worker"}, false},
		{[]string{"./bin/worker", "-v"}, false},
		{[]string{"bin/worker"}, false},
		{[]string{"/opt/worker/bin/worker", "-v"}, true},
	} {
		n := "p" + strconv.Itoa(len(tc.cmd[0]))
		_, err := ps.CreateEndpoint(ctx, spec.EndpointSpec{Name: &n, Command: &tc.cmd, GPUCount: &zero})
		if tc.ok != (err == nil) {
			t.Errorf("%q: %v, want ok=%v", tc.cmd, err, tc.ok)
		}
		if !tc.ok && (!errors.As(err, &fe) || fe.Field != "command" || !strings.Contains(fe.Msg, "give an absolute path")) {
			t.Errorf("%q: %v, want a command error saying to give an absolute path", tc.cmd, err)
		}
	}
}

// startFailHarness is a scheduler whose endpoint (no minimum, one worker)
// gives up after two start failures in a row.
func startFailHarness(t *testing.T, failing bool) *harness {
	t.Helper()
	rt := newFakeRuntime()
	rt.failing = failing
	cfg := testConfig(t, rt)
	cfg.MaxStartFailures = 2
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(func() { cancel(); s.Close() })
	h := &harness{t: t, s: s, rt: rt, ctx: ctx}
	h.ep = h.createEndpoint("broken", 0, 1)
	return h
}

// TestStartFailuresFailQueuedJobs: workers that cannot start fail the
// endpoint's queued jobs with the reason after MaxStartFailures in a row;
// a later job gets a fresh series and runs once a worker can start.
func TestStartFailuresFailQueuedJobs(t *testing.T) {
	h := startFailHarness(t, true)
	a, b := h.submit(spec.Submission{}), h.submit(spec.Submission{})
	for _, id := range []string{a, b} {
		v := h.waitStatus(id, store.Failed)
		if want := "worker start failed 2 times in a row: fake runtime refuses to start"; v.Error != want {
			t.Errorf("%s failed with %q, want %q", id, v.Error, want)
		}
	}
	h.s.mu.Lock()
	inQueue := h.s.endpoints[h.ep].inQueue
	h.s.mu.Unlock()
	if inQueue != 0 {
		t.Errorf("inQueue = %d after the jobs failed", inQueue)
	}

	// The endpoint is not disabled: a new job queues, starts a worker at
	// once (no back-off), and runs.
	h.rt.mu.Lock()
	h.rt.failing = false
	h.rt.mu.Unlock()
	c := h.submit(spec.Submission{})
	if v := h.status(c); v.Status != store.InQueue {
		t.Fatalf("a job after the failures: %+v", v)
	}
	w := h.worker()
	h.take(w)
	h.done(w, c, Result{Output: []byte(`1`)})
	h.waitStatus(c, store.Completed)
}

// TestCrashBeforeReadyCountsAsStartFailure: a worker that exits before its
// first job-take counts; one that became ready resets the count.
func TestCrashBeforeReadyCountsAsStartFailure(t *testing.T) {
	h := startFailHarness(t, false)
	id := h.submit(spec.Submission{})
	h.worker().finish(oci.ExitStatus{Code: 1})
	// A ready worker in between resets the series: it takes the job and
	// crashes, which re-queues it (attempt counted, 1 of 3).
	w := h.worker()
	h.take(w)
	w.finish(oci.ExitStatus{Code: 137})
	h.worker().finish(oci.ExitStatus{Code: 1})
	eventually(t, "the crash counted", func() bool {
		h.s.mu.Lock()
		defer h.s.mu.Unlock()
		return h.s.endpoints[h.ep].startFails == 1
	})
	if v := h.status(id); v.Status != store.InQueue {
		t.Fatalf("failed after one start failure since a ready worker: %+v", v)
	}
	h.worker().finish(oci.ExitStatus{Code: 2})
	v := h.waitStatus(id, store.Failed)
	if want := "worker start failed 2 times in a row: worker exited with code 2 before its first job-take"; v.Error != want {
		t.Errorf("failed with %q, want %q", v.Error, want)
	}
}

// TestUnhealthyBeforeReadyCountsAsStartFailure: a worker whose first
// ping reports it unhealthy (the SDK's fitness checks) never became ready.
func TestUnhealthyBeforeReadyCountsAsStartFailure(t *testing.T) {
	h := startFailHarness(t, false)
	id := h.submit(spec.Submission{})
	for range 2 {
		w := h.worker()
		if err := h.s.Ping(h.ep, w.id, nil, "1.12.0", "unhealthy", "no CUDA device"); err != nil {
			t.Fatal(err)
		}
	}
	v := h.waitStatus(id, store.Failed)
	if want := "worker start failed 2 times in a row: no CUDA device"; v.Error != want {
		t.Errorf("failed with %q, want %q", v.Error, want)
	}
}

// TestThrottledIsNotStartFailure: an endpoint waiting for a GPU starts no
// worker, so its jobs wait, however long, even with MaxStartFailures 1.
func TestThrottledIsNotStartFailure(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.AllocateGPUs, c.GPUs = true, mockGPUs()[:1]
		c.MaxStartFailures = 1
	})
	h.worker()
	one := 1
	name, cmd := "keep", []string{"w"}
	// workersMin 1: its worker, holding the only GPU, is never reclaimed.
	if _, err := h.s.CreateEndpoint(h.ctx, spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &one, WorkersMax: &one, GPUCount: &one}); err != nil {
		t.Fatal(err)
	}
	h.worker()
	needy := gpuEndpoint(t, h, "needy", 1, 0, 1, nil)
	id := h.s.mustSubmit(t, needy)
	eventually(t, "needy throttled", func() bool {
		hl, _ := h.s.Health(needy)
		return hl.Workers.Throttled == 1
	})
	time.Sleep(1500 * time.Millisecond) // three scaler ticks, each throttled again
	v, err := h.s.Status(needy, id)
	if err != nil || v.Status != store.InQueue {
		t.Fatalf("throttled job: %+v %v, want IN_QUEUE", v, err)
	}
	h.s.mu.Lock()
	fails := h.s.endpoints[needy].startFails
	h.s.mu.Unlock()
	if fails != 0 {
		t.Errorf("throttling counted %d start failures", fails)
	}
}

// TestStoppedWorkerKeepsAttempts: an operator stop, however often, does
// not use up a job's attempts; a real failure does, and the job's final
// error names the real cause.
func TestStoppedWorkerKeepsAttempts(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxAttempts = 2 })
	id := h.submit(spec.Submission{})
	stop := func() {
		t.Helper()
		w := h.worker()
		h.take(w)
		if err := h.s.StopWorker(w.id); err != nil {
			t.Fatal(err)
		}
		// The fake runtime hands the worker over before Start returns, so
		// the take can beat runWorker to the handle: a worker drained
		// before then is stopped as soon as runWorker has it (stopNow).
		eventually(t, "StopWorker stopped the worker", w.wasStopped)
		eventually(t, "job re-queued", func() bool { return h.status(id).Status == store.InQueue })
	}
	for range 3 {
		stop()
		if n := h.attempts(id); n != 0 {
			t.Fatalf("attempts = %d after operator stops, want 0", n)
		}
	}
	w := h.worker()
	h.take(w)
	w.finish(oci.ExitStatus{Code: 137}) // a real crash: counted
	eventually(t, "job re-queued", func() bool { return h.status(id).Status == store.InQueue })
	stop()
	if n := h.attempts(id); n != 1 {
		t.Fatalf("attempts = %d, want 1 (the crash)", n)
	}
	w = h.worker()
	h.take(w)
	w.Kill() // killed by signal: a real failure, the second attempt
	v := h.waitStatus(id, store.Failed)
	if want := "worker was killed by signal killed after 2 attempts"; v.Error != want {
		t.Errorf("failed with %q, want %q", v.Error, want)
	}
}

// TestShutdownKeepsAttempts: a job whose worker emberd stopped when it
// shut down is queued again after the restart with its attempt given back,
// even with a single attempt allowed.
func TestShutdownKeepsAttempts(t *testing.T) {
	rt := newFakeRuntime()
	cfg := testConfig(t, rt)
	cfg.InMemoryStore = false
	cfg.MaxAttempts = 1
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	h := &harness{t: t, s: s, rt: rt, ctx: ctx}
	h.ep = h.createEndpoint("ep", 1, 1)
	id := h.submit(spec.Submission{})
	w := h.worker()
	h.take(w)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	h.s = s2
	if v := h.status(id); v.Status != store.InQueue {
		t.Fatalf("after a clean restart: %+v, want IN_QUEUE", v)
	}
	if n := h.attempts(id); n != 0 {
		t.Errorf("attempts = %d after a clean restart, want 0", n)
	}
	w = h.worker()
	h.take(w)
	h.done(w, id, Result{Output: []byte(`1`)})
	h.waitStatus(id, store.Completed)
}
