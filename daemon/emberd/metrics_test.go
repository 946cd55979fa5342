package emberd

import (
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/emberhq/ember/daemon/httpapi"
	"github.com/emberhq/ember/oci/process"
	"github.com/emberhq/ember/scheduler"
)

// TestBuildInfo: ember_build_info is 1 with the version passed in and the
// Go version; revision is whatever the go tool stamped (empty under go
// test, which does not stamp it).
func TestBuildInfo(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newBuildInfo("1.2.3"))
	fams, err := reg.Gather()
	if err != nil || len(fams) != 1 || fams[0].GetName() != "ember_build_info" || len(fams[0].GetMetric()) != 1 {
		t.Fatalf("gather: %v %v", fams, err)
	}
	m := fams[0].GetMetric()[0]
	if m.GetGauge().GetValue() != 1 {
		t.Errorf("value %v, want 1", m.GetGauge().GetValue())
	}
	labels := map[string]string{}
	for _, l := range m.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	if labels["version"] != "1.2.3" || labels["goversion"] != runtime.Version() || len(labels) != 3 {
		t.Errorf("labels %v, want version 1.2.3, goversion %s and revision", labels, runtime.Version())
	}
	if _, ok := labels["revision"]; !ok {
		t.Errorf("no revision label: %v", labels)
	}
}

// TestGPUUtilizationRatio: NVML's utilization percent is exported as a
// 0-1 ratio under ember_gpu_utilization_ratio, and no percent series is
// left.
func TestGPUUtilizationRatio(t *testing.T) {
	s, err := scheduler.Open(scheduler.Config{
		DataDir: t.TempDir(), InMemoryStore: true, Runtime: process.New(), MinFreeBytes: 1, WorkerAPIBase: "http://127.0.0.1:1",
		GPUs:   []scheduler.GPU{{UUID: "GPU-1", Name: "H200", MemoryBytes: 141 << 30}},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(newDaemonCollector(s, func(string) (httpapi.GPUStats, error) {
		return httpapi.GPUStats{UtilizationPercent: 87, MemoryUsedBytes: 1 << 30, MemoryTotalBytes: 141 << 30, TemperatureC: 50}, nil
	}))
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range fams {
		got = append(got, f.GetName())
		if f.GetName() == "ember_gpu_utilization_ratio" {
			if v := f.GetMetric()[0].GetGauge().GetValue(); v != 0.87 {
				t.Errorf("ember_gpu_utilization_ratio = %v, want 0.87", v)
			}
		}
	}
	if !slices.Contains(got, "ember_gpu_utilization_ratio") || slices.ContainsFunc(got, func(n string) bool { return strings.HasSuffix(n, "_percent") }) {
		t.Errorf("metrics %v: want ember_gpu_utilization_ratio and no _percent", got)
	}
}
