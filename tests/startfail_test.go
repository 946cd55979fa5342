package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emberhq/ember/scheduler/limits"
)

// sizedEnv is an environment of n variables whose entries ("KEY=VALUE"
// with its NUL, as execve counts them) add up to total bytes.
func sizedEnv(n, total int) map[string]any {
	env := make(map[string]any, n)
	for i := 0; i < n; i++ {
		size := total / n
		if i < total%n {
			size++
		}
		k := fmt.Sprintf("BIG_%02d", i)
		env[k] = strings.Repeat("e", size-len(k)-2)
	}
	return env
}

// sizedCommand is the example worker's command followed by n arguments,
// all of them (each with its NUL) adding up to total bytes.
func sizedCommand(n, total int) []string {
	cmd := []string{workerBin}
	rest := total - len(workerBin) - 1
	for i := 0; i < n; i++ {
		size := rest / n
		if i < rest%n {
			size++
		}
		cmd = append(cmd, strings.Repeat("a", size-1))
	}
	return cmd
}

// TestEndpointFieldLimits: an endpoint whose env and command are at their
// limits is created and its worker really starts (execve takes them along
// with Ember's own variables); one byte more is refused with 400 naming
// the field and the limit, at create and at PATCH.
func TestEndpointFieldLimits(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)

	envEntries := limits.EnvTotal / limits.EnvEntry // each variable at its own limit too
	big := d.CreateEndpoint("at-limit", map[string]any{
		"env":        sizedEnv(envEntries, limits.EnvTotal),
		"command":    sizedCommand(limits.CommandTotal/limits.CommandArg, limits.CommandTotal),
		"workersMax": 1,
	})
	res := d.JSON("POST", "/v2/"+big+"/runsync?wait=30000", map[string]any{"input": map[string]any{"output": "started"}}, 200)
	if res["status"] != "COMPLETED" || res["output"] != "started" {
		t.Fatalf("a job on the endpoint at its limits: %v\n%s", res, d.Log())
	}

	refused := []struct {
		name   string
		fields map[string]any
		field  string
		limit  int
	}{
		{"variable", map[string]any{"env": sizedEnv(1, limits.EnvEntry+1)}, "env", limits.EnvEntry},
		{"env total", map[string]any{"env": sizedEnv(envEntries+1, limits.EnvTotal+1)}, "env", limits.EnvTotal},
		{"argument", map[string]any{"command": []string{workerBin, strings.Repeat("a", limits.CommandArg)}}, "command", limits.CommandArg},
		{"command total", map[string]any{"command": sizedCommand(limits.CommandTotal/limits.CommandArg+1, limits.CommandTotal+1)}, "command", limits.CommandTotal},
		{"name", map[string]any{"name": strings.Repeat("n", limits.EndpointName+1)}, "name", limits.EndpointName},
	}
	small := d.CreateEndpoint("small", nil)
	for _, tc := range refused {
		spec := map[string]any{"name": "past-" + strings.ReplaceAll(tc.name, " ", "-"), "command": []string{workerBin}, "gpuCount": 0}
		for k, v := range tc.fields {
			spec[k] = v
		}
		code, body := d.Do("POST", "/v1/endpoints", spec)
		if code != 400 || !strings.Contains(string(body), tc.field) || !strings.Contains(string(body), strconv.Itoa(tc.limit)) {
			t.Errorf("create, %s one past its limit: %d %.300s, want 400 naming %s and %d", tc.name, code, body, tc.field, tc.limit)
		}
		if !json.Valid(body) {
			t.Errorf("create, %s: the error is not JSON: %.300s", tc.name, body)
		}
		code, body = d.Do("PATCH", "/v1/endpoints/"+small, tc.fields)
		if code != 400 || !strings.Contains(string(body), tc.field) || !strings.Contains(string(body), strconv.Itoa(tc.limit)) {
			t.Errorf("PATCH, %s one past its limit: %d %.300s, want 400 naming %s and %d", tc.name, code, body, tc.field, tc.limit)
		}
	}
	var list struct {
		Endpoints []any `json:"endpoints"`
	}
	_, out := d.Do("GET", "/v1/endpoints", nil)
	json.Unmarshal(out, &list)
	if len(list.Endpoints) != 2 {
		t.Errorf("refused creates left endpoints behind: %s", out)
	}
}

// TestUnstartableEndpointRefused: a relative program under the process
// runtime, and an image that was never imported under runc, are refused
// at create with a 400 that says what to do.
func TestUnstartableEndpointRefused(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t)
	for _, cmd := range [][]string{{"example-worker"}, {"./bin/example-worker", "-v"}} {
		code, body := d.Do("POST", "/v1/endpoints", map[string]any{"name": "rel", "command": cmd, "gpuCount": 0})
		if code != 400 || !strings.Contains(string(body), "command") || !strings.Contains(string(body), "give an absolute path") {
			t.Errorf("relative command %q: %d %s, want 400 saying to give an absolute path", cmd, code, body)
		}
	}
	ep := d.CreateEndpoint("abs", nil)
	if code, body := d.Do("PATCH", "/v1/endpoints/"+ep, map[string]any{"command": []string{"example-worker"}}); code != 400 || !strings.Contains(string(body), "give an absolute path") {
		t.Errorf("PATCH to a relative command: %d %s, want 400", code, body)
	}

	if os.Geteuid() != 0 {
		t.Skip("the runc runtime needs root (CI runs as root)")
	}
	c := StartDaemon(t, "--runtime", "runc")
	code, body := c.Do("POST", "/v1/endpoints", map[string]any{"name": "ghost", "image": "ember/never-imported:1", "gpuCount": 0})
	if code != 400 || !strings.Contains(string(body), "image") || !strings.Contains(string(body), "ember image import FILE") || !strings.Contains(string(body), "ember image pull REF") {
		t.Errorf("an image never imported: %d %s, want 400 saying to import it", code, body)
	}
}

// TestStartFailuresFailJobs: an endpoint whose workers cannot start fails
// its queued jobs with the start error after --max-start-failures tries,
// instead of leaving them queued until their TTL; a job sent later is
// tried again and fails the same way.
func TestStartFailuresFailJobs(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, "--max-start-failures", "2")
	// Absolute, so it is accepted; it does not exist, so every start fails.
	ep := d.CreateEndpoint("missing-program", map[string]any{"command": []string{"/nonexistent/worker"}, "workersMax": 1})
	for round := 1; round <= 2; round++ {
		id := d.Submit(ep, map[string]any{"input": map[string]any{"round": round}})
		st := d.WaitStatus(ep, id, 30*time.Second, "FAILED")
		msg, _ := st["error"].(string)
		if !strings.HasPrefix(msg, "worker start failed 2 times in a row: ") || !strings.Contains(msg, "/nonexistent/worker") || !strings.Contains(msg, "no such file or directory") {
			t.Errorf("round %d: failed with %q, want the start error", round, msg)
		}
	}
}

// TestOperatorStopKeepsAttempts: stopping, three times, the worker that
// runs a job which ignores SIGTERM (so each stop ends in SIGKILL) does not
// use up the job's two attempts: it is queued again each time, and
// completes on the worker left alone.
func TestOperatorStopKeepsAttempts(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, "--max-attempts", "2", "--stop-grace", "500ms")
	ep := d.CreateEndpoint("stopped", map[string]any{"workersMax": 1})
	id := d.Submit(ep, map[string]any{"input": map[string]any{"block_ms": 2000, "output": "done"}})
	holder := func() string {
		var list struct {
			Workers []struct {
				ID    string   `json:"id"`
				State string   `json:"state"`
				Jobs  []string `json:"jobs"`
			} `json:"workers"`
		}
		_, out := d.Do("GET", "/v1/workers?endpoint="+ep, nil)
		json.Unmarshal(out, &list)
		for _, w := range list.Workers {
			if w.State == "running" && len(w.Jobs) == 1 && w.Jobs[0] == id {
				return w.ID
			}
		}
		return ""
	}
	var stopped []string
	for i := 0; i < 3; i++ {
		var w string
		waitFor(t, 30*time.Second, "a worker running the job", func() bool {
			w = holder()
			return w != "" && (len(stopped) == 0 || w != stopped[len(stopped)-1])
		})
		d.JSON("POST", "/v1/workers/"+w+":stop", nil, 200)
		stopped = append(stopped, w)
	}
	st := d.WaitStatus(ep, id, 60*time.Second, "COMPLETED", "FAILED")
	if st["status"] != "COMPLETED" || st["output"] != "done" {
		t.Fatalf("after three operator stops: %v, want COMPLETED\n%s", st, d.Log())
	}
	if w, _ := st["workerId"].(string); w == "" || strings.Contains(strings.Join(stopped, " "), w) {
		t.Errorf("completed on %q, want a worker that was not stopped (stopped: %v)", w, stopped)
	}
}
