package runc

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestReapOrphans(t *testing.T) {
	if !pidfdSupported() {
		t.Skip("no pidfd support")
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	// An orphan: sh starts sleep in the background and exits; sleep is
	// re-parented to this process and, once done, is a zombie nobody
	// waits for.
	out, err := exec.Command("/bin/sh", "-c", "sleep 0.1 & echo $!").Output()
	if err != nil {
		t.Skipf("no /bin/sh: %v", err)
	}
	orphan, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	// A child of our own, not yet waited for: it must be left alone.
	own := exec.Command("/bin/true")
	if err := own.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "both to be zombies", func() bool {
		s1, _, ok1 := procStat(orphan)
		s2, _, ok2 := procStat(own.Process.Pid)
		return ok1 && ok2 && s1 == 'Z' && s2 == 'Z'
	})
	var reaped []int
	suspects := reapOnce(nil, func(pid int) { reaped = append(reaped, pid) })
	if !suspects[orphan] || suspects[own.Process.Pid] || len(reaped) != 0 {
		t.Fatalf("first look: suspects %v reaped %v (orphan %d, own %d)", suspects, reaped, orphan, own.Process.Pid)
	}
	reapOnce(suspects, func(pid int) { reaped = append(reaped, pid) })
	if len(reaped) != 1 || reaped[0] != orphan {
		t.Fatalf("reaped %v, want [%d]", reaped, orphan)
	}
	if _, _, ok := procStat(orphan); ok {
		t.Error("orphan still in /proc")
	}
	if err := own.Wait(); err != nil {
		t.Errorf("own child's status was stolen: %v", err)
	}
}
