package libcuda

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/oci/cudackpt"
	"github.com/emberhq/ember/oci/cudackpt/libcuda/fakecuda"
)

func TestSupported(t *testing.T) {
	f := fakecuda.New(t)
	l := New(f.Path, nil)
	if err := l.Supported(); err != nil {
		t.Fatalf("Supported: %v", err)
	}
	if l.DriverVersion() != 12080 || !strings.HasSuffix(l.Path(), "libcuda.so.570.86.15") {
		t.Fatalf("loaded %s, version %d", l.Path(), l.DriverVersion())
	}
}

func TestUnsupported(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T) string
		want  []string
	}{
		{"old driver", func(t *testing.T) string { return fakecuda.NewOld(t).Path },
			[]string{"driver 550.163.01", "CUDA 12.4", "needs CUDA 12.8", "driver 570"}},
		{"new version, no checkpoint functions", func(t *testing.T) string {
			f := fakecuda.NewOld(t)
			f.SetVersion(12080)
			return f.Path
		}, []string{"has no cuCheckpointProcessGetState", "needs CUDA 12.8"}},
		{"version between", func(t *testing.T) string {
			f := fakecuda.New(t)
			f.SetVersion(12060)
			return f.Path
		}, []string{"CUDA 12.6", "driver 570.86.15"}},
		{"no library", func(t *testing.T) string { return t.TempDir() + "/libcuda.so.1" },
			[]string{"no CUDA driver library", "driver 570"}},
		{"cuInit fails", func(t *testing.T) string {
			f := fakecuda.New(t)
			f.SetInitResult(cudackpt.ResultNoDevice)
			return f.Path
		}, []string{"cuInit: CUDA_ERROR_NO_DEVICE (100)"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := New(c.setup(t), nil)
			err := l.Supported()
			if !errors.Is(err, cudackpt.ErrUnsupported) {
				t.Fatalf("Supported = %v, want ErrUnsupported", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			// Every call fails the same way.
			if _, err := l.State(context.Background(), 1); !errors.Is(err, cudackpt.ErrUnsupported) {
				t.Errorf("State after a failed load = %v", err)
			}
		})
	}
}

func TestStateSequence(t *testing.T) {
	f := fakecuda.New(t)
	l := New(f.Path, nil)
	ctx := context.Background()
	const pid = 4242
	f.SetState(pid, fakecuda.Running)
	want := func(s cudackpt.State) {
		t.Helper()
		got, err := l.State(ctx, pid)
		if err != nil || got != s {
			t.Fatalf("State = %s, %v; want %s", got, err, s)
		}
	}
	want(cudackpt.Running)
	if err := l.Lock(ctx, pid, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	want(cudackpt.Locked)
	if err := l.Checkpoint(ctx, pid); err != nil {
		t.Fatal(err)
	}
	want(cudackpt.Checkpointed)
	if err := l.Restore(ctx, pid); err != nil {
		t.Fatal(err)
	}
	want(cudackpt.Locked)
	if err := l.Unlock(ctx, pid); err != nil {
		t.Fatal(err)
	}
	want(cudackpt.Running)
	p := strconv.Itoa(pid)
	wantCalls := []string{"state " + p + " 0", "lock " + p + " 5000", "state " + p + " 0", "checkpoint " + p + " 0",
		"state " + p + " 0", "restore " + p + " 0", "state " + p + " 0", "unlock " + p + " 0", "state " + p + " 0"}
	if got := f.Calls(); !slices.Equal(got, wantCalls) {
		t.Fatalf("driver calls:\n got %q\nwant %q", got, wantCalls)
	}
	f.SetState(pid, fakecuda.Failed)
	want(cudackpt.Failed)
}

func TestLockTimeout(t *testing.T) {
	f := fakecuda.New(t)
	l := New(f.Path, nil)
	for i, c := range []struct {
		d  time.Duration
		ms string
	}{{1500 * time.Microsecond, "2"}, {0, "1"}, {-time.Second, "1"}, {time.Hour, "3600000"}} {
		f.SetState(100+i, fakecuda.Running)
		if err := l.Lock(context.Background(), 100+i, c.d); err != nil {
			t.Fatal(err)
		}
		if got, want := f.Calls()[i], "lock "+strconv.Itoa(100+i)+" "+c.ms; got != want {
			t.Errorf("Lock(%v) called %q, want %q", c.d, got, want)
		}
	}
}

func TestErrors(t *testing.T) {
	f := fakecuda.New(t)
	l := New(f.Path, nil)
	ctx := context.Background()
	const pid = 77
	f.SetState(pid, fakecuda.Running)

	err := l.Checkpoint(ctx, pid)
	var ce *cudackpt.Error
	if !errors.As(err, &ce) || ce.Call != "cuCheckpointProcessCheckpoint" || ce.PID != pid || ce.Result != cudackpt.ResultIllegalState {
		t.Fatalf("checkpoint of a running process: %v", err)
	}
	if want := "cuCheckpointProcessCheckpoint(pid 77): CUDA_ERROR_ILLEGAL_STATE (401)"; err.Error() != want {
		t.Errorf("error text %q, want %q", err, want)
	}

	f.Fail("lock", pid, cudackpt.ResultNotSupported)
	if err := l.Lock(ctx, pid, time.Second); !errors.Is(err, cudackpt.ErrUnsupported) || !strings.Contains(err.Error(), "CUDA_ERROR_NOT_SUPPORTED") {
		t.Errorf("lock failing with 801: %v", err)
	}
	f.Fail("lock", pid, 12345)
	if err := l.Lock(ctx, pid, time.Second); err == nil || !strings.Contains(err.Error(), "CUresult 12345") || !strings.Contains(err.Error(), "CUDA_ERROR_FAKE") {
		t.Errorf("lock failing with a result only the driver names: %v", err)
	}
	f.Clear("lock", pid)
	if err := l.Lock(ctx, pid, time.Second); err != nil {
		t.Fatal(err)
	}
	f.Fail("state", pid, cudackpt.ResultOperatingSys)
	if _, err := l.State(ctx, pid); !errors.As(err, &ce) || ce.Result != cudackpt.ResultOperatingSys {
		t.Errorf("state failing with 304: %v", err)
	}
}

func TestNotCUDA(t *testing.T) {
	f := fakecuda.New(t)
	l := New(f.Path, nil)
	ctx := context.Background()
	self := os.Getpid()
	if s, err := l.State(ctx, self); s != cudackpt.NotCUDA || err != nil {
		t.Fatalf("State of a process without CUDA = %s, %v", s, err)
	}
	err := l.Lock(ctx, self, time.Second)
	if !errors.Is(err, cudackpt.ErrNotCUDA) || !strings.Contains(err.Error(), "CUDA_ERROR_NOT_INITIALIZED") {
		t.Fatalf("Lock of a process without CUDA = %v", err)
	}
	// INVALID_VALUE: the driver cannot use the PID (a process gone).
	const gone = 2147483000
	f.Fail("state", gone, cudackpt.ResultInvalidValue)
	if s, err := l.State(ctx, gone); s != cudackpt.NotCUDA || err != nil {
		t.Errorf("State of a gone process = %s, %v", s, err)
	}
}

func TestContextChecked(t *testing.T) {
	f := fakecuda.New(t)
	l := New(f.Path, nil)
	f.SetState(5, fakecuda.Running)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Lock(ctx, 5, time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("Lock with a cancelled context = %v", err)
	}
	if calls := f.Calls(); len(calls) != 0 {
		t.Fatalf("the driver was called: %q", calls)
	}
}

// TestRealLibrary loads the libcuda named by EMBER_TEST_LIBCUDA, when set
// (a driver's file, on a machine without a GPU: it checks the loading and
// the version check against a real library).
func TestRealLibrary(t *testing.T) {
	p := os.Getenv("EMBER_TEST_LIBCUDA")
	if p == "" {
		t.Skip("EMBER_TEST_LIBCUDA not set")
	}
	l := New(p, nil)
	err := l.Supported()
	t.Logf("%s: CUDA version %d, Supported: %v", l.Path(), l.DriverVersion(), err)
	if l.DriverVersion() == 0 {
		t.Fatalf("no version read from %s", p)
	}
	if l.DriverVersion() < MinDriverVersion && !errors.Is(err, cudackpt.ErrUnsupported) {
		t.Fatalf("an old driver was not refused: %v", err)
	}
}

// TestLibDirs: without a name, libcuda.so.1 is looked up by the loader,
// then in LibDirs (a driver the loader's path does not reach).
func TestLibDirs(t *testing.T) {
	if err := New("libcuda.so.1", nil).Supported(); !strings.Contains(fmt.Sprint(err), "no CUDA driver library") {
		t.Skipf("the loader finds a libcuda.so.1 here: %v", err)
	}
	f := fakecuda.New(t)
	old := LibDirs
	t.Cleanup(func() { LibDirs = old })
	LibDirs = []string{t.TempDir(), filepath.Dir(f.Path)}
	l := New("", nil)
	if err := l.Supported(); err != nil {
		t.Fatalf("Supported: %v", err)
	}
	if want := filepath.Join(filepath.Dir(f.Path), "libcuda.so.570.86.15"); l.Path() != want {
		t.Fatalf("loaded %s, want %s", l.Path(), want)
	}

	LibDirs = []string{t.TempDir()}
	err := New("", nil).Supported()
	if !errors.Is(err, cudackpt.ErrUnsupported) || !strings.Contains(err.Error(), LibDirs[0]) {
		t.Fatalf("no library anywhere: %v", err)
	}
}
