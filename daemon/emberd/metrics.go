package emberd

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/emberhq/ember/daemon/httpapi"
	"github.com/emberhq/ember/scheduler"
)

// daemonCollector exports what /metrics shows beyond the scheduler's
// per-endpoint series: the job store's size on disk and, per GPU, its
// holder, health and NVML readings (read at scrape time).
type daemonCollector struct {
	sched *scheduler.Scheduler
	stats func(uuid string) (httpapi.GPUStats, error) // nil without NVML

	storeBytes, gpuInfo, gpuHealthy, gpuAssigned, gpuUtil, gpuMemUsed, gpuMemTotal, gpuTemp *prometheus.Desc
}

func newDaemonCollector(s *scheduler.Scheduler, stats func(string) (httpapi.GPUStats, error)) *daemonCollector {
	gl := []string{"gpu"}
	return &daemonCollector{
		sched: s, stats: stats,
		storeBytes:  prometheus.NewDesc("ember_store_bytes", "Size of the job store on disk, by part (lsm, vlog: Badger's, refreshed about once a minute; spilled: payloads kept in files).", []string{"part"}, nil),
		gpuInfo:     prometheus.NewDesc("ember_gpu_info", "A GPU the scheduler places workers on (always 1), with its model name.", []string{"gpu", "name"}, nil),
		gpuHealthy:  prometheus.NewDesc("ember_gpu_healthy", "1 while the GPU is in placement, 0 once NVML reported it bad.", gl, nil),
		gpuAssigned: prometheus.NewDesc("ember_gpu_assigned", "1 while a worker holds the GPU, with the worker and its endpoint.", []string{"gpu", "worker", "endpoint"}, nil),
		gpuUtil:     prometheus.NewDesc("ember_gpu_utilization_ratio", "Share of the last NVML sample period during which a kernel ran, 0 to 1.", gl, nil),
		gpuMemUsed:  prometheus.NewDesc("ember_gpu_memory_used_bytes", "GPU memory in use, by any process.", gl, nil),
		gpuMemTotal: prometheus.NewDesc("ember_gpu_memory_total_bytes", "GPU memory in all.", gl, nil),
		gpuTemp:     prometheus.NewDesc("ember_gpu_temperature_celsius", "GPU core temperature.", gl, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *daemonCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.storeBytes, c.gpuInfo, c.gpuHealthy, c.gpuAssigned, c.gpuUtil, c.gpuMemUsed, c.gpuMemTotal, c.gpuTemp} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *daemonCollector) Collect(ch chan<- prometheus.Metric) {
	lsm, vlog, spilled := c.sched.StoreSize()
	for part, v := range map[string]int64{"lsm": lsm, "vlog": vlog, "spilled": spilled} {
		ch <- prometheus.MustNewConstMetric(c.storeBytes, prometheus.GaugeValue, float64(v), part)
	}
	for _, g := range c.sched.GPUs() {
		ch <- prometheus.MustNewConstMetric(c.gpuInfo, prometheus.GaugeValue, 1, g.UUID, g.Name)
		healthy := 1.0
		if g.Unhealthy != "" {
			healthy = 0
		}
		ch <- prometheus.MustNewConstMetric(c.gpuHealthy, prometheus.GaugeValue, healthy, g.UUID)
		if g.Worker != "" {
			ch <- prometheus.MustNewConstMetric(c.gpuAssigned, prometheus.GaugeValue, 1, g.UUID, g.Worker, g.EndpointID)
		}
		if c.stats == nil {
			continue
		}
		st, err := c.stats(g.UUID)
		if err != nil {
			continue // a lost GPU: ember_gpu_healthy says so once the watch notices
		}
		ch <- prometheus.MustNewConstMetric(c.gpuUtil, prometheus.GaugeValue, float64(st.UtilizationPercent)/100, g.UUID)
		ch <- prometheus.MustNewConstMetric(c.gpuMemUsed, prometheus.GaugeValue, float64(st.MemoryUsedBytes), g.UUID)
		ch <- prometheus.MustNewConstMetric(c.gpuMemTotal, prometheus.GaugeValue, float64(st.MemoryTotalBytes), g.UUID)
		ch <- prometheus.MustNewConstMetric(c.gpuTemp, prometheus.GaugeValue, float64(st.TemperatureC), g.UUID)
	}
}

// newBuildInfo returns ember_build_info, always 1, whose labels say which
// emberd this is: version (main.version, set with -ldflags at build;
// "dev" otherwise), revision (the VCS commit the go tool stamped, when
// it built from a checkout; "" otherwise) and goversion.
func newBuildInfo(version string) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ember_build_info",
		Help: "emberd's version, VCS revision and Go version, as labels; always 1.",
		ConstLabels: prometheus.Labels{
			"version": version, "revision": vcsRevision(), "goversion": runtime.Version(),
		},
	})
	g.Set(1)
	return g
}

// vcsRevision is the commit the binary was built from, when the go tool
// recorded it (a build in a git checkout without -buildvcs=false).
func vcsRevision() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			return s.Value
		}
	}
	return ""
}
