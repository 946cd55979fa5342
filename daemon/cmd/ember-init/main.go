// Command ember-init is the init that emberd puts at PID 1 of every worker
// container (bind-mounted read-only at /dev/init), in front of the image's
// entrypoint, as `docker run --init` puts tini there.
//
// Usage:
//
//	ember-init [--] ENTRYPOINT [ARG...]
//
// It starts ENTRYPOINT in a process group of its own, forwards SIGTERM,
// SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH to that whole group
// (so a shell-script entrypoint that does not pass signals on still lets its
// worker see the stop), reaps every process that ends up as its child (an
// orphan in the container is reparented to PID 1, and without a reaper
// stays a zombie), and exits with ENTRYPOINT's exit status, or 128+N when a
// signal N killed it.
//
// When ENTRYPOINT exits, what happens to the rest of its process group
// depends on why:
//   - After a stop signal (SIGTERM, SIGINT or SIGQUIT) was passed on, the
//     whole group was told to stop, and a shell entrypoint typically dies of
//     it at once while its worker is still draining its jobs. ember-init
//     then waits until every process of the group has exited (the stop's
//     time limit is emberd's --stop-grace, after which the container is
//     killed), and exits with ENTRYPOINT's status.
//   - Otherwise ENTRYPOINT ended on its own: ember-init sends SIGKILL to
//     what is left of its group, which has lost the process that managed
//     it, and exits at once, as tini does by default.
//
// As PID 1 of the container's PID namespace its exit makes the kernel kill
// whatever else remains. Outside a PID namespace of its own it makes itself
// a child subreaper, so orphans of ENTRYPOINT are still reparented to it
// and reaped.
//
// When ENTRYPOINT cannot be started it exits 127 (not found) or 126 (found
// but not executable), as shells do.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"
)

// forwarded are the signals passed on to the entrypoint's process group.
var forwarded = []os.Signal{
	syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH,
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: ember-init [--] ENTRYPOINT [ARG...]")
		return 2
	}
	if os.Getpid() != 1 {
		// PR_SET_CHILD_SUBREAPER: orphans below us come to us, not to
		// the real PID 1, so that they are reaped and waited for here.
		if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, 36, 1, 0); errno != 0 {
			fmt.Fprintf(os.Stderr, "ember-init: become a subreaper: %v\n", errno)
		}
	}

	// Subscribe before the child exists, so that no SIGCHLD or stop
	// signal arriving between the fork and the loop below is lost.
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, append([]os.Signal{syscall.SIGCHLD}, forwarded...)...)

	pid, err := start(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ember-init: %v\n", err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, syscall.ENOENT) {
			return 127
		}
		return 126
	}

	// A stop can leave the group with processes that outlive the
	// entrypoint; the wait for them is driven by SIGCHLD, and a tick
	// re-reaps and re-checks in case a SIGCHLD was coalesced with one
	// already handled (the kernel keeps one pending SIGCHLD, not one per
	// child).
	tick := time.NewTicker(recheck)
	defer tick.Stop()
	stopping, exited, status := false, false, 0
	for {
		select {
		case sig := <-sigs:
			if sig != syscall.SIGCHLD {
				s := sig.(syscall.Signal)
				forward(pid, s)
				stopping = stopping || s == syscall.SIGTERM || s == syscall.SIGINT || s == syscall.SIGQUIT
			}
		case <-tick.C:
		}
		if st, done := reap(pid); done {
			exited, status = true, st
		}
		if !exited {
			continue
		}
		if !stopping {
			// ESRCH (nothing left) is the usual answer.
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			return status
		}
		if !groupAlive(pid) {
			return status
		}
		// The group's last processes are reparented to this process
		// as they lose their parents, and their exits arrive here as
		// SIGCHLD.
	}
}

// recheck is how often the loop reaps and looks at the group without a
// signal; a safety net, so it can be slow.
const recheck = 250 * time.Millisecond

// groupAlive reports whether process group pgid has a process left that
// has not exited (after reap, which leaves no zombie child behind).
func groupAlive(pgid int) bool {
	return syscall.Kill(-pgid, 0) != syscall.ESRCH
}

// start runs args in a new process group whose id is the child's pid. The
// child gets the signal dispositions of a fresh process: signal.Notify's
// handlers are reset by exec.
func start(args []string) (int, error) {
	path, err := exec.LookPath(args[0])
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", args[0], err)
	}
	pid, err := syscall.ForkExec(path, args, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", args[0], err)
	}
	return pid, nil
}

// forward sends sig to the entrypoint's process group; if the group is gone
// (the entrypoint moved itself to another group) to the entrypoint alone.
func forward(pid int, sig syscall.Signal) {
	if err := syscall.Kill(-pid, sig); err == syscall.ESRCH {
		_ = syscall.Kill(pid, sig)
	}
}

// reap collects every child that has exited, not only main: one SIGCHLD
// may stand for several exits, and a zombie left unreaped would keep the
// entrypoint's process group looking alive (kill(-pgid, 0) succeeds on a
// zombie). When main was among them it returns main's exit status as a
// shell reports it, and true.
func reap(main int) (status int, done bool) {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			// ECHILD: no children left; 0: the rest still run.
			return status, done
		}
		if pid != main {
			continue
		}
		switch {
		case ws.Exited():
			status, done = ws.ExitStatus(), true
		case ws.Signaled():
			status, done = 128+int(ws.Signal()), true
		}
	}
}
