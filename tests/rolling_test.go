package tests

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"
)

// rollWorker is a worker as /v1/workers lists it, with its generation.
type rollWorker struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	Generation int64  `json:"generation"`
	Outdated   bool   `json:"outdated"`
}

func (d *Daemon) rollWorkers(ep string) []rollWorker {
	d.t.Helper()
	code, out := d.Do("GET", "/v1/workers?endpoint="+ep, nil)
	if code != 200 {
		d.t.Fatalf("list workers: %d %s", code, out)
	}
	var resp struct {
		Workers []rollWorker `json:"workers"`
	}
	if err := json.Unmarshal(out, &resp); err != nil {
		d.t.Fatalf("list workers: %v: %s", err, out)
	}
	return resp.Workers
}

// generationOf reads the generation from an endpoint object (protojson
// writes int64 as a string).
func generationOf(m map[string]any) string { return fmt.Sprint(m["generation"]) }

// envEcho is the example worker's answer to {"echo_env": NAME}.
func envEcho(t *testing.T, st map[string]any) string {
	t.Helper()
	out, _ := st["output"].(map[string]any)
	v, ok := out["value"].(string)
	if !ok {
		t.Fatalf("job output %v has no env value", st["output"])
	}
	return v
}

// TestWorkerRollingUpdate: a PATCH of env on an endpoint with workersMin 1
// and a job in flight moves it to generation 2. The job completes on the
// old worker (which still sees the old env), the old worker exits after it,
// a generation-2 worker serves the next job and sees the new env, and at no
// point is the endpoint left without a worker. A PATCH of scaling fields
// then replaces nothing.
func TestWorkerRollingUpdate(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	created := time.Now()
	ep := d.CreateEndpoint("rolling", map[string]any{"workersMin": 1, "workersMax": 1, "idleTimeout": 60,
		"env": map[string]string{"MODEL": "a"}})
	if g := generationOf(d.JSON("GET", "/v1/endpoints/"+ep, nil, 200)); g != "1" {
		t.Fatalf("a new endpoint has generation %s, want 1", g)
	}
	waitFor(t, 30*time.Second, "the workersMin worker to be idle", func() bool {
		ws := d.rollWorkers(ep)
		return len(ws) == 1 && ws[0].State == "idle"
	})
	coldStart := time.Since(created)

	// Sample the worker list throughout: never no worker at all.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var empty []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 4000; i++ { // bounded: 100 s at most
			select {
			case <-stop:
				return
			case <-time.After(25 * time.Millisecond):
			}
			code, out := d.Do("GET", "/v1/workers?endpoint="+ep, nil)
			var resp struct {
				Workers []workerView `json:"workers"`
			}
			if code == 200 && json.Unmarshal(out, &resp) == nil && live(resp.Workers) == 0 {
				empty = append(empty, time.Now().Format(time.StampMilli))
			}
		}
	}()

	first := d.Submit(ep, map[string]any{"input": map[string]any{"sleep_ms": 1500, "echo_env": "MODEL"}})
	running := d.WaitStatus(ep, first, 30*time.Second, "IN_PROGRESS")
	old, _ := running["workerId"].(string)
	if old == "" {
		t.Fatalf("no workerId in %v", running)
	}

	patchedAt := time.Now()
	patched := d.JSON("PATCH", "/v1/endpoints/"+ep, map[string]any{"env": map[string]string{"MODEL": "b"}}, 200)
	if g := generationOf(patched); g != "2" {
		t.Fatalf("generation after an env update %s, want 2", g)
	}
	var fresh string
	waitFor(t, 30*time.Second, "a generation-2 worker, ready, next to the busy old one", func() bool {
		for _, w := range d.rollWorkers(ep) {
			if w.Generation == 2 && !w.Outdated && w.State == "idle" {
				fresh = w.ID
			}
		}
		return fresh != ""
	})
	// A figure for the record, not a check: the replacement's start, next
	// to a first start on the same daemon.
	t.Logf("PATCH to a ready generation-2 worker: %v (create to first ready worker: %v)",
		time.Since(patchedAt).Round(time.Millisecond), coldStart.Round(time.Millisecond))

	st := d.WaitStatus(ep, first, 60*time.Second, "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
	if st["status"] != "COMPLETED" {
		t.Fatalf("the job in flight during the update: %v\n%s", st, d.Log())
	}
	if st["workerId"] != old {
		t.Fatalf("the job in flight ran on %v, want the old worker %s (it was moved, not finished)", st["workerId"], old)
	}
	if v := envEcho(t, st); v != "a" {
		t.Fatalf("the old worker saw MODEL=%q, want a", v)
	}
	waitFor(t, 30*time.Second, "the old worker to exit after its job", func() bool {
		for _, w := range d.rollWorkers(ep) {
			if w.ID == old {
				return false
			}
		}
		return true
	})

	second := d.Submit(ep, map[string]any{"input": map[string]any{"echo_env": "MODEL"}})
	st = d.WaitStatus(ep, second, 60*time.Second, "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
	if st["status"] != "COMPLETED" || st["workerId"] != fresh {
		t.Fatalf("the next job: %v, want COMPLETED on the generation-2 worker %s", st, fresh)
	}
	if v := envEcho(t, st); v != "b" {
		t.Fatalf("the generation-2 worker saw MODEL=%q, want b", v)
	}

	// Scaling only: the generation stays, the worker stays.
	patched = d.JSON("PATCH", "/v1/endpoints/"+ep, map[string]any{"workersMax": 2, "idleTimeout": 30, "scalerValue": 2}, 200)
	if g := generationOf(patched); g != "2" {
		t.Fatalf("generation after a scaling-only update %s, want 2", g)
	}
	for i := 0; i < 20; i++ { // 0.5 s of samples
		ws := d.rollWorkers(ep)
		if len(ws) != 1 || ws[0].ID != fresh || ws[0].State == "draining" {
			t.Fatalf("after a scaling-only update the workers are %+v, want only %s, not draining", ws, fresh)
		}
		time.Sleep(25 * time.Millisecond)
	}
	third := d.Submit(ep, map[string]any{"input": map[string]any{"echo_env": "MODEL"}})
	st = d.WaitStatus(ep, third, 60*time.Second, "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
	if st["status"] != "COMPLETED" || st["workerId"] != fresh {
		t.Fatalf("the job after a scaling-only update: %v, want COMPLETED on %s", st, fresh)
	}

	close(stop)
	wg.Wait()
	if len(empty) > 0 {
		t.Fatalf("the endpoint (workersMin 1) had no worker at %v", empty)
	}
}
