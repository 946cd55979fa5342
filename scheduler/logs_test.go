package scheduler

import (
	"errors"
	"testing"

	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/scheduler/limits"
)

// TestLogWorkers: an endpoint's log workers are its live ones and those
// that stopped, up to limits.LogStoppedWorkers, oldest first.
func TestLogWorkers(t *testing.T) {
	h := newHarness(t, nil)
	if _, err := h.s.LogWorkers("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown endpoint: %v", err)
	}
	ep := h.ep // keeps exactly one worker
	first := h.worker()
	ws, err := h.s.LogWorkers(ep)
	if err != nil || len(ws) != 1 || ws[0].ID != first.id {
		t.Fatalf("live: %v, %v; want %s", ws, err, first.id)
	}
	first.finish(oci.ExitStatus{})
	second := h.worker() // the replacement workersMin asks for
	eventually(t, "the first worker stopped", func() bool {
		ws, _ := h.s.LogWorkers(ep)
		return len(ws) == 2 && ws[0].ID == first.id && ws[0].State == WorkerStopped && ws[1].ID == second.id
	})

	// The stopped ones are capped.
	h.s.mu.Lock()
	st := h.s.endpoints[ep]
	for range limits.LogStoppedWorkers + 5 {
		rememberStoppedLocked(st, &worker{id: "w-00", endpoint: ep})
	}
	n := len(st.stopped)
	h.s.mu.Unlock()
	if n != limits.LogStoppedWorkers {
		t.Errorf("%d stopped workers kept, want %d", n, limits.LogStoppedWorkers)
	}
}
