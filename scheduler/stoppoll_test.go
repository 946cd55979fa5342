package scheduler

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/scheduler/spec"
)

// lingerRuntime starts fake workers that, like runpod-python, do not exit
// on SIGTERM (Stop) by themselves: the test ends them once their polls have
// returned, as the SDK exits only when its take and its stop poll have.
type lingerRuntime struct{ *fakeRuntime }

func (r lingerRuntime) Start(ctx context.Context, spec oci.Spec) (oci.Worker, error) {
	h, err := r.fakeRuntime.Start(ctx, spec)
	if err != nil {
		return nil, err
	}
	return lingerWorker{h.(*fakeWorker)}, nil
}

type lingerWorker struct{ *fakeWorker }

// Stop records the SIGTERM and leaves the worker running.
func (w lingerWorker) Stop(time.Duration) {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}

// stopPollHold is the stop-hold of these tests: far longer than any wait in
// them, so a poll that returns was answered, not timed out.
const stopPollHold = time.Minute

type stopPoll struct {
	ids []string
	err error
}

// pollStop starts one job-stop poll of w and returns where its answer goes.
func (h *harness) pollStop(w *fakeWorker) <-chan stopPoll {
	ch := make(chan stopPoll, 1)
	go func() {
		ids, err := h.s.StopSignals(h.ctx, h.ep, w.id, 0)
		ch <- stopPoll{ids, err}
	}()
	return ch
}

// answered waits (bounded by waitLimit, far under the stop-hold) for a
// poll's answer.
func (h *harness) answered(ch <-chan stopPoll, what string) stopPoll {
	h.t.Helper()
	select {
	case got := <-ch:
		if got.err != nil {
			h.t.Fatalf("%s: StopSignals: %v", what, got.err)
		}
		return got
	case <-time.After(waitLimit):
		h.t.Fatalf("%s: the job-stop poll was still held %v later (stop-hold %v)", what, waitLimit, stopPollHold)
		return stopPoll{}
	}
}

// TestStopPollAnsweredOnDrain: whatever stops a worker, its pending job-stop
// poll answers at once, and so does every later poll, so that a worker that
// exits only when both its polls have returned (runpod-python) can exit.
func TestStopPollAnsweredOnDrain(t *testing.T) {
	for _, tc := range []struct {
		name string
		// ready brings the worker to where drain will stop it (idle, with
		// one job done when idle scaling needs a job first).
		ready func(h *harness, w *fakeWorker)
		// drain stops the worker; it may block (Close does, until the
		// worker exits), so it runs on its own goroutine.
		drain func(h *harness, w *fakeWorker) error
	}{
		{"idle timeout", func(h *harness, w *fakeWorker) {
			h.done(w, h.take(w).ID, Result{Output: []byte(`1`)})
		}, nil},
		{"scale-down (workersMin lowered)", func(h *harness, w *fakeWorker) { h.takeEmpty(w) },
			func(h *harness, w *fakeWorker) error {
				zero, one := 0, 1
				_, err := h.s.UpdateEndpoint(h.ctx, h.ep, spec.EndpointSpec{WorkersMin: &zero, IdleTimeout: &one})
				return err
			}},
		{"operator stop", func(h *harness, w *fakeWorker) { h.takeEmpty(w) },
			func(h *harness, w *fakeWorker) error { return h.s.StopWorker(w.id) }},
		{"unhealthy ping", func(h *harness, w *fakeWorker) { h.takeEmpty(w) },
			func(h *harness, w *fakeWorker) error {
				return h.s.Ping(h.ep, w.id, nil, "1.12.0", "unhealthy", "fitness check failed")
			}},
		{"endpoint delete", func(h *harness, w *fakeWorker) { h.takeEmpty(w) },
			func(h *harness, w *fakeWorker) error { return h.s.DeleteEndpoint(h.ctx, h.ep) }},
		{"shutdown", func(h *harness, w *fakeWorker) { h.takeEmpty(w) },
			func(h *harness, w *fakeWorker) error { return h.s.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) {
				c.StopHold = stopPollHold
				c.Runtime = lingerRuntime{c.Runtime.(*fakeRuntime)}
			})
			var w *fakeWorker
			if tc.drain == nil {
				// Idle timeout: an endpoint that scales to zero, started by
				// a job (the default endpoint's worker is left alone).
				h.worker()
				name, cmd, zero, one := "idle", []string{"fake-worker"}, 0, 1
				e, err := h.s.CreateEndpoint(h.ctx, spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &zero, WorkersMax: &one, IdleTimeout: &one, GPUCount: &zero})
				if err != nil {
					t.Fatal(err)
				}
				h.ep = e.ID
				h.submit(spec.Submission{})
			}
			w = h.worker()
			tc.ready(h, w)
			pending := h.pollStop(w)
			time.Sleep(50 * time.Millisecond)
			select {
			case got := <-pending:
				t.Fatalf("the job-stop poll answered %+v before the worker was stopped", got)
			default:
			}
			drained := make(chan error, 1)
			if tc.drain != nil {
				go func() { drained <- tc.drain(h, w) }()
			}
			if got := h.answered(pending, "pending poll"); len(got.ids) != 0 {
				t.Errorf("pending poll answered %v, want no job", got.ids)
			}
			if !w.wasStopped() {
				t.Error("the poll was answered but the worker was not sent SIGTERM")
			}
			if got := h.answered(h.pollStop(w), "poll after the stop"); len(got.ids) != 0 {
				t.Errorf("poll after the stop answered %v, want no job", got.ids)
			}
			// Both polls returned: the SDK exits.
			w.finish(oci.ExitStatus{Code: 0})
			if tc.drain != nil {
				select {
				case err := <-drained:
					if err != nil {
						t.Fatalf("drain: %v", err)
					}
				case <-time.After(waitLimit):
					t.Fatal("drain did not return")
				}
			}
		})
	}
}

// TestStopPollDrainingBusyWorker: a draining worker that still runs a job
// keeps it, gets nothing new, and still hears a stop for that job.
func TestStopPollDrainingBusyWorker(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.StopHold = stopPollHold
		c.Runtime = lingerRuntime{c.Runtime.(*fakeRuntime)}
	})
	w := h.worker()
	id := h.submit(spec.Submission{})
	h.take(w)
	pending := h.pollStop(w)
	if err := h.s.StopWorker(w.id); err != nil {
		t.Fatal(err)
	}
	if got := h.answered(pending, "pending poll"); len(got.ids) != 0 {
		t.Errorf("pending poll answered %v, want no job", got.ids)
	}
	if st := h.status(id).Status; st != "IN_PROGRESS" {
		t.Fatalf("the draining worker's job is %s, want IN_PROGRESS", st)
	}
	other := h.submit(spec.Submission{})
	h.takeEmpty(w)
	if _, err := h.s.Cancel(h.ctx, h.ep, id); err != nil {
		t.Fatal(err)
	}
	if got := h.answered(h.pollStop(w), "poll after the cancel"); fmt.Sprint(got.ids) != fmt.Sprint([]string{id}) {
		t.Errorf("poll after the cancel answered %v, want [%s]", got.ids, id)
	}
	if got := h.answered(h.pollStop(w), "poll after the signal"); len(got.ids) != 0 {
		t.Errorf("poll after the signal answered %v, want no job", got.ids)
	}
	w.finish(oci.ExitStatus{Code: 0})
	// The job queued meanwhile goes to the replacement.
	next := h.worker()
	if got := h.take(next); got.ID != other {
		t.Errorf("replacement took %s, want %s", got.ID, other)
	}
}

// TestStopPollGoneWorker: a poll of a worker that has exited is refused, not
// held.
func TestStopPollGoneWorker(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.StopHold = stopPollHold })
	w := h.worker()
	h.takeEmpty(w)
	if err := h.s.StopWorker(w.id); err != nil {
		t.Fatal(err)
	}
	<-w.Done()
	deadline := time.Now().Add(waitLimit)
	for {
		_, err := h.s.StopSignals(h.ctx, h.ep, w.id, 0)
		if errors.Is(err, ErrForbidden) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("StopSignals of an exited worker: %v, want ErrForbidden", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStopPollGPUReclaim: a GPU reclaimed from an idle worker of another
// endpoint is free as soon as that worker exits, which an SDK worker can do
// at once because its pending job-stop poll is answered.
func TestStopPollGPUReclaim(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.AllocateGPUs, c.GPUs = true, mockGPUs()[:1]
		c.StopHold = stopPollHold
		c.Runtime = lingerRuntime{c.Runtime.(*fakeRuntime)}
	})
	h.worker() // the harness endpoint's CPU worker
	name, cmd := "holder", []string{"w"}
	zero, one, long := 0, 1, 3600
	holder, err := h.s.CreateEndpoint(h.ctx, spec.EndpointSpec{Name: &name, Command: &cmd, WorkersMin: &zero, WorkersMax: &one, GPUCount: &one, IdleTimeout: &long})
	if err != nil {
		t.Fatal(err)
	}
	h.ep = holder.ID
	h.submit(spec.Submission{})
	w := h.worker()
	h.done(w, h.take(w).ID, Result{Output: []byte(`1`)})
	pending := h.pollStop(w)
	time.Sleep(50 * time.Millisecond)

	needy := gpuEndpoint(t, h, "needy", 1, 0, 1, nil)
	h.s.mustSubmit(t, needy)
	if got := h.answered(pending, "pending poll of the reclaimed worker"); len(got.ids) != 0 {
		t.Errorf("pending poll answered %v, want no job", got.ids)
	}
	if !w.wasStopped() {
		t.Fatal("the idle GPU holder was not stopped for the needy endpoint")
	}
	select {
	case nw := <-h.rt.started:
		t.Fatalf("a worker started on %v while the reclaimed one still ran", nw.spec.GPUs)
	case <-time.After(100 * time.Millisecond):
	}
	w.finish(oci.ExitStatus{Code: 0})
	if nw := h.worker(); len(nw.spec.GPUs) != 1 || nw.spec.GPUs[0] != w.spec.GPUs[0] {
		t.Fatalf("needy got %v, want the reclaimed %v", nw.spec.GPUs, w.spec.GPUs)
	}
}
