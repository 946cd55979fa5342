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
	node := restClientNode(t)
	d := StartDaemon(t)
	cmd, _ := json.Marshal([]string{workerBin})
	runRESTClient(t, node, d, "START_CMD="+string(cmd), "NAME=e2e")

	// Both are gone from Ember's own API too.
	if code, body := d.Do("GET", "/v1/templates/rest-client-e2e", nil); code != 404 {
		t.Errorf("GET /v1/templates/rest-client-e2e after the script: %d %s", code, body)
	}
	m := d.JSON("GET", "/v1/endpoints", nil, 200)
	if eps, _ := m["endpoints"].([]any); len(eps) != 0 {
		t.Errorf("endpoints left after the script: %v", eps)
	}
}

// TestRunPodRESTClientContainers: the same client with the runc runtime,
// where the template's image is what a worker runs. An endpoint from a
// template whose image is not imported is refused first, with the way to
// import it; once it is, the script's endpoint (a CPU one: this machine
// may have no GPU) runs its job in a container.
func TestRunPodRESTClientContainers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("container workers need root (CI runs as root)")
	}
	node := restClientNode(t)
	dockerTar, _ := workerImages(t)
	d := StartDaemon(t, "--runtime", "runc")

	d.JSON("POST", "/runpod/v1/templates", map[string]any{"name": "early", "imageName": "ember/example-worker:latest", "category": "CPU"}, 200)
	code, out := d.Do("POST", "/runpod/v1/endpoints", map[string]any{"templateId": "early"})
	var refusal map[string]any
	json.Unmarshal(out, &refusal)
	if msg, _ := refusal["message"].(string); code != 409 || refusal["field"] != "imageName" || !strings.Contains(msg, "ember image load -i FILE") {
		t.Fatalf("an endpoint before its image is imported: %d %s", code, out)
	}
	load := exec.Command(emberBin, "image", "load", "-i", dockerTar)
	load.Env = append(os.Environ(), "EMBER_ADDR="+d.URL, "EMBER_API_KEY="+d.Key)
	if b, err := load.CombinedOutput(); err != nil {
		t.Fatalf("ember image load -i: %v\n%s", err, b)
	}
	runRESTClient(t, node, d, "COMPUTE=CPU", "NAME=runc")
}

// restClientNode is node's path, or t skipped.
func restClientNode(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the RunPod REST client test needs Node.js 20 (`make deps` installs it)")
	}
	return node
}

// runRESTClient runs the script against d with env added, and fails t
// unless every one of its steps passed.
func runRESTClient(t *testing.T, node string, d *Daemon, env ...string) {
	t.Helper()
	const limit = 120 // seconds, the script's own limit
	ctx, cancel := context.WithTimeout(context.Background(), (limit+30)*time.Second)
	defer cancel()
	run := exec.CommandContext(ctx, node, filepath.Join("runpodrest", "client.mjs"))
	run.Env = append(os.Environ(),
		"BASE="+d.URL+"/runpod/v1",
		"V2BASE="+d.URL+"/v2",
		"KEY="+d.Key,
		"TIMEOUT_S=120",
	)
	run.Env = append(run.Env, env...)
	var stdout, stderr bytes.Buffer
	run.Stdout, run.Stderr = &stdout, &stderr
	run.WaitDelay = 5 * time.Second
	err := run.Run()
	t.Logf("client.mjs:\n%s", stdout.String())
	if err != nil {
		t.Fatalf("node client.mjs: %v\nstderr:\n%s\nemberd log:\n%s", err, stderr.String(), d.Log())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if last := lines[len(lines)-1]; last != "11 passed, 0 failed" {
		t.Fatalf("the script's summary is %q, want all 11 steps passed", last)
	}
}
