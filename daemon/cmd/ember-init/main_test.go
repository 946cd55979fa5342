package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// initBin is ember-init built for these tests: it is tested as the real
// process it is, with real signals and real children.
var initBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ember-init-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	initBin = filepath.Join(dir, "ember-init")
	build := exec.Command("go", "build", "-o", initBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build ember-init: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startInit starts ember-init with args in a process group of its own (as
// PID 1 of a container it has nothing above it to share one with).
func startInit(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(initBin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killTree(cmd.Process.Pid) })
	return cmd, &out
}

// waitExit waits (bounded) for cmd and returns its exit code.
func waitExit(t *testing.T, cmd *exec.Cmd, out *bytes.Buffer, within time.Duration) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("wait: %v", err)
		}
		return cmd.ProcessState.ExitCode()
	case <-time.After(within):
		// The entrypoint's group too: a live grandchild holds the output
		// pipe open, and Wait would wait for it.
		killTree(cmd.Process.Pid)
		<-done
		t.Fatalf("ember-init did not exit within %v; output:\n%s", within, out)
		return 0
	}
}

// waitFile waits (bounded) until path exists and returns its content.
func waitFile(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 && bytes.HasSuffix(b, []byte("\n")) {
			return string(b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s did not appear", path)
	return ""
}

func TestExitStatus(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"zero", []string{"sh", "-c", "exit 0"}, 0},
		{"code", []string{"sh", "-c", "exit 42"}, 42},
		{"after --", []string{"--", "sh", "-c", "exit 3"}, 3},
		{"killed by SIGKILL", []string{"sh", "-c", "kill -KILL $$"}, 128 + 9},
		{"killed by SIGTERM", []string{"sh", "-c", "kill -TERM $$"}, 128 + 15},
		{"not found", []string{"/no/such/entrypoint"}, 127},
		{"not on PATH", []string{"no-such-entrypoint-anywhere"}, 127},
		{"not executable", []string{"/etc/hostname"}, 126},
		{"no entrypoint", nil, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd, out := startInit(t, tc.args...)
			if got := waitExit(t, cmd, out, 30*time.Second); got != tc.want {
				t.Errorf("exit status %d, want %d; output:\n%s", got, tc.want, out)
			}
		})
	}
}

// TestForwardsToGroup: the entrypoint is a shell that runs the worker as a
// child and does not pass signals on (a trap runs only once its foreground
// child has returned, the way a /start.sh behaves). A SIGTERM to the init
// reaches the worker, because it goes to the whole process group; the
// shell's own exit status comes out of the init.
func TestForwardsToGroup(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			ready := filepath.Join(dir, "ready")
			// The worker: a shell that reports which signal reached it.
			worker := fmt.Sprintf(`trap 'echo got-%d; exit 0' %d; echo $$ > %s; while :; do sleep 0.05; done`, sig, sig, ready)
			script := fmt.Sprintf(`trap 'echo shell-got-%d' %d; sh -c %q; echo worker-exited; exit 7`, sig, sig, worker)
			cmd, out := startInit(t, "sh", "-c", script)
			waitFile(t, ready)
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			// The bound only keeps a broken init from hanging the test:
			// without forwarding the worker loops forever.
			if got := waitExit(t, cmd, out, 20*time.Second); got != 7 {
				t.Errorf("exit status %d, want 7 (the shell's); output:\n%s", got, out)
			}
			for _, want := range []string{fmt.Sprintf("got-%d", sig), "worker-exited"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

// TestKillsLeftoversOfGroup: when the entrypoint exits, what it left
// running in its group is killed and the init exits with its status.
func TestKillsLeftoversOfGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	cmd, out := startInit(t, "sh", "-c", fmt.Sprintf(`sleep 1000 & echo $! > %s; exit 4`, pidFile))
	if got := waitExit(t, cmd, out, 20*time.Second); got != 4 {
		t.Fatalf("exit status %d, want 4; output:\n%s", got, out)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(waitFile(t, pidFile)))
	if err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
}

// TestReapsZombies: the entrypoint spawns short-lived grandchildren and
// orphans them (each in a subshell that exits at once), while it goes on
// running. The orphans are reparented to the init (PID 1 in a container, a
// subreaper here); once they have exited none of them may stay a zombie.
func TestReapsZombies(t *testing.T) {
	dir := t.TempDir()
	pids, ready := filepath.Join(dir, "pids"), filepath.Join(dir, "ready")
	const n = 20
	script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do (sleep 0.01 & echo $! >> %s); i=$((i+1)); done; echo done > %s; sleep 1000`, n, pids, ready)
	cmd, out := startInit(t, "sh", "-c", script)
	waitFile(t, ready)
	lines := strings.Fields(waitFile(t, pids))
	if len(lines) != n {
		t.Fatalf("%d grandchildren, want %d", len(lines), n)
	}
	for _, l := range lines {
		pid, err := strconv.Atoi(l)
		if err != nil {
			t.Fatal(err)
		}
		// An unreaped orphan stays in /proc as a zombie child of the
		// init; waitGone fails on it.
		waitGone(t, pid)
	}
	if z := zombieChildren(t, cmd.Process.Pid); len(z) > 0 {
		t.Errorf("zombie children of the init: %v", z)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := waitExit(t, cmd, out, 20*time.Second); got != 128+15 {
		t.Errorf("exit status %d, want 143; output:\n%s", got, out)
	}
}

// waitGone waits (bounded) until pid is no longer in /proc, zombie or not.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		state, ok := procState(pid)
		if !ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d still there, state %s", pid, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// procState is pid's state letter and parent from /proc/PID/stat.
func procState(pid int) (string, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", false
	}
	// pid (comm) state ppid ...: comm may hold spaces, so cut at the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return "", false
	}
	return f[0] + " ppid " + f[1], true
}

// zombieChildren lists the zombies whose parent is ppid.
func zombieChildren(t *testing.T, ppid int) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var z []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if s, ok := procState(pid); ok && s == "Z ppid "+strconv.Itoa(ppid) {
			z = append(z, pid)
		}
	}
	return z
}

// TestWaitsForGroupAfterStop: a shell entrypoint dies of the SIGTERM at
// once, while the worker it started drains for a while. The init waits for
// the worker before it exits (as PID 1 its exit would kill the worker
// mid-drain), and exits with the shell's status.
func TestWaitsForGroupAfterStop(t *testing.T) {
	dir := t.TempDir()
	ready, drained := filepath.Join(dir, "ready"), filepath.Join(dir, "drained")
	worker := fmt.Sprintf(`trap 'sleep 0.3; echo drained > %s; exit 0' TERM; echo $$ > %s; while :; do sleep 0.05; done`, drained, ready)
	cmd, out := startInit(t, "sh", "-c", fmt.Sprintf(`sh -c %q & wait`, worker))
	waitFile(t, ready)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := waitExit(t, cmd, out, 20*time.Second); got != 128+15 {
		t.Errorf("exit status %d, want 143 (the shell's death by SIGTERM); output:\n%s", got, out)
	}
	if _, err := os.Stat(drained); err != nil {
		t.Errorf("the init exited before the worker had drained: %v", err)
	}
}

// killTree kills the process groups of init's children (the entrypoint's
// group), then init: what a failed test leaves must not outlive it.
func killTree(init int) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if s, ok := procState(pid); ok && strings.HasSuffix(s, " ppid "+strconv.Itoa(init)) {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
	_ = syscall.Kill(init, syscall.SIGKILL)
}
