package runc

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// reapInterval is how often the reaper looks for orphaned zombies.
const reapInterval = 2 * time.Second

// reapOrphans runs for the Runtime's life and reaps zombie children that no
// one else will wait for.
//
// As a child subreaper (see New), emberd inherits orphaned descendants; once
// they exit they stay zombies until emberd waits for them. It must not wait
// for a child someone else in emberd waits for (os/exec, libcontainer, an
// adopted worker): that would steal its exit status. Those all hold a pidfd
// for the child (Go >= 1.23 keeps one for every process it starts or finds;
// adopted workers open one), orphans never do. So a zombie child for which
// this process holds no pidfd, and that is still there one look later
// (owners reap within milliseconds), is an orphan, and is reaped with
// wait4(pid). Without pidfd support (kernels < 5.3) nothing is reaped.
func (r *Runtime) reapOrphans() {
	defer close(r.reaperDone)
	if !pidfdSupported() {
		r.log.Info("no pidfd support: orphaned zombies are not reaped")
		<-r.stopReaper
		return
	}
	t := time.NewTicker(reapInterval)
	defer t.Stop()
	var suspects map[int]bool
	for {
		select {
		case <-r.stopReaper:
			return
		case <-t.C:
		}
		suspects = reapOnce(suspects, func(pid int) {
			r.log.Debug("reaped an orphaned process", "pid", pid)
		})
	}
}

// reapOnce reaps the zombies that were suspects on the previous look and
// still are, and returns the new suspects.
func reapOnce(prev map[int]bool, reaped func(pid int)) map[int]bool {
	zombies := zombieChildren()
	if len(zombies) == 0 {
		return nil
	}
	held := pidfdTargets()
	next := make(map[int]bool)
	for _, pid := range zombies {
		if held[pid] {
			continue
		}
		if !prev[pid] {
			next[pid] = true
			continue
		}
		var ws unix.WaitStatus
		if got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err == nil && got == pid {
			reaped(pid)
		}
	}
	return next
}

// zombieChildren lists this process's children that are zombies.
func zombieChildren() []int {
	var kids []int
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	if len(tasks) == 0 {
		kids = childrenByScan()
	}
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				kids = append(kids, pid)
			}
		}
	}
	var zombies []int
	for _, pid := range kids {
		if state, _, ok := procStat(pid); ok && state == 'Z' {
			zombies = append(zombies, pid)
		}
	}
	return zombies
}

// childrenByScan finds children through every /proc/PID/stat, for kernels
// without /proc/PID/task/TID/children.
func childrenByScan() []int {
	self := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ppid, ok := procStat(pid); ok && ppid == self {
			kids = append(kids, pid)
		}
	}
	return kids
}

// procStat reads a process's state and parent pid from /proc/PID/stat.
func procStat(pid int) (state byte, ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// "pid (comm) S ppid ...": comm may hold spaces and parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 || len(f[0]) != 1 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	return f[0][0], ppid, err == nil
}

// pidfdTargets are the pids this process holds pidfds for.
func pidfdTargets() map[int]bool {
	held := make(map[int]bool)
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		link, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || !strings.Contains(link, "pidfd") {
			continue
		}
		b, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "Pid:"); ok {
				if pid, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && pid > 0 {
					held[pid] = true
				}
			}
		}
	}
	return held
}

func pidfdSupported() bool {
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}
