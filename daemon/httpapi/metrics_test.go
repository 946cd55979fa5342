package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/spec"
)

// scrape GETs /metrics without a key, as Prometheus does, and parses it.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+workersKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type = %q, want the text format", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, body)
	}
	return fams
}

// series finds the metric of family name whose labels include want.
func series(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	t.Helper()
	fam, ok := fams[name]
	if !ok {
		t.Fatalf("no metric family %s", name)
	}
	var found []*dto.Metric
	for _, m := range fam.GetMetric() {
		match := true
		for k, v := range want {
			if labelValue(m, k) != v {
				match = false
			}
		}
		if match {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s%v: %d series, want 1", name, want, len(found))
	}
	return found[0]
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// runJob puts one job through the scheduler as a worker would: take, then
// a final result.
func runJob(t *testing.T, e *workersEnv) {
	t.Helper()
	ctx := context.Background()
	job, err := e.s.Submit(ctx, e.ep, spec.Submission{Input: json.RawMessage(`{"n":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	lease, err := e.s.Take(ctx, e.ep, e.w.spec.ID, 1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(lease.Jobs) != 1 || lease.Jobs[0].ID != job.ID {
		t.Fatalf("took %+v, want job %s", lease.Jobs, job.ID)
	}
	lease.Delivered(true)
	if err := e.s.Done(ctx, e.ep, e.w.spec.ID, job.ID, scheduler.Result{Output: json.RawMessage(`{"ok":true}`)}); err != nil {
		t.Fatal(err)
	}
	if v, err := e.s.Status(e.ep, job.ID); err != nil || v.Status != "COMPLETED" {
		t.Fatalf("job status %+v, %v; want COMPLETED", v, err)
	}
}

func TestMetrics(t *testing.T) {
	e := newWorkersEnv(t)
	runJob(t, e)
	fams := scrape(t, e.srv.URL)
	ep := map[string]string{"endpoint": e.ep, "name": "logs"}
	with := func(k, v string) map[string]string {
		m := map[string]string{k: v}
		for k, v := range ep {
			m[k] = v
		}
		return m
	}

	gauges := []string{"ember_jobs_queued", "ember_jobs_in_progress", "ember_workers", "ember_workers_parked_bytes"}
	counters := []string{"ember_jobs_finished_total", "ember_jobs_retried_total", "ember_workers_started_total",
		"ember_workers_revived_total", "ember_workers_frozen_total", "ember_workers_reclaimed_total", "ember_workers_parked_total"}
	histograms := []string{"ember_job_delay_seconds", "ember_job_execution_seconds", "ember_worker_cold_start_seconds", "ember_worker_revival_seconds",
		"ember_worker_park_seconds"}
	for _, name := range slices.Concat(gauges, counters, histograms) {
		fam, ok := fams[name]
		if !ok {
			t.Errorf("no %s", name)
			continue
		}
		want := dto.MetricType_GAUGE
		switch {
		case slices.Contains(counters, name):
			want = dto.MetricType_COUNTER
		case slices.Contains(histograms, name):
			want = dto.MetricType_HISTOGRAM
		}
		if fam.GetType() != want {
			t.Errorf("%s is a %s, want a %s", name, fam.GetType(), want)
		}
		if fam.GetHelp() == "" {
			t.Errorf("%s has no help", name)
		}
		for _, m := range fam.GetMetric() {
			if labelValue(m, "endpoint") != e.ep || labelValue(m, "name") != "logs" {
				t.Errorf("%s: labels %v, want endpoint=%s name=logs", name, m.GetLabel(), e.ep)
			}
		}
	}

	for status, want := range map[string]float64{"COMPLETED": 1, "FAILED": 0, "TIMED_OUT": 0, "CANCELLED": 0} {
		if got := series(t, fams, "ember_jobs_finished_total", with("status", status)).GetCounter().GetValue(); got != want {
			t.Errorf("ember_jobs_finished_total{status=%q} = %v, want %v", status, got, want)
		}
	}
	if got := series(t, fams, "ember_jobs_queued", ep).GetGauge().GetValue(); got != 0 {
		t.Errorf("ember_jobs_queued = %v, want 0", got)
	}
	if got := series(t, fams, "ember_jobs_in_progress", ep).GetGauge().GetValue(); got != 0 {
		t.Errorf("ember_jobs_in_progress = %v, want 0", got)
	}

	// Every state is exported, zero included; the one worker is idle.
	var states []string
	for _, m := range fams["ember_workers"].GetMetric() {
		states = append(states, labelValue(m, "state"))
	}
	slices.Sort(states)
	if want := []string{"draining", "frozen", "idle", "initializing", "parked", "running", "throttled", "unhealthy"}; !slices.Equal(states, want) {
		t.Errorf("ember_workers states %v, want %v", states, want)
	}
	if got := series(t, fams, "ember_workers", with("state", "idle")).GetGauge().GetValue(); got != 1 {
		t.Errorf(`ember_workers{state="idle"} = %v, want 1`, got)
	}
	budget, _ := e.s.ParkMemory()
	if fam := fams["ember_park_memory_budget_bytes"]; fam == nil || len(fam.GetMetric()) != 1 || fam.GetMetric()[0].GetGauge().GetValue() != float64(budget) || budget == 0 {
		t.Errorf("ember_park_memory_budget_bytes: %v, want the scheduler's budget %d", fam, budget)
	}
	if fam := fams["ember_park_memory_used_bytes"]; fam == nil || len(fam.GetMetric()) != 1 || fam.GetMetric()[0].GetGauge().GetValue() != 0 {
		t.Errorf("ember_park_memory_used_bytes: %v, want 0", fam)
	}

	// Histograms since the start: one job, so every bucket from the one
	// holding its time up counts 1 and those below 0; the buckets run
	// from milliseconds to an hour or more.
	for _, name := range []string{"ember_job_delay_seconds", "ember_job_execution_seconds"} {
		h := series(t, fams, name, ep).GetHistogram()
		if h.GetSampleCount() != 1 {
			t.Errorf("%s_count = %d, want 1", name, h.GetSampleCount())
		}
		b := h.GetBucket()
		if len(b) < 10 || b[0].GetUpperBound() > 0.01 || b[len(b)-1].GetUpperBound() < 3600 {
			t.Errorf("%s buckets %v: want ms to an hour", name, b)
			continue
		}
		prev := uint64(0)
		for _, x := range b {
			c := x.GetCumulativeCount()
			want := uint64(0)
			if h.GetSampleSum() <= x.GetUpperBound() {
				want = 1
			}
			if c != want || c < prev {
				t.Errorf("%s_bucket{le=%v} = %d, want %d (sum %v)", name, x.GetUpperBound(), c, want, h.GetSampleSum())
			}
			prev = c
		}
	}
	// No FlashBoot: no revival, every bucket zero.
	rev := series(t, fams, "ember_worker_revival_seconds", ep).GetHistogram()
	if rev.GetSampleCount() != 0 || len(rev.GetBucket()) == 0 {
		t.Errorf("ember_worker_revival_seconds = %v, want count 0 with buckets", rev)
	}
	for _, x := range rev.GetBucket() {
		if x.GetCumulativeCount() != 0 {
			t.Errorf("ember_worker_revival_seconds_bucket{le=%v} = %d, want 0", x.GetUpperBound(), x.GetCumulativeCount())
		}
	}

	// The Go runtime and process collectors.
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_resident_memory_bytes", "process_open_fds"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("no %s", name)
		}
	}
}

// TestMetricsRoute: a key needed (read or wider), GET and HEAD only,
// the extra collectors of Config.Metrics are served, and a deleted endpoint
// disappears.
func TestMetricsRoute(t *testing.T) {
	e := newWorkersEnv(t)
	extra := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ember_test_extra", Help: "An extra collector."}, func() float64 { return 42 })
	srv := httptest.NewServer(New(Config{
		Scheduler: e.s,
		Keys:      func() []string { return []string{workersKey} },
		Metrics:   []prometheus.Collector{extra},
	}))
	t.Cleanup(srv.Close)

	fams := scrape(t, srv.URL)
	if got := fams["ember_test_extra"].GetMetric()[0].GetGauge().GetValue(); got != 42 {
		t.Errorf("ember_test_extra = %v, want 42", got)
	}
	if _, ok := fams["ember_jobs_queued"]; !ok {
		t.Error("no scheduler metrics next to the extra collector")
	}
	if code, body := e.getAll(t, "/metrics", workersKey); code != 200 || !strings.Contains(body, "ember_jobs_queued{") {
		t.Errorf("with a key: %d %.200s", code, body)
	}
	if code, body := e.getAll(t, "//metrics", workersKey); code != 200 {
		t.Errorf("//metrics: %d %.200s", code, body)
	}
	if code, body := e.getAll(t, "/metrics", ""); code != 401 || !strings.Contains(body, `"reason":"missing_key"`) {
		t.Errorf("without a key: %d %.200s", code, body)
	}
	resp, err := http.Post(srv.URL+"/metrics", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /metrics: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}

	if err := e.s.DeleteEndpoint(context.Background(), e.ep); err != nil {
		t.Fatal(err)
	}
	fams = scrape(t, srv.URL)
	for name, fam := range fams {
		// ember_requests_refused_total and ember_park_memory_* are the
		// daemon's, not an endpoint's.
		daemonWide := name == "ember_requests_refused_total" || strings.HasPrefix(name, "ember_park_memory_")
		if strings.HasPrefix(name, "ember_") && name != "ember_test_extra" && !daemonWide && len(fam.GetMetric()) > 0 {
			t.Errorf("%s still exported after the endpoint was deleted", name)
		}
	}
}
