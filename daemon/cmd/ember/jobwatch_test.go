package main

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRunInterrupted checks what Ctrl-C (the context main cancels on
// SIGINT) prints while `ember job run` waits: the job's id and state, and
// the real commands that follow and cancel it; the exit status is 1.
func TestRunInterrupted(t *testing.T) {
	fd := newFakeDaemon(t, seedEndpoints...)
	fd.setScript(jobQueued) // never leaves the queue
	var stdout, stderr bytes.Buffer
	env := map[string]string{"EMBER_ADDR": fd.addr, "EMBER_API_KEY": testKey}
	a := newApp(strings.NewReader(""), &stdout, &stderr, func(k string) string { return env[k] })
	a.pollInterval = time.Millisecond
	a.defaultCAFile = filepath.Join(t.TempDir(), "no-ca.pem")
	a.now = func() time.Time { return testClock }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Interrupt once the job has been polled a few times, as a person
	// would while it waits in the queue.
	go func() {
		for ctx.Err() == nil {
			if n := len(fd.requests()); n >= 5 {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	code := a.execute(ctx, []string{"job", "run", "echo", `{"prompt":"hi"}`})
	want := "job job-1: IN_QUEUE, waiting 0s\n" +
		"ember: interrupted; job job-1 goes on (IN_QUEUE, waiting 0s)\n" +
		"Follow it with: ember job status echo job-1\n" +
		"Cancel it with: ember job cancel echo job-1\n"
	if code != 1 || stderr.String() != want || stdout.Len() != 0 {
		t.Errorf("exit %d, stdout %q, stderr:\n%s\nwant exit 1, no stdout, stderr:\n%s", code, stdout.String(), stderr.String(), want)
	}
	// The suggested commands are real ones.
	for _, args := range [][]string{{"job", "status", "echo", "job-1"}, {"job", "cancel", "echo", "job-1"}} {
		if r := runEmber(t, fd.addr, invocation{args: args}); r.code != 0 {
			t.Errorf("ember %s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.stderr)
		}
	}
}

// steppingClock advances by step on every reading, so that each redraw of
// the live line shows a later time.
type steppingClock struct {
	mu   sync.Mutex
	t    time.Time
	step time.Duration
}

func (c *steppingClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(c.step)
	return c.t
}

// TestRunLiveLine checks the terminal form of the job state: one line,
// redrawn in place with the time waited, and cleared before the output.
func TestRunLiveLine(t *testing.T) {
	fd := newFakeDaemon(t, seedEndpoints...)
	fd.setScript(jobQueued, jobQueued, `{"status":"IN_PROGRESS","workerId":"w-7f3a"}`, jobCompleted)
	var stdout, stderr bytes.Buffer
	env := map[string]string{"EMBER_ADDR": fd.addr, "EMBER_API_KEY": testKey}
	a := newApp(strings.NewReader(""), &stdout, &stderr, func(k string) string { return env[k] })
	a.pollInterval = time.Millisecond
	a.defaultCAFile = filepath.Join(t.TempDir(), "no-ca.pem")
	a.progress = true // as on a terminal
	clock := &steppingClock{t: testClock, step: time.Second}
	a.now = clock.now
	if code := a.execute(context.Background(), []string{"run", "echo", `"hi"`}); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	got := stderr.String()
	for _, want := range []string{
		"\r\033[Kjob job-1: IN_QUEUE, waiting 1s",
		"\r\033[Kjob job-1: IN_QUEUE, waiting 2s",
		"\r\033[Kjob job-1: IN_PROGRESS on worker w-7f3a, waited 3s, running 1s",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("stderr %q lacks %q", got, want)
		}
	}
	if strings.Contains(got, "\n") || !strings.HasSuffix(got, "\r\033[K") {
		t.Errorf("stderr %q: want one line redrawn in place and cleared at the end", got)
	}
	if !strings.Contains(stdout.String(), `"text": "hello"`) {
		t.Errorf("stdout %q, want the output", stdout.String())
	}
}

// TestStatusNoDaemonNoKey: with no daemon and no key file, ember says the
// daemon is not running (the key-less /healthz probe comes first), not
// that the key cannot be read.
func TestStatusNoDaemonNoKey(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // a closed port: connections are refused
	missing := filepath.Join(t.TempDir(), "api.key")
	for _, args := range [][]string{{"status"}, {"endpoint", "list"}, {"job", "run", "echo", "{}"}} {
		r := runEmber(t, addr, invocation{args: append(args, "--api-key-file", missing), env: map[string]string{"EMBER_ADDR": addr}})
		want := "ember: emberd is not running at http://" + addr + " (connection refused): start it with"
		if r.code != 1 || !strings.HasPrefix(r.stderr, want) {
			t.Errorf("ember %s: exit %d, stderr %q; want exit 1, stderr starting %q", strings.Join(args, " "), r.code, r.stderr, want)
		}
	}
	// With the daemon up, the missing key is the news.
	fd := newFakeDaemon(t, seedEndpoints...)
	r := runEmber(t, fd.addr, invocation{args: []string{"status", "--api-key-file", missing}, env: map[string]string{"EMBER_ADDR": fd.addr}})
	if want := "ember: cannot read API key file " + missing + ": no such file or directory"; r.code != 1 || !strings.HasPrefix(r.stderr, want) {
		t.Errorf("status, daemon up, no key: exit %d, stderr %q; want %q", r.code, r.stderr, want)
	}
}
