package tests

// `docker save IMG | ember image load` against a real emberd: the archive
// comes through a pipe (unknown length, sent in chunks), is itself
// zstd-compressed and holds a zstd layer, and a job then runs in a runc
// container from the image.

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

func TestImageLoadFromPipe(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("container workers need root (CI runs as root)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "worker")
	build := exec.Command("go", "build", "-o", bin, "../examples/worker")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build static worker: %v\n%s", err, out)
	}
	ociTar := filepath.Join(dir, "worker-oci.tar")
	mk := exec.Command("go", "run", "../examples/worker/mkimage", "-binary", bin, "-compress", "zstd", "-name", "ember/worker:zstd", "-o", ociTar)
	if b, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("mkimage -compress zstd: %v\n%s", err, b)
	}
	raw, err := os.ReadFile(ociTar)
	if err != nil {
		t.Fatal(err)
	}
	var archive bytes.Buffer // what `docker save IMG | zstd` would give
	zw, err := zstd.NewWriter(&archive)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(raw)
	zw.Close()

	d := StartDaemon(t, "--runtime", "runc")
	cmd := exec.Command(emberBin, "image", "load", "--json")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "EMBER_ADDR=" + d.URL, "EMBER_API_KEY=" + d.Key}
	cmd.Stdin = bytes.NewReader(archive.Bytes()) // not a file: exec hands ember a pipe
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatal("ember image load still running after 2 minutes")
	}
	if err != nil {
		t.Fatalf("ember image load: %v\nstderr: %s\n%s", err, stderr.String(), d.Log())
	}
	var img struct {
		ID     string   `json:"id"`
		Names  []string `json:"names"`
		Layers []string `json:"layers"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &img); err != nil || len(img.Names) != 1 || img.Names[0] != "ember/worker:zstd" || len(img.Layers) != 1 {
		t.Fatalf("ember image load printed %q (%v); want the image ember/worker:zstd with 1 layer", stdout.String(), err)
	}
	if !strings.Contains(d.Log(), "upload_bytes="+strconv.Itoa(archive.Len())) {
		t.Errorf("the daemon's log does not show the %d bytes of the piped archive as received", archive.Len())
	}

	ep := d.JSON("POST", "/v1/endpoints", map[string]any{"name": "zstd-load", "image": "ember/worker:zstd", "gpuCount": 0, "workersMax": 1, "idleTimeout": 2}, 200)["id"].(string)
	res := d.JSON("POST", "/v2/"+ep+"/runsync?wait=60000", map[string]any{"input": map[string]any{"msg": "from a pipe"}}, 200)
	if res["status"] != "COMPLETED" {
		t.Fatalf("runsync answered %v\n%s", res, d.Log())
	}
	if out, _ := json.Marshal(res["output"]); !strings.Contains(string(out), "from a pipe") {
		t.Errorf("output %s does not echo the input", out)
	}
}
