package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the tests run the real worker binary: with EMBER_EXAMPLE_WORKER_MAIN=1 the
// test binary is the worker (main, os.Exit and all) instead of a test runner.
func TestMain(m *testing.M) {
	if os.Getenv("EMBER_EXAMPLE_WORKER_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// startBinary runs the worker as a separate process with exactly env.
func startBinary(t *testing.T, env map[string]string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// GORACE: a -race binary otherwise sleeps 1 s before exiting.
	cmd.Env = []string{"EMBER_EXAMPLE_WORKER_MAIN=1", "GORACE=atexit_sleep_ms=0"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if t.Failed() {
			t.Logf("worker stderr:\n%s", stderr.String())
		}
	})
	return cmd, stderr
}

// waitExit waits for the process and returns its exit code.
func waitExit(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		return cmd.ProcessState.ExitCode()
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatal("worker process did not exit within 5 s")
		return -1
	}
}

// TestBinaryExit runs the real process: configuration errors exit 2; the exit instruction
// ends the process with its code while holding the job, so no result is posted.
func TestBinaryExit(t *testing.T) {
	cases := []struct {
		name       string
		job        string
		env        map[string]string // applied over the fake daemon's env; "" deletes
		wantCode   int
		wantStderr string
	}{
		{"no take URL", "", map[string]string{"RUNPOD_WEBHOOK_GET_JOB": ""}, 2, "RUNPOD_WEBHOOK_GET_JOB is not set"},
		{"bad concurrency", "", map[string]string{"WORKER_CONCURRENCY": "x"}, 2, "WORKER_CONCURRENCY"},
		{"exit 3 at once", `{"id":"j1","input":{"exit":3}}`, nil, 3, "handler asked to exit"},
		{"exit 0 after a sleep", `{"id":"j1","input":{"exit":0,"sleep_ms":50}}`, nil, 0, "handler asked to exit"},
		{"exit 137", `{"id":"j1","input":{"exit":137}}`, nil, 137, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := newFakeDaemon(t)
			env := d.env()
			for k, v := range tc.env {
				if v == "" {
					delete(env, k)
				} else {
					env[k] = v
				}
			}
			if tc.job != "" {
				d.queue(jobAnswer(tc.job))
			}
			cmd, stderr := startBinary(t, env)
			if code := waitExit(t, cmd); code != tc.wantCode {
				t.Errorf("exit code %d, want %d", code, tc.wantCode)
			}
			if !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Errorf("stderr lacks %q", tc.wantStderr)
			}
			if n := len(d.of("done", "stream")); n != 0 {
				t.Errorf("%d result posts from a worker that exited", n)
			}
		})
	}
}

// TestBinarySIGTERM: the real process drains its job on SIGTERM, reports it, and exits 0.
func TestBinarySIGTERM(t *testing.T) {
	d := newFakeDaemon(t)
	env := d.env()
	env["RUNPOD_PING_INTERVAL"] = "20"
	d.queue(jobAnswer(`{"id":"j1","input":{"sleep_ms":300,"output":"finished"}}`))
	cmd, stderr := startBinary(t, env)
	d.waitFor("the job held in a ping", func() bool {
		for _, r := range d.of("ping") {
			if strings.Contains(r.URL, "job_id=j1") {
				return true
			}
		}
		return false
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, cmd); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	posts := d.jobPosts("j1")
	if len(posts) != 1 || !bytes.Equal(posts[0].Body, []byte(`{"output":"finished"}`)) {
		t.Errorf("drained job posts: %v", posts)
	}
	for _, want := range []string{"worker=w1", "job=j1", "endpoint=ep"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("log lacks field %s", want)
		}
	}
}
