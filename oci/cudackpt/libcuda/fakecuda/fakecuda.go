// Package fakecuda builds a fake libcuda.so for tests without a GPU, with
// the system C compiler, and scripts it: the driver version, cuInit's
// result, a checkpoint state per PID, and failures, crashes, hangs and
// delays per call and PID. Its state is kept in files under a directory,
// so that a helper process the test starts sees the same processes.
package fakecuda

import (
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

//go:embed testdata/fakecuda.c
var source []byte

// The CUprocessState values the fake keeps.
const (
	Running      = 0
	Locked       = 1
	Checkpointed = 2
	Failed       = 3
)

// Injected results with a special meaning (Fail).
const (
	Crash = -1 // the call aborts the calling process
	Hang  = -2 // the call never returns
)

// Lib is one fake driver: the library and the directory its state is in.
type Lib struct {
	// Path is the built libcuda.so.1.
	Path string
	// Dir is its state directory; the environment variable
	// FAKECUDA_DIR, set for the test, names it.
	Dir string
	t   testing.TB
}

// New builds the fake with the checkpoint functions, in a directory of
// the test's, and points FAKECUDA_DIR at its state directory (t.Setenv:
// not for parallel tests). It skips the test when there is no C compiler.
func New(t testing.TB) *Lib { return build(t, false) }

// NewOld builds a fake of a driver before 570: no checkpoint functions,
// and cuDriverGetVersion answering 12040 (CUDA 12.4, driver 550).
func NewOld(t testing.TB) *Lib {
	l := build(t, true)
	l.SetVersion(12040)
	return l
}

func build(t testing.TB, old bool) *Lib {
	t.Helper()
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc"
	}
	if _, err := exec.LookPath(cc); err != nil {
		t.Skipf("no C compiler (%s) to build the fake libcuda: %v", cc, err)
	}
	root := t.TempDir()
	src := filepath.Join(root, "fakecuda.c")
	if err := os.WriteFile(src, source, 0o644); err != nil {
		t.Fatal(err)
	}
	// The file has a driver's versioned name, as real ones do.
	so := filepath.Join(root, "libcuda.so.570.86.15")
	if old {
		so = filepath.Join(root, "libcuda.so.550.163.01")
	}
	args := []string{"-shared", "-fPIC", "-O1", "-Wall", "-o", so, src}
	if old {
		args = append([]string{"-DFAKECUDA_OLD"}, args...)
	}
	if out, err := exec.Command(cc, args...).CombinedOutput(); err != nil {
		t.Fatalf("build fake libcuda: %v\n%s", err, out)
	}
	link := filepath.Join(root, "libcuda.so.1")
	if err := os.Symlink(filepath.Base(so), link); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "state")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FAKECUDA_DIR", dir)
	return &Lib{Path: link, Dir: dir, t: t}
}

func (l *Lib) write(name string, v int) {
	l.t.Helper()
	if err := os.WriteFile(filepath.Join(l.Dir, name), []byte(strconv.Itoa(v)+"\n"), 0o644); err != nil {
		l.t.Fatal(err)
	}
}

// SetVersion sets what cuDriverGetVersion answers (1000*major+10*minor).
func (l *Lib) SetVersion(v int) { l.write("version", v) }

// SetInitResult sets cuInit's result.
func (l *Lib) SetInitResult(r int) { l.write("init", r) }

// SetState makes pid a CUDA process in state s (Running, ...).
func (l *Lib) SetState(pid, s int) { l.write(fmt.Sprintf("state.%d", pid), s) }

// State is pid's state, and false when it has no CUDA context.
func (l *Lib) State(pid int) (int, bool) {
	l.t.Helper()
	b, err := os.ReadFile(filepath.Join(l.Dir, fmt.Sprintf("state.%d", pid)))
	if os.IsNotExist(err) {
		return 0, false
	}
	if err != nil {
		l.t.Fatal(err)
	}
	s, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		l.t.Fatal(err)
	}
	return s, true
}

// Fail makes op (state, lock, checkpoint, restore, unlock) for pid return
// result without doing anything; Crash and Hang abort or hang the caller.
func (l *Lib) Fail(op string, pid, result int) { l.write(fmt.Sprintf("fail.%s.%d", op, pid), result) }

// Clear undoes Fail.
func (l *Lib) Clear(op string, pid int) {
	l.t.Helper()
	if err := os.Remove(filepath.Join(l.Dir, fmt.Sprintf("fail.%s.%d", op, pid))); err != nil && !os.IsNotExist(err) {
		l.t.Fatal(err)
	}
}

// Delay makes op for pid sleep ms milliseconds first.
func (l *Lib) Delay(op string, pid, ms int) { l.write(fmt.Sprintf("delay.%s.%d", op, pid), ms) }

// Calls are the calls made so far, oldest first: "lock 42 5000" (op, pid,
// and the lock timeout in ms, or whether an args struct was passed).
func (l *Lib) Calls() []string {
	l.t.Helper()
	b, err := os.ReadFile(filepath.Join(l.Dir, "calls"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		l.t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}
