package runc

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/oci"
)

// memoryLimitFile reads the worker's memory cgroup limit in bytes.
func memoryLimitFile(t *testing.T, w *Worker) int64 {
	t.Helper()
	p, file := w.cgroupPaths["memory"], "memory.limit_in_bytes"
	if p == "" {
		p, file = w.cgroupPaths[""], "memory.max"
	}
	b, err := os.ReadFile(filepath.Join(p, file))
	if err != nil {
		t.Fatalf("read the memory limit: %v", err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("memory limit %q: %v", b, err)
	}
	return n
}

// TestInspector: a worker lists its processes (the container's init
// among them), and its memory limit changes while it runs, in the cgroup
// and as MemoryLimit reports it, up and back down; once it has exited,
// SetMemoryLimit fails with oci.ErrExited. What GPU parking needs
// (scheduler/park.go).
func TestInspector(t *testing.T) {
	e := newTestRuntime(t, nil)
	spec := e.spec("tick")
	spec.Resources.MemoryBytes = 64 << 20
	w := e.start(t, spec)
	waitFor(t, 10*time.Second, "tick 1", logHas(spec.LogPath, "tick 1"))

	var in oci.Inspector = w // what the scheduler type-asserts
	pids, err := in.Processes()
	if err != nil || !slices.Contains(pids, w.PID()) {
		t.Fatalf("Processes = %v, %v; want the init's pid %d among them", pids, err, w.PID())
	}
	if got := in.MemoryLimit(); got != 64<<20 || memoryLimitFile(t, w) != 64<<20 {
		t.Fatalf("limit %d (cgroup %d), want 64 MiB", got, memoryLimitFile(t, w))
	}
	for _, limit := range []int64{320 << 20, 64 << 20} {
		if err := in.SetMemoryLimit(limit); err != nil {
			t.Fatalf("SetMemoryLimit(%d): %v", limit, err)
		}
		if got, file := in.MemoryLimit(), memoryLimitFile(t, w); got != limit || file != limit {
			t.Fatalf("after SetMemoryLimit(%d): MemoryLimit %d, cgroup %d", limit, got, file)
		}
	}
	waitProgress(t, spec.LogPath, 10*time.Second) // still running
	w.Kill()
	<-w.Done()
	if err := in.SetMemoryLimit(128 << 20); !errors.Is(err, oci.ErrExited) {
		t.Fatalf("SetMemoryLimit after the exit: %v, want ErrExited", err)
	}
	if _, err := in.Processes(); !errors.Is(err, oci.ErrExited) {
		t.Fatalf("Processes after the exit: %v, want ErrExited", err)
	}
}
