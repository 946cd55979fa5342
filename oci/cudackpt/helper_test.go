package cudackpt_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emberhq/ember/oci/cudackpt"
	"github.com/emberhq/ember/oci/cudackpt/libcuda"
	"github.com/emberhq/ember/oci/cudackpt/libcuda/fakecuda"
)

// TestMain makes the test binary the helper process when Helper starts it
// (EMBER_CKPT_TEST_HELPER=1): the same Serve loop as ember-ckpt, on the
// fake libcuda named by FAKECUDA_LIB.
func TestMain(m *testing.M) {
	if os.Getenv("EMBER_CKPT_TEST_HELPER") == "1" {
		if err := cudackpt.Serve(os.Stdin, os.Stdout, libcuda.New(os.Getenv("FAKECUDA_LIB"), nil)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// syncBuffer is a log sink for the helper's goroutines and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) count(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), sub)
}

type helperFixture struct {
	f    *fakecuda.Lib
	h    *cudackpt.Helper
	logs *syncBuffer
}

func newHelper(t *testing.T, f *fakecuda.Lib, cfg cudackpt.HelperConfig) *helperFixture {
	t.Helper()
	logs := &syncBuffer{}
	cfg.Path = os.Args[0]
	cfg.Env = append(os.Environ(), "EMBER_CKPT_TEST_HELPER=1", "FAKECUDA_LIB="+f.Path)
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	h := cudackpt.NewHelper(cfg)
	t.Cleanup(func() { _ = h.Close(5 * time.Second) })
	return &helperFixture{f: f, h: h, logs: logs}
}

const started = "CUDA checkpoint helper started"

func TestHelperSequence(t *testing.T) {
	x := newHelper(t, fakecuda.New(t), cudackpt.HelperConfig{})
	ctx := context.Background()
	if err := x.h.Supported(); err != nil {
		t.Fatalf("Supported: %v", err)
	}
	const pid = 5150
	x.f.SetState(pid, fakecuda.Running)
	steps := []struct {
		name string
		do   func() error
		want cudackpt.State
	}{
		{"lock", func() error { return x.h.Lock(ctx, pid, 3*time.Second) }, cudackpt.Locked},
		{"checkpoint", func() error { return x.h.Checkpoint(ctx, pid) }, cudackpt.Checkpointed},
		{"restore", func() error { return x.h.Restore(ctx, pid) }, cudackpt.Locked},
		{"unlock", func() error { return x.h.Unlock(ctx, pid) }, cudackpt.Running},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got, err := x.h.State(ctx, pid); got != s.want || err != nil {
			t.Fatalf("after %s: State = %s, %v; want %s", s.name, got, err, s.want)
		}
	}
	if calls := x.f.Calls(); calls[0] != "lock 5150 3000" {
		t.Errorf("first driver call %q, want the lock with its timeout", calls[0])
	}

	// Errors come back typed, naming the call, the pid and the result.
	err := x.h.Unlock(ctx, pid)
	var ce *cudackpt.Error
	if !errors.As(err, &ce) || *ce != (cudackpt.Error{Call: "cuCheckpointProcessUnlock", PID: pid, Result: cudackpt.ResultIllegalState}) {
		t.Fatalf("unlock of a running process through the helper: %v", err)
	}
	if err := x.h.Lock(ctx, 1, time.Second); !errors.Is(err, cudackpt.ErrNotCUDA) {
		t.Fatalf("lock of a process without CUDA: %v", err)
	}
	if s, err := x.h.State(ctx, 1); s != cudackpt.NotCUDA || err != nil {
		t.Fatalf("State of a process without CUDA = %s, %v", s, err)
	}
	if n := x.logs.count(started); n != 1 {
		t.Errorf("helper started %d times, want 1", n)
	}
}

func TestHelperUnsupported(t *testing.T) {
	x := newHelper(t, fakecuda.NewOld(t), cudackpt.HelperConfig{})
	err := x.h.Supported()
	if !errors.Is(err, cudackpt.ErrUnsupported) || !strings.Contains(err.Error(), "CUDA 12.4") || !strings.Contains(err.Error(), "570") {
		t.Fatalf("Supported on an old driver = %v", err)
	}
	if err := x.h.Lock(context.Background(), 1, time.Second); !errors.Is(err, cudackpt.ErrUnsupported) {
		t.Fatalf("Lock on an old driver = %v", err)
	}

	h := cudackpt.NewHelper(cudackpt.HelperConfig{Path: t.TempDir() + "/ember-ckpt"})
	defer h.Close(time.Second)
	if err := h.Supported(); !errors.Is(err, cudackpt.ErrUnsupported) || !strings.Contains(err.Error(), "ember-ckpt") {
		t.Fatalf("Supported without the helper binary = %v", err)
	}
}

// TestHelperCrash: a driver call that kills the helper fails that call,
// and the next call runs in a new helper.
func TestHelperCrash(t *testing.T) {
	x := newHelper(t, fakecuda.New(t), cudackpt.HelperConfig{})
	ctx := context.Background()
	x.f.SetState(7, fakecuda.Running)
	x.f.Fail("lock", 7, fakecuda.Crash)
	err := x.h.Lock(ctx, 7, time.Second)
	if err == nil || !strings.Contains(err.Error(), "exited before answering") || !strings.Contains(err.Error(), "lock(pid 7)") {
		t.Fatalf("Lock crashing the helper = %v", err)
	}
	x.f.Clear("lock", 7)
	if err := x.h.Lock(ctx, 7, time.Second); err != nil {
		t.Fatalf("Lock after the crash: %v", err)
	}
	if n := x.logs.count(started); n != 2 {
		t.Errorf("helper started %d times, want 2", n)
	}
}

// TestHelperHang: a call unanswered past its bound kills the helper; the
// next call starts another.
func TestHelperHang(t *testing.T) {
	x := newHelper(t, fakecuda.New(t), cudackpt.HelperConfig{CallTimeout: 300 * time.Millisecond})
	ctx := context.Background()
	x.f.SetState(8, fakecuda.Locked)
	x.f.Fail("unlock", 8, fakecuda.Hang)
	err := x.h.Unlock(ctx, 8)
	if err == nil || !strings.Contains(err.Error(), "killed it") {
		t.Fatalf("Unlock hanging in the driver = %v", err)
	}
	x.f.Clear("unlock", 8)
	if err := x.h.Unlock(ctx, 8); err != nil {
		t.Fatalf("Unlock after the hang: %v", err)
	}
	if n := x.logs.count(started); n != 2 {
		t.Errorf("helper started %d times, want 2", n)
	}
	if n := x.logs.count("helper hung"); n != 1 {
		t.Errorf("%d hang reports in the log, want 1", n)
	}
}

// TestHelperContext: a caller that stops waiting does not stop the call
// (a driver call cannot be interrupted) nor the helper.
func TestHelperContext(t *testing.T) {
	x := newHelper(t, fakecuda.New(t), cudackpt.HelperConfig{})
	x.f.SetState(9, fakecuda.Locked)
	x.f.Delay("checkpoint", 9, 400)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := x.h.Checkpoint(ctx, 9); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Checkpoint past its context = %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := x.h.State(context.Background(), 9)
		if err != nil {
			t.Fatal(err)
		}
		if s == cudackpt.Checkpointed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the checkpoint never finished: %s", s)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := x.logs.count(started); n != 1 {
		t.Errorf("helper started %d times, want 1", n)
	}
}

// TestHelperConcurrent: answers reach their callers when calls for many
// processes overlap, slow ones and quick ones.
func TestHelperConcurrent(t *testing.T) {
	x := newHelper(t, fakecuda.New(t), cudackpt.HelperConfig{})
	states := []int{fakecuda.Running, fakecuda.Locked, fakecuda.Checkpointed, fakecuda.Failed}
	want := []cudackpt.State{cudackpt.Running, cudackpt.Locked, cudackpt.Checkpointed, cudackpt.Failed}
	for pid := 1000; pid < 1016; pid++ {
		x.f.SetState(pid, states[pid%4])
		x.f.Delay("state", pid, (16-pid%16)*10)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for pid := 1000; pid < 1016; pid++ {
		wg.Go(func() {
			s, err := x.h.State(context.Background(), pid)
			if err != nil || s != want[pid%4] {
				errs <- fmt.Errorf("State(%d) = %s, %v; want %s", pid, s, err, want[pid%4])
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestHelperClose(t *testing.T) {
	x := newHelper(t, fakecuda.New(t), cudackpt.HelperConfig{})
	if err := x.h.Supported(); err != nil {
		t.Fatal(err)
	}
	if err := x.h.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if n := x.logs.count("CUDA checkpoint helper exited"); n != 1 {
		t.Errorf("helper exit logged %d times, want 1", n)
	}
	if _, err := x.h.State(context.Background(), 1); err == nil {
		t.Fatal("a call after Close succeeded")
	}
}

// TestHelperStopDuringCheckpoint: when emberd lets go of its helper in the
// middle of a checkpoint (Close, or emberd's exit closing the helper's
// stdin), the checkpoint still completes; the next emberd's helper finds
// the process checkpointed through the state query, and revives it.
func TestHelperStopDuringCheckpoint(t *testing.T) {
	f := fakecuda.New(t)
	x := newHelper(t, f, cudackpt.HelperConfig{})
	ctx := context.Background()
	const pid = 31337
	f.SetState(pid, fakecuda.Running)
	if err := x.h.Lock(ctx, pid, time.Second); err != nil {
		t.Fatal(err)
	}
	f.Delay("checkpoint", pid, 300)
	done := make(chan error, 1)
	go func() { done <- x.h.Checkpoint(ctx, pid) }()
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(f.Calls(), "checkpoint 31337 0") {
		if time.Now().After(deadline) {
			t.Fatal("the checkpoint never reached the driver")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := x.h.Close(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("checkpoint under way at Close: %v", err)
	}
	if s, _ := f.State(pid); s != fakecuda.Checkpointed {
		t.Fatalf("after Close the driver has the process in state %d, want checkpointed", s)
	}

	y := newHelper(t, f, cudackpt.HelperConfig{})
	if s, err := y.h.State(ctx, pid); s != cudackpt.Checkpointed || err != nil {
		t.Fatalf("a new helper sees %s, %v; want checkpointed", s, err)
	}
	if err := y.h.Restore(ctx, pid); err != nil {
		t.Fatal(err)
	}
	if err := y.h.Unlock(ctx, pid); err != nil {
		t.Fatal(err)
	}
	if s, _ := y.h.State(ctx, pid); s != cudackpt.Running {
		t.Fatalf("revived process is %s", s)
	}
}
