package tests

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// workerImages builds the example worker statically and packs it into an
// image twice: a docker-save tarball and an OCI image layout directory.
func workerImages(t *testing.T) (dockerTar, ociDir string) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "worker")
	build := exec.Command("go", "build", "-o", bin, "../examples/worker")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build static worker: %v\n%s", err, out)
	}
	dockerTar = filepath.Join(dir, "worker-docker.tar")
	ociTar := filepath.Join(dir, "worker-oci.tar")
	for format, out := range map[string]string{"docker": dockerTar, "oci": ociTar} {
		mk := exec.Command("go", "run", "../examples/worker/mkimage", "-binary", bin, "-format", format, "-o", out)
		if b, err := mk.CombinedOutput(); err != nil {
			t.Fatalf("mkimage -format %s: %v\n%s", format, err, b)
		}
	}
	ociDir = filepath.Join(dir, "layout")
	untar(t, ociTar, ociDir)
	return dockerTar, ociDir
}

func untar(t *testing.T, archive, dest string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dest, h.Name)
		if h.Typeflag == tar.TypeDir {
			os.MkdirAll(p, 0o755)
			continue
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		out, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, tr); err != nil {
			t.Fatal(err)
		}
		out.Close()
	}
}

// TestContainerWorkers runs jobs through real containers (runc runtime)
// from images imported both as a docker-save tarball and as an OCI layout,
// and checks that a worker past its memory limit fails its job saying so.
func TestContainerWorkers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("container workers need root (CI runs as root)")
	}
	dockerTar, ociDir := workerImages(t)
	d := StartDaemon(t, "--runtime", "runc")

	for _, imp := range []struct{ path, name string }{
		{dockerTar, "ember/worker:docker"},
		{ociDir, "ember/worker:oci"},
	} {
		img := d.JSON("POST", "/v1/images:import", map[string]any{"path": imp.path, "name": imp.name}, 200)
		if names, _ := img["names"].([]any); len(names) == 0 || !strings.Contains(fmt.Sprint(names), imp.name) {
			t.Fatalf("import %s: %v", imp.path, img)
		}
	}

	for _, ref := range []string{"ember/worker:docker", "ember/worker:oci"} {
		name := strings.ReplaceAll(strings.TrimPrefix(ref, "ember/worker:"), ":", "-")
		ep := d.JSON("POST", "/v1/endpoints", map[string]any{"name": "c-" + name, "image": ref, "gpuCount": 0, "workersMax": 1, "idleTimeout": 2, "memoryMb": 128}, 200)["id"].(string)
		res := d.JSON("POST", "/v2/"+ep+"/runsync?wait=60000", map[string]any{"input": map[string]any{"msg": ref}}, 200)
		if res["status"] != "COMPLETED" {
			t.Fatalf("%s: runsync answered %v\n%s", ref, res, d.Log())
		}
		if out, _ := json.Marshal(res["output"]); !strings.Contains(string(out), ref) {
			t.Errorf("%s: output %s does not echo the input", ref, out)
		}
		// The worker runs in its own pid namespace: it is pid 1 there, and
		// its environment came from the image plus Ember's.
		job := d.JSON("POST", "/v2/"+ep+"/runsync?wait=60000", map[string]any{"input": map[string]any{"echo_job": true}}, 200)
		if job["status"] != "COMPLETED" {
			t.Fatalf("%s: echo_job answered %v", ref, job)
		}
		if ref == "ember/worker:oci" {
			oom := d.JSON("POST", "/v2/"+ep+"/runsync?wait=60000", map[string]any{"input": map[string]any{"alloc_mb": 512}}, 200)
			if oom["status"] != "FAILED" || !strings.Contains(fmt.Sprint(oom["error"]), "out of memory (limit 128 MiB)") {
				t.Errorf("a worker past its 128 MiB limit: %v, want FAILED naming the limit", oom)
			}
		}
	}

	// network "none": the worker has only loopback in its own namespace,
	// where emberd serves the worker API; jobs still run.
	isolated := d.JSON("POST", "/v1/endpoints", map[string]any{"name": "c-none", "image": "ember/worker:oci", "gpuCount": 0, "workersMax": 1, "idleTimeout": 2, "network": "none"}, 200)["id"].(string)
	res := d.JSON("POST", "/v2/"+isolated+"/runsync?wait=60000", map[string]any{"input": map[string]any{"msg": "isolated"}}, 200)
	if res["status"] != "COMPLETED" {
		t.Errorf("network none: runsync answered %v\n%s", res, d.Log())
	}

	// Idle workers are reaped and their containers cleaned up: no overlay
	// of a worker stays mounted.
	deadline := time.Now().Add(30 * time.Second)
	for {
		mounts, _ := os.ReadFile("/proc/self/mountinfo")
		if !strings.Contains(string(mounts), filepath.Join(d.DataDir, "workers")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker overlays still mounted 30 s after the jobs:\n%s\nemberd log:\n%s", mounts, d.Log())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestContainerWorkerSurvivesRestart: emberd dies (kill -9) while a
// container worker runs a job; the restarted emberd takes the container
// back and the job completes there, once.
func TestContainerWorkerSurvivesRestart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("container workers need root (CI runs as root)")
	}
	_, ociDir := workerImages(t)
	d := StartDaemon(t, "--runtime", "runc")
	d.JSON("POST", "/v1/images:import", map[string]any{"path": ociDir, "name": "ember/worker:oci"}, 200)
	ep := d.JSON("POST", "/v1/endpoints", map[string]any{"name": "survivor", "image": "ember/worker:oci", "gpuCount": 0, "workersMax": 1, "idleTimeout": 30}, 200)["id"].(string)

	id := d.Submit(ep, map[string]any{"input": map[string]any{"sleep_ms": 4000, "output": "done"}})
	running := d.WaitStatus(ep, id, 60*time.Second, "IN_PROGRESS")
	// The lease is written by the store's next group commit (CommitAsync
	// in scheduler/dispatch.go), not before IN_PROGRESS shows: a kill -9
	// in between puts the job back in the queue (docs/durability.md),
	// which is not what this test is about. It failed so once under make
	// test's load. The job sleeps 4 s, so 1 s leaves it running.
	time.Sleep(time.Second)
	d.Kill9()
	d.Restart()
	final := d.WaitStatus(ep, id, 60*time.Second, "COMPLETED", "FAILED")
	if final["status"] != "COMPLETED" || final["output"] != "done" {
		t.Fatalf("job after the restart: %v", final)
	}
	if final["workerId"] != running["workerId"] {
		t.Errorf("the job finished on %v, not on the worker that had it (%v): the container was not taken back", final["workerId"], running["workerId"])
	}
	if !strings.Contains(d.Log(), "worker taken back after restart") {
		t.Errorf("emberd did not report taking the worker back:\n%s", d.Log())
	}
	// The taken-back worker serves new jobs too.
	res := d.JSON("POST", "/v2/"+ep+"/runsync?wait=60000", map[string]any{"input": map[string]any{"output": "again"}}, 200)
	if res["status"] != "COMPLETED" || res["workerId"] != running["workerId"] {
		t.Errorf("next job: %v (want COMPLETED on %v)", res, running["workerId"])
	}
}
