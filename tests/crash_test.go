package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// crashClient is shared by the crash test's concurrent requests (the
// harness's Do fails the test, which goroutines must not do).
var crashClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}

func crashRequest(d *Daemon, method, path string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, d.URL+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+d.Key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := crashClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// parallelEach runs f(i) for i in [0, n) on `workers` goroutines and returns
// the first error.
func parallelEach(n, workers int, f func(i int) error) error {
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	next := make(chan int)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

// workerLogIDs lists the ids of every worker emberd has started in this
// data dir (their logs outlive them).
func workerLogIDs(d *Daemon) map[string]bool {
	out := map[string]bool{}
	ents, _ := os.ReadDir(filepath.Join(d.DataDir, "workers"))
	for _, e := range ents {
		if id, ok := strings.CutSuffix(e.Name(), ".log"); ok && !e.IsDir() {
			out[id] = true
		}
	}
	return out
}

// TestCrashRecoveryExactlyOnce kills emberd with SIGKILL while 1,000 jobs are
// queued or running, restarts it on the same data dir, and requires every
// accepted job to reach COMPLETED exactly once: found after the restart,
// right output, one terminal webhook state per job, consistent /health.
func TestCrashRecoveryExactlyOnce(t *testing.T) {
	t.Parallel()
	const n = 1000
	start := time.Now()

	// Webhook receiver: every body, by job id.
	var hookMu sync.Mutex
	hooks := map[string][]string{}
	var badHooks []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var v struct {
			ID string `json:"id"`
		}
		hookMu.Lock()
		defer hookMu.Unlock()
		if err := json.Unmarshal(b, &v); err != nil || v.ID == "" {
			badHooks = append(badHooks, string(b))
			return
		}
		hooks[v.ID] = append(hooks[v.ID], string(b))
	}))
	defer srv.Close()
	hookCount := func() int {
		hookMu.Lock()
		defer hookMu.Unlock()
		return len(hooks)
	}

	d := StartDaemon(t)
	ep := d.CreateEndpoint("crash", map[string]any{
		"workersMax":  4,
		"idleTimeout": 5,
		"scalerType":  "REQUEST_COUNT",
		"scalerValue": 1,
		// Each example worker holds up to 3 jobs (batch takes).
		"env": map[string]string{"WORKER_CONCURRENCY": "3"},
	})

	// Submit concurrently; a 200 means the job is durable.
	ids := make([]string, n)
	err := parallelEach(n, 16, func(i int) error {
		body, _ := json.Marshal(map[string]any{
			"input":   map[string]any{"sleep_ms": 200, "output": fmt.Sprintf("job-%d", i)},
			"webhook": srv.URL + "/hook",
		})
		code, b, err := crashRequest(d, "POST", "/v2/"+ep+"/run", body)
		if err != nil {
			return fmt.Errorf("submit %d: %w", i, err)
		}
		var v struct{ ID, Status string }
		if code != 200 || json.Unmarshal(b, &v) != nil || v.ID == "" || v.Status != "IN_QUEUE" {
			return fmt.Errorf("submit %d: %d %s", i, code, b)
		}
		ids[i] = v.ID
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	index := make(map[string]int, n)
	for i, id := range ids {
		if _, dup := index[id]; dup {
			t.Fatalf("duplicate job id %s", id)
		}
		index[id] = i
	}
	t.Logf("submitted %d jobs in %v", n, time.Since(start).Round(time.Millisecond))

	// Crash while jobs are running, once some have completed.
	deadline := time.Now().Add(30 * time.Second)
	var before map[string]int
	for {
		before, _ = healthOf(d, ep)
		if before["inProgress"] > 0 && before["completed"] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no job both completed and in progress 30 s after submission: %v\n%s", before, d.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
	d.Kill9()
	firstWorkers := workerLogIDs(d)
	t.Logf("killed emberd (-9) at %v with about %v (%d webhooks received, %d workers had run)",
		time.Since(start).Round(time.Millisecond), before, hookCount(), len(firstWorkers))
	if len(firstWorkers) == 0 {
		t.Fatal("no worker logs found before the crash")
	}

	d.Restart()
	restartedAt := time.Now()

	// Every accepted job is still known.
	err = parallelEach(n, 16, func(i int) error {
		code, b, err := crashRequest(d, "GET", "/v2/"+ep+"/status/"+ids[i], nil)
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("job %d (%s) after restart: %d %s", i, ids[i], code, b)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, d.Log())
	}

	// Every job delivers a terminal webhook, and the queue drains.
	deadline = time.Now().Add(60 * time.Second)
	for {
		jobs, _ := healthOf(d, ep)
		if hookCount() == n && jobs["inQueue"] == 0 && jobs["inProgress"] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("60 s after the restart: %d of %d webhooks, health %v\n%s", hookCount(), n, jobs, d.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("all %d jobs terminal %v after the restart", n, time.Since(restartedAt).Round(time.Millisecond))

	// Final statuses: COMPLETED with the right output.
	var statusMu sync.Mutex
	statusWorker := make([]string, n)
	err = parallelEach(n, 16, func(i int) error {
		code, b, err := crashRequest(d, "GET", "/v2/"+ep+"/status/"+ids[i], nil)
		if err != nil {
			return err
		}
		var v struct {
			Status   string `json:"status"`
			Output   any    `json:"output"`
			WorkerID string `json:"workerId"`
		}
		if code != 200 || json.Unmarshal(b, &v) != nil {
			return fmt.Errorf("job %d status: %d %s", i, code, b)
		}
		if v.Status != "COMPLETED" || v.Output != fmt.Sprintf("job-%d", i) {
			return fmt.Errorf("job %d (%s) ended as %s", i, ids[i], b)
		}
		statusMu.Lock()
		statusWorker[i] = v.WorkerID
		statusMu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Webhooks: one terminal state per job. A delivery may repeat after the
	// crash (at-least-once), but only with the very same body.
	hookMu.Lock()
	defer hookMu.Unlock()
	if len(badHooks) > 0 {
		t.Errorf("%d webhook bodies without a job id, first: %s", len(badHooks), badHooks[0])
	}
	bySecond, repeats := 0, 0
	for id, bodies := range hooks {
		i, ok := index[id]
		if !ok {
			t.Errorf("webhook for unknown job %s", id)
			continue
		}
		var v struct {
			Status   string `json:"status"`
			Output   any    `json:"output"`
			WorkerID string `json:"workerId"`
		}
		if err := json.Unmarshal([]byte(bodies[0]), &v); err != nil {
			t.Errorf("job %s webhook body: %v: %s", id, err, bodies[0])
			continue
		}
		if v.Status != "COMPLETED" || v.Output != fmt.Sprintf("job-%d", i) {
			t.Errorf("job %d webhook: %s, want COMPLETED with output job-%d", i, bodies[0], i)
		}
		if v.WorkerID != statusWorker[i] {
			t.Errorf("job %d: webhook says worker %q, /status says %q", i, v.WorkerID, statusWorker[i])
		}
		for _, b := range bodies[1:] {
			if b != bodies[0] {
				t.Errorf("job %d has two different terminal webhooks:\n%s\n%s", i, bodies[0], b)
			}
		}
		repeats += len(bodies) - 1
		if !firstWorkers[v.WorkerID] {
			bySecond++
		}
	}
	t.Logf("%d jobs completed by workers of the restarted daemon, %d before the crash; %d repeated webhook deliveries",
		bySecond, n-bySecond, repeats)
	if bySecond == 0 || bySecond == n {
		t.Errorf("the crash did not split the work (%d of %d completed after the restart); the test proves nothing", bySecond, n)
	}

	// /health agrees: nothing queued or running, nothing failed, and the
	// completions counted by this daemon are exactly those it made (or all
	// of them, should the counters ever survive a restart).
	jobs, workers := healthOf(d, ep)
	if jobs["inQueue"] != 0 || jobs["inProgress"] != 0 || jobs["failed"] != 0 {
		t.Errorf("/health jobs %v, want no queued, running or failed job", jobs)
	}
	if c := jobs["completed"]; c != bySecond && c != n {
		t.Errorf("/health completed = %d, want %d (completions since the restart) or %d", c, bySecond, n)
	}
	if w := workersInHealth(workers); w > 4 {
		t.Errorf("/health shows %d workers, workersMax is 4", w)
	}
}
