package ckpttest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/emberhq/ember/oci/cudackpt"
)

func TestStateMachine(t *testing.T) {
	ctx := context.Background()
	f := New()
	f.SetProcess(7, 4<<30)
	if s, _ := f.State(ctx, 7); s != cudackpt.Running {
		t.Fatalf("state = %s, want running", s)
	}
	if err := f.Checkpoint(ctx, 7); err == nil {
		t.Fatal("checkpoint of a running process succeeded")
	}
	steps := []struct {
		do   func() error
		want cudackpt.State
		gpu  uint64
	}{
		{func() error { return f.Lock(ctx, 7, time.Second) }, cudackpt.Locked, 4 << 30},
		{func() error { return f.Checkpoint(ctx, 7) }, cudackpt.Checkpointed, 0},
		{func() error { return f.Restore(ctx, 7) }, cudackpt.Locked, 4 << 30},
		{func() error { return f.Unlock(ctx, 7) }, cudackpt.Running, 4 << 30},
	}
	for i, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		st, _ := f.State(ctx, 7)
		mem, _ := f.GPUMemory(ctx, 7)
		if st != s.want || mem != s.gpu {
			t.Fatalf("step %d: %s %d, want %s %d", i, st, mem, s.want, s.gpu)
		}
	}
	want := []string{"State", "Checkpoint", "Lock", "State", "GPUMemory", "Checkpoint", "State", "GPUMemory",
		"Restore", "State", "GPUMemory", "Unlock", "State", "GPUMemory"}
	if got := f.CallsFor(7); !slices.Equal(got, want) {
		t.Fatalf("calls = %v\nwant %v", got, want)
	}
	if c := f.Calls()[2]; c.Timeout != time.Second {
		t.Fatalf("lock timeout recorded as %v", c.Timeout)
	}
}

func TestUnknownPID(t *testing.T) {
	ctx := context.Background()
	f := New()
	if s, err := f.State(ctx, 9); s != cudackpt.NotCUDA || err != nil {
		t.Fatalf("State = %s, %v", s, err)
	}
	if err := f.Lock(ctx, 9, time.Second); err == nil {
		t.Fatal("lock of a non-CUDA pid succeeded")
	}
	f.SetProcess(9, 1)
	f.RemoveProcess(9)
	if s, _ := f.Peek(9); s != cudackpt.NotCUDA {
		t.Fatalf("removed pid is %s", s)
	}
}

func TestFail(t *testing.T) {
	ctx := context.Background()
	f := New()
	f.SetProcess(1, 10)
	f.SetProcess(2, 20)
	boom := errors.New("boom")
	f.Fail(OpCheckpoint, 2, boom)
	for _, pid := range []int{1, 2} {
		if err := f.Lock(ctx, pid, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Checkpoint(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := f.Checkpoint(ctx, 2); !errors.Is(err, boom) {
		t.Fatalf("checkpoint 2 = %v, want boom", err)
	}
	if s, m := f.Peek(2); s != cudackpt.Locked || m != 20 {
		t.Fatalf("failed checkpoint changed the state: %s %d", s, m)
	}
	f.Fail(OpCheckpoint, 2, nil)
	if err := f.Checkpoint(ctx, 2); err != nil {
		t.Fatal(err)
	}
	f.Fail(OpRestore, AnyPID, boom)
	if err := f.Restore(ctx, 1); !errors.Is(err, boom) {
		t.Fatalf("restore = %v, want boom", err)
	}
	unsup := errors.Join(cudackpt.ErrUnsupported, errors.New("driver 550"))
	f.Fail(OpSupported, 5, unsup)
	if err := f.Supported(); !errors.Is(err, cudackpt.ErrUnsupported) {
		t.Fatalf("Supported = %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := f.Unlock(cctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("unlock with a cancelled context = %v", err)
	}
}

func TestSetState(t *testing.T) {
	f := New()
	f.SetProcess(3, 100)
	f.SetState(3, cudackpt.Checkpointed)
	if s, m := f.Peek(3); s != cudackpt.Checkpointed || m != 0 {
		t.Fatalf("%s %d", s, m)
	}
	if err := f.Restore(context.Background(), 3); err != nil {
		t.Fatal(err)
	}
	if _, m := f.Peek(3); m != 100 {
		t.Fatalf("gpu after restore = %d", m)
	}
}
