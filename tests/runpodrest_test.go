package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRunPodRESTClient runs tests/runpodrest/client.mjs, a RunPod REST
// client written against rest.runpod.io/v1's documented shapes, against a
// real emberd's /runpod/v1: it creates a template running the example
// worker, lists templates, creates an endpoint from it with RunPod's GPU,
// scaling and data-center fields, reads it, patches its workersMax, lists
// endpoints, runs one job through /v2, and deletes both. emberd runs the
// process runtime, which hands out no GPUs: gpuCount 1 is accepted and the
// worker runs on the host.
func TestRunPodRESTClient(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the RunPod REST client test needs Node.js 20 (`make deps` installs it)")
	}
	d := StartDaemon(t)
	cmd, _ := json.Marshal([]string{workerBin})

	const limit = 120 // seconds, the script's own limit
	ctx, cancel := context.WithTimeout(context.Background(), (limit+30)*time.Second)
	defer cancel()
	run := exec.CommandContext(ctx, node, filepath.Join("runpodrest", "client.mjs"))
	run.Env = append(os.Environ(),
		"BASE="+d.URL+"/runpod/v1",
		"V2BASE="+d.URL+"/v2",
		"KEY="+d.Key,
		"START_CMD="+string(cmd),
		"NAME=e2e",
		"TIMEOUT_S=120",
	)
	var stdout, stderr bytes.Buffer
	run.Stdout, run.Stderr = &stdout, &stderr
	run.WaitDelay = 5 * time.Second
	err = run.Run()
	t.Logf("client.mjs:\n%s", stdout.String())
	if err != nil {
		t.Errorf("node client.mjs: %v\nstderr:\n%s\nemberd log:\n%s", err, stderr.String(), d.Log())
		return
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if last := lines[len(lines)-1]; last != "11 passed, 0 failed" {
		t.Errorf("the script's summary is %q, want all 11 steps passed", last)
	}

	// Both are gone from Ember's own API too.
	if code, body := d.Do("GET", "/v1/templates/rest-client-e2e", nil); code != 404 {
		t.Errorf("GET /v1/templates/rest-client-e2e after the script: %d %s", code, body)
	}
	m := d.JSON("GET", "/v1/endpoints", nil, 200)
	if eps, _ := m["endpoints"].([]any); len(eps) != 0 {
		t.Errorf("endpoints left after the script: %v", eps)
	}
}
