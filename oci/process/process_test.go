package process

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emberhq/ember/oci"
	"github.com/emberhq/ember/oci/bundle"
)

// start runs a shell script as a worker; its output is the log.
func start(t *testing.T, script string) (oci.Worker, string) {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh here")
	}
	dir := t.TempDir()
	log := filepath.Join(dir, "worker.log")
	w, err := New().Start(context.Background(), oci.Spec{
		ID:      "w1",
		Command: []string{sh, "-c", script},
		LogPath: log,
		Dir:     dir,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.Kill()
		select {
		case <-w.Done():
		case <-time.After(10 * time.Second):
			t.Errorf("worker %d did not end", w.PID())
		}
	})
	return w, log
}

// A loop that runs a child (sleep) on every turn: both stop.
const tick = `i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.05; done`

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func logHas(path, s string) func() bool {
	return func() bool {
		b, _ := os.ReadFile(path)
		return strings.Contains(string(b), s)
	}
}

func waitDone(t *testing.T, w oci.Worker, timeout time.Duration) {
	t.Helper()
	select {
	case <-w.Done():
	case <-time.After(timeout):
		t.Fatalf("worker still running after %v", timeout)
	}
}

func TestFreezeThaw(t *testing.T) {
	w, log := start(t, tick)
	waitFor(t, 10*time.Second, "tick 2", logHas(log, "tick 2"))
	f, ok := w.(oci.Freezer)
	if !ok {
		t.Fatal("the process worker is not an oci.Freezer")
	}
	if err := f.Thaw(); err != nil {
		t.Fatalf("Thaw of a running worker: %v", err)
	}
	for i := range 5 {
		if err := f.Freeze(); err != nil {
			t.Fatalf("cycle %d: Freeze: %v", i, err)
		}
		if n, err := groupRunning(w.PID()); err != nil || n != 0 {
			t.Fatalf("cycle %d: %d processes of the group still running (%v)", i, n, err)
		}
		if i == 0 {
			if err := f.Freeze(); err != nil {
				t.Fatalf("Freeze of a frozen worker: %v", err)
			}
		}
		n := fileSize(log)
		time.Sleep(300 * time.Millisecond)
		if m := fileSize(log); m != n {
			t.Fatalf("cycle %d: frozen worker's log grew from %d to %d bytes", i, n, m)
		}
		t0 := time.Now()
		if err := f.Thaw(); err != nil {
			t.Fatalf("cycle %d: Thaw: %v", i, err)
		}
		if i == 0 {
			t.Logf("Thaw: %v", time.Since(t0))
		}
		waitFor(t, 5*time.Second, "progress after Thaw", func() bool { return fileSize(log) > n })
	}
	select {
	case <-w.Done():
		t.Fatalf("the worker ended: %s", w.Exit())
	default:
	}
}

func TestKillFrozen(t *testing.T) {
	w, log := start(t, tick)
	waitFor(t, 10*time.Second, "tick 1", logHas(log, "tick 1"))
	if err := w.(oci.Freezer).Freeze(); err != nil {
		t.Fatal(err)
	}
	w.Kill()
	waitDone(t, w, 5*time.Second)
	if st := w.Exit(); st.Signal != "killed" {
		t.Errorf("killed frozen worker: %s", st)
	}
}

// Stop on a frozen worker: its SIGTERM takes effect at once, not after
// the grace period.
func TestStopFrozen(t *testing.T) {
	w, log := start(t, `trap 'echo got TERM; exit 0' TERM; echo ready; while :; do sleep 0.05; done`)
	waitFor(t, 10*time.Second, "ready", logHas(log, "ready"))
	if err := w.(oci.Freezer).Freeze(); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	w.Stop(30 * time.Second)
	if err := w.(oci.Freezer).Freeze(); err == nil {
		t.Error("Freeze after Stop succeeded")
	}
	waitDone(t, w, 5*time.Second)
	t.Logf("Stop of a frozen worker to Done: %v", time.Since(t0))
	if st := w.Exit(); st.Code != 0 || st.Signal != "" {
		t.Errorf("stopped frozen worker: %s", st)
	}
	if !logHas(log, "got TERM")() {
		t.Error("no SIGTERM seen")
	}
}

func TestFreezeExited(t *testing.T) {
	w, _ := start(t, "exit 0")
	waitDone(t, w, 10*time.Second)
	f := w.(oci.Freezer)
	if err := f.Freeze(); !errors.Is(err, oci.ErrExited) {
		t.Errorf("Freeze of an exited worker: %v, want oci.ErrExited", err)
	}
	if err := f.Thaw(); !errors.Is(err, oci.ErrExited) {
		t.Errorf("Thaw of an exited worker: %v, want oci.ErrExited", err)
	}
}

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		in    string
		state byte
		pgrp  int
		ok    bool
	}{
		{"42 (sh) S 1 42 42 0 -1 4194560 ...", 'S', 42, true},
		{"43 (a) b) c) T 42 41 42 0", 'T', 41, true},
		{"44 (x", 0, 0, false},
		{"45 (x) R 1", 0, 0, false},
	} {
		state, pgrp, ok := parseStat([]byte(tc.in))
		if state != tc.state || pgrp != tc.pgrp || ok != tc.ok {
			t.Errorf("parseStat(%q) = %c %d %v, want %c %d %v", tc.in, state, pgrp, ok, tc.state, tc.pgrp, tc.ok)
		}
	}
}

func TestSigPending(t *testing.T) {
	status := "Name:\tsh\nState:\tD (disk sleep)\nSigQ:\t1/63428\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000040000\nSigBlk:\t0000000000000000\n"
	if !sigPending([]byte(status), syscall.SIGSTOP) {
		t.Error("SIGSTOP in ShdPnd not seen")
	}
	if sigPending([]byte(status), syscall.SIGTERM) {
		t.Error("SIGTERM seen pending")
	}
	if sigPending([]byte("SigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n"), syscall.SIGSTOP) {
		t.Error("SIGSTOP seen in empty masks")
	}
}

// TestOOMScoreAdj: a worker gets the workers' oom_score_adj, whatever
// emberd's own is (its unit lowers it), and so do the children it forks
// once started (one forked in the first instant keeps emberd's: the score is
// set just after exec).
func TestOOMScoreAdj(t *testing.T) {
	w, log := start(t, `sleep 0.5; sleep 30 & echo child $!; wait`)
	waitFor(t, 5*time.Second, "the child's pid in the log", logHas(log, "child "))
	for _, pid := range []string{strconv.Itoa(w.PID()), strings.Fields(strings.SplitAfter(readLog(t, log), "child ")[1])[0]} {
		b, err := os.ReadFile("/proc/" + pid + "/oom_score_adj")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := strings.TrimSpace(string(b)), strconv.Itoa(bundle.DefaultOOMScoreAdj); got != want {
			t.Errorf("pid %s: oom_score_adj %s, want %s", pid, got, want)
		}
	}
}

func readLog(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestInspector: a host process lists its own pid, has no memory limit,
// and cannot be given one.
func TestInspector(t *testing.T) {
	w, _ := start(t, tick)
	in := w.(oci.Inspector)
	if pids, err := in.Processes(); err != nil || len(pids) != 1 || pids[0] != w.PID() {
		t.Fatalf("Processes = %v, %v; want [%d]", pids, err, w.PID())
	}
	if n := in.MemoryLimit(); n != 0 {
		t.Fatalf("MemoryLimit = %d, want 0 (none)", n)
	}
	if err := in.SetMemoryLimit(1 << 30); !errors.Is(err, oci.ErrUnsupported) {
		t.Fatalf("SetMemoryLimit: %v, want oci.ErrUnsupported", err)
	}
}
