package tests

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestHistoryRecentJobsMetrics: a few jobs through a real emberd and the
// example worker (process runtime) show in the endpoint's history (counts
// and delay and execution percentiles), in its recent jobs (input and
// output for the admin key, redacted for a read key), and in /metrics as
// histograms (_bucket series, no quantiles) beside ember_build_info.
func TestHistoryRecentJobsMetrics(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	ep := d.CreateEndpoint("hist", map[string]any{"workersMax": 1})
	const jobs = 3
	var ids []string
	for i := range jobs {
		m := d.JSON("POST", "/v2/"+ep+"/runsync", map[string]any{"input": map[string]any{"n": i, "sleep_ms": 20}}, 200)
		if m["status"] != "COMPLETED" {
			m = d.WaitStatus(ep, m["id"].(string), 60*time.Second, "COMPLETED")
		}
		ids = append(ids, m["id"].(string))
	}

	// History: the jobs are counted in the buckets since the endpoint was
	// created, with delay and execution percentiles.
	h := d.JSON("GET", "/v1/endpoints/"+ep+"/history", nil, 200)
	pts, _ := h["points"].([]any)
	if h["endpointId"] != ep || h["resolutionSeconds"] != 10.0 || h["windowSeconds"] != 3600.0 || len(pts) == 0 || len(pts) > 360 {
		t.Fatalf("history: %v", h)
	}
	var submitted, completed, coldStarts float64
	var delay, exec bool
	prev := 0.0
	for _, p := range pts {
		p := p.(map[string]any)
		submitted += p["submitted"].(float64)
		completed += p["completed"].(float64)
		coldStarts += p["coldStarts"].(float64)
		_, ok := p["delayP50Ms"]
		delay = delay || ok
		if v, ok := p["executionP90Ms"].(float64); ok && v >= 20 {
			exec = true
		}
		if p["t"].(float64) <= prev {
			t.Errorf("points not oldest first: %v", pts)
		}
		prev = p["t"].(float64)
	}
	if submitted != jobs || completed != jobs || coldStarts != 1 || !delay || !exec {
		t.Errorf("history sums: submitted %v completed %v coldStarts %v, delay %v, execution >= 20 ms %v: %v", submitted, completed, coldStarts, delay, exec, pts)
	}

	// Recent jobs, newest first: input and output for the admin key,
	// left out for a read key.
	rj := d.JSON("GET", "/v1/endpoints/"+ep+"/jobs?limit=10", nil, 200)
	list, _ := rj["jobs"].([]any)
	if len(list) != jobs || rj["redacted"] != nil {
		t.Fatalf("recent jobs (admin): %v", rj)
	}
	for i, j := range list {
		j := j.(map[string]any)
		n := jobs - 1 - i
		in, _ := json.Marshal(j["input"])
		out, _ := json.Marshal(j["output"])
		if j["id"] != ids[n] || j["status"] != "COMPLETED" || string(in) != fmt.Sprintf(`{"n":%d,"sleep_ms":20}`, n) ||
			!strings.Contains(string(out), fmt.Sprintf(`"n":%d`, n)) || j["executionTime"] == nil || j["workerId"] == nil {
			t.Errorf("recent job %d: %v", i, j)
		}
	}
	_, readKey := createKey(t, d, map[string]any{"name": "watcher", "scope": "read"})
	code, body := d.DoKey("GET", "/v1/endpoints/"+ep+"/jobs", nil, "Bearer "+readKey)
	var red map[string]any
	json.Unmarshal(body, &red)
	list, _ = red["jobs"].([]any)
	if code != 200 || red["redacted"] != true || len(list) != jobs {
		t.Fatalf("recent jobs (read key): %d %s", code, body)
	}
	for _, j := range list {
		j := j.(map[string]any)
		if _, ok := j["input"]; ok || j["output"] != nil || j["status"] != "COMPLETED" {
			t.Errorf("read key sees %v", j)
		}
	}
	if code, body := d.DoKey("GET", "/v1/endpoints/"+ep+"/jobs?limit=500", nil, "Bearer "+readKey); code != 400 || !strings.Contains(string(body), `"field":"limit"`) {
		t.Errorf("limit=500: %d %s", code, body)
	}

	// /metrics: histograms with their buckets, no quantile series, and
	// the build info.
	code, body = d.Do("GET", "/metrics", nil)
	text := string(body)
	if code != 200 {
		t.Fatalf("/metrics: %d %.300s", code, text)
	}
	for _, name := range []string{"ember_job_delay_seconds", "ember_job_execution_seconds", "ember_worker_cold_start_seconds", "ember_worker_revival_seconds", "ember_worker_park_seconds"} {
		if !strings.Contains(text, "# TYPE "+name+" histogram") {
			t.Errorf("%s is not a histogram", name)
		}
		if !strings.Contains(text, name+`_bucket{endpoint="`+ep+`",name="hist",le="+Inf"}`) {
			t.Errorf("no %s_bucket series for the endpoint", name)
		}
	}
	if want := fmt.Sprintf(`ember_job_execution_seconds_count{endpoint="%s",name="hist"} %d`, ep, jobs); !strings.Contains(text, want) {
		t.Errorf("no %q", want)
	}
	if strings.Contains(text, "quantile=") && regexp.MustCompile(`(?m)^ember_\w+\{[^}]*quantile=`).MatchString(text) {
		t.Error("ember_* quantile series still exported")
	}
	if !regexp.MustCompile(`(?m)^ember_build_info\{goversion="go[^"]+",revision="[^"]*",version="dev"\} 1$`).MatchString(text) {
		t.Errorf("no ember_build_info 1 with version dev: %s", grepLines(text, "ember_build_info"))
	}
	if strings.Contains(text, "utilization_percent") {
		t.Error("ember_gpu_utilization_percent still exported")
	}
}
