package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPreload: an image archive and an endpoint definition dropped in the
// preload folder are imported and created at start, and the endpoint runs
// jobs; a second start does nothing again.
func TestPreload(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("container workers need root (CI runs as root)")
	}
	dockerTar, _ := workerImages(t)
	dir := t.TempDir()
	if err := os.Link(dockerTar, filepath.Join(dir, "worker.tar")); err != nil {
		t.Fatal(err)
	}
	def := `{"name":"preloaded","image":"ember/example-worker:latest","gpuCount":0,"workersMax":1,"idleTimeout":5}`
	if err := os.WriteFile(filepath.Join(dir, "preloaded.json"), []byte(def), 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "README.txt"), []byte("not an image"), 0o644)

	d := StartDaemon(t, "--runtime", "runc", "--preload-dir", dir)
	var ep string
	waitFor(t, 60*time.Second, "preloaded endpoint", func() bool {
		var list struct {
			Endpoints []struct {
				ID   string `json:"id"`
				Name string `json:"name"`
			} `json:"endpoints"`
		}
		_, out := d.Do("GET", "/v1/endpoints", nil)
		json.Unmarshal(out, &list)
		for _, e := range list.Endpoints {
			if e.Name == "preloaded" {
				ep = e.ID
			}
		}
		return ep != ""
	})
	res := d.JSON("POST", "/v2/"+ep+"/runsync?wait=60000", map[string]any{"input": map[string]any{"output": "from the factory"}}, 200)
	if res["status"] != "COMPLETED" || res["output"] != "from the factory" {
		t.Fatalf("job on the preloaded endpoint: %v", res)
	}
	log := d.Log()
	for _, want := range []string{"preload: image imported", "preload: endpoint created", "ignoring an entry"} {
		if !strings.Contains(log, want) {
			t.Errorf("first start's log lacks %q", want)
		}
	}

	d.Stop()
	d.Restart()
	waitFor(t, 30*time.Second, "second start", func() bool {
		code, _ := d.Do("GET", "/v1/endpoints", nil)
		return code == 200
	})
	time.Sleep(time.Second) // preload runs after READY: give it its chance
	log = d.Log()
	if strings.Contains(log, "preload: image imported") || strings.Contains(log, "preload: endpoint created") {
		t.Fatalf("the second start preloaded again:\n%s", log)
	}
	var list struct {
		Endpoints []any `json:"endpoints"`
	}
	_, out := d.Do("GET", "/v1/endpoints", nil)
	json.Unmarshal(out, &list)
	if len(list.Endpoints) != 1 {
		t.Fatalf("%d endpoints after the second start, want 1: %s", len(list.Endpoints), out)
	}
}
