package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// For is d seen from another (sub)test: failures are reported there.
func (d *Daemon) For(t testing.TB) *Daemon {
	c := *d
	c.t = t
	return &c
}

type workerView struct {
	ID     string `json:"id"`
	State  string `json:"state"`
	Reason string `json:"reason"`
}

// Workers lists an endpoint's workers.
func (d *Daemon) Workers(ep string) []workerView {
	d.t.Helper()
	code, out := d.Do("GET", "/v1/workers?endpoint="+ep, nil)
	if code != 200 {
		d.t.Fatalf("list workers: %d %s", code, out)
	}
	var resp struct {
		Workers []workerView `json:"workers"`
	}
	if err := json.Unmarshal(out, &resp); err != nil {
		d.t.Fatalf("list workers: %v: %s", err, out)
	}
	return resp.Workers
}

// live counts the workers not stopped (unhealthy ghosts excluded).
func live(ws []workerView) int {
	n := 0
	for _, w := range ws {
		if w.State != "stopped" && w.State != "unhealthy" {
			n++
		}
	}
	return n
}

// Stats reads an endpoint's stats (int64 fields arrive as JSON strings).
func (d *Daemon) Stats(ep string) map[string]any {
	d.t.Helper()
	return d.JSON("GET", "/v1/endpoints/"+ep+"/stats", nil, 200)
}

func statInt(m map[string]any, key string) int {
	var n int
	fmt.Sscan(fmt.Sprint(m[key]), &n)
	return n
}

// waitFor polls cond every 25 ms until it holds, failing after limit.
func waitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// TestContainerScaling drives the autoscaler, FlashBoot, timeouts,
// cancellation and retries through real container workers (the example
// worker image under the runc runtime). The subtests share one daemon and
// run in parallel, each on its own endpoint.
func TestContainerScaling(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("container workers need root (CI runs as root)")
	}
	_, ociDir := workerImages(t)
	root := StartDaemon(t, "--runtime", "runc", "--stop-grace", "2s", "--ping-interval", "1s")
	root.JSON("POST", "/v1/images:import", map[string]any{"path": ociDir, "name": "ember/worker:oci"}, 200)
	endpoint := func(d *Daemon, name string, fields map[string]any) string {
		spec := map[string]any{"name": name, "image": "ember/worker:oci", "gpuCount": 0, "workersMax": 1, "idleTimeout": 30}
		for k, v := range fields {
			spec[k] = v
		}
		return d.JSON("POST", "/v1/endpoints", spec, 200)["id"].(string)
	}

	// 0 -> N -> 0: a burst scales up to workersMax and no further; the
	// workers stay while jobs run and go once idle past idleTimeout.
	t.Run("burst", func(t *testing.T) {
		t.Parallel()
		d := root.For(t)
		ep := endpoint(d, "burst", map[string]any{"scalerType": "REQUEST_COUNT", "scalerValue": 1, "workersMax": 3, "idleTimeout": 2})
		if n := live(d.Workers(ep)); n != 0 {
			t.Fatalf("%d workers before any job, want 0", n)
		}
		var ids []string
		for i := 0; i < 9; i++ {
			ids = append(ids, d.Submit(ep, map[string]any{"input": map[string]any{"sleep_ms": 1500}}))
		}
		peak := 0
		workers := map[string]bool{}
		done := func() bool {
			for _, id := range ids {
				code, out := d.Do("GET", "/v2/"+ep+"/status/"+id, nil)
				if code != 200 || !strings.Contains(string(out), `"COMPLETED"`) {
					return false
				}
			}
			return true
		}
		waitFor(t, 120*time.Second, "burst done", func() bool {
			ws := d.Workers(ep)
			peak = max(peak, live(ws))
			for _, w := range ws {
				workers[w.ID] = true
			}
			return done()
		})
		if peak > 3 {
			t.Fatalf("%d workers at once, workersMax is 3", peak)
		}
		if peak < 3 {
			t.Errorf("peak of %d workers for 9 queued jobs with REQUEST_COUNT 1 and workersMax 3, want 3", peak)
		}
		// The idle clock starts when the last job ends: right after the
		// burst the workers are still there.
		if n := live(d.Workers(ep)); n == 0 {
			t.Fatal("workers were reaped before their idle timeout had passed after the last job")
		}
		waitFor(t, 30*time.Second, "scale back to zero", func() bool { return live(d.Workers(ep)) == 0 })

		// workersMin: kept up with no job at all, past the idle timeout.
		d.JSON("PATCH", "/v1/endpoints/"+ep, map[string]any{"workersMin": 1}, 200)
		waitFor(t, 30*time.Second, "workersMin worker", func() bool { return live(d.Workers(ep)) == 1 })
		time.Sleep(3 * time.Second)
		if n := live(d.Workers(ep)); n != 1 {
			t.Fatalf("%d workers 3 s after workersMin 1 with a 2 s idle timeout, want 1", n)
		}
	})

	// QUEUE_DELAY: one worker at once; a second only once the oldest job
	// has waited longer than scalerValue seconds.
	t.Run("queue-delay", func(t *testing.T) {
		t.Parallel()
		d := root.For(t)
		ep := endpoint(d, "qdelay", map[string]any{"scalerType": "QUEUE_DELAY", "scalerValue": 2, "workersMax": 3})
		start := time.Now()
		for i := 0; i < 3; i++ {
			d.Submit(ep, map[string]any{"input": map[string]any{"sleep_ms": 8000}})
		}
		time.Sleep(time.Second)
		if n := live(d.Workers(ep)); n != 1 && time.Since(start) < 2*time.Second {
			t.Fatalf("%d workers 1 s after 3 jobs on QUEUE_DELAY 2 s, want 1", n)
		}
		waitFor(t, 20*time.Second, "a second worker after the queue delay", func() bool { return live(d.Workers(ep)) >= 2 })
	})

	// Low-priority jobs never scale up: one worker runs them all.
	t.Run("low-priority", func(t *testing.T) {
		t.Parallel()
		d := root.For(t)
		ep := endpoint(d, "lowprio", map[string]any{"scalerType": "REQUEST_COUNT", "scalerValue": 1, "workersMax": 3})
		var ids []string
		for i := 0; i < 4; i++ {
			ids = append(ids, d.Submit(ep, map[string]any{"input": map[string]any{"sleep_ms": 300}, "policy": map[string]any{"lowPriority": true}}))
		}
		seen := map[any]bool{}
		for _, id := range ids {
			seen[d.WaitStatus(ep, id, 60*time.Second, "COMPLETED")["workerId"]] = true
		}
		if len(seen) != 1 {
			t.Fatalf("low-priority jobs ran on %d workers, want 1: %v", len(seen), seen)
		}
		if n := statInt(d.Stats(ep), "workersStarted"); n != 1 {
			t.Fatalf("workersStarted = %d, want 1", n)
		}
	})

	// FlashBoot: the idle worker is frozen (cgroup freezer), and the next
	// job revives that same container.
	t.Run("flashboot", func(t *testing.T) {
		t.Parallel()
		d := root.For(t)
		ep := endpoint(d, "flash", map[string]any{"flashboot": true, "flashbootWindow": 120, "idleTimeout": 1})
		first := d.JSON("POST", "/v2/"+ep+"/runsync?wait=60000", map[string]any{"input": map[string]any{"output": 1}}, 200)
		if first["status"] != "COMPLETED" {
			t.Fatalf("first job: %v", first)
		}
		waitFor(t, 30*time.Second, "worker frozen", func() bool {
			ws := d.Workers(ep)
			return len(ws) == 1 && ws[0].State == "frozen"
		})
		h := d.JSON("GET", "/v2/"+ep+"/health", nil, 200)
		if w := h["workers"].(map[string]any); w["idle"].(float64) != 0 {
			t.Errorf("/health counts the frozen worker as idle: %v", w)
		}
		second := d.JSON("POST", "/v2/"+ep+"/runsync?wait=60000", map[string]any{"input": map[string]any{"output": 2}}, 200)
		if second["status"] != "COMPLETED" || second["workerId"] != first["workerId"] {
			t.Fatalf("job after the freeze: %v; want COMPLETED on the revived %v", second, first["workerId"])
		}
		st := d.Stats(ep)
		if statInt(st, "workersRevived") != 1 || statInt(st, "workersStarted") != 1 {
			t.Fatalf("stats after one revival: %v", st)
		}
	})

	// Execution timeout: TIMED_OUT, and a worker whose handler ignores the
	// stop signal (a synchronous handler) is killed after the stop grace.
	t.Run("execution-timeout-kill", func(t *testing.T) {
		t.Parallel()
		d := root.For(t)
		ep := endpoint(d, "exectimeout", map[string]any{"executionTimeoutMs": 5000})
		id := d.Submit(ep, map[string]any{"input": map[string]any{"block_ms": 60000}})
		running := d.WaitStatus(ep, id, 60*time.Second, "IN_PROGRESS")
		final := d.WaitStatus(ep, id, 30*time.Second, "TIMED_OUT")
		if !strings.Contains(fmt.Sprint(final["error"]), "execution timeout") {
			t.Errorf("timed out job: %v", final)
		}
		waitFor(t, 30*time.Second, "blocked worker killed", func() bool {
			for _, w := range d.Workers(ep) {
				if w.ID == running["workerId"] {
					return false
				}
			}
			return true
		})
		if !strings.Contains(d.Log(), "did not stop a cancelled, timed-out or failed job") {
			t.Errorf("emberd did not log why it killed the worker")
		}
		next := d.JSON("POST", "/v2/"+ep+"/runsync?wait=60000", map[string]any{"input": map[string]any{"output": "after"}}, 200)
		if next["status"] != "COMPLETED" || next["workerId"] == running["workerId"] {
			t.Fatalf("next job: %v", next)
		}
	})

	// TTL: a job past its TTL is deleted even while it runs.
	t.Run("ttl", func(t *testing.T) {
		t.Parallel()
		d := root.For(t)
		ep := endpoint(d, "ttl", nil)
		id := d.Submit(ep, map[string]any{"input": map[string]any{"sleep_ms": 60000}, "policy": map[string]any{"ttl": 10000}})
		d.WaitStatus(ep, id, 60*time.Second, "IN_PROGRESS")
		waitFor(t, 30*time.Second, "job deleted at its TTL", func() bool {
			code, _ := d.Do("GET", "/v2/"+ep+"/status/"+id, nil)
			return code == 404
		})
	})

	// Cancel: a queued job never runs; a running one is stopped and its
	// worker (which honours the stop channel) lives on.
	t.Run("cancel", func(t *testing.T) {
		t.Parallel()
		d := root.For(t)
		ep := endpoint(d, "cancel", nil)
		running := d.Submit(ep, map[string]any{"input": map[string]any{"sleep_ms": 60000}})
		queued := d.Submit(ep, map[string]any{"input": map[string]any{"output": "never"}})
		r := d.WaitStatus(ep, running, 60*time.Second, "IN_PROGRESS")
		if c := d.JSON("POST", "/v2/"+ep+"/cancel/"+queued, nil, 200); c["status"] != "CANCELLED" {
			t.Fatalf("cancel queued: %v", c)
		}
		if c := d.JSON("POST", "/v2/"+ep+"/cancel/"+running, nil, 200); c["status"] != "CANCELLED" {
			t.Fatalf("cancel running: %v", c)
		}
		next := d.JSON("POST", "/v2/"+ep+"/runsync?wait=60000", map[string]any{"input": map[string]any{"output": "next"}}, 200)
		if next["status"] != "COMPLETED" || next["workerId"] != r["workerId"] {
			t.Fatalf("next job: %v; want it on the same worker %v (it let go of the cancelled job)", next, r["workerId"])
		}
		if q := d.WaitStatus(ep, queued, time.Second, "CANCELLED"); q["workerId"] != nil {
			t.Fatalf("the cancelled queued job ran: %v", q)
		}
	})

	// A job whose worker dies is retried on a new worker, up to the
	// endpoint's maxAttempts, then fails saying why.
	t.Run("crash-retry", func(t *testing.T) {
		t.Parallel()
		d := root.For(t)
		ep := endpoint(d, "crashy", map[string]any{"maxAttempts": 2})
		id := d.Submit(ep, map[string]any{"input": map[string]any{"exit": 137}})
		final := d.WaitStatus(ep, id, 90*time.Second, "FAILED")
		if final["error"] != "worker exited with code 137 after 2 attempts" {
			t.Fatalf("final: %v", final)
		}
		if n := statInt(d.Stats(ep), "retried"); n != 1 {
			t.Errorf("retried = %d, want 1", n)
		}
	})

	// The OpenAI route through a container worker: an unwrapped answer,
	// and a stream of SSE events ending in exactly one [DONE].
	t.Run("openai", func(t *testing.T) {
		t.Parallel()
		d := root.For(t)
		ep := endpoint(d, "oai", nil)
		code, m, _ := oaiCall(t, d, ep, "POST", "/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi from a container"}]}`)
		if code != 200 || m["object"] != "chat.completion" {
			t.Fatalf("chat completion: %d %v", code, m)
		}
		resp := oaiRequest(t, context.Background(), d, ep, "POST", "/chat/completions", `{"model":"m","stream":true,"messages":[{"role":"user","content":"one two three"}]}`)
		defer resp.Body.Close()
		events := readSSE(t, resp.Body)
		var words []string
		for _, e := range events[:max(0, len(events)-1)] {
			var chunk struct {
				Choices []struct {
					Delta struct {
						Content string `json:"content"`
					} `json:"delta"`
				} `json:"choices"`
			}
			if err := json.Unmarshal([]byte(e), &chunk); err != nil || len(chunk.Choices) != 1 {
				t.Fatalf("event %q: %v", e, err)
			}
			words = append(words, strings.TrimSpace(chunk.Choices[0].Delta.Content))
		}
		if len(events) == 0 || events[len(events)-1] != "[DONE]" || strings.Join(words, " ") != "one two three" {
			t.Fatalf("stream: %q", events)
		}
	})

	// Init timeout: a worker that neither takes nor pings in time is
	// unhealthy, shown with the reason.
	t.Run("init-timeout", func(t *testing.T) {
		t.Parallel()
		d := root.For(t)
		ep := endpoint(d, "slowinit", map[string]any{"workersMin": 1, "initTimeout": 10, "env": map[string]string{"WORKER_INIT_DELAY_MS": "600000"}})
		var reason string
		waitFor(t, 40*time.Second, "unhealthy worker", func() bool {
			for _, w := range d.Workers(ep) {
				if w.State == "unhealthy" {
					reason = w.Reason
					return true
				}
			}
			return false
		})
		if !strings.Contains(reason, "init timeout") {
			t.Fatalf("reason %q", reason)
		}
		h := d.JSON("GET", "/v2/"+ep+"/health", nil, 200)
		if w := h["workers"].(map[string]any); w["unhealthy"].(float64) < 1 {
			t.Fatalf("/health: %v", w)
		}
	})
}
