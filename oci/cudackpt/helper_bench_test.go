package cudackpt_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/emberhq/ember/oci/cudackpt"
	"github.com/emberhq/ember/oci/cudackpt/libcuda"
	"github.com/emberhq/ember/oci/cudackpt/libcuda/fakecuda"
)

// benchHelper is a Helper on the fake libcuda f: the ember-ckpt binary
// named by EMBER_BENCH_CKPT (`make bench` sets it to bin/ember-ckpt), or
// else this test binary in helper mode (TestMain: the same Serve loop).
func benchHelper(b *testing.B, f *fakecuda.Lib) *cudackpt.Helper {
	cfg := cudackpt.HelperConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if p := os.Getenv("EMBER_BENCH_CKPT"); p != "" {
		cfg.Path, cfg.Args = p, []string{"--libcuda", f.Path}
	} else {
		cfg.Path = os.Args[0]
		cfg.Env = append(os.Environ(), "EMBER_CKPT_TEST_HELPER=1", "FAKECUDA_LIB="+f.Path)
	}
	return cudackpt.NewHelper(cfg)
}

// BenchmarkHelperCall measures one driver call (State of a CUDA process)
// through the helper process against the same call in this process
// (libcuda.Local), alternating, on the fake libcuda: the round trip over
// the helper's pipes is the cost of making the calls out of emberd. It
// reports the medians in µs. It skips without a C compiler.
func BenchmarkHelperCall(b *testing.B) {
	f := fakecuda.New(b)
	const pid = 5150
	f.SetState(pid, fakecuda.Running)
	h := benchHelper(b, f)
	defer h.Close(5 * time.Second)
	l := libcuda.New(f.Path, nil)
	if err := h.Supported(); err != nil {
		b.Fatalf("helper: %v", err)
	}
	if err := l.Supported(); err != nil {
		b.Fatalf("in process: %v", err)
	}
	ctx := context.Background()
	call := func(d cudackpt.Driver) time.Duration {
		begin := time.Now()
		st, err := d.State(ctx, pid)
		took := time.Since(begin)
		if err != nil || st != cudackpt.Running {
			b.Fatalf("State = %s, %v; want running", st, err)
		}
		return took
	}
	var helper, local []time.Duration
	for b.Loop() {
		helper = append(helper, call(h))
		local = append(local, call(l))
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(micros(helper), "helper-µs")
	b.ReportMetric(micros(local), "in-process-µs")
}

// BenchmarkHelperStart measures a helper's first call (Supported: the
// helper process started, libcuda loaded and cuInit called in it) against
// the first call of a new libcuda.Local in this process (the library
// loaded by the same dlopen, already open after the first iteration). It
// reports the medians in µs. It skips without a C compiler.
func BenchmarkHelperStart(b *testing.B) {
	f := fakecuda.New(b)
	var helper, local []time.Duration
	for b.Loop() {
		h := benchHelper(b, f)
		begin := time.Now()
		err := h.Supported()
		helper = append(helper, time.Since(begin))
		if err != nil {
			b.Fatalf("helper: %v", err)
		}
		if err := h.Close(5 * time.Second); err != nil {
			b.Fatalf("close the helper: %v", err)
		}
		begin = time.Now()
		err = libcuda.New(f.Path, nil).Supported()
		local = append(local, time.Since(begin))
		if err != nil {
			b.Fatalf("in process: %v", err)
		}
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(micros(helper), "helper-µs")
	b.ReportMetric(micros(local), "in-process-µs")
}

// micros is the median of ds in µs.
func micros(ds []time.Duration) float64 {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return float64(ds[len(ds)/2]) / float64(time.Microsecond)
}
