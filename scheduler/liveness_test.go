package scheduler

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/emberhq/ember/internal/faults"
	"github.com/emberhq/ember/scheduler/spec"
)

func TestCheckAndSummary(t *testing.T) {
	h := newHarness(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.s.Check(ctx); err != nil {
		t.Fatalf("Check on a healthy scheduler: %v", err)
	}
	w := h.worker()
	sum := h.s.Summary()
	if sum.Endpoints != 1 || sum.Queued != 0 || sum.InProgress != 0 {
		t.Errorf("Summary before jobs: %+v", sum)
	}
	if sum.Workers[WorkerInitializing] != 1 {
		t.Errorf("Summary workers: %v, want 1 initializing", sum.Workers)
	}
	for _, st := range []WorkerState{WorkerIdle, WorkerRunning, WorkerDraining, WorkerFrozen, WorkerUnhealthy} {
		if _, ok := sum.Workers[st]; !ok {
			t.Errorf("Summary workers lack state %s: %v", st, sum.Workers)
		}
	}
	if _, ok := sum.Workers[WorkerStopped]; ok {
		t.Errorf("Summary workers count stopped ones: %v", sum.Workers)
	}
	h.submit(spec.Submission{})
	h.submit(spec.Submission{})
	if sum := h.s.Summary(); sum.Queued != 2 || sum.InProgress != 0 {
		t.Errorf("Summary with 2 queued: %+v", sum)
	}
	h.take(w)
	sum = h.s.Summary()
	if sum.Queued != 1 || sum.InProgress != 1 || sum.Workers[WorkerRunning] != 1 {
		t.Errorf("Summary with 1 queued, 1 running: %+v", sum)
	}
}

// wedged waits until the scheduler lock is held by someone else.
func wedged(t *testing.T, s *Scheduler) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.mu.TryLock() {
		s.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("Wedge did not take the lock within 5 s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCheckWedged(t *testing.T) {
	h := newHarness(t, nil)
	released := make(chan struct{})
	go func() { faults.WedgeScheduler(h.s, time.Second); close(released) }()
	wedged(t, h.s)

	before := runtime.NumGoroutine()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	err := h.s.Check(ctx)
	cancel()
	if !errors.Is(err, ErrWedged) {
		t.Fatalf("Check on a wedged scheduler: %v, want ErrWedged", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("Check took %v with a 50 ms deadline", d)
	}
	// Many checks while wedged share one lock attempt: no goroutine pile-up.
	for range 100 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		if err := h.s.Check(ctx); !errors.Is(err, ErrWedged) {
			t.Fatalf("Check while wedged: %v", err)
		}
		cancel()
	}
	if grown := runtime.NumGoroutine() - before; grown > 10 {
		t.Errorf("100 checks of a wedged scheduler left %d more goroutines", grown)
	}

	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Fatal("Wedge(1s) did not return within 5 s")
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.s.Check(ctx); err != nil {
		t.Fatalf("Check after the wedge: %v", err)
	}
	// The in-flight probe is gone once it finished.
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.s.probeMu.Lock()
		inFlight := h.s.probe != nil
		h.s.probeMu.Unlock()
		if !inFlight {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lock probe stayed registered after the lock was free")
		}
		time.Sleep(time.Millisecond)
	}

	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.s.Check(ctx); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Check after Close: %v, want ErrUnavailable", err)
	}
}

func TestCheckDoneContext(t *testing.T) {
	h := newHarness(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.s.Check(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Check with a cancelled context: %v", err)
	}
}
