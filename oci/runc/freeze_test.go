package runc

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/oci"
)

// fileSize is the size of path, 0 when it cannot be read.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// freezerState reads the worker's freezer cgroup state ("FROZEN",
// "THAWED"; "0"/"1" of cgroup.freeze on cgroup v2).
func freezerState(t *testing.T, w *Worker) string {
	t.Helper()
	p := w.cgroupPaths["freezer"]
	file := "freezer.state"
	if p == "" {
		p, file = w.cgroupPaths[""], "cgroup.freeze"
	}
	b, err := os.ReadFile(filepath.Join(p, file))
	if err != nil {
		t.Fatalf("read the freezer state: %v", err)
	}
	return strings.TrimSpace(string(b))
}

func isFrozen(s string) bool { return s == "FROZEN" || s == "1" }

// assertNoProgress fails if the log grows over d.
func assertNoProgress(t *testing.T, path string, d time.Duration) {
	t.Helper()
	n := fileSize(path)
	time.Sleep(d)
	if m := fileSize(path); m != n {
		t.Fatalf("frozen worker's log grew from %d to %d bytes in %v", n, m, d)
	}
}

// waitProgress waits until the log grows.
func waitProgress(t *testing.T, path string, timeout time.Duration) {
	t.Helper()
	n := fileSize(path)
	waitFor(t, timeout, "the worker to make progress", func() bool { return fileSize(path) > n })
}

// A ticking worker stops logging while frozen and goes on after Thaw, many
// times over; Freeze and Thaw are idempotent.
func TestFreezeThaw(t *testing.T) {
	e := newTestRuntime(t, nil)
	spec := e.spec("tick")
	w := e.start(t, spec)
	waitFor(t, 10*time.Second, "tick 2", logHas(spec.LogPath, "tick 2"))

	var f oci.Freezer = w // what the scheduler type-asserts
	if err := f.Thaw(); err != nil {
		t.Fatalf("Thaw of a running worker: %v", err)
	}
	for i := range 5 {
		if err := f.Freeze(); err != nil {
			t.Fatalf("cycle %d: Freeze: %v", i, err)
		}
		if s := freezerState(t, w); !isFrozen(s) {
			t.Fatalf("cycle %d: freezer state %q after Freeze", i, s)
		}
		if i == 0 {
			if err := f.Freeze(); err != nil {
				t.Fatalf("Freeze of a frozen worker: %v", err)
			}
		}
		// tick logs every 50 ms.
		assertNoProgress(t, spec.LogPath, 300*time.Millisecond)
		if err := f.Thaw(); err != nil {
			t.Fatalf("cycle %d: Thaw: %v", i, err)
		}
		if s := freezerState(t, w); isFrozen(s) {
			t.Fatalf("cycle %d: freezer state %q after Thaw", i, s)
		}
		if i == 0 {
			if err := f.Thaw(); err != nil {
				t.Fatalf("Thaw of a thawed worker: %v", err)
			}
		}
		waitProgress(t, spec.LogPath, 5*time.Second)
	}
	select {
	case <-w.Done():
		t.Fatalf("the worker ended: %s", w.Exit())
	default:
	}
}

// Kill ends a frozen worker at once (a frozen cgroup v1 task does not die
// of SIGKILL until thawed).
func TestKillFrozen(t *testing.T) {
	e := newTestRuntime(t, nil)
	spec := e.spec("tick")
	w := e.start(t, spec)
	waitFor(t, 10*time.Second, "tick 1", logHas(spec.LogPath, "tick 1"))
	if err := w.Freeze(); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	w.Kill()
	waitDone(t, w, 5*time.Second)
	t.Logf("Kill of a frozen worker to Done: %v", time.Since(t0))
	if st := w.Exit(); st.Signal != "killed" {
		t.Errorf("killed frozen worker: %s", st)
	}
}

// Stop on a frozen worker: it gets its SIGTERM as soon as Stop is called,
// not after the grace period; and it is not frozen again after Stop.
func TestStopFrozen(t *testing.T) {
	e := newTestRuntime(t, nil)
	spec := e.spec("trap")
	w := e.start(t, spec)
	waitFor(t, 10*time.Second, "ready", logHas(spec.LogPath, "ready"))
	if err := w.Freeze(); err != nil {
		t.Fatal(err)
	}
	const grace = 30 * time.Second
	t0 := time.Now()
	w.Stop(grace)
	if err := w.Freeze(); err == nil {
		t.Error("Freeze after Stop succeeded")
	}
	waitDone(t, w, 5*time.Second)
	t.Logf("Stop of a frozen worker to Done: %v", time.Since(t0))
	if st := w.Exit(); st.Code != 0 || st.Signal != "" {
		t.Errorf("stopped frozen worker: %s", st)
	}
	if !strings.Contains(readFile(t, spec.LogPath), "got SIGTERM") {
		t.Error("no SIGTERM seen")
	}

	// One that ignores SIGTERM is killed after grace, frozen or not.
	spec = e.spec("ignore")
	w = e.start(t, spec)
	waitFor(t, 10*time.Second, "ready", logHas(spec.LogPath, "ready"))
	if err := w.Freeze(); err != nil {
		t.Fatal(err)
	}
	w.Stop(200 * time.Millisecond)
	waitDone(t, w, 5*time.Second)
	if st := w.Exit(); st.Signal != "killed" {
		t.Errorf("ignoring frozen worker: %s", st)
	}
}

// Freeze and Thaw of an exited worker fail with oci.ErrExited, at once.
func TestFreezeExited(t *testing.T) {
	e := newTestRuntime(t, nil)
	w := e.start(t, e.spec("exit", "0"))
	waitDone(t, w, 10*time.Second)
	errs := make(chan error, 2)
	go func() {
		errs <- w.Freeze()
		errs <- w.Thaw()
	}()
	for _, op := range []string{"Freeze", "Thaw"} {
		select {
		case err := <-errs:
			if !errors.Is(err, oci.ErrExited) {
				t.Errorf("%s of an exited worker: %v, want oci.ErrExited", op, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s of an exited worker hangs", op)
		}
	}
}
