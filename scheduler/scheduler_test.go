package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/runpod"
	"github.com/emberhq/ember/scheduler/spec"
	"github.com/emberhq/ember/scheduler/store"
)

// ---- fake runtime ----

// fakeRuntime records every worker the scheduler starts. The test plays the
// worker: it takes jobs and posts results through the Scheduler methods,
// using the id and token from the worker's environment.
type fakeRuntime struct {
	mu      sync.Mutex
	started chan *fakeWorker
	all     []*fakeWorker
	failing bool // Start returns an error
}

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{started: make(chan *fakeWorker, 64)}
}

func (r *fakeRuntime) Name() string { return "fake" }

func (r *fakeRuntime) Start(ctx context.Context, spec oci.Spec) (oci.Worker, error) {
	r.mu.Lock()
	failing := r.failing
	r.mu.Unlock()
	if failing {
		return nil, errors.New("fake runtime refuses to start")
	}
	w := &fakeWorker{spec: spec, env: map[string]string{}, done: make(chan struct{}), memLimit: spec.Resources.MemoryBytes}
	for _, kv := range spec.Env {
		k, v, _ := strings.Cut(kv, "=")
		w.env[k] = v
	}
	w.id, w.token = w.env["RUNPOD_POD_ID"], w.env["RUNPOD_AI_API_KEY"]
	r.mu.Lock()
	r.all = append(r.all, w)
	r.mu.Unlock()
	r.started <- w
	return w, nil
}

type fakeWorker struct {
	spec      oci.Spec
	env       map[string]string
	id, token string

	mu      sync.Mutex
	done    chan struct{}
	exit    oci.ExitStatus
	stopped bool // Stop was called
	killed  bool // Kill was called
	frozen  bool
	freezes int
	thaws   int
	// For parking (park_test.go): its processes, its memory limit now and
	// every limit set, and failures to inject.
	pids      []int
	memLimit  int64
	limits    []int64
	limitErr  error
	freezeErr error
}

// finish ends the worker with st, once.
func (w *fakeWorker) finish(st oci.ExitStatus) {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case <-w.done:
		return
	default:
	}
	w.exit = st
	close(w.done)
}

func (w *fakeWorker) Stop(time.Duration) {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
	w.finish(oci.ExitStatus{Code: 0})
}
func (w *fakeWorker) Kill() {
	w.mu.Lock()
	w.killed = true
	w.mu.Unlock()
	w.finish(oci.ExitStatus{Code: -1, Signal: "killed"})
}
func (w *fakeWorker) Done() <-chan struct{} { return w.done }
func (w *fakeWorker) Exit() oci.ExitStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.exit
}
func (w *fakeWorker) PID() int { return 0 }

func (w *fakeWorker) wasStopped() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stopped
}

// ---- harness ----

const waitLimit = 10 * time.Second

type harness struct {
	t   *testing.T
	s   *Scheduler
	rt  *fakeRuntime
	ep  string
	ctx context.Context
}

func testConfig(t *testing.T, rt *fakeRuntime) Config {
	return Config{
		DataDir:       t.TempDir(),
		InMemoryStore: true,
		Runtime:       rt,
		WorkerAPIBase: "http://127.0.0.1:1",
		Tunables: Tunables{
			TakeHold:     200 * time.Millisecond,
			StopHold:     200 * time.Millisecond,
			PingInterval: 50 * time.Millisecond,
			LeaseGrace:   300 * time.Millisecond,
			StopGrace:    time.Second,
			MaxAttempts:  3,
		},
		StreamHold: 200 * time.Millisecond,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// newHarness opens a scheduler with one endpoint that keeps exactly one
// worker (workersMin = workersMax = 1).
func newHarness(t *testing.T, mod func(*Config)) *harness {
	t.Helper()
	rt := newFakeRuntime()
	cfg := testConfig(t, rt)
	if mod != nil {
		mod(&cfg)
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(func() {
		cancel()
		closed := make(chan error, 1)
		go func() { closed <- s.Close() }()
		select {
		case err := <-closed:
			if err != nil {
				t.Errorf("Close: %v", err)
			}
		case <-time.After(waitLimit):
			t.Errorf("Close did not return within %v", waitLimit)
		}
	})
	h := &harness{t: t, s: s, rt: rt, ctx: ctx}
	h.ep = h.createEndpoint("ep", 1, 1)
	return h
}

func (h *harness) createEndpoint(name string, min, max int) string {
	h.t.Helper()
	cmd := []string{"fake-worker"}
	zero := 0
	e, err := h.s.CreateEndpoint(h.ctx, spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &min, WorkersMax: &max, GPUCount: &zero})
	if err != nil {
		h.t.Fatalf("CreateEndpoint: %v", err)
	}
	return e.ID
}

// worker waits for the next worker the scheduler starts.
func (h *harness) worker() *fakeWorker {
	h.t.Helper()
	select {
	case w := <-h.rt.started:
		if w.id == "" || w.token == "" {
			h.t.Fatalf("worker env lacks RUNPOD_POD_ID or RUNPOD_AI_API_KEY: %v", w.spec.Env)
		}
		return w
	case <-time.After(waitLimit):
		h.t.Fatalf("no worker started within %v", waitLimit)
		return nil
	}
}

func (h *harness) submit(sub spec.Submission) string {
	h.t.Helper()
	if sub.Input == nil {
		sub.Input = json.RawMessage(`{"n":1}`)
	}
	v, err := h.s.Submit(h.ctx, h.ep, sub)
	if err != nil {
		h.t.Fatalf("Submit: %v", err)
	}
	if v.Status != store.InQueue || v.ID == "" {
		h.t.Fatalf("Submit answered %+v", v)
	}
	return v.ID
}

// take takes exactly one job as w and marks it delivered.
func (h *harness) take(w *fakeWorker) TakenJob {
	h.t.Helper()
	l, err := h.s.Take(h.ctx, h.ep, w.id, 1, 0)
	if err != nil {
		h.t.Fatalf("Take: %v", err)
	}
	if len(l.Jobs) != 1 {
		h.t.Fatalf("Take returned %d jobs, want 1", len(l.Jobs))
	}
	l.Delivered(true)
	return l.Jobs[0]
}

func (h *harness) takeEmpty(w *fakeWorker) {
	h.t.Helper()
	l, err := h.s.Take(h.ctx, h.ep, w.id, 1, 50*time.Millisecond)
	if err != nil {
		h.t.Fatalf("Take: %v", err)
	}
	if len(l.Jobs) != 0 {
		h.t.Fatalf("Take returned %v, want nothing", ids(l.Jobs))
	}
}

func ids(js []TakenJob) []string {
	var out []string
	for _, j := range js {
		out = append(out, j.ID)
	}
	return out
}

func (h *harness) status(id string) JobView {
	h.t.Helper()
	v, err := h.s.Status(h.ep, id)
	if err != nil {
		h.t.Fatalf("Status(%s): %v", id, err)
	}
	return v
}

// waitStatus polls until the job has state st.
func (h *harness) waitStatus(id string, st store.Status) JobView {
	h.t.Helper()
	deadline := time.Now().Add(waitLimit)
	var last JobView
	var err error
	for time.Now().Before(deadline) {
		last, err = h.s.Status(h.ep, id)
		if err == nil && last.Status == st {
			return last
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.t.Fatalf("job %s did not reach %s within %v; last %+v, err %v", id, st, waitLimit, last, err)
	return last
}

func (h *harness) waitGone(id string) {
	h.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		_, err := h.s.Status(h.ep, id)
		if errors.Is(err, ErrNotFound) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.t.Fatalf("job %s still exists after %v", id, waitLimit)
}

func (h *harness) attempts(id string) int {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	j, ok := h.s.jobs[id]
	if !ok {
		h.t.Fatalf("job %s is not live", id)
	}
	return j.rec.Attempts
}

func (h *harness) done(w *fakeWorker, id string, res Result) {
	h.t.Helper()
	if err := h.s.Done(h.ctx, h.ep, w.id, id, res); err != nil {
		h.t.Fatalf("Done(%s): %v", id, err)
	}
}

// ---- pure queue tests ----

func TestFifoAndPriority(t *testing.T) {
	type push struct {
		name  string
		low   bool
		front bool
	}
	cases := []struct {
		name   string
		pushes []push
		remove []string // unqueued before popping
		want   []string
	}{
		{"fifo", []push{{"a", false, false}, {"b", false, false}, {"c", false, false}}, nil, []string{"a", "b", "c"}},
		{"normal before low, fifo within",
			[]push{{"l1", true, false}, {"n1", false, false}, {"l2", true, false}, {"n2", false, false}},
			nil, []string{"n1", "n2", "l1", "l2"}},
		{"pushFront on requeue",
			[]push{{"a", false, false}, {"b", false, false}, {"r", false, true}},
			nil, []string{"r", "a", "b"}},
		{"pushFront stays behind nothing of its priority but ahead of newer",
			[]push{{"l", true, false}, {"a", false, false}, {"r1", false, true}, {"r2", false, true}, {"b", false, false}},
			nil, []string{"r2", "r1", "a", "b", "l"}},
		{"low requeue goes to the front of low only",
			[]push{{"l1", true, false}, {"n", false, false}, {"lr", true, true}},
			nil, []string{"n", "lr", "l1"}},
		{"lazy removal skips unqueued",
			[]push{{"a", false, false}, {"b", false, false}, {"c", true, false}, {"d", true, false}},
			[]string{"a", "d"}, []string{"b", "c"}},
		{"empty", nil, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ep := &endpointState{}
			jobs := map[string]*job{}
			for i, p := range tc.pushes {
				j := newJob(&store.Job{ID: p.name, Seq: uint64(i + 1), LowPriority: p.low})
				jobs[p.name] = j
				waiter := ep.wait("w")
				ep.push(j, p.front)
				select {
				case <-waiter.ch:
				default:
					t.Errorf("push(%s) did not wake a waiting take", p.name)
				}
			}
			for _, id := range tc.remove {
				ep.unqueue(jobs[id])
				ep.unqueue(jobs[id]) // twice is harmless
			}
			if want := len(tc.want); ep.inQueue != want {
				t.Errorf("inQueue = %d, want %d", ep.inQueue, want)
			}
			var got []string
			for j := ep.pop(); j != nil; j = ep.pop() {
				if j.queued {
					t.Errorf("popped %s still marked queued", j.rec.ID)
				}
				got = append(got, j.rec.ID)
				if len(got) > 100 {
					t.Fatal("pop never ends")
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("pop order %v, want %v", got, tc.want)
			}
			if ep.inQueue != 0 {
				t.Errorf("inQueue after draining = %d", ep.inQueue)
			}
		})
	}
}

func TestTakersWakeOneAtATime(t *testing.T) {
	woken := func(ts ...*taker) string {
		var b strings.Builder
		for _, x := range ts {
			select {
			case <-x.ch:
				b.WriteByte('1')
			default:
				b.WriteByte('0')
			}
		}
		return b.String()
	}
	ep := &endpointState{}
	a, b, c := ep.wait("wa"), ep.wait("wb"), ep.wait("wc")
	ep.push(newJob(&store.Job{ID: "j1"}), false)
	if got := woken(a, b, c); got != "100" {
		t.Fatalf("after one push woken = %s, want 100 (the longest waiting only)", got)
	}
	// a was woken but leaves without taking (timeout): the wake-up passes on.
	ep.leave(a)
	if got := woken(a, b, c); got != "110" {
		t.Fatalf("after a woken taker left woken = %s, want 110", got)
	}
	// c times out without being woken: nobody else is woken.
	ep.leave(c)
	if got := woken(a, b, c); got != "110" {
		t.Fatalf("after an unwoken taker left woken = %s", got)
	}
	if len(ep.takers) != 0 {
		t.Fatalf("takers left: %d", len(ep.takers))
	}
	// Draining a worker wakes its takes only.
	d1, e1, d2 := ep.wait("wd"), ep.wait("we"), ep.wait("wd")
	ep.wakeWorker("wd")
	if got := woken(d1, e1, d2); got != "101" {
		t.Fatalf("wakeWorker(wd) woken = %s, want 101", got)
	}
	if len(ep.takers) != 1 || ep.takers[0] != e1 {
		t.Fatalf("takers after wakeWorker: %v", ep.takers)
	}
	// A push with nobody waiting wakes nobody, and a later waiter is not
	// woken retroactively.
	ep.leave(e1)
	ep.push(newJob(&store.Job{ID: "j2"}), false)
	f := ep.wait("wf")
	if got := woken(f); got != "0" {
		t.Fatalf("a taker registered after the push is woken")
	}
}

func TestFifoCompactionAndSort(t *testing.T) {
	var q fifo
	const n = 5000
	for i := 0; i < n; i++ {
		j := newJob(&store.Job{ID: fmt.Sprint(i), Seq: uint64(i)})
		j.queued = true
		q.push(j)
	}
	for i := 0; i < n; i++ {
		j := q.pop()
		if j == nil || j.rec.Seq != uint64(i) {
			t.Fatalf("pop %d = %v", i, j)
		}
		j.queued = false
		if i%1000 == 999 {
			// pushFront after compaction still works
			k := newJob(&store.Job{ID: "f", Seq: 1 << 40})
			k.queued = true
			q.pushFront(k)
			if p := q.pop(); p != k {
				t.Fatalf("pushFront then pop = %v", p)
			}
		}
	}
	if q.pop() != nil || q.peek() != nil {
		t.Error("queue not empty")
	}
	// sort restores Seq order of the live part (recovery).
	var r fifo
	for _, s := range []uint64{5, 3, 9, 1} {
		j := newJob(&store.Job{Seq: s})
		j.queued = true
		r.push(j)
	}
	r.sort()
	var got []uint64
	for j := r.pop(); j != nil; j = r.pop() {
		got = append(got, j.rec.Seq)
	}
	if fmt.Sprint(got) != "[1 3 5 9]" {
		t.Errorf("sorted order %v", got)
	}
}

func TestRollingCounters(t *testing.T) {
	t0 := time.Unix(1000*60, 0) // on a minute boundary
	window := 3 * time.Minute   // 4 one-minute buckets
	type add struct {
		at      time.Duration
		st      store.Status
		retried bool
	}
	cases := []struct {
		name     string
		adds     []add
		at       time.Duration
		c, f, rt int
	}{
		{"empty", nil, 0, 0, 0, 0},
		{"kinds", []add{{0, store.Completed, false}, {0, store.Failed, false}, {0, store.TimedOut, false}, {0, store.Cancelled, false}, {0, store.InQueue, true}}, 0, 1, 2, 1},
		{"spread inside the window", []add{{0, store.Completed, false}, {time.Minute, store.Completed, false}, {2 * time.Minute, store.Failed, false}}, 3 * time.Minute, 2, 1, 0},
		{"old minutes drop out", []add{{0, store.Completed, false}, {time.Minute, store.Failed, false}, {3 * time.Minute, store.Completed, false}}, 4*time.Minute + 30*time.Second, 1, 1, 0},
		{"everything expired", []add{{0, store.Completed, false}, {time.Minute, store.Failed, false}}, 30 * time.Minute, 0, 0, 0},
		{"a reused bucket is reset", []add{{0, store.Completed, false}, {4 * time.Minute, store.Failed, false}}, 4 * time.Minute, 0, 1, 0},
		{"same minute accumulates", []add{{0, store.Completed, false}, {59 * time.Second, store.Completed, false}}, 59 * time.Second, 2, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newRollingCounters(window)
			for _, a := range tc.adds {
				c.add(t0.Add(a.at), a.st, a.retried)
			}
			cc, ff, rr := c.sum(t0.Add(tc.at))
			if cc != tc.c || ff != tc.f || rr != tc.rt {
				t.Errorf("sum = %d/%d/%d, want %d/%d/%d", cc, ff, rr, tc.c, tc.f, tc.rt)
			}
		})
	}
	if n := len(newRollingCounters(0).buckets); n < 2 {
		t.Errorf("a zero window has %d buckets", n)
	}
}

// ---- scheduler tests ----

func TestWorkerEnv(t *testing.T) {
	h := newHarness(t, nil)
	w := h.worker()
	if err := h.s.AuthWorker(h.ep, w.id, w.token); err != nil {
		t.Errorf("AuthWorker with the issued token: %v", err)
	}
	if err := h.s.AuthWorker(h.ep, w.id, "wrong"); !errors.Is(err, ErrForbidden) {
		t.Errorf("AuthWorker with a wrong token: %v", err)
	}
	if err := h.s.AuthWorker("other", w.id, w.token); !errors.Is(err, ErrForbidden) {
		t.Errorf("AuthWorker on another endpoint: %v", err)
	}
	for _, k := range []string{"RUNPOD_WEBHOOK_GET_JOB", "RUNPOD_WEBHOOK_POST_OUTPUT", "RUNPOD_WEBHOOK_PING", "RUNPOD_ENDPOINT_ID"} {
		if w.env[k] == "" {
			t.Errorf("%s missing from the worker environment", k)
		}
	}
	if !strings.Contains(w.env["RUNPOD_WEBHOOK_POST_OUTPUT"], "$ID") || !strings.Contains(w.env["RUNPOD_WEBHOOK_GET_JOB"], w.id) {
		t.Errorf("templates: %q %q", w.env["RUNPOD_WEBHOOK_POST_OUTPUT"], w.env["RUNPOD_WEBHOOK_GET_JOB"])
	}
	if w.env["RUNPOD_PING_INTERVAL"] != "50" {
		t.Errorf("RUNPOD_PING_INTERVAL = %q, want 50", w.env["RUNPOD_PING_INTERVAL"])
	}
}

func TestTakeOrder(t *testing.T) {
	h := newHarness(t, nil)
	w := h.worker()
	l1 := h.submit(spec.Submission{LowPriority: true, Input: json.RawMessage(`"l1"`)})
	n1 := h.submit(spec.Submission{Input: json.RawMessage(`"n1"`)})
	l2 := h.submit(spec.Submission{LowPriority: true, Input: json.RawMessage(`"l2"`)})
	n2 := h.submit(spec.Submission{Input: json.RawMessage(`"n2"`)})
	want := []string{n1, n2, l1, l2}
	for i, id := range want {
		got := h.take(w)
		if got.ID != id {
			t.Fatalf("take %d = %s, want %s", i, got.ID, id)
		}
		h.done(w, got.ID, Result{Output: json.RawMessage(`1`)})
	}
	h.takeEmpty(w)
}

func TestTakeBatchAndInput(t *testing.T) {
	h := newHarness(t, nil)
	w := h.worker()
	var want []string
	for i := 0; i < 5; i++ {
		want = append(want, h.submit(spec.Submission{Input: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)), S3Config: json.RawMessage(`{"bucketName":"b"}`), Webhook: ""}))
	}
	l, err := h.s.Take(h.ctx, h.ep, w.id, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	l.Delivered(true)
	if fmt.Sprint(ids(l.Jobs)) != fmt.Sprint(want[:3]) {
		t.Fatalf("batch take = %v, want %v", ids(l.Jobs), want[:3])
	}
	for i, j := range l.Jobs {
		if string(j.Input) != fmt.Sprintf(`{"i":%d}`, i) || string(j.S3Config) != `{"bucketName":"b"}` {
			t.Errorf("taken job %d: input %s s3 %s", i, j.Input, j.S3Config)
		}
		if v := h.status(j.ID); v.Status != store.InProgress || v.WorkerID != w.id || !v.HasDelay {
			t.Errorf("taken job %s: %+v", j.ID, v)
		}
	}
	hl, err := h.s.Health(h.ep)
	if err != nil {
		t.Fatal(err)
	}
	if hl.Jobs.InProgress != 3 || hl.Jobs.InQueue != 2 || hl.Workers.Running != 1 {
		t.Errorf("health = %+v, want 3 in progress, 2 queued, 1 running worker", hl)
	}
}

func TestTakeWakesOnSubmit(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.TakeHold = 5 * time.Second })
	w := h.worker()
	type res struct {
		l   *Lease
		err error
	}
	ch := make(chan res, 1)
	go func() {
		l, err := h.s.Take(h.ctx, h.ep, w.id, 1, 5*time.Second)
		ch <- res{l, err}
	}()
	time.Sleep(50 * time.Millisecond) // let Take start waiting (it works either way)
	id := h.submit(spec.Submission{})
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if len(r.l.Jobs) != 1 || r.l.Jobs[0].ID != id {
			t.Fatalf("woken Take returned %v, want [%s]", ids(r.l.Jobs), id)
		}
		r.l.Delivered(true)
	case <-time.After(waitLimit):
		t.Fatal("Take did not return")
	}
}

func TestTakeEmptyAfterHold(t *testing.T) {
	h := newHarness(t, nil)
	w := h.worker()
	for _, hold := range []time.Duration{0, 100 * time.Millisecond, time.Hour} { // 0 and too long both mean TakeHold
		l, err := h.s.Take(h.ctx, h.ep, w.id, 1, hold)
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Jobs) != 0 {
			t.Errorf("hold %v: got jobs %v from an empty queue", hold, ids(l.Jobs))
		}
		l.Delivered(false) // harmless on an empty lease
	}
	// Cancelled context: returns empty at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	l, err := h.s.Take(ctx, h.ep, w.id, 1, 0)
	if err != nil || len(l.Jobs) != 0 {
		t.Errorf("Take with a cancelled context: %v %v", l, err)
	}
	// Unknown worker, or a worker asking on the wrong endpoint.
	if _, err := h.s.Take(h.ctx, h.ep, "w-nobody", 1, 0); !errors.Is(err, ErrForbidden) {
		t.Errorf("Take by an unknown worker: %v", err)
	}
	other := h.createEndpoint("other", 0, 1)
	if _, err := h.s.Take(h.ctx, other, w.id, 1, 0); !errors.Is(err, ErrForbidden) {
		t.Errorf("Take on another endpoint: %v", err)
	}
}

func TestLeaseNotDelivered(t *testing.T) {
	h := newHarness(t, nil)
	w := h.worker()
	a := h.submit(spec.Submission{})
	b := h.submit(spec.Submission{})
	l, err := h.s.Take(h.ctx, h.ep, w.id, 1, 0)
	if err != nil || len(l.Jobs) != 1 || l.Jobs[0].ID != a {
		t.Fatalf("take: %v %v", l, err)
	}
	if n := h.attempts(a); n != 1 {
		t.Fatalf("attempts after take = %d", n)
	}
	l.Delivered(false)
	if v := h.status(a); v.Status != store.InQueue || v.WorkerID != "" || v.HasDelay {
		t.Errorf("undelivered job: %+v, want plain IN_QUEUE", v)
	}
	if n := h.attempts(a); n != 0 {
		t.Errorf("attempts after an undelivered take = %d, want 0", n)
	}
	// It went back to the head of the queue, before b.
	if got := h.take(w); got.ID != a {
		t.Errorf("next take = %s, want %s (the undelivered job first)", got.ID, a)
	}
	if n := h.attempts(a); n != 1 {
		t.Errorf("attempts after the second take = %d, want 1", n)
	}
	// Delivered(false) after the job was finished changes nothing.
	h.done(w, a, Result{Output: json.RawMessage(`"ok"`)})
	l.Delivered(false)
	if v := h.status(a); v.Status != store.Completed {
		t.Errorf("finished job after a late Delivered(false): %+v", v)
	}
	if got := h.take(w); got.ID != b {
		t.Errorf("then take = %s, want %s", got.ID, b)
	}
}

func TestDoneSemantics(t *testing.T) {
	type post struct {
		res     Result
		worker  string // "" = the holder, "other" = a worker that never held it
		wantErr error
	}
	cases := []struct {
		name       string
		posts      []post
		wantStatus store.Status
		wantOutput string
		wantError  string
	}{
		{"completed", []post{{res: Result{Output: json.RawMessage(`{"a":1}`)}}}, store.Completed, `{"a":1}`, ""},
		{"failed with output", []post{{res: Result{Output: json.RawMessage(`"partial"`), Error: "boom", HasError: true}}}, store.Failed, `"partial"`, "boom"},
		{"first final wins over a duplicate",
			[]post{{res: Result{Output: json.RawMessage(`"first"`)}}, {res: Result{Output: json.RawMessage(`"second"`)}}},
			store.Completed, `"first"`, ""},
		{"first final wins over a later error",
			[]post{{res: Result{Output: json.RawMessage(`"first"`)}}, {res: Result{Error: "late", HasError: true}}},
			store.Completed, `"first"`, ""},
		{"progress then final",
			[]post{{res: Result{Progress: true, Output: json.RawMessage(`"50%"`)}}, {res: Result{Output: json.RawMessage(`"done"`)}}},
			store.Completed, `"done"`, ""},
		{"progress after final is ignored",
			[]post{{res: Result{Output: json.RawMessage(`"done"`)}}, {res: Result{Progress: true, Output: json.RawMessage(`"late progress"`)}}},
			store.Completed, `"done"`, ""},
		{"a stranger's result is refused",
			[]post{{res: Result{Output: json.RawMessage(`"forged"`)}, worker: "other", wantErr: ErrForbidden}, {res: Result{Output: json.RawMessage(`"real"`)}}},
			store.Completed, `"real"`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			w := h.worker()
			id := h.submit(spec.Submission{})
			h.take(w)
			for i, p := range tc.posts {
				wid := w.id
				if p.worker == "other" {
					wid = "w-stranger"
				}
				err := h.s.Done(h.ctx, h.ep, wid, id, p.res)
				if p.wantErr == nil && err != nil || p.wantErr != nil && !errors.Is(err, p.wantErr) {
					t.Fatalf("post %d: err %v, want %v", i, err, p.wantErr)
				}
			}
			v := h.status(id)
			if v.Status != tc.wantStatus || string(v.Output) != tc.wantOutput || v.Error != tc.wantError {
				t.Errorf("status %+v (output %s), want %s output %s error %q", v, v.Output, tc.wantStatus, tc.wantOutput, tc.wantError)
			}
			if !v.HasExecution || !v.HasDelay || v.WorkerID != w.id {
				t.Errorf("terminal view lacks timing or worker: %+v", v)
			}
			// The worker is free again.
			h.takeEmpty(w)
			hl, _ := h.s.Health(h.ep)
			if hl.Jobs.InProgress != 0 || hl.Workers.Idle != 1 {
				t.Errorf("health after the result: %+v", hl)
			}
			wantC, wantF := 0, 0
			if tc.wantStatus == store.Completed {
				wantC = 1
			} else {
				wantF = 1
			}
			if hl.Jobs.Completed != wantC || hl.Jobs.Failed != wantF {
				t.Errorf("health counters %+v, want completed %d failed %d", hl.Jobs, wantC, wantF)
			}
		})
	}
}

func TestProgressShownWhileRunning(t *testing.T) {
	h := newHarness(t, nil)
	w := h.worker()
	id := h.submit(spec.Submission{})
	h.take(w)
	h.done(w, id, Result{Progress: true, Output: json.RawMessage(`{"step":3}`)})
	v := h.status(id)
	if v.Status != store.InProgress || string(v.Output) != `{"step":3}` {
		t.Errorf("after progress: %+v output %s", v, v.Output)
	}
	b, _ := json.Marshal(v)
	if strings.Contains(string(b), "\n") || !strings.Contains(string(b), `"output":{"step":3}`) {
		t.Errorf("status JSON %s", b)
	}
}

func TestWaitReturnsFinal(t *testing.T) {
	h := newHarness(t, nil)
	w := h.worker()
	id := h.submit(spec.Submission{})
	// Not terminal: Wait returns the live status after the wait.
	v, err := h.s.Wait(h.ctx, h.ep, id, 50*time.Millisecond)
	if err != nil || v.Status != store.InQueue {
		t.Fatalf("Wait on a queued job: %+v %v", v, err)
	}
	ch := make(chan JobView, 1)
	go func() {
		v, err := h.s.Wait(h.ctx, h.ep, id, 5*time.Second)
		if err != nil {
			t.Errorf("Wait: %v", err)
		}
		ch <- v
	}()
	h.take(w)
	h.done(w, id, Result{Output: json.RawMessage(`7`)})
	select {
	case v := <-ch:
		if v.Status != store.Completed || string(v.Output) != "7" {
			t.Errorf("Wait returned %+v", v)
		}
	case <-time.After(waitLimit):
		t.Fatal("Wait did not return")
	}
	if _, err := h.s.Wait(h.ctx, h.ep, "nope", time.Millisecond); !errors.Is(err, ErrNotFound) {
		t.Errorf("Wait on an unknown job: %v", err)
	}
	if _, err := h.s.Status("other-ep", id); !errors.Is(err, ErrNotFound) {
		t.Errorf("Status through another endpoint: %v", err)
	}
}

func TestExecutionTimeout(t *testing.T) {
	h := newHarness(t, nil)
	w := h.worker()
	id := h.submit(spec.Submission{ExecutionTimeoutMs: 200})
	h.take(w)
	v := h.waitStatus(id, store.TimedOut)
	if !strings.Contains(v.Error, "200 ms") || !v.HasExecution {
		t.Errorf("timed out view: %+v", v)
	}
	stops, err := h.s.StopSignals(h.ctx, h.ep, w.id, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(stops) != fmt.Sprint([]string{id}) {
		t.Errorf("StopSignals = %v, want [%s]", stops, id)
	}
	// Drained: the next poll holds and returns nothing.
	stops, err = h.s.StopSignals(h.ctx, h.ep, w.id, 50*time.Millisecond)
	if err != nil || len(stops) != 0 {
		t.Errorf("second StopSignals = %v, %v", stops, err)
	}
	// The late result is accepted and ignored.
	h.done(w, id, Result{Output: json.RawMessage(`"late"`)})
	if v := h.status(id); v.Status != store.TimedOut || v.Output != nil {
		t.Errorf("after a late result: %+v", v)
	}
	hl, _ := h.s.Health(h.ep)
	if hl.Jobs.Failed != 1 || hl.Jobs.InProgress != 0 {
		t.Errorf("health %+v", hl.Jobs)
	}
}

func TestStopSignalsWakes(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.StopHold = 5 * time.Second })
	w := h.worker()
	id := h.submit(spec.Submission{})
	h.take(w)
	ch := make(chan []string, 1)
	go func() {
		ids, err := h.s.StopSignals(h.ctx, h.ep, w.id, 5*time.Second)
		if err != nil {
			t.Errorf("StopSignals: %v", err)
		}
		ch <- ids
	}()
	time.Sleep(50 * time.Millisecond)
	if _, err := h.s.Cancel(h.ctx, h.ep, id); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-ch:
		if fmt.Sprint(got) != fmt.Sprint([]string{id}) {
			t.Errorf("StopSignals = %v, want [%s]", got, id)
		}
	case <-time.After(waitLimit):
		t.Fatal("StopSignals did not return")
	}
}

func TestTTL(t *testing.T) {
	cases := []struct {
		name  string
		taken bool
	}{
		{"queued", false},
		{"running", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			w := h.worker()
			id := h.submit(spec.Submission{TTLMs: 300})
			if tc.taken {
				h.take(w)
			}
			h.waitGone(id)
			if _, err := h.s.Wait(h.ctx, h.ep, id, 10*time.Millisecond); !errors.Is(err, ErrNotFound) {
				t.Errorf("Wait after TTL: %v", err)
			}
			if _, err := h.s.store.Job(context.Background(), id, false); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("record after TTL: %v", err)
			}
			if _, err := h.s.Retry(h.ctx, h.ep, id); !errors.Is(err, ErrNotFound) {
				t.Errorf("Retry after TTL: %v", err)
			}
			hl, _ := h.s.Health(h.ep)
			if hl.Jobs.InQueue != 0 || hl.Jobs.InProgress != 0 {
				t.Errorf("health after TTL: %+v", hl.Jobs)
			}
			if tc.taken {
				stops, err := h.s.StopSignals(h.ctx, h.ep, w.id, time.Second)
				if err != nil || fmt.Sprint(stops) != fmt.Sprint([]string{id}) {
					t.Errorf("StopSignals after the TTL of a running job = %v, %v; want [%s]", stops, err, id)
				}
				// A late result is accepted and discarded.
				h.done(w, id, Result{Output: json.RawMessage(`1`)})
				if _, err := h.s.Status(h.ep, id); !errors.Is(err, ErrNotFound) {
					t.Errorf("job came back after a late result: %v", err)
				}
			} else {
				h.takeEmpty(w)
			}
		})
	}
}

func TestCancel(t *testing.T) {
	cases := []struct {
		name  string
		taken bool
	}{
		{"queued", false},
		{"running", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			w := h.worker()
			id := h.submit(spec.Submission{})
			if tc.taken {
				h.take(w)
			}
			v, err := h.s.Cancel(h.ctx, h.ep, id)
			if err != nil || v.Status != store.Cancelled || v.ID != id {
				t.Fatalf("Cancel: %+v %v", v, err)
			}
			if v := h.status(id); v.Status != store.Cancelled {
				t.Errorf("status after cancel: %+v", v)
			}
			// Again: unchanged, no error.
			if v, err := h.s.Cancel(h.ctx, h.ep, id); err != nil || v.Status != store.Cancelled {
				t.Errorf("second Cancel: %+v %v", v, err)
			}
			stops, err := h.s.StopSignals(h.ctx, h.ep, w.id, 50*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if tc.taken {
				if fmt.Sprint(stops) != fmt.Sprint([]string{id}) {
					t.Errorf("StopSignals = %v, want [%s]", stops, id)
				}
				h.done(w, id, Result{Output: json.RawMessage(`"late"`)})
				if v := h.status(id); v.Status != store.Cancelled {
					t.Errorf("a late result changed a cancelled job: %+v", v)
				}
			} else {
				if len(stops) != 0 {
					t.Errorf("StopSignals for a job no worker held: %v", stops)
				}
				h.takeEmpty(w)
			}
			hl, _ := h.s.Health(h.ep)
			if hl.Jobs.InQueue != 0 || hl.Jobs.InProgress != 0 {
				t.Errorf("health after cancel: %+v", hl.Jobs)
			}
			if _, err := h.s.Cancel(h.ctx, h.ep, "unknown"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Cancel unknown: %v", err)
			}
		})
	}
}

func TestRetry(t *testing.T) {
	type outcome int
	const (
		completed outcome = iota
		failed
		timedOut
		cancelled
		queued
		running
	)
	cases := []struct {
		name    string
		state   outcome
		wantErr error
	}{
		{"COMPLETED refused", completed, ErrConflict},
		{"FAILED retried", failed, nil},
		{"TIMED_OUT retried", timedOut, nil},
		{"CANCELLED refused", cancelled, ErrConflict},
		{"IN_QUEUE refused", queued, ErrConflict},
		{"IN_PROGRESS refused", running, ErrConflict},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			w := h.worker()
			sub := spec.Submission{Input: json.RawMessage(`{"keep":"me"}`)}
			if tc.state == timedOut {
				sub.ExecutionTimeoutMs = 100
			}
			id := h.submit(sub)
			switch tc.state {
			case completed:
				h.take(w)
				h.done(w, id, Result{Output: json.RawMessage(`1`)})
			case failed:
				h.take(w)
				h.done(w, id, Result{Output: json.RawMessage(`"partial"`), Error: "boom", HasError: true})
			case timedOut:
				h.take(w)
				h.waitStatus(id, store.TimedOut)
				h.s.StopSignals(h.ctx, h.ep, w.id, 10*time.Millisecond)
			case cancelled:
				h.s.Cancel(h.ctx, h.ep, id)
			case running:
				h.take(w)
			}
			before := h.status(id).Status
			v, err := h.s.Retry(h.ctx, h.ep, id)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Retry: %+v %v, want %v", v, err, tc.wantErr)
				}
				// The message says why, naming the state, and carries no
				// "conflict:" prefix that a status code could contradict.
				if msg := err.Error(); strings.HasPrefix(msg, "conflict") || !strings.Contains(msg, "is "+string(before)+";") {
					t.Errorf("Retry refusal %q: want the job's state %s named, no \"conflict\" prefix", msg, before)
				}
				if after := h.status(id).Status; after != before {
					t.Errorf("refused retry changed the status from %s to %s", before, after)
				}
				return
			}
			if err != nil || v.Status != store.InQueue || v.ID != id {
				t.Fatalf("Retry: %+v %v", v, err)
			}
			got := h.status(id)
			if got.Status != store.InQueue || got.Output != nil || got.Error != "" || got.Retries != 1 || got.WorkerID != "" {
				t.Errorf("after retry: %+v", got)
			}
			// Second retry while queued: refused.
			if _, err := h.s.Retry(h.ctx, h.ep, id); !errors.Is(err, ErrConflict) {
				t.Errorf("retry of a queued job: %v", err)
			}
			tj := h.take(w)
			if tj.ID != id || string(tj.Input) != `{"keep":"me"}` {
				t.Errorf("retried job taken as %+v", tj)
			}
			if tc.state == timedOut {
				// Its 100 ms execution timeout runs again; do not race it.
				h.waitStatus(id, store.TimedOut)
				return
			}
			if n := h.attempts(id); n != 1 {
				t.Errorf("attempts after retry and take = %d, want 1", n)
			}
			h.done(w, id, Result{Output: json.RawMessage(`"second"`)})
			if v := h.status(id); v.Status != store.Completed || string(v.Output) != `"second"` {
				t.Errorf("after the retried run: %+v", v)
			}
			hl, _ := h.s.Health(h.ep)
			if hl.Jobs.Retried != 1 {
				t.Errorf("health retried = %d, want 1", hl.Jobs.Retried)
			}
		})
	}
	h := newHarness(t, nil)
	if _, err := h.s.Retry(h.ctx, h.ep, "unknown"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Retry unknown: %v", err)
	}
	if _, err := h.s.Retry(h.ctx, "no-endpoint", "unknown"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Retry on an unknown endpoint: %v", err)
	}
}

func TestPurge(t *testing.T) {
	h := newHarness(t, nil)
	w := h.worker()
	running := h.submit(spec.Submission{})
	h.take(w)
	var queued []string
	for i := 0; i < 3; i++ {
		queued = append(queued, h.submit(spec.Submission{LowPriority: i == 2}))
	}
	n, err := h.s.Purge(h.ctx, h.ep)
	if err != nil || n != 3 {
		t.Fatalf("Purge = %d, %v; want 3", n, err)
	}
	for _, id := range queued {
		if v := h.status(id); v.Status != store.Cancelled {
			t.Errorf("purged job %s: %+v", id, v)
		}
	}
	if v := h.status(running); v.Status != store.InProgress {
		t.Errorf("running job after purge: %+v", v)
	}
	hl, _ := h.s.Health(h.ep)
	if hl.Jobs.InQueue != 0 || hl.Jobs.InProgress != 1 {
		t.Errorf("health after purge: %+v", hl.Jobs)
	}
	if n, err := h.s.Purge(h.ctx, h.ep); err != nil || n != 0 {
		t.Errorf("second Purge = %d, %v", n, err)
	}
	h.done(w, running, Result{Output: json.RawMessage(`1`)})
	if v := h.status(running); v.Status != store.Completed {
		t.Errorf("running job after its result: %+v", v)
	}
	h.takeEmpty(w)
	if _, err := h.s.Purge(h.ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Purge of an unknown endpoint: %v", err)
	}
}

func TestWorkerExitRequeues(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxAttempts = 2 })
	w1 := h.worker()
	id := h.submit(spec.Submission{})
	other := h.submit(spec.Submission{})
	h.take(w1)
	w1.finish(oci.ExitStatus{Code: 1})

	// Re-queued at the head, attempt kept; a replacement worker starts.
	v := h.waitStatus(id, store.InQueue)
	if v.WorkerID != "" || v.HasDelay {
		t.Errorf("re-queued job view: %+v", v)
	}
	if n := h.attempts(id); n != 1 {
		t.Errorf("attempts after the first loss = %d, want 1", n)
	}
	w2 := h.worker()
	if w2.id == w1.id {
		t.Fatal("replacement worker has the same id")
	}
	if err := h.s.AuthWorker(h.ep, w1.id, w1.token); err == nil {
		t.Error("the dead worker's token still works")
	}
	if got := h.take(w2); got.ID != id {
		t.Fatalf("replacement took %s, want the re-queued %s", got.ID, id)
	}
	w2.finish(oci.ExitStatus{Signal: "killed", Code: -1})

	// Second loss with MaxAttempts 2: FAILED, naming the count.
	v = h.waitStatus(id, store.Failed)
	if !strings.Contains(v.Error, "2 attempts") {
		t.Errorf("error %q does not name the attempt count", v.Error)
	}
	if !strings.Contains(v.Error, "killed") {
		t.Errorf("error %q does not say how the worker ended", v.Error)
	}
	// The other job was untouched and is still takeable.
	w3 := h.worker()
	if got := h.take(w3); got.ID != other {
		t.Errorf("took %s, want %s", got.ID, other)
	}
	// A late result from a past worker of a terminal job is ignored.
	if err := h.s.Done(h.ctx, h.ep, w1.id, id, Result{Output: json.RawMessage(`1`)}); err != nil {
		t.Errorf("late result of a lost worker: %v", err)
	}
	if v := h.status(id); v.Status != store.Failed {
		t.Errorf("late result changed a failed job: %+v", v)
	}
}

func TestPastWorkerResultAccepted(t *testing.T) {
	// A worker whose lease was taken away (pings stopped listing it) may
	// still finish the job; first final result wins.
	h := newHarness(t, nil)
	w := h.worker()
	id := h.submit(spec.Submission{})
	h.take(w)
	if err := h.s.Ping(h.ep, w.id, nil, "1.7.0", "", ""); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitLimit)
	for h.status(id).Status != store.InQueue {
		if time.Now().After(deadline) {
			t.Fatal("job not re-queued")
		}
		if err := h.s.Ping(h.ep, w.id, nil, "", "", ""); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Progress from a worker that no longer holds the job is ignored.
	h.done(w, id, Result{Progress: true, Output: json.RawMessage(`"stale progress"`)})
	if v := h.status(id); v.Status != store.InQueue || v.Output != nil {
		t.Errorf("a past worker's progress changed the job: %+v (output %s)", v, v.Output)
	}
	h.done(w, id, Result{Output: json.RawMessage(`"from the past worker"`)})
	if v := h.status(id); v.Status != store.Completed || string(v.Output) != `"from the past worker"` || v.WorkerID != w.id {
		t.Errorf("after a past worker's result: %+v", v)
	}
	h.takeEmpty(w)
}

func TestPingLease(t *testing.T) {
	cases := []struct {
		name       string
		listJob    bool
		wantStatus store.Status
	}{
		{"listed keeps the lease", true, store.InProgress},
		{"missing from pings re-queues", false, store.InQueue},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil) // LeaseGrace 300ms
			w := h.worker()
			id := h.submit(spec.Submission{})
			h.take(w)
			var list []string
			if tc.listJob {
				list = []string{"unrelated", id}
			}
			// Ping for about 3 lease graces.
			deadline := time.Now().Add(900 * time.Millisecond)
			for time.Now().Before(deadline) {
				if err := h.s.Ping(h.ep, w.id, list, "1.7.0", "", ""); err != nil {
					t.Fatal(err)
				}
				if !tc.listJob && h.status(id).Status == store.InQueue {
					break
				}
				time.Sleep(30 * time.Millisecond)
			}
			v := h.status(id)
			if v.Status != tc.wantStatus {
				t.Fatalf("after pinging: %+v, want %s", v, tc.wantStatus)
			}
			if !tc.listJob {
				if n := h.attempts(id); n != 1 {
					t.Errorf("attempts = %d, want 1 (the lost lease counts)", n)
				}
				if got := h.take(w); got.ID != id {
					t.Errorf("took %s, want %s again", got.ID, id)
				}
				if n := h.attempts(id); n != 2 {
					t.Errorf("attempts after the second take = %d", n)
				}
			}
			if err := h.s.Ping(h.ep, "w-nobody", nil, "", "", ""); !errors.Is(err, ErrForbidden) {
				t.Errorf("ping of an unknown worker: %v", err)
			}
		})
	}
}

func TestPingsStop(t *testing.T) {
	// A worker that pinged once and then fell silent for longer than the
	// grace loses its jobs and is stopped.
	h := newHarness(t, nil)
	w := h.worker()
	id := h.submit(spec.Submission{})
	h.take(w)
	if err := h.s.Ping(h.ep, w.id, []string{id}, "1.7.0", "", ""); err != nil {
		t.Fatal(err)
	}
	h.waitStatus(id, store.InQueue)
	deadline := time.Now().Add(waitLimit)
	for !w.wasStopped() {
		if time.Now().After(deadline) {
			t.Fatal("silent worker was not stopped")
		}
		time.Sleep(10 * time.Millisecond)
	}
	w2 := h.worker()
	if got := h.take(w2); got.ID != id {
		t.Errorf("replacement took %s", got.ID)
	}
}

func TestUnhealthyPing(t *testing.T) {
	h := newHarness(t, nil)
	w := h.worker()
	id := h.submit(spec.Submission{})
	h.take(w)
	if err := h.s.Ping(h.ep, w.id, []string{id}, "1.11.0", "unhealthy", "gpu: no device"); err != nil {
		t.Fatal(err)
	}
	if !w.wasStopped() {
		t.Error("unhealthy worker not stopped")
	}
	// The fake exits cleanly on Stop; the job it held goes back to the queue.
	h.waitStatus(id, store.InQueue)
	w2 := h.worker()
	if got := h.take(w2); got.ID != id {
		t.Errorf("took %s", got.ID)
	}
}

func TestStopPodRecycles(t *testing.T) {
	h := newHarness(t, nil)
	w := h.worker()
	id := h.submit(spec.Submission{})
	h.take(w)
	h.done(w, id, Result{Output: json.RawMessage(`1`), StopPod: true})
	if !w.wasStopped() {
		t.Error("stopPod did not stop the worker")
	}
	if v := h.status(id); v.Status != store.Completed {
		t.Errorf("job: %+v", v)
	}
	h.worker() // replacement
}

func TestStreamChunks(t *testing.T) {
	h := newHarness(t, nil)
	w := h.worker()
	id := h.submit(spec.Submission{})
	h.take(w)
	v, err := h.s.Stream(h.ctx, h.ep, id, 50*time.Millisecond)
	if err != nil || v.Status != store.InProgress || v.Stream == nil || len(v.Stream) != 0 {
		t.Fatalf("empty stream: %+v %v", v, err)
	}
	for i := 1; i <= 3; i++ {
		if err := h.s.AddChunk(h.ctx, h.ep, w.id, id, []byte(fmt.Sprintf(`"c%d"`, i))); err != nil {
			t.Fatal(err)
		}
	}
	v, err = h.s.Stream(h.ctx, h.ep, id, 0)
	if err != nil || len(v.Stream) != 3 || string(v.Stream[0].Output) != `"c1"` || string(v.Stream[2].Output) != `"c3"` {
		t.Fatalf("stream: %+v %v", v, err)
	}
	if err := h.s.AddChunk(h.ctx, h.ep, w.id, id, []byte(`"c4"`)); err != nil {
		t.Fatal(err)
	}
	h.done(w, id, Result{Output: json.RawMessage(`[]`)})
	// The terminal answer carries the chunk not yet delivered, then nothing.
	v, err = h.s.Stream(h.ctx, h.ep, id, 0)
	if err != nil || v.Status != store.Completed || len(v.Stream) != 1 || string(v.Stream[0].Output) != `"c4"` {
		t.Fatalf("terminal stream: %+v %v", v, err)
	}
	v, err = h.s.Stream(h.ctx, h.ep, id, 0)
	if err != nil || v.Status != store.Completed || v.Stream == nil || len(v.Stream) != 0 {
		t.Fatalf("stream after everything was read: %+v %v", v, err)
	}
	if err := h.s.AddChunk(h.ctx, h.ep, "w-stranger", id, []byte(`1`)); !errors.Is(err, ErrJobEnded) {
		t.Errorf("chunk for a finished job: %v (want ErrJobEnded: refused, not stored)", err)
	}
}

func TestRecovery(t *testing.T) {
	dir := t.TempDir()
	rt := newFakeRuntime()
	cfg := testConfig(t, rt)
	cfg.DataDir = dir
	cfg.InMemoryStore = false
	cfg.MinFreeBytes = 1
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	name, cmd, zero := "rec", []string{"fake"}, 0
	e, err := s.CreateEndpoint(context.Background(), spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &zero, GPUCount: &zero})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Simulate a crash: write the records a dying daemon would have left.
	st, err := store.OpenBadger(store.BadgerOptions{Dir: dir, Logger: cfg.Logger})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	mk := func(id string, seq uint64, status store.Status, attempts int) *store.Job {
		r := &store.Job{ID: id, EndpointID: e.ID, Status: status, Seq: seq, Input: json.RawMessage(`"` + id + `"`),
			ExecutionTimeoutMs: 600000, TTLMs: runpod.DefaultTTLMs, SubmittedAt: now.UnixMilli(), Attempts: attempts}
		if status == store.InProgress {
			r.WorkerID, r.StartedAt = "w-dead", now.UnixMilli()
		}
		return r
	}
	recs := []*store.Job{
		// ids sort in the opposite order of Seq: recovery must restore Seq order.
		mk("z-queued", 1, store.InQueue, 0),
		mk("y-running", 2, store.InProgress, 1),
		mk("x-exhausted", 3, store.InProgress, 3),
		mk("w-queued2", 4, store.InQueue, 0),
		mk("v-done", 5, store.Completed, 1),
	}
	orphan := mk("u-orphan", 6, store.InQueue, 0)
	orphan.EndpointID = "deleted-endpoint"
	recs = append(recs, orphan)
	b := st.NewBatch()
	for _, r := range recs {
		exp := r.Deadline()
		if r.Status.Terminal() {
			r.FinishedAt = now.UnixMilli()
			r.Output = json.RawMessage(`"kept"`)
			exp = now.Add(time.Hour)
		}
		if err := b.PutJob(r, exp); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Commit(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	rt2 := newFakeRuntime()
	cfg.Runtime = rt2
	s2, err := Open(cfg)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := &harness{t: t, s: s2, rt: rt2, ep: e.ID, ctx: ctx}
	defer func() {
		if err := s2.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()

	for id, want := range map[string]store.Status{"z-queued": store.InQueue, "y-running": store.InQueue, "w-queued2": store.InQueue, "x-exhausted": store.Failed, "v-done": store.Completed} {
		if v := h.status(id); v.Status != want {
			t.Errorf("%s after recovery: %+v, want %s", id, v, want)
		}
	}
	if v := h.status("y-running"); v.WorkerID != "" || v.HasDelay {
		t.Errorf("re-queued job keeps lease fields: %+v", v)
	}
	if n := h.attempts("y-running"); n != 1 {
		t.Errorf("re-queued job attempts = %d, want 1 (kept)", n)
	}
	if v := h.status("x-exhausted"); !strings.Contains(v.Error, "3 attempts") {
		t.Errorf("exhausted job error %q does not name the attempts", v.Error)
	}
	if v := h.status("v-done"); string(v.Output) != `"kept"` {
		t.Errorf("terminal job output %s", v.Output)
	}
	if _, err := s2.Status("deleted-endpoint", "u-orphan"); !errors.Is(err, ErrNotFound) {
		t.Errorf("orphan job: %v", err)
	}
	if _, err := s2.store.Job(context.Background(), "u-orphan", false); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("orphan record not deleted: %v", err)
	}
	// The fixes are durable: the failed record says FAILED on disk.
	if r, err := s2.store.Job(context.Background(), "x-exhausted", false); err != nil || r.Status != store.Failed {
		t.Errorf("stored exhausted record: %+v %v", r, err)
	}
	hl, _ := s2.Health(e.ID)
	if hl.Jobs.InQueue != 3 {
		t.Errorf("health inQueue = %d, want 3", hl.Jobs.InQueue)
	}

	// Jobs are waiting, so a worker starts (scale from zero); it gets them in
	// arrival (Seq) order.
	w := h.worker()
	for _, want := range []string{"z-queued", "y-running", "w-queued2"} {
		got := h.take(w)
		if got.ID != want {
			t.Errorf("took %s, want %s", got.ID, want)
		}
		if string(got.Input) != `"`+want+`"` {
			t.Errorf("%s input %s", got.ID, got.Input)
		}
		h.done(w, got.ID, Result{Output: json.RawMessage(`1`)})
	}
	if n := func() int {
		r, _ := s2.store.Job(context.Background(), "y-running", false)
		return r.Attempts
	}(); n != 2 {
		t.Errorf("y-running attempts after the retake = %d, want 2", n)
	}
	// New jobs get sequence numbers after the recovered ones.
	id := h.submit(spec.Submission{})
	s2.mu.Lock()
	seq := s2.jobs[id].rec.Seq
	s2.mu.Unlock()
	if seq <= 6 {
		t.Errorf("new job seq %d collides with recovered ones", seq)
	}
}

func TestCloseKeepsQueuedJobs(t *testing.T) {
	dir := t.TempDir()
	rt := newFakeRuntime()
	cfg := testConfig(t, rt)
	cfg.DataDir, cfg.InMemoryStore, cfg.MinFreeBytes = dir, false, 1
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	h := &harness{t: t, s: s, rt: rt, ctx: ctx}
	h.ep = h.createEndpoint("keep", 1, 1)
	w := h.worker()
	q := h.submit(spec.Submission{})
	r := h.submit(spec.Submission{})
	if got := h.take(w); got.ID != q {
		t.Fatalf("took %s", got.ID)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !w.wasStopped() {
		t.Error("Close did not stop the worker")
	}
	if _, err := s.Submit(ctx, h.ep, spec.Submission{Input: json.RawMessage(`1`)}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Submit after Close: %v", err)
	}
	s2, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	h.s = s2
	// The worker drained on Close, so the taken job was re-queued (attempt
	// counted) before the store closed, or found IN_PROGRESS on restart;
	// either way both are queued now.
	for _, id := range []string{q, r} {
		if v := h.status(id); v.Status != store.InQueue {
			t.Errorf("%s after restart: %+v", id, v)
		}
	}
}

func TestStartFailureBacksOff(t *testing.T) {
	rt := newFakeRuntime()
	rt.failing = true
	cfg := testConfig(t, rt)
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	h := &harness{t: t, s: s, rt: rt, ctx: ctx}
	h.ep = h.createEndpoint("broken", 1, 1)
	// The failed start is counted and the next start is delayed.
	deadline := time.Now().Add(waitLimit)
	for {
		s.mu.Lock()
		f, next := s.endpoints[h.ep].failures, s.endpoints[h.ep].nextStart
		s.mu.Unlock()
		if f >= 1 && next.After(time.Now()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no back-off after a failed start (failures %d)", f)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Jobs still queue while no worker can start.
	id := h.submit(spec.Submission{})
	if v := h.status(id); v.Status != store.InQueue {
		t.Errorf("%+v", v)
	}
}

func TestSubmitUnknownEndpoint(t *testing.T) {
	h := newHarness(t, nil)
	if _, err := h.s.Submit(h.ctx, "nope", spec.Submission{Input: json.RawMessage(`1`)}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Submit to unknown endpoint: %v", err)
	}
	id := h.submit(spec.Submission{Sync: true})
	if !strings.HasPrefix(id, "sync-") {
		t.Errorf("sync job id %q lacks the sync- prefix", id)
	}
	if err := h.s.DeleteEndpoint(h.ctx, h.ep); !errors.Is(err, ErrConflict) {
		t.Errorf("deleting an endpoint with a queued job: %v", err)
	}
}

func TestSilentWorkerDoesNotRequeueFinalizingJob(t *testing.T) {
	// A worker that stopped pinging loses its jobs, except one whose final
	// result is being written right now: re-queueing that one would put a
	// finished job back in the queue, where a worker would run it again.
	h := newHarness(t, nil)
	w := h.worker()
	id := h.submit(spec.Submission{})
	h.take(w)
	if err := h.s.Ping(h.ep, w.id, []string{id}, "1.7.0", "", ""); err != nil {
		t.Fatal(err)
	}
	// Simulate a result whose terminal write is in flight (finalize holds
	// this state between its two critical sections).
	h.s.mu.Lock()
	j := h.s.jobs[id]
	j.finalizing = true
	h.s.mu.Unlock()
	// Wait for the tick to notice the silence (LeaseGrace 300 ms) and stop
	// the worker.
	deadline := time.Now().Add(waitLimit)
	for !w.wasStopped() {
		if time.Now().After(deadline) {
			t.Fatal("silent worker was not stopped")
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.s.mu.Lock()
	queued, finalizing, inQueue := j.queued, j.finalizing, h.s.endpoints[h.ep].inQueue
	h.s.mu.Unlock()
	if queued || inQueue != 0 {
		t.Errorf("a job whose result is being written was re-queued (queued %v, inQueue %d)", queued, inQueue)
	}
	if !finalizing {
		t.Error("re-queueing cleared the finalizing flag of an in-flight result")
	}
}
