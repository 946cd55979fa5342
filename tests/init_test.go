package tests

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startScript is the entrypoint of shellWorkerImage, the way worker images'
// /start.sh scripts are written: it runs the worker as a child and does not
// pass signals on. As PID 1 itself the shell is not even killed by a
// SIGTERM: the kernel drops signals PID 1 has no handler for.
const startScript = `#!/bin/sh
echo "start.sh: starting the worker"
/worker
echo "start.sh: the worker exited with $?"
`

// orphansScript leaves 5 orphans behind (each subshell exits at once; its
// child, a short busy loop, goes to PID 1) and then becomes the worker, which
// like most programs never waits for children it did not start.
const orphansScript = `#!/bin/sh
i=0
while [ $i -lt 5 ]; do ( /bin/sh -c 'j=0; while [ $j -lt 20000 ]; do j=$((j+1)); done' & ); i=$((i+1)); done
exec /worker
`

// shellWorkerImage writes an OCI image layout whose entrypoint is
// /start.sh, run by the host's /bin/sh (with the libraries ldd names), and
// which has the static example worker at /worker.
func shellWorkerImage(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "worker")
	build := exec.Command("go", "build", "-o", bin, "../examples/worker")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build static worker: %v\n%s", err, out)
	}
	files := map[string][]byte{
		"worker":     mustRead(t, bin),
		"start.sh":   []byte(startScript),
		"orphans.sh": []byte(orphansScript),
		"bin/sh":     mustRead(t, "/bin/sh"),
		"etc/passwd": []byte("root:x:0:0:root:/:/bin/sh\n"),
		"etc/group":  []byte("root:x:0:\n"),
	}
	out, err := exec.Command("ldd", "/bin/sh").Output()
	if err != nil {
		t.Fatalf("ldd /bin/sh: %v", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		for _, f := range strings.Fields(l) {
			if strings.HasPrefix(f, "/") {
				files[strings.TrimPrefix(f, "/")] = mustRead(t, f)
			}
		}
	}

	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	dirs := map[string]bool{}
	writeDir := func(d string, mode int64) {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode}); err != nil {
			t.Fatal(err)
		}
		dirs[d] = true
	}
	writeDir("tmp", 0o1777)
	for name, data := range files {
		for d := filepath.Dir(name); d != "."; d = filepath.Dir(d) {
			if !dirs[d] {
				writeDir(d, 0o755)
			}
		}
		mode := int64(0o755)
		if strings.HasPrefix(name, "etc/") {
			mode = 0o644
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var layer bytes.Buffer
	zw := gzip.NewWriter(&layer)
	zw.Write(raw.Bytes())
	zw.Close()

	layout := filepath.Join(dir, "layout")
	blob := func(b []byte) map[string]any {
		sum := sha256.Sum256(b)
		h := hex.EncodeToString(sum[:])
		p := filepath.Join(layout, "blobs", "sha256", h)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return map[string]any{"digest": "sha256:" + h, "size": len(b)}
	}
	mustJSON := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	diff := sha256.Sum256(raw.Bytes())
	config := blob(mustJSON(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Entrypoint": []string{"/start.sh"}, "Env": []string{"PATH=/bin"}, "WorkingDir": "/"},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(diff[:])}},
	}))
	config["mediaType"] = "application/vnd.oci.image.config.v1+json"
	l := blob(layer.Bytes())
	l["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
	manifest := blob(mustJSON(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": config, "layers": []any{l},
	}))
	manifest["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
	manifest["annotations"] = map[string]string{"org.opencontainers.image.ref.name": "ember/shell-worker:latest"}
	if err := os.WriteFile(filepath.Join(layout, "index.json"), mustJSON(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []any{manifest},
	}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(layout, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return layout
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// containerPID1 finds the host pid of the PID 1 of worker wid's container:
// the process whose argv[0] is argv0 and whose environment names the worker.
func containerPID1(t *testing.T, wid, argv0 string) int {
	t.Helper()
	var found int
	waitFor(t, 30*time.Second, "the container's PID 1", func() bool {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			env, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
			if strings.HasPrefix(string(cmdline), argv0+"\x00") && bytes.Contains(env, []byte("\x00RUNPOD_POD_ID="+wid+"\x00")) {
				found = pid
				return true
			}
		}
		return false
	})
	return found
}

// zombiesInNamespace counts the zombies in the PID namespace of host pid.
func zombiesInNamespace(pid int) int {
	ns, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "ns", "pid"))
	if err != nil {
		return -1
	}
	n := 0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if other, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "pid")); err != nil || other != ns {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 && bytes.HasPrefix(stat[i+1:], []byte(" Z ")) {
			n++
		}
	}
	return n
}

// TestContainerInit: with ember-init as PID 1 (the default) a worker image
// whose entrypoint is a shell script that runs the worker as a child stops
// when asked long before --stop-grace (30 s) runs out: the SIGTERM reaches
// the worker through its process group and it drains. Orphans are reaped.
// Without the init (the endpoint's "init": false), the shell is PID 1,
// the SIGTERM is lost and the worker is killed when the grace has run out,
// and orphans stay zombies.
func TestContainerInit(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("container workers need root (CI runs as root)")
	}
	layout := shellWorkerImage(t)
	for _, tc := range []struct {
		name   string
		fields map[string]any // added to both endpoints
		init   bool
		argv0  string
	}{
		{"with init", nil, true, "/dev/init"},
		{"without init", map[string]any{"init": false}, false, "/bin/sh"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := StartDaemon(t, "--runtime", "runc", "--stop-grace", "30s")
			create := func(fields map[string]any) string {
				t.Helper()
				for k, v := range tc.fields {
					fields[k] = v
				}
				e := d.JSON("POST", "/v1/endpoints", fields, 200)
				if e["init"] != tc.init {
					t.Errorf("endpoint init %v, want %v", e["init"], tc.init)
				}
				return e["id"].(string)
			}
			d.JSON("POST", "/v1/images:import", map[string]any{"path": layout, "name": "ember/shell-worker:latest"}, 200)

			// Zombies.
			zep := create(map[string]any{"name": "orphans", "image": "ember/shell-worker:latest", "command": []string{"/orphans.sh"}, "gpuCount": 0, "workersMin": 1, "workersMax": 1, "idleTimeout": 60})
			zwid := idleWorkers(t, d, zep, 1)[0]
			argv0 := "/dev/init"
			if !tc.init {
				argv0 = "/worker" // orphans.sh exec'd it
			}
			zpid1 := containerPID1(t, zwid, argv0)
			if tc.init {
				waitFor(t, 10*time.Second, "no zombies in the container", func() bool { return zombiesInNamespace(zpid1) == 0 })
			} else {
				// Nothing reaps them: the property the init is for.
				waitFor(t, 30*time.Second, "the script's 5 orphans as zombies", func() bool { return zombiesInNamespace(zpid1) == 5 })
			}

			// Stop through a shell entrypoint.
			// workersMin 0: no replacement after the stop, which without
			// the init would make emberd's own shutdown wait out the grace.
			ep := create(map[string]any{"name": "shell", "image": "ember/shell-worker:latest", "gpuCount": 0, "workersMax": 1, "idleTimeout": 60})
			res := d.JSON("POST", "/v2/"+ep+"/runsync?wait=60000", map[string]any{"input": map[string]any{"output": "hi"}}, 200)
			if res["status"] != "COMPLETED" {
				t.Fatalf("job through the shell entrypoint: %v", res)
			}
			wid := res["workerId"].(string)
			containerPID1(t, wid, tc.argv0)
			asked := time.Now()
			d.JSON("POST", "/v1/workers/"+wid+":stop", nil, 200)
			var exitLine string
			waitFor(t, 60*time.Second, "the worker to exit", func() bool {
				for _, l := range strings.Split(d.Log(), "\n") {
					if strings.Contains(l, "worker="+wid) && (strings.Contains(l, `msg="worker stopped"`) || strings.Contains(l, `msg="worker exited"`)) {
						exitLine = l
						return true
					}
				}
				return false
			})
			// A figure for the log, not an assertion: the property is how
			// the worker ended, below.
			t.Logf("stop asked to exit seen: %v; %s", time.Since(asked).Round(time.Millisecond), exitLine)
			code, logs := d.Do("GET", "/v1/workers/"+wid+"/logs", nil)
			if code != 200 {
				t.Fatalf("worker logs: %d %s", code, logs)
			}
			drained := strings.Contains(string(logs), "signal received: finishing in-flight jobs")
			if tc.init && !drained {
				t.Errorf("with the init the SIGTERM did not reach the worker; emberd: %s\nworker log:\n%s", exitLine, logs)
			}
			if !tc.init && drained {
				t.Errorf("without an init the SIGTERM reached the worker through the shell at PID 1; emberd: %s\nworker log:\n%s", exitLine, logs)
			}
			// The shell died of the SIGTERM (143); without the init the
			// container was killed when the grace ran out.
			killed := strings.Contains(exitLine, "signal 9") || strings.Contains(exitLine, "code 137") || strings.Contains(exitLine, "killed")
			if tc.init == killed {
				t.Errorf("init %v, but the worker's end was: %s", tc.init, exitLine)
			}
		})
	}
}
