package scheduler

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/scheduler/limits"
)

// TestSweepWorkerLogs: logs of gone workers older than the retention go,
// fresh ones and those of live workers stay.
func TestSweepWorkerLogs(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.InMemoryStore = false })
	live := h.worker()
	dir := filepath.Join(h.s.cfg.DataDir, "workers")
	old := time.Now().Add(-48 * time.Hour)
	files := map[string]bool{ // name -> should survive
		"w-0123456789ab.log":   false,
		"w-0123456789ab.log.1": false,
		"w-aaaaaaaaaaaa.log":   true, // fresh
		live.id + ".log":       true, // live worker
		"notes.txt":            true, // not a worker log
	}
	for name, keep := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x\n"), 0o640); err != nil {
			t.Fatal(err)
		}
		if !keep || name == live.id+".log" || name == "notes.txt" {
			os.Chtimes(p, old, old)
		}
	}
	if n := h.s.sweepWorkerLogs(24 * time.Hour); n != 2 {
		t.Errorf("removed %d files, want 2", n)
	}
	for name, keep := range files {
		_, err := os.Stat(filepath.Join(dir, name))
		if keep != (err == nil) {
			t.Errorf("%s: exists=%v, want %v", name, err == nil, keep)
		}
	}
}

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
