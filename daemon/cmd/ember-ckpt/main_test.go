package main

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emberhq/ember/oci/cudackpt/libcuda/fakecuda"
)

// TestMain runs main when the test binary is started as the helper.
func TestMain(m *testing.M) {
	if os.Getenv("EMBER_CKPT_RUN_MAIN") == "1" {
		main()
	}
	os.Exit(m.Run())
}

// TestProtocol runs the command on a fake driver and speaks its protocol.
func TestProtocol(t *testing.T) {
	f := fakecuda.New(t)
	f.SetState(321, fakecuda.Running)
	cmd := exec.Command(os.Args[0], "--libcuda", f.Path)
	cmd.Env = append(os.Environ(), "EMBER_CKPT_RUN_MAIN=1")
	cmd.Stdin = strings.NewReader("1 supported 0\n2 state 321\n3 lock 321 250\n4 checkpoint 321\n5 state 99\n6 frob 1\n")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ember-ckpt: %v\n%s", err, stderr.String())
	}
	// Requests run concurrently: answers come in any order. 2 and 3 race
	// (state may see running or locked), so only the others are exact.
	got := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		id, a, _ := strings.Cut(sc.Text(), " ")
		got[id] = a
	}
	for id, want := range map[string]string{"1": "ok", "3": "ok", "5": "ok not-cuda", "6": `error unknown op "frob"`} {
		if got[id] != want {
			t.Errorf("answer %s = %q, want %q (all: %q)", id, got[id], want, out)
		}
	}
	if a := got["4"]; a != "ok" && a != "cuda cuCheckpointProcessCheckpoint 321 401" {
		t.Errorf("answer 4 = %q", a)
	}
	if len(got) != 6 {
		t.Errorf("%d answers, want 6: %q", len(got), out)
	}
}

func TestBadUsage(t *testing.T) {
	if rc := run([]string{"extra"}); rc != 2 {
		t.Errorf("run(extra) = %d, want 2", rc)
	}
}

// TestIgnoresStopSignals: a SIGTERM (systemd stopping emberd's unit
// signals every process in it) does not cut a checkpoint short; the
// helper stops when its stdin ends.
func TestIgnoresStopSignals(t *testing.T) {
	f := fakecuda.New(t)
	f.SetState(55, fakecuda.Locked)
	f.Delay("checkpoint", 55, 300)
	cmd := exec.Command(os.Args[0], "--libcuda", f.Path)
	cmd.Env = append(os.Environ(), "EMBER_CKPT_RUN_MAIN=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(stdin, "1 checkpoint 55\n"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(f.Calls(), "checkpoint 55 0") {
		if time.Now().After(deadline) {
			t.Fatal("the checkpoint never reached the driver")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "1 ok\n" {
		t.Fatalf("answer after SIGTERM: %q, %v", line, err)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after stdin closed: %v", err)
	}
	if s, _ := f.State(55); s != fakecuda.Checkpointed {
		t.Fatalf("state %d, want checkpointed", s)
	}
}
