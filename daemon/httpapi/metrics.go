package httpapi

import (
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/emberhq/ember/daemon/auth"
	"github.com/emberhq/ember/scheduler"
)

// Every per-endpoint metric carries the endpoint's id and name.
var endpointLabels = []string{"endpoint", "name"}

func endpointDesc(name, help string, extra ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, append(slices.Clone(endpointLabels), extra...), nil)
}

var (
	descJobsQueued = endpointDesc("ember_jobs_queued",
		"Jobs waiting in the endpoint's queue.")
	descJobsInProgress = endpointDesc("ember_jobs_in_progress",
		"Jobs held by the endpoint's workers.")
	descJobsFinished = endpointDesc("ember_jobs_finished_total",
		"Jobs that reached a terminal status since emberd started, by status (COMPLETED, FAILED, TIMED_OUT, CANCELLED).", "status")
	descJobsRetried = endpointDesc("ember_jobs_retried_total",
		"Jobs put back in the queue since emberd started: their worker was lost, or a /retry.")
	descWorkers = endpointDesc("ember_workers",
		"The endpoint's workers now, by state; throttled counts workers wanted but not placeable (no free GPU).", "state")
	descDelay = endpointDesc("ember_job_delay_seconds",
		"Time from a job's submission to its first take by a worker, since emberd started.")
	descExecution = endpointDesc("ember_job_execution_seconds",
		"Time from a job's take to its terminal status (cancelled jobs left out), since emberd started.")
	descColdStart = endpointDesc("ember_worker_cold_start_seconds",
		"Time from a new worker's start to its first job-take or ping, since emberd started.")
	descRevival = endpointDesc("ember_worker_revival_seconds",
		"Time from the decision to revive a frozen (FlashBoot) or parked worker to its processes running again, since emberd started.")
	descWorkersStarted = endpointDesc("ember_workers_started_total",
		"Workers started since emberd started.")
	descWorkersRevived = endpointDesc("ember_workers_revived_total",
		"Frozen workers thawed for a job since emberd started.")
	descWorkersFrozen = endpointDesc("ember_workers_frozen_total",
		"Idle workers frozen (FlashBoot) since emberd started.")
	descWorkersReclaimed = endpointDesc("ember_workers_reclaimed_total",
		"Frozen or idle workers stopped to give their GPUs to another endpoint, since emberd started.")
	descWorkersParked = endpointDesc("ember_workers_parked_total",
		"Workers parked (GPU state moved to host memory, GPU given up; endpoint gpuPark) since emberd started.")
	descPark = endpointDesc("ember_worker_park_seconds",
		"Time from the decision to park a worker to its GPUs released, since emberd started.")
	descParkedBytes = endpointDesc("ember_workers_parked_bytes",
		"Host memory the endpoint's parked workers' GPU state takes now.")
	descParkBudget = prometheus.NewDesc("ember_park_memory_budget_bytes",
		"Host memory parked workers may take in all (emberd --park-memory-mb).", nil, nil)
	descParkUsed = prometheus.NewDesc("ember_park_memory_used_bytes",
		"Host memory parked workers take now, or have reserved for a park under way.", nil, nil)
	descStreamRejected = endpointDesc("ember_stream_chunks_rejected_total",
		"Job-stream posts refused since emberd started, by reason: late (the job had ended) or limit (the job's unread stream was full; the job failed).", "reason")
)

// streamRejectReasons are the values of ember_stream_chunks_rejected_total's
// reason label, each exported for every endpoint.
var streamRejectReasons = []string{"late", "limit"}

// workerStates are the values of ember_workers' state label. Each is
// exported for every endpoint, zero included, so that a query never has to
// tell "none" from "absent".
var workerStates = []string{
	string(scheduler.WorkerInitializing), string(scheduler.WorkerIdle), string(scheduler.WorkerRunning),
	string(scheduler.WorkerDraining), string(scheduler.WorkerFrozen), string(scheduler.WorkerParked),
	string(scheduler.WorkerUnhealthy),
	"throttled",
}

// finishedStatuses are the values of ember_jobs_finished_total's status
// label, each exported for every endpoint.
var finishedStatuses = []string{"COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"}

// schedulerCollector exports the scheduler's per-endpoint stats. It reads
// them on each scrape (Scheduler.Stats), so it keeps no state of its own and
// deleted endpoints disappear from the next scrape.
type schedulerCollector struct {
	s *scheduler.Scheduler
}

// NewSchedulerCollector returns a collector of the ember_jobs_*,
// ember_workers* and ember_*_seconds metrics of every endpoint of s.
func NewSchedulerCollector(s *scheduler.Scheduler) prometheus.Collector {
	return schedulerCollector{s: s}
}

func (c schedulerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descJobsQueued, descJobsInProgress, descJobsFinished, descJobsRetried, descWorkers,
		descDelay, descExecution, descColdStart, descRevival,
		descWorkersStarted, descWorkersRevived, descWorkersFrozen, descWorkersReclaimed,
		descWorkersParked, descPark, descParkedBytes, descParkBudget, descParkUsed,
		descStreamRejected,
	} {
		ch <- d
	}
}

func (c schedulerCollector) Collect(ch chan<- prometheus.Metric) {
	all, err := c.s.Stats("")
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descJobsQueued, fmt.Errorf("reading scheduler stats: %w", err))
		return
	}
	budget, used := c.s.ParkMemory()
	ch <- prometheus.MustNewConstMetric(descParkBudget, prometheus.GaugeValue, float64(budget))
	ch <- prometheus.MustNewConstMetric(descParkUsed, prometheus.GaugeValue, float64(used))
	for _, st := range all {
		id, name := st.EndpointID, st.Name
		gauge := func(d *prometheus.Desc, v float64, extra ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{id, name}, extra...)...)
		}
		counter := func(d *prometheus.Desc, v int64, extra ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{id, name}, extra...)...)
		}
		// Histograms (cumulative since emberd started) rather than
		// summaries: their buckets add up across endpoints and daemons,
		// and rate() over them charts a quantile over any window.
		histogram := func(d *prometheus.Desc, kind string) {
			h := st.Histograms[kind]
			ch <- prometheus.MustNewConstHistogram(d, h.Count, h.Sum, h.Buckets, id, name)
		}

		gauge(descJobsQueued, float64(st.InQueue))
		gauge(descJobsInProgress, float64(st.InProgress))
		for _, status := range withExtraKeys(finishedStatuses, st.Finished) {
			counter(descJobsFinished, st.Finished[status], status)
		}
		counter(descJobsRetried, st.Retried)
		for _, state := range withExtraKeys(workerStates, st.Workers) {
			gauge(descWorkers, float64(st.Workers[state]), state)
		}
		histogram(descDelay, "delay")
		histogram(descExecution, "execution")
		histogram(descColdStart, "coldStart")
		histogram(descRevival, "revival")
		counter(descWorkersStarted, st.WorkersStarted)
		counter(descWorkersRevived, st.WorkersRevived)
		counter(descWorkersFrozen, st.WorkersFrozen)
		counter(descWorkersReclaimed, st.WorkersReclaimed)
		counter(descWorkersParked, st.WorkersParked)
		histogram(descPark, "park")
		gauge(descParkedBytes, float64(st.ParkedBytes))
		for _, reason := range withExtraKeys(streamRejectReasons, st.StreamChunksRejected) {
			counter(descStreamRejected, st.StreamChunksRejected[reason], reason)
		}
	}
}

// withExtraKeys is known followed by the keys of m it does not list, sorted:
// a state or status the scheduler adds later is exported rather than lost.
func withExtraKeys[V any](known []string, m map[string]V) []string {
	out := slices.Clone(known)
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(known, k) {
			out = append(out, k)
		}
	}
	return out
}

// refusalReasons are the reasons of ember_requests_refused_total by code.
var refusalReasons = map[int][]string{
	http.StatusUnauthorized:    {auth.ReasonMissingKey, auth.ReasonWrongKey, auth.ReasonExpired, auth.ReasonWorkerToken},
	http.StatusForbidden:       {auth.ReasonScope, auth.ReasonEndpoint},
	http.StatusTooManyRequests: {auth.ReasonRate, auth.ReasonConcurrency},
}

// metricsHandler serves GET /metrics in the Prometheus text format from a
// registry of its own (not prometheus.DefaultRegisterer, so that nothing a
// library registers globally leaks in): the scheduler's collector, Go's
// runtime and the process's collectors, and the extra collectors of
// Config.Metrics. It panics when two collectors export the same metric,
// which is a programming error found on the first start.
func metricsHandler(s *scheduler.Scheduler, extra []prometheus.Collector, log *slog.Logger) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if s != nil {
		reg.MustRegister(NewSchedulerCollector(s))
	}
	// Refusals (401, 403, 429) by code and reason, every pair shown from
	// the start, zero included.
	for code, reasons := range refusalReasons {
		for _, reason := range reasons {
			auth.Refused.WithLabelValues(strconv.Itoa(code), reason)
		}
	}
	reg.MustRegister(auth.Refused)
	for _, c := range extra {
		reg.MustRegister(c)
	}
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: promLogger{log},
		// A failing collector (say, a GPU query) must not hide the others.
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// promLogger passes promhttp's errors to the server's logger.
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Warn("metrics: " + fmt.Sprint(v...))
}
